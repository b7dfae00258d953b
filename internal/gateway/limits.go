package gateway

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
)

// Limits bound what one client may ask of the gateway. Zero means no limit.
type Limits struct {
	// MaxConcurrentRequests is -maxConcurrentRequests: requests in flight at once, all tenants together.
	MaxConcurrentRequests int
	// MaxConcurrentPerTenantRequests is -maxConcurrentPerTenantRequests: requests in flight at once per isolation
	// unit (a tenant, and within it each set of label restrictions).
	MaxConcurrentPerTenantRequests int
	// MaxQueueDuration is -maxQueueDuration: how long a request waits for a free slot before 429.
	MaxQueueDuration time.Duration
	// ReadQueueDuration is -read.maxQueueDuration: how long a read waits for its turn at the read backends' slots
	// (SetReadSlots) before 429.
	ReadQueueDuration time.Duration
	// ReadSlotLending is -read.slotLending: a unit alone in wanting more than its share of the read backends' slots,
	// whose reads are quick, is lent the rest and a quarter more (fairSlots).
	ReadSlotLending bool
	// WriteQueueDuration is -write.maxQueueDuration: how long a write waits for its turn at the write backends' slots
	// (SetWriteSlots) before 429.
	WriteQueueDuration time.Duration
	// MaxQueryLen is -search.maxQueryLen: the longest selector arg (query, match[], extra_filters[]) (400).
	MaxQueryLen int
	// MaxSelectorArgs is -search.maxSelectorArgs: the most match[] and extra_filters[] args of one request (400).
	MaxSelectorArgs int
	// MaxTotalQueryLen is -search.maxTotalQueryLen: the total length of the selector args of one request (400).
	MaxTotalQueryLen int
	// MaxPointsPerTimeseries is -search.maxPointsPerTimeseries: the most points a range query may ask of each series,
	// counted as Prometheus counts its limit, (end-start)/step (400).
	MaxPointsPerTimeseries int64
	// MaxSubqueryWindowPoints is -search.maxSubqueryWindowPoints: the most points the rollups over a query's subqueries,
	// and the functions that sort or count a window over raw samples, may read per series (querylimits.SubqueryWork)
	// (400).
	MaxSubqueryWindowPoints int64
	// MaxQueryWindowPoints is -search.maxQueryWindowPoints: the most points the rollups over a query's subqueries, and
	// the functions that sort or count a window over raw samples, may read over all the series they read
	// (querywork.go) (400).
	MaxQueryWindowPoints int64
	// MaxQueryPoints is -search.maxQueryPoints: the most points the series a query of more than
	// querylimits.UncountedArms arms makes may hold in all, added up over its arms (querywork.go) (400).
	MaxQueryPoints int64
	// MaxQuerySelectors is -search.maxQuerySelectors: the most selectors one query may have, 0 or more than
	// querylimits.UncountedArms (querywork.go) (400).
	MaxQuerySelectors int
	// maxSeries is the most series a read backend selects of one selector (SetBackendMaxSeries); 0: not known.
	maxSeries int64
	// MinSampleInterval is -search.minSampleInterval: the least time between two samples of a series the limits assume
	// for the windows over raw samples; 0 leaves those windows unbounded.
	MinSampleInterval time.Duration
	// MaxFanOutPoints is -search.maxFanOutPoints: the most points the series that histogram_over_time and
	// quantiles_over_time make in one query may hold in all (fanout.go) (400).
	MaxFanOutPoints int64
	// workers is the most workers a read backend runs one query on (SetBackendWorkers); 0: not known, taken to be
	// maxQueryWorkers.
	workers int
	// MaxCountValuesComparisons is -search.maxCountValuesComparisons: the most comparisons the count_values of one query
	// may make on a read backend whose count_values compares each distinct value with each series at each point
	// (countvalues.go) (400).
	MaxCountValuesComparisons int64
	// linearCountValues says every read backend's count_values is linear in the series it reads
	// (SetBackendLinearCountValues): MaxCountValuesComparisons is then not counted.
	linearCountValues bool
	// MeasureSamples is -search.measureSamples: a query refused only for its windows over raw samples is judged on the
	// samples the read backends count in them (samples.go).
	MeasureSamples bool
	// MaxReadBodySize is -maxReadBodySize: the largest body of a read or admin request (413).
	MaxReadBodySize int64
	// ReadBodyMemory is -maxReadBodyMemory: the bytes the bodies of read and admin requests may hold at once, a
	// quarter of it for one isolation unit's (503).
	ReadBodyMemory int64
	// ReadBodyTimeout is -http.readBodyTimeout: how long a read or admin request's body may take to arrive (408).
	ReadBodyTimeout time.Duration
	// WriteBodyIdleTimeout is -http.writeBodyIdleTimeout: how long a write body may stall (408).
	WriteBodyIdleTimeout time.Duration
	// DeleteInterval is -deleteSeries.minInterval: how long after one delete of series an isolation unit may send the
	// next (429).
	DeleteInterval time.Duration
	// LabelGuardMemory is -write.labelGuardMaxMemory: the bytes the label guard may hold for all writes at once, a
	// quarter of it for one isolation unit's (503).
	LabelGuardMemory int64
}

