package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/querylimits"
)

var (
	maxConcurrentRequests           = flag.Int("maxConcurrentRequests", 1000, "The maximum number of requests the gateway forwards at once, all tenants together. Others wait up to -maxQueueDuration for a free slot, then get 429 Too Many Requests with Retry-After. Zero means no limit")
	maxConcurrentPerTenantRequests  = flag.Int("maxConcurrentPerTenantRequests", 300, "The maximum number of requests the gateway forwards at once for one tenant, so one busy tenant cannot take every slot of -maxConcurrentRequests. Within a tenant, tokens with different extra_labels/extra_filters (teams) each get their own slots of this size, and unrestricted tokens theirs, so one team never takes another's. Others wait up to -maxQueueDuration, then get 429. Zero means no per-tenant limit")
	maxQueueDuration                = flag.Duration("maxQueueDuration", time.Second, "How long a request waits in all for free slots: one of its team's parse slots when its query is new to the gateway, then a slot under -maxConcurrentPerTenantRequests and -maxConcurrentRequests, before it gets 429. A read then waits its turn at the read backends apart, within -read.maxQueueDuration. Zero refuses at once")
	searchMaxQueryLen               = flag.Int("search.maxQueryLen", 16*1024, "The maximum length of a query / match[] / extra_filters[] arg of a read request, in the URL or in a form body; longer ones get 400 without being forwarded. Zero means no limit")
	searchMaxSelectorArgs           = flag.Int("search.maxSelectorArgs", 100, "The maximum number of match[] and extra_filters[] args of one read request, in the URL and the form body together; more get 400 without being parsed. A second query arg is always refused: VictoriaMetrics reads only one. Zero means no limit")
	searchMaxTotalQueryLen          = flag.Int("search.maxTotalQueryLen", 64*1024, "The maximum total length of the query, match[] and extra_filters[] args of one read request, in the URL and the form body together; more get 400 before the gateway parses any of them, which bounds the gateway's work per request. Must be at least -search.maxQueryLen. Zero means no limit")
	searchMaxPointsPerTimeseries    = flag.Int("search.maxPointsPerTimeseries", 11000, "The maximum number of points per series a range query (query_range) may ask for, counted as Prometheus counts its own limit of 11,000: (end-start)/step, and the points count_values may be evaluated at in a query's subqueries, all of them together (a subquery's window, the range and 5 minutes of staleness, over its step), judged on the query as it goes upstream. More get 400 without being forwarded. VictoriaMetrics holds every series of a query at every step in memory, and count_values makes a series of each value: over 29,000 steps one such query took VictoriaMetrics 1.79.5 to 7 GB, over 11,000 to 1 GB. Grafana never asks for more than 11,000. Zero means no limit")
	searchMaxSubqueryWindowPoints   = flag.Int64("search.maxSubqueryWindowPoints", 1e8, "The maximum number of points per series the rollup functions of a query may read over subqueries, and over raw samples for the functions that sort or count a window: for each subquery, the points it is evaluated at (the range over the step, or the enclosing subquery's window over its step) times the points of its window; for each window over a selector's raw samples under quantile_over_time, median_over_time, mad_over_time, histogram_over_time, distinct_over_time, mode_over_time, count_values_over_time and the like, the points it is evaluated at times its samples at one per -search.minSampleInterval; all together, judged on the query as it goes upstream. A subquery point weighs half under the cheapest functions (sum_over_time, avg_over_time, max_over_time, ...), 1 under those that fit every point, 2 under those that work out several rollups at once (rollup, rollup_rate, rollup_candlestick, ...), 8 under the functions that sort a window and 32 under those that keep a map of its values, a raw sample 8 under either, which cost that much more per point than sum_over_time, and an eighth under those that work out a variance or a fit of every sample (zscore_over_time, stddev_over_time, holt_winters, predict_linear, ...); the cheapest (sum_over_time, rate, ...) are not counted over raw samples. More get 400 without being forwarded. Nested subqueries multiply these, and VictoriaMetrics bounds each subquery alone and does not stop a rollup at -search.maxQueryDuration: two nested subqueries in an 80-byte query took v1.151 38 s of CPU per series, and a 41-byte quantile_over_time over a day of 1 s samples at 8 s kept both cores busy for 3.5 minutes with 4 series. A 30-day SLO window at a 1m step read at 4,000 points (a panel 4,000 pixels wide) is 86 million. Zero means no limit")
	searchMaxQueryWindowPoints      = flag.Int64("search.maxQueryWindowPoints", 1e10, "The maximum number of points the rollup functions of a query may read over subqueries, and over raw samples for the functions that sort or count a window, over all the series they read: what -search.maxSubqueryWindowPoints counts per series, weighed as it weighs them, times the series each subquery's query makes (bounded from the series its selectors read, as the read backends count them in the team's tenant and through its restriction: an aggregation by nothing makes one), and for each window over raw samples of a function that reads its every sample (those above, and sum_over_time, max_over_time, ...; not rate, increase, last_over_time, count_over_time) the samples all its series hold, as counted; each point or sample weighed by what it costs the function on VictoriaMetrics, about 1.3 ns a point (sum_over_time's sample 1, stddev_over_time's 5, quantile_over_time's 64 as over unsorted values, mad_over_time's 160). More get 400 without being forwarded. VictoriaMetrics bounds neither the product nor a rollup's time: `count(max_over_time(m[3h:1s]))` over 3 hours at step=1s, within the per-series bound, took v1.151 75 s of CPU over a team's 2,000 series (about 1.3 ns a point under max_over_time). A query whose rollups read at most 10^5 points a series is not counted (a dashboard's subquery: past the bound it would select over 10^5 series, whose plain queries cost as much), nor one whose selectors could not select enough series to pass it, each at most the read backends' -search.maxUniqueTimeseries as their /metrics list it. A selector's series are counted over the span the query reads it, widened by its staleness interval and a step either side, where VictoriaMetrics may align it. A 30-day SLO window at a 1m step read at 4,000 points is 86 million points a series it rolls up. Zero means no limit")
	searchMaxQueryPoints            = flag.Int64("search.maxQueryPoints", 3e7, "The maximum number of points the series a query of more than 10 arms makes may hold in all: each selector's series at the points it is evaluated at and 128 points more each (its labels and its fetch, about 1 KB), what its rollups, subqueries and phis (quantiles, histogram_quantiles) make of them, and a series of each number at every point, added up over every arm of its unions and binary operators, which VictoriaMetrics evaluates before it joins them and holds at once (about 8 bytes a point). An aggregation by nothing that VictoriaMetrics does as it goes over a selector or a rollup of one holds the 128 of each series it reads, not its points. The numbers of a query of more than 100 are judged without a count. The series are counted on the read backends in the team's tenant and through its restriction, one count of each selector over the span the query reads it. More get 400 without being forwarded. VictoriaMetrics bounds each selector alone (-search.maxUniqueTimeseries), not their sum: a union of 200 arms of one selector over 50 of a team's series took v1.151 from 648 to 1,267 MB, ten arms of quantiles of 20 phis to 1 GB. A query of at most 10 arms (one series of each selector making at most 10, added up: sum(rate(a[5m])) / sum(rate(b[5m])) is 2) is not counted: it holds what as many plain queries would. The functions that make a series of each bucket or value are bounded by -search.maxFanOutPoints instead. Zero means no limit")
	searchMaxQuerySelectors         = flag.Int("search.maxQuerySelectors", 50, "The maximum number of selectors one query may have, once its WITH templates are expanded and as it goes upstream (where the gateway copies a selector for each of a token's filter branches, on read backends that do not read or inside a selector's braces, each copy counts), each of which VictoriaMetrics reads apart and holds at once: more get 400 without being forwarded. A query counted for -search.maxQueryPoints has up to this many selector spans counted (16 where this is 0). No limit of VictoriaMetrics adds them up: 600 arms of rate(x[1h]) over 50 of a team's series at a step of an hour took v1.151 to 839 MB, 700 arms of sum(x) to 1.2 GB (an attacker's review). Zero means no limit; otherwise it must be more than 10, since a query of up to 10 arms is not looked at")
	searchMaxFanOutPoints           = flag.Int64("search.maxFanOutPoints", 1e7, "The maximum number of points the series that histogram_over_time, quantiles_over_time, count_values_over_time and count_values make in one query may hold, all together: of each series they read, histogram_over_time makes a series of each bucket (vmrange) its samples fall in, up to 488, quantiles_over_time one of each quantile asked, and count_values_over_time one of each distinct value, each as long as the points the query is evaluated at; count_values makes one of each distinct value its arg takes at those points, at most one of each point of each series of it, and VictoriaMetrics builds them all in memory before it answers, 20 bytes a point or more and about 32 points' worth a series (its labels; a function inside a subquery makes series as long as the rollup over it): histogram_over_time(x[5m]) over an hour at 8 s over 100 series of a team's own 1 s samples made 27,010 series of 451 points and took v1.151 from 160 to 431 MB, which its -search.maxMemoryPerQuery does not stop. Under an aggregation VictoriaMetrics does as it goes (sum, count, min, max, avg, ... directly over the function over a selector) only its groups count, once in each worker a read backend runs the query on (read on its /metrics, 32 while not known), and by (vmrange) is bounded from the query alone where that is within the bound; otherwise the gateway asks the read backends, in the team's tenant and through its token's restriction, how many series the function reads and how many buckets they fill (for count_values, the points of its arg and the distinct values of each of its series). More get 400 without being forwarded. Zero means no limit")
	searchMaxCountValuesComparisons = flag.Int64("search.maxCountValuesComparisons", 1e9, "The maximum number of comparisons the count_values of one query may make on a read backend before VictoriaMetrics v1.88.0 (1.79.5, Debian's), whose count_values compares each distinct value its arg takes with each series of its group at each point: its work grows with the square of the series, in one goroutine no query timeout stops (2,000 of a team's own series of a value each over an hour at 15 s took 1.79.5 2.9 s of a core, 6,000 over 2 hours at 5 s 451 s, past its 30 s -search.maxQueryDuration). The gateway asks the read backends, in the team's tenant and through its token's restriction, how many series of each of its groups the arg has and how many distinct values they take; more get 400 without being forwarded. Not counted while every read backend's /metrics lists -search.maxSeriesPerAggrFunc (v1.88.0 on, where count_values is linear; read with -read.learnBackendFlags). Zero means no limit")
	searchMinSampleInterval         = flag.Duration("search.minSampleInterval", time.Second, "The least time between two samples of a series the query limits assume where only the data knows: the samples a window over raw samples holds (-search.maxSubqueryWindowPoints), and the distinct values count_values_over_time may meet (-search.maxPointsPerTimeseries). A team that writes its samples closer than this gets that much more of VictoriaMetrics than the limits say. Where every read backend lists a -dedup.minScrapeInterval on its /metrics (read with its capacity, unless -read.maxConcurrentRequests is set), the longer of the two is assumed. A query refused for these windows alone is measured on the data (-search.measureSamples); without that, set it to the shortest scrape interval the teams use. Zero leaves windows over raw samples unbounded")
	searchMeasureSamples            = flag.Bool("search.measureSamples", true, "Whether a query that -search.maxSubqueryWindowPoints refuses only for its windows over raw samples, counted at one sample per -search.minSampleInterval, is judged again on the samples its series hold: the gateway asks the read backends, in the team's tenant and through its token's restriction, how many samples the query's windows read of each series (count_over_time of each window, which reads the data once and sorts nothing), one query's at a time per team and in one of its read slots, and forwards the query when the series that reads most, all the windows together, is within the limit. Only a query that would pass at one sample a minute is measured, at most 8 windows of it, each time it is sent (the team may have written samples since). So a team whose data is scraped every 15s gets its day-long quantile_over_time panels, and one that writes a sample a second does not")
	labelGuardMaxMemory             = flag.Int("write.labelGuardMaxMemory", 256<<20, "The bytes the label guard may hold at once for all writes it checks (a line until it is counted, a remote-write body read whole), a quarter of it (at least the 70MiB one remote write may need) for one token's labels in one tenant; past it writes get 503 to be sent again. The guard checks writes through tokens with extra_labels while a write backend truncates series over its label limit (-write.labelTruncationCheckInterval). Zero means no limit")
	maxReadBodyMemory               = flag.Int("maxReadBodyMemory", 256<<20, "The bytes the bodies of read and admin requests may hold at once, all together, from their first byte until the request ends; a quarter of it (at least two -maxReadBodySize) for one team (one tenant's tokens with the same extra_labels and extra_filters). Past it such a request gets 503, to be sent again. Zero means no limit")
	maxReadBodySize                 = flag.Int("maxReadBodySize", 4*1024*1024, "The maximum size of the body of a read or admin request (form-encoded query args); larger bodies get 413 without being forwarded. A form body that would reach VictoriaMetrics with more than 10MiB (Go's form limit, past which VictoriaMetrics ignores the body) gets 413 too. Write bodies are never limited: they stream through. Zero means no limit")
	readBodyTimeout                 = flag.Duration("http.readBodyTimeout", 10*time.Second, "How long a client may take to send the whole body of a read or admin request. The gateway reads such a body before the request takes a concurrency slot; a slower client gets 408. Zero means no limit")
	writeBodyIdleTimeout            = flag.Duration("http.writeBodyIdleTimeout", 30*time.Second, "How long the body of a write request may stall (no byte received) while it streams to the upstream. A stalled write gets 408, its upstream request is cancelled and its concurrency slot freed. Zero means no limit")
	deleteSeriesMinInterval         = flag.Duration("deleteSeries.minInterval", time.Minute, "How long after a delete of series (/api/v1/admin/tsdb/delete_series, graphite's tags/delSeries) the same tenant, and within it the same set of token restrictions (a team), may send the next one; sooner ones get 429 with Retry-After, not forwarded. A delete empties caches VictoriaMetrics shares between every team and tenant (its rollup result cache, which every dashboard then fills again; its MetricName->TSID cache, which sends every team's writes through the index until it is full again), so one team deleting in a loop would slow everyone. Give several match[] args to one delete. Replicas sharing -ratelimit.redis.url space them together; while Redis does not answer, and without it, each replica spaces the deletes it forwards. Zero means no limit")
	authMaxTokenSize                = flag.Int("auth.maxTokenSize", 16*1024, "The maximum size of a JWT token; longer tokens get 401 before any work on them")
)

