package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
)

// histogram_over_time and quantiles_over_time make several series of each series they read, all of which
// VictoriaMetrics builds in memory unless an aggregation it does as it goes takes them (querylimits.FanOuts): a team's
// `histogram_over_time(x[5m])` over an hour of 300 of its own series took v1.151 to 751 MB, and its
// -search.maxMemoryPerQuery and -search.maxResponseSeries did not stop it. The gateway bounds the points of the series
// they make, all together, by -search.maxFanOutPoints: where the aggregation over one bounds its groups (`sum(...) by
// (vmrange)`) from the query alone, otherwise as the read backends count the series it reads, in the team's tenant
// and through its restriction, as the samples of windows are counted (samples.go): one number a function, in one of
// the team's count and read slots, an inner function before the query that holds it, and no more once the query is
// past the bound.

var (
	fanOutAdmitted = metrics.NewCounter(`vmgateway_query_fanout_measured_total{result="admitted"}`)
	fanOutRefused  = metrics.NewCounter(`vmgateway_query_fanout_measured_total{result="refused"}`)
	fanOutFailed   = metrics.NewCounter(`vmgateway_query_fanout_measured_total{result="failed"}`)
)

// fanProbe is a count that bounds the series one function makes: the instant query q at time at answers a number n,
// and the function makes at most n×mult series, each costing cost points (fanCost). Where that is past the bound,
// exact, when set, is a count of them as VictoriaMetrics makes them, which costs more to ask; span is the time both
// read back. guard, when set, is the most series exact itself builds at once, asked first: count_values_over_time's
// exact builds every distinct value of a series, which dense data makes millions (an attacker's review: 1 ms samples
// took v1.151 to 3.4 GB on the exact count of a query it then refused).
//
// grid, when set, is a count asked at gridAt, a range (start:end:step, ask), that bounds the series too, on the points
// of a range query that are not the multiples of its step, which q and exact count: the larger of the two is made.
//
// closer, when set, is a count closer than exact, asked where exact is still past the bound and affordable says its
// answer may be built to count it; a backend that refuses it leaves exact's count.
//
// groups, when set, is a count of the groups of an aggregation that makes at most perGroup series of each (histogram:
// its buckets), which bounds the series too: the least of the two is made. scale, when set, multiplies every count
// but groups': the series made of each one counted.
type fanProbe struct {
	q, exact, guard, at   string
	grid, gridAt          string
	closer                string
	groups                string
	mult, perGroup, scale float64
	cost, span            int64
}

// made is how many series p counts, asked with ask: its exact count too where past says the first is past the bound,
// and affordable says what its guard counts may be built to count them (a guard that is q is not asked again).
func (p fanProbe) made(ask func(q, at string) (float64, error), past, affordable func(made float64) bool) (float64, error) {
	if p.scale > 0 {
		m, err := p.unscaled(ask, func(m float64) bool { return past(m * p.scale) }, affordable)
		if err != nil || p.groups == "" || !past(m*p.scale) {
			return m * p.scale, err
		}
		g, err := ask(p.groups, p.at)
		return min(m*p.scale, g*p.perGroup), err
	}
	return p.unscaled(ask, past, affordable)
}

// unscaled is made without p's scale and groups.
func (p fanProbe) unscaled(ask func(q, at string) (float64, error), past, affordable func(made float64) bool) (float64, error) {
	n, err := ask(p.q, p.at)
	if err != nil {
		return 0, err
	}
	m, exact := n*p.mult, p.exact != "" && past(n*p.mult)
	if exact && p.guard != "" {
		g := n
		if p.guard != p.q {
			if g, err = ask(p.guard, p.at); err != nil {
				return 0, err
			}
		}
		exact = affordable(g)
	}
	if exact {
		if n, err = ask(p.exact, p.at); err != nil {
			return 0, err
		}
		m = min(m, n)
		if p.closer != "" && past(m) && affordable(n) {
			// A backend without its function refuses it (1.79.5): the exact count stands then.
			if m, err = tighter(ask, p.closer, p.at, m); err != nil {
				return 0, err
			}
		}
	}
	if p.grid != "" {
		if n, err = ask(p.grid, p.gridAt); err != nil {
			return 0, err
		}
		m = max(m, n)
	}
	return m, nil
}