// vmMaxFormSize is the most of a form body VictoriaMetrics reads: Go's Request.ParseForm stops at 10 MiB and
// VictoriaMetrics then answers from the URL args alone, as if the body had not been sent.
const vmMaxFormSize = 10 << 20

// selectorArgs are the args the gateway parses as MetricsQL (the enforcer rewrites them, and checks them for
// tenant labels in cluster mode), so their number and length bound its work for one request.
var selectorArgs = []string{"query", "match[]", "match", "extra_filters[]", "extra_filters"}

// checkArgs bounds the selector args of a read request, in the URL and the form together, before anything parses
// them: each is at most -search.maxQueryLen long, together at most -search.maxTotalQueryLen, there are at most
// -search.maxSelectorArgs of them besides `query`, and `query` is given once: VictoriaMetrics reads only the first.
func (g *Gateway) checkArgs(rt route.Route, q, form url.Values) error {
	l := g.limits
	if rt.Args == route.QueryArg {
		if err := checkStep(q, form); err != nil {
			return err
		}
		if rt.API == "query_range" && l.MaxPointsPerTimeseries > 0 {
			if err := checkPoints(q, form, l.MaxPointsPerTimeseries, time.Now()); err != nil {
				return err
			}
		}
	}
	queries, selectors, total := 0, 0, 0
	for _, where := range []struct {
		name string
		vs   url.Values
	}{{"URL", q}, {"request body", form}} {
		for _, k := range selectorArgs {
			for _, v := range where.vs[k] {
				if l.MaxQueryLen > 0 && len(v) > l.MaxQueryLen {
					return httperr.New(http.StatusBadRequest, fmt.Sprintf("the %s arg in the %s is %d bytes long; at most %d are accepted "+
						"(-search.maxQueryLen): shorten the query, e.g. with a recording rule", k, where.name, len(v), l.MaxQueryLen))
				}
				switch {
				case k == "query":
					if !rt.Args.HasQuery() {
						continue // not read, not parsed
					}
					queries++
				case k == "match[]" || k == "match":
					if rt.Args != route.MatchArgs {
						continue
					}
					selectors++
				default:
					selectors++
				}
				total += len(v)
			}
		}
	}
	if queries > 1 {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the request has %d query args (in the URL and the body together); "+
			"VictoriaMetrics reads only one: send the query once", queries))
	}
	if l.MaxSelectorArgs > 0 && selectors > l.MaxSelectorArgs {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the request has %d match[] / extra_filters[] args; at most %d are accepted "+
			"(-search.maxSelectorArgs): merge selectors with `or`, or split the request", selectors, l.MaxSelectorArgs))
	}
	if l.MaxTotalQueryLen > 0 && total > l.MaxTotalQueryLen {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query, match[] and extra_filters[] args of the request are %d bytes together; "+
			"at most %d are accepted (-search.maxTotalQueryLen): send fewer or shorter selectors, or split the request", total, l.MaxTotalQueryLen))
	}
	return nil
}

