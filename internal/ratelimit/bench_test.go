package ratelimit

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// BenchmarkGate measures Admit without headers (judge and count) on the request path of a started gate against a snapshot of
// 10000 tenants with datasource usage: a read counted in the gate's own minute and hour windows, the same for a
// tenant the datasource never reported, a read counted twice (for the tenant and for the token's sub), a read
// over the datasource's figure, a read over the gate's own count, and a write (datasource figures only); Admit
// with headers sets the rate-limit headers as well.
func BenchmarkGate(b *testing.B) {
	g := newBenchGate(b, HeadersNone)
	perToken := &auth.Access{Tenant: tid(3, 0), Claims: map[string]any{"sub": "alice", "n": json.Number("1")}}
	if err := g.check(perToken, rt(route.Read)); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		a    *auth.Access
		kind route.Kind
	}{
		{"allowed", access(tid(17, 0)), route.Read},
		{"unseen", access(tid(999999, 5)), route.Read},
		{"per-token", perToken, route.Read},
		{"rejected/datasource", access(tid(1, 0)), route.Read},
		{"rejected/local", access(tid(2, 0)), route.Read},
		{"write", access(tid(17, 0)), route.Write},
	} {
		r := rt(bc.kind)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_ = g.check(bc.a, r)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = g.check(bc.a, r)
				}
			})
		})
	}
	hg := newBenchGate(b, HeadersBoth)
	b.Run("allowed/headers", func(b *testing.B) {
		a, r, h := access(tid(17, 0)), rt(route.Read), http.Header{}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = hg.Admit(a, r, h)
		}
	})
}

// newBenchGate: every tenant has datasource usage; tenant 1:0 is over its datasource limit, tenant 2:0 has a
// limit of 10 that its own count exhausts at once, the others have limits no benchmark reaches.
func newBenchGate(b *testing.B, h Headers) *Gate {
	b.Helper()
	g := newTestGate(b, `
limits:
  - {type: queries, value: 1000000000000}
  - {type: queries, value: 1000000000000, resolution: hour}
  - {type: queries, value: 1000000000000, key: claim:sub, account_id: 3}
  - {type: rows_inserted, value: 5000}
  - {type: new_series, value: 50, resolution: hour}
  - {type: active_series, value: 300}
  - {type: queries, value: 10, account_id: 1}
  - {type: queries, value: 10, account_id: 2}
`, Config{Headers: h, RefreshInterval: time.Hour, MaxUsageAge: 2 * time.Hour})
	usage := map[usageKey]float64{}
	for i := uint32(0); i < 10000; i++ {
		for _, m := range metersOf(g.snap.Load().limits.All()) {
			usage[usageKey{tid(i, 0), m}] = float64(i % 50)
		}
	}
	usage[usageKey{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}] = 20
	usage[usageKey{tid(2, 0), meter{limitfile.Queries, limitfile.Minute}}] = 0
	g.setUsage(usage)
	g.Start() // the counts' clock
	for i := 0; i < 10; i++ {
		_ = g.check(access(tid(2, 0)), rt(route.Read))
	}
	return g
}

// BenchmarkShared measures Check with the counts shared in a real Redis, far from the limit: the lease makes
// Redis calls a small fraction of the checks (reported as redis-calls/op).
func BenchmarkShared(b *testing.B) {
	r := vmtest.StartRedis(b)
	g := newTestGate(b, "limits:\n  - {type: queries, value: 1000000000000}\n  - {type: queries, value: 1000000000000, resolution: hour}\n",
		Config{Redis: RedisConfig{URL: "redis://" + r.Addr}, RefreshInterval: time.Hour, MaxUsageAge: 2 * time.Hour})
	g.Start()
	for !redisOf(g).up.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	a, r2 := access(tid(17, 0)), rt(route.Read)
	for _, parallel := range []bool{false, true} {
		name := "serial"
		if parallel {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			before := redisOf(g).calls.Get()
			b.ReportAllocs()
			if parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						_ = g.check(a, r2)
					}
				})
			} else {
				for i := 0; i < b.N; i++ {
					_ = g.check(a, r2)
				}
			}
			b.ReportMetric(float64(redisOf(g).calls.Get()-before)/float64(b.N), "redis-calls/op")
		})
	}
}

// BenchmarkSpend is what counting one answer's stats costs a started gate, per answer: for a tenant with a
// series_fetched and a query_time_ms limit, and per key (the token's sub). The reading of the stats themselves is
// BenchmarkStatsTail in internal/gateway.
func BenchmarkSpend(b *testing.B) {
	g := newTestGate(b, `
limits:
  - {type: series_fetched, value: 1000000000000}
  - {type: query_time_ms, value: 1000000000000, resolution: hour}
  - {type: series_fetched, value: 1000000000000, key: claim:sub, account_id: 2}
`, Config{})
	g.Start()
	for _, bc := range []struct {
		name string
		a    *auth.Access
	}{
		{"tenant", access(tid(1, 0))},
		{"per-token", &auth.Access{Tenant: tid(2, 0), Claims: map[string]any{"sub": "alice"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				g.Spend(bc.a, 1601, 42)
			}
		})
	}
}
