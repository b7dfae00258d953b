package enforce

import (
	"net/url"
	"strings"
	"testing"
)

var benchQueries = []struct{ name, q string }{
	{"short", `up`},
	{"typical", `sum(rate(http_requests_total{job="api",status=~"5.."}[5m])) by (instance) / sum(rate(http_requests_total{job="api"}[5m])) by (instance) > 0.05`},
	{"typical_histogram", `histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{job="api",handler=~"/api/v1/.*",namespace="$namespace"}[5m])) by (le, handler))`},
	{"long", strings.Repeat(`sum(rate(node_cpu_seconds_total{mode!="idle",instance=~"node-.*",cluster="prod"}[5m])) by (instance) / on(instance) group_left(nodename) count(node_cpu_seconds_total{mode="idle"}) by (instance) + `, 10) + `vector(0)`},
}

// BenchmarkQueryRewrite: go test -run XXX -bench QueryRewrite -benchmem ./internal/enforce/
// "parse+rewrite" is a query seen for the first time; "cached" is a dashboard sending it again.
func BenchmarkQueryRewrite(b *testing.B) {
	for _, tok := range []struct {
		name string
		e    *Enforcer
	}{{"labels", devOnly(b)}, {"labels+3filters", devFiltered(b)}} {
		for _, q := range benchQueries {
			b.Run(tok.name+"/"+q.name+"/parse+rewrite", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(q.q)))
				for b.Loop() {
					if _, err := tok.e.queryUncached(q.q, false, false, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(tok.name+"/"+q.name+"/cached", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(q.q)))
				for b.Loop() {
					if _, err := tok.e.Query(q.q); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkParse is metricsql.Parse alone, the floor of an uncached rewrite.
func BenchmarkParse(b *testing.B) {
	for _, q := range benchQueries {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parse(q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRequest is the enforce step for the args of a Grafana POST, and the no-op for unrestricted tokens.
func BenchmarkRequest(b *testing.B) {
	form := url.Values{"query": {benchQueries[1].q}, "start": {"1700000000"}, "end": {"1700003600"}, "step": {"15"}}
	for _, tok := range []struct {
		name string
		e    *Enforcer
	}{{"unrestricted", nil}, {"labels", devOnly(b)}} {
		b.Run(tok.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := tok.e.Request(rtQuery, Args{URL: url.Values{}, Form: form}, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