// checkPoints refuses a range query that asks for more than limit points per series. VictoriaMetrics holds a
// query's every series at every step in memory, and some functions make a series of each value they meet:
// count_values("v", time()) over 29,000 steps took 1.79.5 to 7 GB before it refused the answer, over 11,000 steps
// to 1 GB. Prometheus refuses past 11,000, and Grafana's Prometheus data source never asks for more. Every value
// of start, end and step counts, in the URL and the form: the widest range at the finest step is judged.
func checkPoints(q, form url.Values, limit int64, now time.Time) error {
	start, end, step, err := evalSpan("query_range", q, form, now)
	if err != nil || step <= 0 {
		return err // a step VictoriaMetrics refuses goes on to it
	}
	if points := (end - start) / step; points > limit {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the range query asks for %d points per series ((end-start)/step, "+
			"from start=%.3f to end=%.3f at step=%.3fs); at most %d are accepted (-search.maxPointsPerTimeseries): use a coarser step "+
			"or a shorter range", points, float64(start)/1e3, float64(end)/1e3, float64(step)/1e3, limit))
	}
	return nil
}

// evalSpan is querylimits.EvalSpan with VictoriaMetrics' reading of a range whose start is past its end: from the
// start, over its default step of 5 minutes.
func evalSpan(api string, q, form url.Values, now time.Time) (a, b, step int64, err error) {
	a, b, step, err = querylimits.EvalSpan(api, form, q, now)
	if err == nil && b < a && api == "query_range" {
		b = a + (5 * time.Minute).Milliseconds()
	}
	return a, b, step, err
}

// SetBackendDedup tells the gateway the read backends' -dedup.minScrapeInterval, the least of them (0: one has none):
// no series has samples closer than that when a query reads them, so the query limits assume it where it is longer
// than -search.minSampleInterval. Assuming one sample a second refused dashboards over 15 s data that cost
// VictoriaMetrics a second a series (an attacker's review).
func (g *Gateway) SetBackendDedup(d time.Duration) {
	d = max(d, 0)
	if was := time.Duration(g.backendDedup.Swap(int64(d))); was != d && g.limits.MinSampleInterval > 0 {
		slog.Info("the read backends keep a sample of a series per -dedup.minScrapeInterval when a query reads them: the query limits "+
			"assume the longer of it and -search.minSampleInterval", "dedup", d, "minSampleInterval", g.limits.MinSampleInterval)
	}
}

// SetBackendMaxQueryLen tells the gateway the read backends' -search.maxQueryLen, the least of them (0: not known).
func (g *Gateway) SetBackendMaxQueryLen(n int) { g.backendMaxQueryLen.Store(int64(max(n, 0))) }

// SetBackendBraces tells the gateway whether every read backend reads `or` inside a selector's braces (VictoriaMetrics
// v1.92.0 on). Then the selectors of a token of several filters go out as one rather than as a union of one per
// filter, under which VictoriaMetrics no longer aggregates a rollup as it goes: a team's heatmap, `sum(
// histogram_over_time(x[5m])) by (vmrange)`, built every series' 488 buckets in its memory (fanout.go).
func (g *Gateway) SetBackendBraces(ok bool) {
	if g.backendBraces.Swap(ok) != ok {
		slog.Info("the read backends read `or` inside a selector's braces: a token's filters go out inside the braces of each selector", "braces", ok)
	}
}