// tighter is the least of n and the count q at at, a closer one than n's; n where the read backends refuse q (a
// function or a comparison the release does not take), which leaves the counts before it.
func tighter(ask func(q, at string) (float64, error), q, at string, n float64) (float64, error) {
	c, err := ask(q, at)
	var refused countError
	switch {
	case err == nil:
		return min(n, c), nil
	case errors.As(err, &refused):
		return n, nil
	}
	return n, err
}

// seriesCost is what a series costs VictoriaMetrics besides its points, in points: its labels and headers, about 500
// bytes on v1.151 where a point is 16 to 20 (an attacker's review: 972,000 series of one point took 622 MB).
const seriesCost = 32

// fanCost is what each series f makes costs, in points: its own, and inside subqueries the series the rollups over
// them make of it, held beside it. An aggregation between them makes fewer, so this bounds those of its groups
// (boundedFanOut's are counted as they are).
func fanCost(f querylimits.FanOut) int64 {
	c := f.Points + seriesCost
	if f.Outer > 0 {
		c += f.Outer + seriesCost
	}
	return c
}

// fanCounter runs judge with an ask of the read backends, for one request; nil when the gateway cannot ask (no read
// backends).
type fanCounter func(judge func(ask func(q, at string) (float64, error)) error) error

// fanCounterFor is the fanCounter of a's request. Its parse slot, if it holds one, is given back while it counts.
func (g *Gateway) fanCounterFor(ctx context.Context, a *auth.Access, gate *parseGate) fanCounter {
	if g.read == nil {
		return nil
	}
	return func(judge func(ask func(q, at string) (float64, error)) error) error {
		gate.yield()
		return g.counting(ctx, a, func(ctx context.Context) error {
			asked := map[string]float64{} // a union of a team's filters may copy a call, and the query repeat one
			return judge(func(q, at string) (float64, error) {
				if n, ok := asked[at+" "+q]; ok {
					return n, nil
				}
				ans, err := g.ask(ctx, a, q, at, 64<<10)
				n := 0.0
				for _, r := range ans {
					n += float64(r.n)
				}
				if err == nil {
					asked[at+" "+q] = n
				}
				return n, err
			})
		})
	}
}

