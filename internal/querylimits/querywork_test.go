package querylimits

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// queryWork is the work of q over rng at time now, over the series and samples c counts.
func queryWork(q string, pq *enforce.Parsed, instant bool, rng *Range, now int64, c *Counts) (float64, error) {
	wk, err := PrepareWork(q, pq, instant, rng.get, rng.SampleInterval, now)
	if wk == nil {
		return 0, err
	}
	l, err := wk.Total(c)
	return l.Work, err
}

// TestQueryWork: a query's work over all its series is each subquery's per-series work times the series its query
// makes, bounded from the series its selectors read (aggregations by nothing make one, `or` both sides', functions
// their phis), and each weighed window over raw samples the samples its series hold, as counted.
func TestQueryWork(t *testing.T) {
	const now = int64(1_700_000_000_000)
	const h = int64(3_600_000)
	series := map[string]float64{`m`: 2000, `a`: 10_000, `b`: 10_000, `x`: 300, `y`: 7}
	// perSeries is SubqueryWork's; want is queryWork's, in units of perSeries, or exact when perSeries is 0.
	for _, tc := range []struct {
		q          string
		instant    bool
		rng, step  int64
		times      float64 // want = SubqueryWork × times
		samples    float64 // what Samples answers
		want       float64 // when times is 0
		wantSeries int     // distinct selectors asked
	}{
		// The attacker's review: 3 hours at 1 s, every series of m rolled up.
		{q: `count(max_over_time(m[3h:1s]))`, rng: 3 * h, step: 1000, want: 10801 * 10800 * 0.5 * 2000, wantSeries: 1},
		{q: `max_over_time(m[1h:1m])`, rng: 6 * h, step: 60_000, times: 2000, wantSeries: 1},
		// An SLO panel: the subquery's query makes one series of each side, whatever a and b hold.
		{q: `avg_over_time((sum(rate(a[5m])) / sum(rate(b[5m])))[30d:1m])`, rng: 24 * h, step: 900_000, times: 2, wantSeries: 2},
		{q: `avg_over_time((sum(rate(a[5m])) by (job))[1d:1m])`, rng: 24 * h, step: 900_000, times: 10_000, wantSeries: 1},
		{q: `avg_over_time((sum(rate(a[5m])) without (job))[1d:1m])`, rng: 24 * h, step: 900_000, times: 10_000, wantSeries: 1},
		{q: `max_over_time((a or b)[1h:1m])`, rng: 6 * h, step: 60_000, times: 20_000, wantSeries: 2},
		{q: `max_over_time(topk(5, m)[1h:1m])`, rng: 6 * h, step: 60_000, times: 2000, wantSeries: 1},
		{q: `max_over_time((m * 2 + vector(1))[1h:1m])`, rng: 6 * h, step: 60_000, times: 2000, wantSeries: 1},
		{q: `max_over_time(histogram_quantiles("phi", 0.5, 0.9, 0.99, y)[1h:1m])`, rng: 6 * h, step: 60_000, times: 21, wantSeries: 1},
		{q: `max_over_time(quantiles("phi", 0.5, 0.9, y)[1h:1m])`, rng: 6 * h, step: 60_000, times: 2, wantSeries: 1}, // by nothing: a series of each phi
		{q: `max_over_time((quantiles("phi", 0.5, 0.9, y) by (job))[1h:1m])`, rng: 6 * h, step: 60_000, times: 14, wantSeries: 1},
		{q: `max_over_time(histogram(y)[1h:1m])`, rng: 6 * h, step: 60_000, times: 7 * 428, wantSeries: 1}, // a bucket of each series at each of the 428 points the subquery evaluates it at
		{q: `max_over_time(rollup(y[5m])[1h:1m])`, rng: 6 * h, step: 60_000, times: 21, wantSeries: 1},
		// Nested: the outer subquery rolls up the series the inner one makes of m, as many as m has.
		{q: `max_over_time(max_over_time(m[1h:1m])[1h:1m])`, instant: true, step: 60_000, times: 2000, wantSeries: 1},
		{q: `sum(max_over_time(m[1h:1m])) + max_over_time(y[1h:1m])`, rng: 6 * h, step: 60_000, want: 2007 * (361 * 60 * 0.5), wantSeries: 2},
		// A window over raw samples of a function that sorts it: the samples counted, weighed as over unsorted values (64
		// points, 160 for mad_over_time), at most those assumed.
		{q: `quantile_over_time(0.99, x[1h])`, rng: 6 * h, step: 60_000, samples: 5e6, want: 5e6 * 8 * 8, wantSeries: 1},
		{q: `quantile_over_time(0.99, x[1h])`, rng: 6 * h, step: 60_000, samples: 1e15, want: 361 * 3601 * 300 * 8 * 8, wantSeries: 1},
		{q: `mad_over_time(x[1h])`, rng: 6 * h, step: 60_000, samples: 5e6, want: 5e6 * 160, wantSeries: 1},
		// aggr_over_time runs each function it names over the window: their weights added (a review: their names'
		// weights were dropped).
		{q: `aggr_over_time(("median_over_time", "mad_over_time"), x[1h])`, rng: 6 * h, step: 60_000, samples: 5e6, want: 5e6 * (64 + 160), wantSeries: 1},
		{q: `stddev_over_time(x[1h])`, rng: 6 * h, step: 60_000, samples: 5e6, want: 5e6 * 5, wantSeries: 1},
		{q: `max_over_time(quantile_over_time(0.5, y[1h:1m])[1h:1m])`, rng: 6 * h, step: 60_000, want: 7 * (361*60*0.5 + 428*60*112), wantSeries: 1},
		// Rollups that read every sample of a window over raw samples, a point a sample: at the top, and under a subquery
		// at each of its points (an attacker's review: one series of 15 s data, 12.6 s of v1.151's CPU).
		{q: `max_over_time(x[1h])`, rng: 6 * h, step: 60_000, samples: 1e15, want: 361 * 3601 * 300, wantSeries: 1},
		{q: `max_over_time(sum_over_time(y[30d])[27h:1s])`, instant: true, step: 60_000, samples: 1e15,
			want: 7 * (97200*0.5 + 97503*2592001), wantSeries: 1},
		// Rollups that read a window's ends, and queries without subqueries: nothing.
		{q: `sum(rate(m[5m]))`, rng: 6 * h, step: 60_000, want: 0},
		{q: `max_over_time(rate(m[1h])[5m:1m])`, rng: 6 * h, step: 60_000, times: 2000, wantSeries: 1},
		{q: `m`, rng: 6 * h, step: 60_000, want: 0},
	} {
		rng := func() *Range {
			return &Range{Read: func() (int64, int64, int64, error) { return now - tc.rng, now, tc.step, nil }, SampleInterval: 1000}
		}
		asked := map[string]bool{}
		c := &Counts{
			Series: func(sel string, from, to int64) (float64, error) {
				n, ok := series[sel]
				if !ok {
					t.Errorf("%s: asked for %q", tc.q, sel)
				}
				if from >= to {
					t.Errorf("%s: %s asked over [%d, %d]", tc.q, sel, from, to)
				}
				asked[sel] = true
				return n, nil
			},
			Samples: func(w Window) (float64, error) { return tc.samples, nil },
		}
		got, err := queryWork(tc.q, nil, tc.instant, rng(), now, c)
		if err != nil {
			t.Fatalf("%s: %s", tc.q, err)
		}
		want := tc.want
		if tc.times != 0 {
			per, err := SubqueryWork(tc.q, nil, tc.instant, &Range{Read: rng().Read}, now)
			if err != nil || per == 0 {
				t.Fatalf("%s: per series %v, %v", tc.q, per, err)
			}
			want = per * tc.times
		}
		if math.Abs(got-want) > 1e-9*want {
			t.Errorf("%s: work %.6g; want %.6g", tc.q, got, want)
		}
		if len(asked) != tc.wantSeries {
			t.Errorf("%s: asked the series of %v; want %d selectors", tc.q, asked, tc.wantSeries)
		}
	}
}