// SetBackendWorkers tells the gateway the most workers a read backend runs one query on (0: one is not known): an
// aggregation VictoriaMetrics does as it goes holds its groups once in each of them (fanout.go).
func (g *Gateway) SetBackendWorkers(n int) {
	if g.backendWorkers.Swap(int64(max(n, 0))) != int64(n) {
		slog.Info("the read backends run a query on this many workers at most, each holding the groups of an aggregation of "+
			"the functions -search.maxFanOutPoints bounds, which counts them so (0: not known, taken to be 32)", "workers", n)
	}
}

// SetBackendMaxSeries tells the gateway the most series a read backend selects of one selector (its
// -search.maxUniqueTimeseries; 0 while one is not known): a query whose work over that many series of each of its
// selectors is within -search.maxQueryWindowPoints is not counted (querywork.go).
func (g *Gateway) SetBackendMaxSeries(n int64) {
	if g.backendMaxSeries.Swap(max(n, 0)) != n {
		slog.Info("the read backends select at most this many series of a selector (-search.maxUniqueTimeseries): a query whose "+
			"rollups would read no more than -search.maxQueryWindowPoints over that many is not counted (0: not known, every "+
			"query with subqueries is)", "series", n)
	}
}

// SetBackendLinearCountValues tells the gateway whether every read backend's count_values is linear in the series it
// reads (VictoriaMetrics v1.88.0 on, whose /metrics lists -search.maxSeriesPerAggrFunc); false while one is not known.
// Before that, its work grows with the square of the series, which -search.maxCountValuesComparisons bounds
// (countvalues.go).
func (g *Gateway) SetBackendLinearCountValues(ok bool) {
	if g.backendLinearCountValues.Swap(ok) != ok {
		slog.Info("the read backends' count_values is linear in the series it reads: -search.maxCountValuesComparisons is "+
			"not counted while it is (false: a backend before v1.88.0, or one not read yet)", "linear", ok)
	}
}

// longestQuery is the length of the longest query arg of a request, in the URL or the form.
func longestQuery(q, form url.Values) int {
	n := 0
	for _, vs := range [][]string{q["query"], form["query"]} {
		for _, v := range vs {
			n = max(n, len(v))
		}
	}
	return n
}

// backendQueryLen is the read backends' -search.maxQueryLen for a request of route rt: VictoriaMetrics checks it on
// /api/v1/query and query_range only; 0 for others, and while it is not known.
func (g *Gateway) backendQueryLen(rt route.Route) int {
	if !rt.Evaluates() {
		return 0
	}
	return int(g.backendMaxQueryLen.Load())
}

// checkQueryLen refuses a query of sent bytes that the rewrite for the token's series made longer (its args now q and
// form) than the read backends' maxLen: their own refusal would name a length the client never sent. A query too
// long as sent is the backend's to refuse, in its words.
func checkQueryLen(a *auth.Access, maxLen, sent int, q, form url.Values) error {
	if maxLen == 0 || sent > maxLen {
		return nil
	}
	rewritten := longestQuery(q, form)
	if rewritten <= maxLen {
		return nil
	}
	why := "once limited to the token's series (each selector gets the token's extra labels and filters)"
	switch n := a.Enforcer.NumBranches(); {
	case !a.Enforcer.Restricted():
		why = "as the gateway rewrites it"
	case n > 1:
		why = fmt.Sprintf("once limited to the token's series (each selector gets the token's extra labels, and is copied for each "+
			"of its %d extra filter branches)", n)
	}
	return httperr.New(http.StatusUnprocessableEntity, fmt.Sprintf("the query is %d bytes as sent and %d %s, past the read backend's "+
		"-search.maxQueryLen=%d: shorten the query, or have the backend's -search.maxQueryLen raised", sent, rewritten, why, maxLen))
}