// checkFanOut refuses a query whose functions that make several series of each series they read would make series of
// more than l.MaxFanOutPoints points in all, and, in front of a read backend whose count_values is not linear, one whose
// count_values would make more than l.MaxCountValuesComparisons comparisons (countvalues.go), judged on the query as it
// goes upstream: the rewrite for a token of several filters puts a union under an aggregation, which VictoriaMetrics
// then no longer does as it goes.
func checkFanOut(rt route.Route, q, form url.Values, parsed *enforce.Parsed, l Limits, now time.Time, count fanCounter) error {
	if !rt.Evaluates() || l.MaxFanOutPoints <= 0 && !l.countsComparisons() {
		return nil
	}
	rng := &querylimits.Range{Read: func() (int64, int64, int64, error) { return evalSpan(rt.API, q, form, now) }}
	for _, vs := range [2]url.Values{form, q} {
		for _, text := range vs["query"] {
			fans, err := querylimits.FanOuts(text, parsed, rt.API == "query", rng, now.UnixMilli())
			if err != nil {
				return err
			}
			fans = slices.DeleteFunc(fans, func(f querylimits.FanOut) bool {
				// Only the comparisons of count_values count one point, and only they are counted without the bound.
				cv := f.Func == "count_values"
				return !cv && l.MaxFanOutPoints <= 0 || cv && f.From == f.To && !l.countsComparisons()
			})
			if len(fans) == 0 {
				continue
			}
			if k := spanArgTwice(q, form); k != "" {
				return httperr.New(http.StatusBadRequest, fmt.Sprintf("the request gives %s more than once, with different values, "+
					"and %s in the query would be counted at the points of one while VictoriaMetrics may read the other "+
					"(-search.maxFanOutPoints): give it once", k, fans[0].Func))
			}
			if err := countsRerunCountValues(fans, l); err != nil {
				return err
			}
			if pinned := rt.API == "query" || slices.ContainsFunc(fans, byValues); pinned {
				if arg := querylimits.AmbiguousTime(rt.API, form, q, now); arg != "" {
					// pinSpan would set it to one of its readings, not perhaps the backend's (a review: 14 hours off).
					return httperr.New(http.StatusBadRequest, fmt.Sprintf("%s reads as a different time in different "+
						"VictoriaMetrics releases or time zones (a time without a zone, or a number of 12 digits or more), and %s "+
						"in the query is counted at the very time it is evaluated at (-search.maxFanOutPoints): give it as Unix "+
						"seconds, or in RFC3339 with a zone", arg, fans[0].Func))
				}
			}
			lookback, step := lookbackArgs(q, form)
			fanLookback := lookback
			if rt.API == "query" {
				fanLookback += step
			}
			for _, alt := range [2]bool{false, true} {
				if l.MaxFanOutPoints > 0 {
					if err := judgeFanOut(fans, alt, l, count, fanLookback); err != nil {
						return err
					}
				}
				if err := judgeCountValuesWork(fans, alt, l, count, lookback+step); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// pinSpan sets when a query whose calls the gateway counts is evaluated to the absolute times the gateway counted
// them at, in the URL alone: a time relative to now is read by VictoriaMetrics after the counts, a time it reads
// otherwise (v1.151 rounds `.0005` of a second to a millisecond, where the float the gateway reads truncates) or moves
// (an instant query within latency_offset of now, unless nocache) puts its points elsewhere than the counts' (attackers'
// reviews: 1.1 GB of v1.151 from 10 series through each). An instant query gets its time and nocache=1; a range query
// with count_values, which the gateway counts on the step's multiples, its start, end and step, moved to the multiples
// as VictoriaMetrics moves them with its cache on (AdjustStartEnd), and always: by less than a step, and the distinct
// values are counted. It reports whether it changed q or form; a request giving one of them twice is left to
// checkFanOut. Only a query that calls one of the counted functions is pinned: taking every query whose text might
// (any backslash, any byte past ASCII) turned VictoriaMetrics' cache off for the instant queries of every dashboard
// with an escaped regexp.
func pinSpan(rt route.Route, q, form url.Values, parsed *enforce.Parsed, now time.Time) bool {
	if rt.API != "query_range" && rt.API != "query" || q == nil {
		return false
	}
	counted, countValues := false, false
	for _, vs := range [2]url.Values{form, q} {
		for _, text := range vs["query"] {
			fan, cv := querylimits.CallsFanOut(text, parsed)
			counted, countValues = counted || fan, countValues || cv
		}
	}
	if !counted || rt.API == "query_range" && !countValues || spanArgTwice(q, form) != "" ||
		querylimits.AmbiguousTime(rt.API, form, q, now) != "" {
		return false // checkFanOut refuses a query it would pin where its time reads as several
	}
	a, b, step, err := evalSpan(rt.API, q, form, now)
	if err != nil || step <= 0 {
		return false // refused or left to VictoriaMetrics as before
	}
	if rt.API == "query" {
		for _, k := range [...]string{"time", "nocache"} {
			delete(form, k)
		}
		q.Set("time", vmSeconds(a))
		q.Set("nocache", "1")
		return true
	}
	points := (b-a)/step + 1
	a -= a % step
	if r := b % step; r > 0 {
		b += step - r
	}
	for (b-a)/step+1 > points {
		b -= step
	}
	for _, k := range [...]string{"start", "end", "step"} {
		delete(form, k)
	}
	q.Set("start", vmSeconds(a))
	q.Set("end", vmSeconds(b))
	q.Set("step", vmSeconds(step))
	return true
}

// lookbackArgs are the request's max_lookback and lookback_delta, and apart its step, each as "&" and the args encoded:
// a count asks its query with them, so that its selectors read back what the query's do. The step is the window of the
// selectors and rollups that have none, which ask sends with a count at one time: an instant query's counts, and
// count_values' of one point, of a range query too (an attacker's review counted 0 series of the last 5 minutes where
// `step=2h` read 60,000 written an hour before; a second, the same of a range query from its end to its end); a count
// over a subquery reads at the subquery's own.
func lookbackArgs(q, form url.Values) (lookback, step string) {
	arg := func(k string) string {
		v := form.Get(k)
		if v == "" {
			v = q.Get(k)
		}
		if v == "" {
			return ""
		}
		return "&" + k + "=" + url.QueryEscape(v)
	}
	return arg("max_lookback") + arg("lookback_delta"), arg("step")
}

// spanArgTwice is the first of start, end, step, time, the lookback args and nocache the request gives twice with
// different texts, in the URL and the form together; "" when none. VictoriaMetrics reads one of them (the form's first),
// and the span judged is the widest and finest of all: the counts of a subquery, or of count_values, must be of the very
// points the query is evaluated at, which the multiples of one step are not of another (a review: a start off the
// step's multiples in the form beside one on them in the URL).
func spanArgTwice(q, form url.Values) string {
	for _, k := range [...]string{"start", "end", "step", "time", "max_lookback", "lookback_delta", "nocache"} {
		first, seen := "", false
		for _, vs := range [2]url.Values{form, q} {
			for _, v := range vs[k] {
				if seen && v != first {
					return k
				}
				first, seen = v, true
			}
		}
	}
	return ""
}

// judgeFanOut judges the functions of fans of one reading of a query (querylimits.Window.Alt): first those whose
// series the query alone bounds, then each of the others as count counts it, until all are counted or their points
// are past the limit. Those the query bounds are counted too where together they are past it: an aggregation holds
// its groups once in each worker a read backend runs the query on (up to 32), which the query alone does not bound
// as tightly as the series a team has.
func judgeFanOut(fans []querylimits.FanOut, alt bool, l Limits, count fanCounter, lookback string) error {
	limit, workers := float64(l.MaxFanOutPoints), l.queryWorkers()
	total, made := 0.0, 0.0
	var probes []fanProbe
	var bounded []querylimits.FanOut
	var names []string
	label := "vmrange"
	probe := func(f querylimits.FanOut) {
		p := probeFanOut(f, workers)
		evals := 8.0 // histogram_over_time costs about 8 times count_over_time's sample, twice under an aggregation
		if f.Group != nil {
			evals = 16
		}
		// count_values' exact count costs what its first does (probeCountValues).
		if heavy := float64(p.span) / float64(max(l.MinSampleInterval.Milliseconds(), 1)) * evals; !byValues(f) &&
			l.MaxSubqueryWindowPoints > 0 && heavy > float64(l.MaxSubqueryWindowPoints) {
			// Counted as the team's own `count(histogram_over_time(x[span]))` is: a span the limits would refuse it is
			// judged on the samples alone.
			p.exact = ""
		}
		// The arg of a subquery, or count_values', reads its selectors with the query's lookback.
		p.at += lookback
		if p.gridAt != "" {
			p.gridAt += lookback
		}
		probes = append(probes, p)
	}
	for _, f := range fans {
		if f.Alt != alt {
			continue
		}
		if !slices.Contains(names, f.Func) {
			names = append(names, f.Func)
			if len(names) == 1 {
				label = cmp.Or(f.Label, "phi") // "": a label given by an expression
			}
		}
		if byValues(f) && f.From == f.To {
			continue // one point: no more series than its arg (judgeCountValuesWork counts count_values' work)
		}
		if f.Moving && (f.Subquery || byValues(f)) {
			return movingError(f, "the series it makes (-search.maxFanOutPoints)")
		}
		if f.InstantRange {
			return instantRangeError("-search.maxFanOutPoints")
		}
		if f.Several {
			// VictoriaMetrics joins the args' series (a union would drop those of equal labels, `histogram(x, x)`).
			return httperr.New(http.StatusBadRequest, fmt.Sprintf("%s in the query has several args, whose series the gateway "+
				"does not count together (-search.maxFanOutPoints): give it one, as in `%s(union(a, b))` where their labels differ", f.Func, f.Func))
		}
		if f.AtUnknown {
			return atUnknownError(f, "the series it makes (-search.maxFanOutPoints)")
		}
		if groups, ok := boundedFanOut(f); ok {
			// Each worker holds its groups, and the series the function makes of the one series it reads, as long as the
			// function's points; only the groups reach the rollups of subqueries above (a heatmap under
			// `max_over_time(...[1h:1h])` over a day was counted 40 to 60 times over, a review).
			n := float64(workers) * (groups + float64(f.Most))
			made += n
			total += n * float64(f.Points+seriesCost)
			if f.Outer > 0 {
				made += groups
				total += groups * float64(f.Outer+seriesCost)
			}
			bounded = append(bounded, f)
			continue
		}
		probe(f)
	}
	if total > limit && count != nil && len(probes)+len(bounded) <= measureMax {
		// Bounded from the query alone, past the limit: counted, as each worker holds no more groups than the series
		// it reads fill.
		total, made = 0, 0
		for _, f := range bounded {
			probe(f)
		}
	}
	refuse := func(counted bool) error {
		how := "as the read backends counted the series it reads"
		if !counted {
			how = fmt.Sprintf("as the aggregations over it bound them, a series of each group in each of the %d workers a read "+
				"backend runs the query on", workers)
		}
		hint := fmt.Sprintf("aggregate it directly, as in `sum(%s(...)) by (%s)`, select fewer series", names[0], label)
		switch names[0] {
		case "count_values":
			hint = "count fewer distinct values (round them first, as in `count_values(\"v\", round(x, 10))`), select fewer series"
		case "histogram":
			hint = "make fewer groups (its by), select fewer series"
		}
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("%s in the query would make %.0f series (of each series it reads, a "+
			"series of each bucket its samples fall in, of each quantile asked, or of each value counted; %s), %.3g points in all, which VictoriaMetrics "+
			"holds in memory at once; at most %d are accepted (-search.maxFanOutPoints): %s, or use a coarser step or a shorter range",
			strings.Join(names, " and "), made, how, total, l.MaxFanOutPoints, hint))
	}
	if total > limit {
		return refuse(false)
	}
	if len(probes) == 0 || count == nil {
		return nil
	}
	// A call repeated is counted once (fanCounterFor keeps the answers), and held as often as it is repeated.
	distinct := map[string]bool{}
	for _, p := range probes {
		distinct[p.q+" @"+p.at] = true
	}
	if len(distinct) > measureMax {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query has %d calls of %s whose series the gateway would count "+
			"(-search.maxFanOutPoints); at most %d are counted for one query: aggregate them, or split the query",
			len(distinct), strings.Join(names, " and "), measureMax))
	}
	err := count(func(ask func(q, at string) (float64, error)) error {
		for _, p := range probes {
			m, err := p.made(ask, func(m float64) bool { return total+m*float64(p.cost) > limit },
				func(g float64) bool { return g*(1+seriesCost) <= limit })
			if err != nil {
				return err
			}
			made += m
			if total += m * float64(p.cost); total > limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		fanOutFailed.Inc()
		calls := strings.Join(names, " and ")
		return countFailed(err, func(refused error) string {
			return fmt.Sprintf("the gateway could not count the series %s in the query reads (-search.maxFanOutPoints): %s", calls, refused)
		}, func(err error) string {
			return fmt.Sprintf("the read backends did not count the series %s in the query reads (-search.maxFanOutPoints): %s; send the "+
				"query again", calls, err)
		})
	}
	if total > limit {
		fanOutRefused.Inc()
		return refuse(true)
	}
	fanOutAdmitted.Inc()
	return nil
}

// movingError refuses f, whose count of what (a limit's flag named) would be of other values than the query's
// (querylimits.FanOut.Moving).
func movingError(f querylimits.FanOut, what string) error {
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("%s in the query reads %s, whose values depend on the range or "+
		"time it is evaluated over (start(), end(), now(), an @ of time(), the range_ and running_ functions, rand, "+
		"interpolate, keep_last_value, smooth_exponential, ...) or on which series the whole range holds (topk_max and "+
		"its kin, limitk, any, a limit): the gateway cannot count %s with a query of its own; use numbers or time() in "+
		"place of the times, or take such calls out of it", f.Func, f.Source, what))
}

// instantRangeError refuses a count_values directly in the subquery an instant query is (querylimits.FanOut.InstantRange),
// which the limit flag would count.
func instantRangeError(flag string) error {
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("count_values directly in the subquery an instant query is cannot be "+
		"counted (%s): VictoriaMetrics runs that subquery as a range query at points the gateway does not know before it "+
		"runs; send its query to /api/v1/query_range over the subquery's window and step", flag))
}

// atUnknownError refuses f, under an @ whose time the walk did not resolve: the gate lets through only the times
// compileAt resolves; should one not be, what f reads is not known.
func atUnknownError(f querylimits.FanOut, what string) error {
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("%s in the query is under an @ modifier whose time the gateway "+
		"cannot work out before the query runs, and so cannot count %s: use a number, start(), end() or now() after @",
		f.Func, what))
}