// TestQueryWorkCountFails: a count that fails is queryWork's error, and stops the counts.
func TestQueryWorkCountFails(t *testing.T) {
	const now = int64(1_700_000_000_000)
	boom := errors.New("backend down")
	calls := 0
	c := &Counts{
		Series:  func(string, int64, int64) (float64, error) { calls++; return 0, boom },
		Samples: func(Window) (float64, error) { t.Error("samples asked after a failed count"); return 0, nil },
	}
	rng := &Range{Read: func() (int64, int64, int64, error) { return now - 3_600_000, now, 60_000, nil }, SampleInterval: 1000}
	_, err := queryWork(`max_over_time(m[1h:1m]) + quantile_over_time(0.5, y[1h]) + max_over_time(z[1h:1m])`, nil, false, rng, now, c)
	if !errors.Is(err, boom) || calls != 1 {
		t.Errorf("error %v after %d counts; want %v after 1", err, calls, boom)
	}
}

// TestQueryWorkCountsWhereVictoriaMetricsReads: a selector's series are counted over what the walk reads of it widened by
// what VictoriaMetrics may read beyond: its staleness interval back, and a step of its own and of the request either
// side, where VictoriaMetrics aligns a subquery's range, and a range query's, before it evaluates an @ in it (an
// attacker's review: `(m @ end())[3h:7s]` was counted at the walk's end() over 7 s, where no sample was).
func TestQueryWorkCountsWhereVictoriaMetricsReads(t *testing.T) {
	const now, s = int64(1_700_000_000_000), int64(1000)
	type span struct{ from, to int64 }
	for _, tc := range []struct {
		q    string
		step int64
		want span
	}{
		// The subquery's end() is the walk's end of its range, b plus its step; VictoriaMetrics' is within its step. The
		// slack is the selector's step and the steps of the request and the subqueries above it: 7+1+7 s.
		{`max_over_time((m @ end())[3h:7s])`, s, span{now + 7*s - 7*s - staleness - 15*s, now + 7*s + 15*s}},
		{`max_over_time((m @ start())[3h:7s])`, s, span{now - 3*3600*s - 3600*s - staleness - 7*s - 7*s - staleness - 15*s, now - 3*3600*s - 3600*s - staleness - 7*s + 15*s}},
		{`max_over_time(m[1h:1m])`, 60 * s, span{now - 3600*s - 3600*s - staleness - 60*s - 60*s - staleness - 180*s, now + 60*s + 180*s}},
		// An @ under a subquery of a day's step, which VictoriaMetrics aligns before the @ (a review: widened by the
		// selector's and the request's steps only, the count missed the day VictoriaMetrics read): a day and more.
		{`max_over_time(quantile_over_time(0.5, m[1h:100ms] @ end())[1d:1d])`, s, span{now + 86400*s - 3600*s - staleness - 100 - 100 - staleness - (100 + 86400*s + 100 + s),
			now + 86400*s + 100 + (100 + 86400*s + 100 + s)}},
	} {
		var got []span
		c := &Counts{
			Series:  func(_ string, from, to int64) (float64, error) { got = append(got, span{from, to}); return 1, nil },
			Samples: func(Window) (float64, error) { return 0, nil },
		}
		rng := &Range{Read: func() (int64, int64, int64, error) { return now - 3600*s, now, tc.step, nil }, SampleInterval: 1000}
		if _, err := queryWork(tc.q, nil, false, rng, now, c); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: counted over %v; want %v", tc.q, got, tc.want)
		}
	}
}