// evalLimits are the limits checkEvaluation applies: the flags', the sample interval raised to the backends' dedup.
func (g *Gateway) evalLimits() Limits {
	l := g.limits
	if d := time.Duration(g.backendDedup.Load()); l.MinSampleInterval > 0 && d > l.MinSampleInterval {
		l.MinSampleInterval = d
	}
	l.workers = int(g.backendWorkers.Load())
	l.maxSeries = g.backendMaxSeries.Load()
	l.linearCountValues = g.backendLinearCountValues.Load()
	return l
}

// checkEvaluation refuses a query whose evaluation would cost VictoriaMetrics more than the limits allow, judged on
// the query as it goes upstream, after the rewrite, which may copy a rollup call into each arg of a union:
//   - count_values as much memory as one evaluated at more than l.MaxPointsPerTimeseries points per series
//     (querylimits.CountValues). count_values makes a series of each value it meets, so its memory grows with the
//     square of the points: `count_values("v", time())[29000s:1s]` in an instant query costs what the range query
//     over 29,000 steps does. Other subqueries' points are left to VictoriaMetrics' own bound (30,000 in 1.79.5,
//     100,000 since): their memory grows with the points only;
//   - rollups over subqueries that read more than l.MaxSubqueryWindowPoints subquery points per series
//     (querylimits.SubqueryWork): the points each subquery is evaluated at, times the points of its window. Nested
//     subqueries multiply them, and VictoriaMetrics bounds each subquery alone, so 80 bytes of two nested subqueries
//     took v1.151 38 s of CPU per series, past its own -search.maxQueryDuration (an attacker's review).
//
// A query refused only for its windows over raw samples is judged again on the samples they hold, as measure counts
// them (nil: not measured; samples.go).
func checkEvaluation(rt route.Route, q, form url.Values, parsed *enforce.Parsed, l Limits, now time.Time, measure measurer) error {
	if !rt.Evaluates() {
		return nil
	}
	rng := &querylimits.Range{Read: func() (int64, int64, int64, error) { return evalSpan(rt.API, q, form, now) },
		SampleInterval: l.MinSampleInterval.Milliseconds()}
	instant := rt.API == "query"
	for _, vs := range [2]url.Values{form, q} {
		for _, text := range vs["query"] {
			// Each walk reads only the queries it concerns, and the range only for those (querylimits.Range).
			if l.MaxPointsPerTimeseries > 0 {
				if err := checkCountValues(text, parsed, instant, rng, now, l); err != nil {
					return err
				}
			}
			if l.MaxSubqueryWindowPoints > 0 {
				work, err := querylimits.SubqueryWork(text, parsed, instant, rng, now.UnixMilli())
				if err != nil {
					return err
				}
				if work > float64(l.MaxSubqueryWindowPoints) {
					return judgeMeasured(text, parsed, instant, rng, now, work, l, measure)
				}
			}
		}
	}
	return nil
}

