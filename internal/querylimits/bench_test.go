package querylimits

import (
	"net/url"
	"strconv"
	"testing"

	"github.com/VictoriaMetrics/metricsql"
)

const benchQuery = `sum(rate(http_requests_total{job="api",code=~"5.."}[5m])) by (instance) / sum(rate(http_requests_total{job="api"}[5m])) by (instance)`

// BenchmarkCheckCached is the check of a dashboard's repeated query_range: the parse is cached.
func BenchmarkCheckCached(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	args := url.Values{"query": {benchQuery}, "start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}
	if _, err := c.Check(limited, rt, args, nil, checkNow); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Check(limited, rt, args, nil, checkNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckFirstSight is the check of a query never seen before: parse, span tree and blocked patterns.
func BenchmarkCheckFirstSight(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	qs := make([]string, b.N)
	for i := range qs {
		qs[i] = `sum(rate(http_requests_total{job="api",n="` + strconv.Itoa(i) + `"}[5m])) by (instance)`
	}
	args := url.Values{"query": {""}, "start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		args["query"][0] = qs[i]
		if _, err := c.Check(limited, rt, args, nil, checkNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckNoLimits is the cost for a tenant without limits.
func BenchmarkCheckNoLimits(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if c.Applies(other, rt) {
			b.Fatal("tenant 8 has no limits")
		}
	}
}

// BenchmarkSpanCached is the query's part of a cached check: the cache lookup and the walk of the span tree.
func BenchmarkSpanCached(b *testing.B) {
	c := mustConfig(b, checkConfig)
	c.parse(benchQuery)
	now := checkNow.UnixMilli()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := c.parse(benchQuery)
		if w := spanOf(&p.root, now-3600000, now, 60000, now, 0); w.from == 0 {
			b.Fatal("no span")
		}
	}
}

// BenchmarkMetricsqlParse is metricsql.Parse alone on a first-sight query, the floor of BenchmarkCheckFirstSight.
func BenchmarkMetricsqlParse(b *testing.B) {
	qs := make([]string, b.N)
	for i := range qs {
		qs[i] = `sum(rate(http_requests_total{job="api",n="` + strconv.Itoa(i) + `"}[5m])) by (instance)`
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := metricsql.Parse(qs[i]); err != nil {
			b.Fatal(err)
		}
	}
}