// keepsLabel tells whether the groups of g tell f's series apart by f.Label, and others is the labels they keep of
// the series f reads: by (vmrange, job) keeps vmrange and job; without (job) keeps vmrange and all but job.
func keepsLabel(f querylimits.FanOut) (keeps bool, others []string) {
	g := f.Group
	if f.Label == "" {
		// Not known (a phi label given by an expression): any of the labels may be it, and each is taken to be another.
		if g.Op == "without" {
			return true, nil
		}
		return true, g.Labels
	}
	if g.Op == "without" {
		return !slices.Contains(g.Labels, f.Label), nil
	}
	for _, l := range g.Labels {
		if l == f.Label {
			keeps = true
		} else {
			others = append(others, l)
		}
	}
	return keeps, others
}

// boundedFanOut is the most series f makes when the query alone bounds them: under an aggregation VictoriaMetrics
// does as it goes, by nothing but f's label (or nothing), at most a series of each of f's; one without it.
func boundedFanOut(f querylimits.FanOut) (float64, bool) {
	if f.Group == nil || f.Group.Op == "without" {
		return 0, false
	}
	keeps, others := keepsLabel(f)
	if len(others) > 0 {
		return 0, false
	}
	n := 1.0
	if keeps {
		n = float64(f.Most)
	}
	return n, true
}