// judgeMeasured judges a query whose rollups read more than l.MaxSubqueryWindowPoints at one sample per
// l.MinSampleInterval: when its windows over raw samples made the difference, it would pass at one sample a minute
// and measure is set, on the samples measure counts in those windows; otherwise, and when those are too many too, it
// refuses it. The bound is per series, and a series read by several windows (a union of a token's filters copies one
// window into each branch, and a series may match several) reads what all of them read of it: the windows' counts
// are added series by series, and the series that reads most decides (a first version added each window's most, so
// a token of two filters had its day-long panels refused at twice their cost: a legitimate user's review).
func judgeMeasured(text string, parsed *enforce.Parsed, instant bool, rng *querylimits.Range, now time.Time, work float64, l Limits, measure measurer) error {
	limit := float64(l.MaxSubqueryWindowPoints)
	base, decide := rawWindowsDecide(text, parsed, instant, rng, now, l)
	if measure == nil || !decide {
		return subqueryWorkError(work, decide, l)
	}
	sparse := *rng
	sparse.SampleInterval = max(rng.SampleInterval, measureSparsest.Milliseconds())
	if w, err := querylimits.SubqueryWork(text, parsed, instant, &sparse, now.UnixMilli()); err != nil || w > limit {
		return subqueryWorkError(work, decide, l)
	}
	var ws []querylimits.Window
	listed := *rng
	listed.Windows = &ws
	if _, err := querylimits.SubqueryWork(text, parsed, instant, &listed, now.UnixMilli()); err != nil {
		return err
	}
	distinct := map[countKey]bool{}
	for _, w := range ws {
		distinct[keyOf(w)] = true
	}
	if len(ws) == 0 || len(distinct) > measureMax {
		return subqueryWorkError(work, decide, l)
	}
	counts, err := measure(ws)
	if err != nil {
		measuredFailed.Inc()
		return countFailed(err, func(refused error) string {
			return subqueryWorkError(work, decide, l).Error() + fmt.Sprintf("; the gateway could not count the samples the windows hold: %s", refused)
		}, func(err error) string {
			return fmt.Sprintf("the query's windows over raw samples would read more than -search.maxSubqueryWindowPoints=%d points per "+
				"series at one sample per -search.minSampleInterval=%s, and the read backends did not count the samples they hold: %s; "+
				"send the query again", l.MaxSubqueryWindowPoints, l.MinSampleInterval, err)
		})
	}
	if w := base + mostRead(ws, counts); w > limit {
		measuredRefused.Inc()
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the rollup functions of the query would read %.3g points per series "+
			"(over a subquery, the points it is evaluated at times the points of its window, nested subqueries multiplying them; "+
			"over raw samples, for the functions that sort or count a window, the samples the series hold in all its windows, as "+
			"VictoriaMetrics counted them; weighed by the function); at most %d are accepted (-search.maxSubqueryWindowPoints): "+
			"use coarser steps, shorter windows or a shorter range", w, l.MaxSubqueryWindowPoints))
	}
	measuredAdmitted.Inc()
	return nil
}

// mostRead is what the series that reads most reads in the windows ws, weighed by their functions: each window, as
// often as ws lists it, the least of what it was counted to read of the series and what was assumed; of an instant
// query's two readings (Window.Alt), the larger.
func mostRead(ws []querylimits.Window, counts map[countKey]seriesCounts) float64 {
	// The windows a query lists may be many (a 16 KiB query repeats one hundreds of times), the distinct ones at most
	// measureMax: each distinct window and reading once, with its weights added (a review: 400 listed windows over
	// 100,000 series took 2.6 s of CPU).
	type reading struct {
		key countKey
		alt bool
	}
	type weighed struct {
		assumed, eighths float64
	}
	distinct := map[reading]*weighed{}
	for _, w := range ws {
		r := reading{keyOf(w), w.Alt}
		d := distinct[r]
		if d == nil {
			d = &weighed{assumed: w.Assumed}
			distinct[r] = d
		}
		d.assumed = min(d.assumed, w.Assumed)
		d.eighths += float64(w.Weight)
	}
	keys := map[string]bool{"": true} // "": a series no count lists
	for _, c := range counts {
		for k := range c.bySeries {
			keys[k] = true
		}
	}
	most := 0.0
	for k := range keys {
		var read [2]float64
		for r, d := range distinct {
			i := 0
			if r.alt {
				i = 1
			}
			read[i] += min(d.assumed, float64(counts[r.key].of(k))) * d.eighths / 8
		}
		most = max(most, read[0], read[1])
	}
	return most
}

// rawWindowsDecide is what the query's rollups read without its windows over raw samples, and whether that is within
// the limit.
func rawWindowsDecide(text string, parsed *enforce.Parsed, instant bool, rng *querylimits.Range, now time.Time, l Limits) (float64, bool) {
	withoutRaw := *rng
	withoutRaw.SampleInterval = 0
	sub, err := querylimits.SubqueryWork(text, parsed, instant, &withoutRaw, now.UnixMilli())
	return sub, err == nil && sub <= float64(l.MaxSubqueryWindowPoints)
}