// TestQueryHeld: the points a query's series hold, added up over its arms (Load.Held), are each selector's series at
// the points it is evaluated at and 128 more each (its labels, its fetch: an attacker's review measured about 1 KB a
// series an arm), what its rollups, subqueries and phis make of them, and a series of each number at every point; an
// aggregation by nothing that VictoriaMetrics does as it goes holds the 128 of each series it reads, not their points.
// Only a query of more than UncountedArms arms, one series of each selector added up so, is counted (ManyArms).
func TestQueryHeld(t *testing.T) {
	const now = int64(1_700_000_000_000)
	const h = int64(3_600_000)
	series := map[string]float64{`m`: 50, `a`: 10_000, `y`: 7}
	arms := func(n int, arm func(i int) string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = arm(i)
		}
		return strings.Join(s, " or ")
	}
	offsets := func(n int, f string) string { return arms(n, func(i int) string { return fmt.Sprintf(f, i) }) }
	phis := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("0.%02d", i+1)
		}
		return strings.Join(s, ", ")
	}
	numbers := func(n int) string { return strings.Repeat("1, ", n-1) + "1" }
	const points = 3601           // an hour at 1 s
	const m = 50 * (points + 128) // m's series, read once
	for _, tc := range []struct {
		q         string
		many      bool
		selectors int
		held      float64
	}{
		// A plain selector, and a few arms: not counted.
		{q: `m`},
		{q: offsets(10, `m offset %ds`)},
		{q: `sum(rate(a[5m])) / sum(rate(b[5m]))`},
		{q: `quantiles("phi", ` + phis(9) + `, y) by (job)`}, // y itself and 9 phis
		// The attacker's review: arms of one selector, each read again.
		{q: offsets(11, `m offset %ds`), many: true, selectors: 11, held: 11 * m},
		{q: `count(` + offsets(200, `m offset %ds`) + `)`, many: true, selectors: 200, held: 200 * m},
		// Ten arms of quantiles of 20 phis: each its selector's series, its 20 numbers and 20 series of each.
		{q: offsets(10, `quantiles("phi", `+phis(20)+`, m offset %ds) by (s)`), many: true, selectors: 10, held: 10 * (m + 20*points + 50*20*points)},
		{q: `quantiles("phi", ` + phis(10) + `, y) by (job)`, many: true, selectors: 1, held: 7*(points+128) + 10*points + 70*points},
		{q: `histogram_quantiles("phi", ` + phis(11) + `, y)`, many: true, selectors: 1, held: 7*(points+128) + 11*points + 77*points},
		// Rollups: what their function makes of each series (rollup's three), the selector's samples read as they go.
		{q: offsets(4, `rollup(m[5m] offset %ds)`), many: true, selectors: 4, held: 4 * 50 * (3*points + 128)},
		// A subquery holds its query's series at its own points, and what its rollup makes at the query's.
		{q: offsets(6, `max_over_time(m[10m:1m] offset %ds)`), many: true, selectors: 6, held: 6 * (50*(78+128) + 50*points)},
		// Aggregations by nothing done as they go hold 128 of each series they read, not their points (an attacker's
		// review: 300 arms of `sum(x)` over 20,000 series took v1.151 to 2.7 GB); each reads an arm.
		{q: offsets(30, `sum(rate(a[5m] offset %ds))`), many: true, selectors: 30, held: 30 * 10_000 * 128},
		{q: offsets(30, `count(a offset %ds)`), many: true, selectors: 30, held: 30 * 10_000 * 128},
		{q: offsets(11, `sum(rate(m[5m] offset %ds))`) + ` or ` + offsets(11, `m offset %dm`), many: true, selectors: 22, held: 11*50*128 + 11*m},
		// Over a function that makes a series of each bucket, the series fetched, not the buckets (a diff review).
		{q: offsets(11, `sum(histogram_over_time(m[5m] offset %ds))`), many: true, selectors: 11, held: 11 * 50 * 128},
		// By labels, the series they read.
		{q: offsets(11, `sum(rate(m[5m] offset %ds)) by (s)`), many: true, selectors: 11, held: 11 * m},
		// One not done as it goes (its arg is not a rollup of a selector) holds what its arg makes.
		{q: offsets(11, `median(m offset %ds)`), many: true, selectors: 11, held: 11 * m},
		// Numbers: a series of each at every point (an attacker's review: 5,000 arms of `1`, 540 MB), held without a
		// selector to count; a few are not looked at.
		{q: `count(union(` + numbers(5000) + `))`, selectors: 0, held: 5000 * points},
		{q: `union(` + numbers(300) + `) + m`, selectors: 1, held: 300*points + m},
		{q: `union(` + numbers(100) + `)`},
		{q: offsets(400, `%d`)}, // metricsql folds an operator of numbers into one
	} {
		rng := &Range{Read: func() (int64, int64, int64, error) { return now - h, now, 1000, nil }, SampleInterval: 1000}
		c := &Counts{
			Series: func(sel string, from, to int64) (float64, error) {
				name, _, _ := strings.Cut(sel, "{")
				n, ok := series[name]
				if !ok {
					t.Errorf("%.60s: asked for %q", tc.q, sel)
				}
				return n, nil
			},
			Samples: func(w Window) (float64, error) { return 0, nil },
		}
		wk, err := PrepareWork(tc.q, nil, false, rng.get, rng.SampleInterval, now)
		if err != nil {
			t.Fatalf("%.60s: %s", tc.q, err)
		}
		if got := wk != nil && wk.ManyArms(); got != tc.many {
			t.Errorf("%.80s: many arms %v; want %v", tc.q, got, tc.many)
			continue
		}
		if (wk != nil) != (tc.held > 0) {
			t.Errorf("%.80s: prepared %v; want %v", tc.q, wk != nil, tc.held > 0)
			continue
		}
		if wk == nil {
			continue
		}
		if wk.Selectors() != tc.selectors {
			t.Errorf("%.80s: %d selectors; want %d", tc.q, wk.Selectors(), tc.selectors)
		}
		l, err := wk.Total(c)
		if err != nil {
			t.Fatalf("%.60s: %s", tc.q, err)
		}
		if math.Abs(l.Held-tc.held) > 1e-9*tc.held {
			t.Errorf("%.80s: held %.6g; want %.6g", tc.q, l.Held, tc.held)
		}
	}
}