// gatewayLimits is the gateway.Limits the flags describe.
func gatewayLimits() (gateway.Limits, error) {
	for _, f := range []struct {
		name string
		v    int
	}{{"maxConcurrentRequests", *maxConcurrentRequests}, {"maxConcurrentPerTenantRequests", *maxConcurrentPerTenantRequests},
		{"search.maxQueryLen", *searchMaxQueryLen}, {"search.maxSelectorArgs", *searchMaxSelectorArgs},
		{"search.maxTotalQueryLen", *searchMaxTotalQueryLen}, {"search.maxPointsPerTimeseries", *searchMaxPointsPerTimeseries}, {"maxReadBodySize", *maxReadBodySize}, {"auth.maxTokenSize", *authMaxTokenSize},
		{"write.labelGuardMaxMemory", *labelGuardMaxMemory}, {"maxReadBodyMemory", *maxReadBodyMemory}} {
		if f.v < 0 {
			return gateway.Limits{}, fmt.Errorf("-%s=%d must not be negative", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"search.maxSubqueryWindowPoints", *searchMaxSubqueryWindowPoints}, {"search.maxQueryWindowPoints", *searchMaxQueryWindowPoints}, {"search.maxQueryPoints", *searchMaxQueryPoints}, {"search.maxFanOutPoints", *searchMaxFanOutPoints},
		{"search.maxCountValuesComparisons", *searchMaxCountValuesComparisons}} {
		if f.v < 0 {
			return gateway.Limits{}, fmt.Errorf("-%s=%d must not be negative", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"maxQueueDuration", *maxQueueDuration}, {"read.maxQueueDuration", *readMaxQueueDuration}, {"write.maxQueueDuration", *writeMaxQueueDuration}, {"http.readBodyTimeout", *readBodyTimeout}, {"http.writeBodyIdleTimeout", *writeBodyIdleTimeout}, {"deleteSeries.minInterval", *deleteSeriesMinInterval}, {"search.minSampleInterval", *searchMinSampleInterval}} {
		if f.v < 0 {
			return gateway.Limits{}, fmt.Errorf("-%s=%s must not be negative", f.name, f.v)
		}
	}
	if n := *searchMaxQuerySelectors; n < 0 || n > 0 && n <= querylimits.UncountedArms {
		return gateway.Limits{}, fmt.Errorf("-search.maxQuerySelectors=%d: want 0 (no limit) or more than %d: a query of up to %d arms is not looked at", n, querylimits.UncountedArms, querylimits.UncountedArms)
	}
	for _, k := range []*slotKind{readSlots, writeSlots} {
		if *k.replicas < 1 {
			return gateway.Limits{}, fmt.Errorf("-%s.replicas=%d: want how many gateway replicas forward %ss to the same backends, at least 1", k.name, *k.replicas, k.name)
		}
	}
	if total, one := *searchMaxTotalQueryLen, *searchMaxQueryLen; total > 0 && (one == 0 || total < one) {
		return gateway.Limits{}, fmt.Errorf("-search.maxTotalQueryLen=%d is less than -search.maxQueryLen=%d: a request with one query "+
			"within the latter would be refused; raise -search.maxTotalQueryLen or set it to 0", total, one)
	}
	return gateway.Limits{
		MaxConcurrentRequests:          *maxConcurrentRequests,
		MaxConcurrentPerTenantRequests: *maxConcurrentPerTenantRequests,
		MaxQueueDuration:               *maxQueueDuration,
		ReadQueueDuration:              *readMaxQueueDuration,
		ReadSlotLending:                *readSlotLending,
		WriteQueueDuration:             *writeMaxQueueDuration,
		MaxQueryLen:                    *searchMaxQueryLen,
		MaxSelectorArgs:                *searchMaxSelectorArgs,
		MaxTotalQueryLen:               *searchMaxTotalQueryLen,
		MaxPointsPerTimeseries:         int64(*searchMaxPointsPerTimeseries),
		MaxSubqueryWindowPoints:        *searchMaxSubqueryWindowPoints,
		MaxQueryWindowPoints:           *searchMaxQueryWindowPoints,
		MaxQueryPoints:                 *searchMaxQueryPoints,
		MaxQuerySelectors:              *searchMaxQuerySelectors,
		MaxFanOutPoints:                *searchMaxFanOutPoints,
		MaxCountValuesComparisons:      *searchMaxCountValuesComparisons,
		MinSampleInterval:              *searchMinSampleInterval,
		MeasureSamples:                 *searchMeasureSamples,
		MaxReadBodySize:                int64(*maxReadBodySize),
		LabelGuardMemory:               int64(*labelGuardMaxMemory),
		ReadBodyMemory:                 int64(*maxReadBodyMemory),
		ReadBodyTimeout:                *readBodyTimeout,
		WriteBodyIdleTimeout:           *writeBodyIdleTimeout,
		DeleteInterval:                 *deleteSeriesMinInterval,
	}, nil
}
