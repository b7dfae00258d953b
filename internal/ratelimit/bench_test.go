package ratelimit

import (
	"testing"

	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// BenchmarkGate measures the check on the request path against a snapshot of 10000 tenants with usage,
// for a tenant within its limits, one over them, and one the datasource never reported; Decide is the variant
// that returns the whole Decision.
func BenchmarkGate(b *testing.B) {
	g := newBenchGate(b)
	for _, bc := range []struct {
		name string
		id   tenant.ID
		kind route.Kind
	}{
		{"allowed", tid(17, 0), route.Read},
		{"rejected", tid(1, 0), route.Read},
		{"unseen", tid(999999, 5), route.Write},
	} {
		a, r := access(bc.id), rt(bc.kind)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_ = g.Check(a, r)
			}
		})
		b.Run(bc.name+"/decide", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_ = g.Decide(a, r)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = g.Check(a, r)
				}
			})
		})
	}
}

func newBenchGate(b *testing.B) *Gate {
	b.Helper()
	g := newTestGate(b, `
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 1000, resolution: hour}
  - {type: rows_inserted, value: 5000}
  - {type: new_series, value: 50, resolution: hour}
  - {type: active_series, value: 300}
  - {type: queries, value: 10, account_id: 1}
`, Config{})
	usage := map[usageKey]float64{}
	for i := uint32(0); i < 10000; i++ {
		for _, m := range g.snap.Load().limits.meters {
			usage[usageKey{tid(i, 0), m}] = float64(i % 50)
		}
	}
	g.setUsage(usage)
	return g
}