// TestCompileTooDeep: a tree deeper than compile goes, which the enforcer's parse does not make, is noted, so that tree
// refuses it rather than have every walk read it as reading nothing (an attacker's review got past every limit so).
func TestCompileTooDeep(t *testing.T) {
	var e metricsql.Expr = &metricsql.MetricExpr{}
	for range maxDepth + 1 {
		e = &metricsql.FuncExpr{Name: "abs", Args: []metricsql.Expr{e}}
	}
	var unresolved string
	compile(e, 0, &unresolved)
	if unresolved != nestedTooDeeply {
		t.Errorf("%d levels: %q; want %q", maxDepth+1, unresolved, nestedTooDeeply)
	}
	unresolved = ""
	compile(e.(*metricsql.FuncExpr).Args[0].(*metricsql.FuncExpr).Args[0], 0, &unresolved)
	if unresolved != "" {
		t.Errorf("%d levels: %q; want compiled", maxDepth-1, unresolved)
	}
}

// TestHeldNumbersUnderWrappers: numbers among the args of what compile wraps (an implicit subquery's other args,
// histogram's, count_values') are held as a series each at every point, as anywhere else (a diff review found them
// dropped there): each pair differs by one number, 3,601 points over an hour at 1 s.
func TestHeldNumbersUnderWrappers(t *testing.T) {
	const now = int64(1_700_000_000_000)
	base := make([]string, 11)
	for i := range base {
		base[i] = fmt.Sprintf("m offset %ds", i)
	}
	held := func(q string) float64 {
		q = strings.Join(base, " or ") + " or " + q
		rng := &Range{Read: func() (int64, int64, int64, error) { return now - 3_600_000, now, 1000, nil }, SampleInterval: 1000}
		wk, err := PrepareWork(q, nil, false, rng.get, rng.SampleInterval, now)
		if err != nil || wk == nil {
			t.Fatalf("%.80s: %v, %v", q, wk, err)
		}
		l, err := wk.Total(&Counts{Series: func(string, int64, int64) (float64, error) { return 50, nil },
			Samples: func(Window) (float64, error) { return 0, nil }})
		if err != nil {
			t.Fatal(err)
		}
		return l.Held
	}
	for _, pair := range [][2]string{
		{`quantile_over_time(0.5, sum(m))`, `max_over_time(sum(m))`},
		{`histogram(union(1, 2))`, `histogram(1)`},
		{`count_values("v", union(1, 2))`, `count_values("v", 1)`},
	} {
		if d := held(pair[0]) - held(pair[1]); d != 3601 {
			t.Errorf("%s holds %v more than %s; want 3601", pair[0], d, pair[1])
		}
	}
}