// subqueryWorkError refuses a query whose rollups read work, more than l.MaxSubqueryWindowPoints. When the windows
// over raw samples made the difference (rawDecide), it says how many samples a series is assumed to have, which only the operator
// can correct to the data's (a legitimate user's review: panels over 15 s data refused at one sample a second, and
// the user was told to use coarser steps).
func subqueryWorkError(work float64, rawDecide bool, l Limits) error {
	msg := fmt.Sprintf("the rollup functions of the query would read %.3g points per series (over a subquery, the points it "+
		"is evaluated at times the points of its window, nested subqueries multiplying them; over raw samples, for the "+
		"functions that sort or count a window, the points evaluated at times the samples of the window at one per "+
		"-search.minSampleInterval=%s; weighed by the function); at most %d are accepted (-search.maxSubqueryWindowPoints): "+
		"use coarser steps, shorter windows or a shorter range", work, l.MinSampleInterval, l.MaxSubqueryWindowPoints)
	if rawDecide {
		msg += fmt.Sprintf(". The windows over raw samples are counted at one sample every %s; where the teams' data is "+
			"scraped less often, the gateway's operator sets -search.minSampleInterval to the shortest scrape interval (or "+
			"-dedup.minScrapeInterval on VictoriaMetrics, which the gateway reads)", l.MinSampleInterval)
	}
	return httperr.New(http.StatusBadRequest, msg)
}

func checkCountValues(text string, parsed *enforce.Parsed, instant bool, rng *querylimits.Range, now time.Time, l Limits) error {
	limit := l.MaxPointsPerTimeseries
	load, err := querylimits.CountValues(text, parsed, instant, rng, now.UnixMilli())
	if err != nil {
		return err
	}
	if ot := load.OverTime; ot.Points > limit {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("count_values_over_time in the query may make up to %d series of each "+
			"series it reads (a series of each distinct value its windows meet, at one sample per -search.minSampleInterval=%s), "+
			"each as long as the points it is evaluated at: as much memory as count_values at %d points per series; at most %d "+
			"are accepted (-search.maxPointsPerTimeseries): use a shorter window or range, or a coarser step", ot.Most,
			l.MinSampleInterval, ot.Points, limit))
	}
	if load.Points <= limit {
		return nil
	}
	what := fmt.Sprintf("count_values in the query is evaluated at %d points per series", load.Points)
	if load.Count > 1 {
		what = fmt.Sprintf("count_values in the query is evaluated %d times, at up to %d points per series: as much memory as "+
			"once at %d points", load.Count, load.Most, load.Points)
	}
	return httperr.New(http.StatusBadRequest, what+fmt.Sprintf("; at most %d are accepted (-search.maxPointsPerTimeseries), since "+
		"count_values makes a series of each value it meets: use a coarser subquery step or a shorter window", limit))
}

func bodyTooLarge(n, limit int64) error {
	size := "more than " + strconv.FormatInt(limit, 10)
	if n > 0 {
		size = strconv.FormatInt(n, 10)
	}
	return httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is %s bytes; read requests may carry "+
		"at most %d (-maxReadBodySize): send fewer or shorter args", size, limit))
}

// checkStep refuses a step longer than enforce.MaxStep, at which the query's durations in steps were weighed. One the
// gateway cannot read is left to VictoriaMetrics, which refuses it.
func checkStep(q, form url.Values) error {
	for _, vs := range []url.Values{q, form} {
		for _, v := range vs["step"] {
			if d, err := metricsql.PositiveDurationValue(v, 0); err == nil && d > enforce.MaxStep.Milliseconds() {
				return httperr.New(http.StatusBadRequest, fmt.Sprintf("step=%.40s is longer than a year, the longest step the gateway forwards: "+
					"a query's durations in steps (5i) are that many steps long; ask for more points", v))
			}
		}
	}
	return nil
}