// probeFanOut is the count of the series f makes: of each series it reads (or each group of them), at most a series of
// each sample or point it holds in the span f's windows cover, at most f.Most; for a function that makes its every
// series of each series it reads (quantiles_over_time), f.Most of each. Under an aggregation VictoriaMetrics does as it
// goes, each of a read backend's workers (up to workers) holds the groups of the series it reads: a group of n series
// is held min(n, workers) times, and no more than the buckets its series fill (v1.151 at 32 workers took 1.5 GB for a
// heatmap that took 160 MB at 2). The span is counted as probeQuery counts a window's samples, from a step before f's
// first window to a step after its last. A series rarely fills every bucket (VictoriaMetrics keeps about 12 digits of
// the values of a block, and latencies span a few decades): where that count is past the bound, histogram_over_time
// over the whole span, counted as VictoriaMetrics does as it goes, counts the buckets each series fills, a series of
// each at most (exact), and the most the workers together hold of them, 44 ns a sample on v1.151 where
// count_over_time takes 1. Either costs what the team's own query of it would, `count_over_time(x[span])`, which the
// limits leave to VictoriaMetrics, and `count(histogram_over_time(x[span]))`, asked only where the limits would admit it
// (judgeFanOut): a cheap query of short windows over a long span (`histogram_over_time(x[1s])` at a step of a day over
// years) makes the gateway count no more than the team could.
func probeFanOut(f querylimits.FanOut, workers int) fanProbe {
	if byValues(f) {
		return probeCountValues(f)
	}
	span := f.To - f.From + 2*f.Step + f.Window
	src := fmt.Sprintf("%s[%dms]", f.Source, span)
	if f.Subquery {
		src = fmt.Sprintf("(%s)[%dms:%dms]", f.Source, span, f.Inner)
	}
	x := "count_over_time(" + src + ")"
	keeps, by, groups := true, "", ""
	if g := f.Group; g != nil {
		var others []string
		keeps, others = keepsLabel(f)
		// Groups by the metric's name, or by every label, are taken to be the series: count_over_time drops the name.
		// An aggregation without a modifier is one by nothing (an attacker's review: its probe printed `()`, which
		// VictoriaMetrics refuses).
		op := cmp.Or(g.Op, "by")
		if op == "without" || !slices.Contains(others, "__name__") && !slices.Contains(others, "*") {
			m := metricsql.ModifierExpr{Op: op, Args: others}
			if op == "without" {
				m.Args = g.Labels
			}
			by = " " + string(m.AppendString(nil))
			groups = " " + string((&metricsql.ModifierExpr{Op: op, Args: g.Labels}).AppendString(nil))
		}
	}
	p := fanProbe{at: fmt.Sprintf("%.3f", float64(f.To+f.Step)/1e3), mult: 1, cost: fanCost(f), span: span}
	switch {
	case keeps && f.ByData && by != "":
		p.q = fmt.Sprintf("sum(clamp_max(sum(clamp_max(%s, %d))%s, %d))", x, f.Most, by, f.Most*int64(workers))
	case keeps && f.ByData:
		p.q = fmt.Sprintf("sum(clamp_max(%s, %d))", x, f.Most)
	case by != "":
		p.q = fmt.Sprintf("sum(clamp_max(count(%s)%s, %d))", x, by, workers)
	default:
		p.q = "count(" + x + ")"
	}
	if keeps && !f.ByData {
		p.mult = float64(f.Most)
	}
	h := f.Func + "(" + f.Args + src + ")"
	if keeps && f.ByData && !f.Subquery {
		// Over a subquery VictoriaMetrics would build the buckets of every series it makes, at one point, to count
		// them: as many series as the query refused for them. Under the aggregation, each of its groups is held in as
		// many workers as it has series, at most workers: fewer than the buckets of every series where many series
		// fill the same ones (a heatmap of 200 series of 50 buckets on 32 workers holds a few thousand, not 10,000).
		p.exact = "count(" + h + ")"
		if groups != "" {
			p.exact = fmt.Sprintf("sum(clamp_max(count(%s)%s, %d))", h, groups, workers)
		}
	}
	if p.exact != "" && f.Func == "count_values_over_time" {
		// A worker builds every distinct value of the one series it reads to count them, which no Most bounds.
		p.guard = fmt.Sprintf("clamp_max(count(%s), %d) * max(%s)", x, workers, x)
	}
	if f.Group == nil {
		return p
	}
	// Under the aggregation, each worker also builds every series the function makes of the one series it reads, whole,
	// before it adds them to its groups (newTimeseriesMap): a series' buckets, or its quantiles, in as many workers at
	// once as there are series, at most workers. `sum(histogram_over_time(x[5m]))`, one group, at 11,000 points took
	// v1.151 at 32 workers to 1.5 GB (an attacker's review).
	busy := fmt.Sprintf("clamp_max(count(%s), %d)", x, workers)
	switch {
	case f.ByData:
		base := p.q
		p.q = fmt.Sprintf("(%s) + %s * max(clamp_max(%s, %d))", base, busy, x, f.Most)
		if !f.Subquery {
			p.exact = fmt.Sprintf("(%s) + %s * max(count(%s) without (%s))", cmp.Or(p.exact, base), busy, h, f.Label)
		}
	case keeps:
		p.q = fmt.Sprintf("(%s) + %s", p.q, busy) // times the quantiles
	default:
		p.q = fmt.Sprintf("(%s) + %s * %d", p.q, busy, f.Most)
	}
	return p
}

