package querylimits

import (
	"net/url"
	"strconv"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// The targets (issue 18) are under 100 ns for the check of a query seen before and under 2 µs for the limits' own
// work on a query seen first; the parse of a new query is the request's, shared with the enforcer
// (BenchmarkCheckFirstSightShared), and costs what BenchmarkMetricsqlParse shows. Each benchmark reports cpu-ns/op
// beside ns/op: on a shared machine the wall time counts the waits for a core.
// Run: go test -run '^$' -bench . -benchmem ./internal/querylimits/

const benchQuery = `sum(rate(http_requests_total{job="api",code=~"5.."}[5m])) by (instance) / sum(rate(http_requests_total{job="api"}[5m])) by (instance)`

// BenchmarkCheckCached is the check of a dashboard's repeated query_range: the parse is cached, and the args are
// recorded as the gateway's split of the URL records them (enforce.Known).
func BenchmarkCheckCached(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	args := url.Values{"query": {benchQuery}, "start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}
	in := enforce.Args{URL: args, Known: recorded(args)}
	if _, err := c.Check(limited, rt, in, checkNow); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		if _, err := c.Check(limited, rt, in, checkNow); err != nil {
			b.Fatal(err)
		}
	}
	clock.report()
}

// BenchmarkCheckCachedLookup is BenchmarkCheckCached for a caller that hands the args as maps only: the limits look
// them up by name.
func BenchmarkCheckCachedLookup(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	args := url.Values{"query": {benchQuery}, "start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}
	if _, err := c.Check(limited, rt, enforce.Args{URL: args}, checkNow); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		if _, err := c.Check(limited, rt, enforce.Args{URL: args}, checkNow); err != nil {
			b.Fatal(err)
		}
	}
	clock.report()
}

// recorded is what the gateway's split of args records for the limits (enforce.Known): the same slices.
func recorded(args url.Values) *enforce.Known {
	var known enforce.Known
	for name, vs := range args {
		if k, ok := enforce.ArgOf(name); ok {
			known.Set(k, enforce.FromURL, vs)
		}
	}
	return &known
}

func firstSightQueries(n int) []string {
	qs := make([]string, n)
	for i := range qs {
		qs[i] = `sum(rate(http_requests_total{job="api",n="` + strconv.Itoa(i) + `"}[5m])) by (instance)`
	}
	return qs
}

// BenchmarkCheckFirstSight is the check of a query never seen before, parse included: what the check costs when
// the enforcer has nothing to rewrite (the parse is then the limits' alone).
func BenchmarkCheckFirstSight(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	qs := firstSightQueries(b.N)
	args := url.Values{"query": {""}, "start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}
	known := recorded(args) // shares the query's slice: the query set below is the one the check reads
	b.ReportAllocs()
	b.ResetTimer()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		args["query"][0] = qs[i]
		if _, err := c.Check(limited, rt, enforce.Args{URL: args, Known: known}, checkNow); err != nil {
			b.Fatal(err)
		}
	}
	clock.report()
}

// BenchmarkCheckFirstSightShared is the limits' own work on a query never seen before (span tree, @ modifiers,
// blocked patterns, the cache), the parse being the request's one, which the enforcer takes over afterwards: the
// queries are parsed in batches with the timer stopped.
func BenchmarkCheckFirstSightShared(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	qs := firstSightQueries(b.N)
	const batch = 512
	parsed := make([]*enforce.Parsed, batch)
	args := url.Values{"query": {""}, "start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}
	known := recorded(args) // shares the query's slice: the query set below is the one the check reads
	b.ReportAllocs()
	b.ResetTimer()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			clock.stop()
			for j := range parsed {
				parsed[j] = &enforce.Parsed{}
				if i+j < len(qs) {
					if _, err := parsed[j].Parse(qs[i+j]); err != nil {
						b.Fatal(err)
					}
				}
			}
			clock.start()
			b.StartTimer()
		}
		args["query"][0] = qs[i]
		if _, err := c.Check(limited, rt, enforce.Args{URL: args, Parsed: parsed[i%batch], Known: known}, checkNow); err != nil {
			b.Fatal(err)
		}
	}
	clock.report()
}

// BenchmarkCheckNoLimits is the cost for a tenant without limits.
func BenchmarkCheckNoLimits(b *testing.B) {
	c := mustConfig(b, checkConfig)
	rt := mustRoute(b, "/api/v1/query_range")
	b.ReportAllocs()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		if c.Applies(other, rt) {
			b.Fatal("tenant 8 has no limits")
		}
	}
	clock.report()
}

// BenchmarkSpanCached is the query's part of a cached check: the cache lookup and the arithmetic of its reach. The
// rest of BenchmarkCheckCached is reading the args (url.Values lookups, the time and step values).
func BenchmarkSpanCached(b *testing.B) {
	c := mustConfig(b, checkConfig)
	c.parse(benchQuery, nil)
	now := checkNow.UnixMilli()
	b.ReportAllocs()
	b.ResetTimer()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		p := c.parse(benchQuery, nil)
		if from, _, _ := p.span(now-3600000, now, 60000, now, 0); from == 0 {
			b.Fatal("no span")
		}
	}
	clock.report()
}

// BenchmarkMetricsqlParse is metricsql.Parse alone on a first-sight query, the floor of BenchmarkCheckFirstSight.
func BenchmarkMetricsqlParse(b *testing.B) {
	qs := firstSightQueries(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	clock := startCPUClock(b)
	for i := 0; i < b.N; i++ {
		if _, err := metricsql.Parse(qs[i]); err != nil {
			b.Fatal(err)
		}
	}
	clock.report()
}