// probeCountValues is the count of the series the count_values f makes: a series of each distinct value its arg takes
// at f's points, each as long as them. At most one of each point of each series of the arg, which the arg evaluated as
// a subquery at f's step counts, as the team's own query of the arg would cost (q). VictoriaMetrics evaluates a
// subquery at the multiples of its step: the points of a count_values inside one, and of a range query whose start is
// one, which it may also move its start to (AdjustStartEnd); otherwise the arg is counted at the query's own points,
// as a range query (grid): an arg's series may be there at those points only (`x and on() (vector(time()) % 60 == 7)`).
// Where that is past the bound, the distinct values of each series of the arg at those points, added up, bound them
// closer (exact: `count_values("version", build_info)` makes a series of each version, not of each point), as
// distinct_over_time counts them, equal as count_values' are; and where that is still past it, the distinct values
// across the series (closer: a fleet's 6,000 hosts of one version make one series, not 6,000), as
// count_values_over_time makes them, which 1.79.5 does not have.
func probeCountValues(f querylimits.FanOut) fanProbe {
	span := f.To - f.From + 2*f.Step
	src := fmt.Sprintf("(%s)[%dms:%dms]", f.Source, span, f.Step)
	p := fanProbe{q: "sum(count_over_time(" + src + "))", at: fmt.Sprintf("%.3f", float64(f.To+f.Step)/1e3), mult: 1,
		cost: fanCost(f), span: span}
	p.exact = "sum(distinct_over_time(" + src + "))"
	// Across the series of each of its groups: a series of each distinct value of each, one point each, grouped by the
	// value and count_values' own grouping (less its label, as VictoriaMetrics does; an unknown label is kept, which
	// counts more groups).
	m := metricsql.ModifierExpr{Op: "by", Args: []string{"distinct_value"}}
	if g := f.ValuesBy; g != nil && g.Op == "without" {
		m = metricsql.ModifierExpr{Op: "without", Args: g.Labels}
	} else if g != nil && g.Op == "by" {
		for _, l := range g.Labels {
			if l != f.Label || f.Label == "" {
				m.Args = append(m.Args, l)
			}
		}
	}
	// count_values_over_time drops the metric's name: grouped by it, the closer count would take the values of every
	// name as one group's, and count fewer than count_values makes (as the histogram groups count did, a review). The
	// exact count stands then.
	if !slices.Contains(m.Args, "__name__") && !slices.Contains(m.Args, "*") {
		p.closer = "count(count " + string(m.AppendString(nil)) + ` (count_values_over_time("distinct_value", ` + src + `)))`
	}
	if !f.Subquery && f.From%f.Step != 0 {
		p.grid, p.gridAt = "count("+f.Source+")", vmSeconds(f.From)+":"+vmSeconds(f.To)+":"+vmSeconds(f.Step)
	}
	if f.Func == "histogram" {
		// A bucket is made by a value that falls in it, so no more buckets than distinct values; and VictoriaMetrics
		// turns its vmrange buckets into le ones, held beside them: an le series of each bucket's end, of each gap's, and
		// +Inf, so that a group of one value makes three (a review). Three times the values, and in each group at most
		// its 488 buckets and as many le series and +Inf.
		p.scale, p.perGroup = 3, float64(2*f.Most+1)
		by := ""
		g := f.ValuesBy
		if g != nil && g.Op != "" && (g.Op == "without" || len(g.Labels) > 0) {
			by = " " + string((&metricsql.ModifierExpr{Op: g.Op, Args: g.Labels}).AppendString(nil))
		}
		// The groups are counted over count_over_time, which drops the metric's name: a grouping by it would be
		// counted as one group of all (a review), and is not capped.
		if g == nil || g.Op != "by" || !slices.Contains(g.Labels, "__name__") {
			p.groups = "count(count(count_over_time(" + src + "))" + by + ")"
		}
	}
	return p
}

// byValues says f makes a series of each distinct value (count_values), or of each bucket of the values (the
// aggregation histogram), of each of its groups: counted on its arg's values (probeCountValues).
func byValues(f querylimits.FanOut) bool { return f.Func == "count_values" || f.Func == "histogram" }

// vmSeconds prints ms as seconds VictoriaMetrics reads back as ms exactly: it reads a step, and 1.79.5 a time too, as
// a float it multiplies by 1000 and truncates, so that "1.003" is 1002 ms.
func vmSeconds(ms int64) string {
	x := float64(ms) / 1e3
	for int64(x*1e3) < ms {
		x = math.Nextafter(x, math.Inf(1))
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

// maxQueryWorkers is the most workers VictoriaMetrics runs one query on by default (-search.maxWorkersPerQuery: its
// CPUs, at most 32); a read backend whose workers are not known is taken to run that many.
const maxQueryWorkers = 32

// queryWorkers is the most workers a read backend runs one query on, as l knows it.
func (l Limits) queryWorkers() int {
	if l.workers > 0 {
		return l.workers
	}
	return maxQueryWorkers
}
