package querylimits

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
)

// spanFor compiles q and returns what it reads over [a, b] at step, in milliseconds.
func spanFor(t testing.TB, q string, a, b, step, now int64) (walk, string) {
	t.Helper()
	e, err := metricsql.Parse(q)
	if err != nil {
		t.Fatalf("cannot parse %q: %s", q, err)
	}
	var unresolved string
	root := compile(e, 0, &unresolved)
	return spanOf(&root, a, b, step, now, 0), unresolved
}

func ms(d time.Duration) int64 { return int64(d / time.Millisecond) }

func TestSpanTable(t *testing.T) {
	const now = int64(1_800_000_000_000)
	const d, h, m = 24 * time.Hour, time.Hour, time.Minute
	type tc struct {
		q string
		// range: evaluation [now-rng, now]; 0 for an instant query at now
		rng  time.Duration
		step time.Duration
		// back is now - from; fwd is to - now
		back, fwd time.Duration
	}
	cases := []tc{
		{q: `up`, step: 5 * m, back: 5 * m},
		{q: `up`, rng: d, step: m, back: d + m},
		{q: `rate(x[1h])`, step: 5 * m, back: h},
		{q: `rate(x)`, step: 30 * time.Second, back: 30 * time.Second},
		{q: `rate(x[1h] offset 1d)`, step: 5 * m, back: d + h, fwd: -d},
		{q: `x offset -1h`, step: 5 * m, back: -h + 5*m, fwd: h},
		{q: `sum(rate(x[1h])) + rate(y[2h])`, step: 5 * m, back: 2 * h},
		{q: `max_over_time(rate(x[5m])[1d:1m])`, step: 5 * m, back: d + 5*m},
		{q: `max_over_time(rate(x[5m])[1d:1m] offset 1h)`, step: 5 * m, back: d + h + 5*m, fwd: -h},
		{q: `max_over_time(max_over_time(x[1h])[1d:5m])[7d:1h]`, step: 5 * m, back: 8*d + h},
		{q: `max_over_time(x[1h:])`, step: 5 * m, back: h + 5*m},
		{q: `(sum(x))[1h]`, step: 5 * m, back: h + 5*m},
		{q: `rate(x[5i])`, step: m, back: 5 * m},
		{q: `rate(x[5i])`, rng: h, step: 2 * m, back: h + 10*m},
		{q: `rate(x[1h] @ end())`, rng: d, step: m, back: h},
		{q: `rate(x[1h] @ start())`, rng: d, step: m, back: d + h, fwd: -d},
		{q: `x @ (end() - 3600)`, step: 5 * m, back: h + 5*m, fwd: -h},
		{q: `x @ (end() - 1h)`, step: 5 * m, back: h + 5*m, fwd: -h},
		{q: `rate(x[1h]) @ now()`, rng: d, step: m, back: h},
		{q: `sum(rate(x[1h])) offset 2h`, step: 5 * m, back: 3 * h, fwd: -2 * h},
		{q: `WITH (f(m) = rate(m[2d])) f(x)`, step: 5 * m, back: 2 * d},
		{q: `WITH (w = 3d) max_over_time(x[w])`, step: 5 * m, back: 3 * d},
		{q: `WITH (s = x[1d:1h]) max_over_time(s) + max_over_time(y[1w])`, step: 5 * m, back: 7 * d},
		{q: `absent_over_time(x{a="b"}[30d]) or vector(1)`, step: 5 * m, back: 30 * d},
	}
	for _, c := range cases {
		w, unresolved := spanFor(t, c.q, now-ms(c.rng), now, ms(c.step), now)
		if unresolved != "" {
			t.Errorf("%s: unresolved %q", c.q, unresolved)
		}
		if got := time.Duration(now-w.from) * time.Millisecond; got != c.back {
			t.Errorf("%s (range %s, step %s): reads from now-%s, want now-%s", c.q, c.rng, c.step, got, c.back)
		}
		if got := time.Duration(w.to-now) * time.Millisecond; got != c.fwd {
			t.Errorf("%s (range %s, step %s): reads to now%+v, want now%+v", c.q, c.rng, c.step, got, c.fwd)
		}
	}
}

// TestReach checks that a cached query's reach begins where the walk of its tree does, for the queries it
// qualifies for, and that it leaves the others (@, steps in durations, centuries) to the walk.
func TestReach(t *testing.T) {
	const now = int64(1_800_000_000_000)
	for _, c := range []struct {
		q  string
		ok bool
	}{
		{`up`, true}, {`rate(x[1h] offset 1d)`, true}, {`x offset -1h`, true}, {`sum(rate(x[1h])) + rate(y[2h])`, true},
		{`max_over_time(rate(x[5m])[1d:1m] offset 1h)`, true}, {`max_over_time(max_over_time(x[1h])[1d:5m])[7d:1h]`, true},
		{`max_over_time(x[1d:10s]) + max_over_time(y[1h:1m])`, true}, {`max_over_time(max_over_time(y[10m])[1h:1m])`, true},
		{`max_over_time((x offset 1h)[1d:1m])`, true}, {`WITH (s = x[1d:1h]) max_over_time(s) + max_over_time(y[1w])`, true},
		{`1 + 2`, true}, {`rate(x[0s])`, true},
		{`max_over_time(x[1h:])`, true}, {`(sum(x))[1h]`, true},
		{`rate(x[5i])`, false}, {`x offset 2i`, false},
		{`rate(x[1h] @ end())`, false}, {`rate(x[100000000y])`, false}, {`max_over_time(x[1d:1h] offset 100000000y)`, false},
	} {
		e, err := metricsql.Parse(c.q)
		if err != nil {
			t.Fatalf("cannot parse %q: %s", c.q, err)
		}
		var unresolved string
		root := compile(e, 0, &unresolved)
		r := reachOf(&root)
		if r.ok != c.ok {
			t.Errorf("%s: reach.ok %v, want %v", c.q, r.ok, c.ok)
			continue
		}
		if !r.ok {
			continue
		}
		for _, rng := range []int64{0, ms(time.Hour), ms(30 * 24 * time.Hour)} {
			for _, step := range []int64{1000, ms(5 * time.Minute), ms(2 * time.Hour)} {
				for _, lookback := range []int64{0, ms(10 * time.Minute), ms(3 * time.Hour)} {
					w := spanOf(&root, now-rng, now, step, now, lookback)
					if got := r.from(now-rng, step, lookback); got != w.from || r.minSubStep != w.minSubStep {
						t.Errorf("%s over %dms at step %dms, max_lookback %dms: the reach begins at %d (finest step %d), the walk at %d (%d)",
							c.q, rng, step, lookback, got, r.minSubStep, w.from, w.minSubStep)
					}
				}
			}
		}
	}
}

func TestSpanAbsoluteAt(t *testing.T) {
	const now = int64(1_800_000_000_000)
	w, _ := spanFor(t, `x @ 1000`, now, now, ms(5*time.Minute), now)
	if w.from != 1_000_000-ms(5*time.Minute) || w.to != 1_000_000 {
		t.Errorf("x @ 1000 reads [%d, %d], want [%d, 1000000]", w.from, w.to, 1_000_000-ms(5*time.Minute))
	}
	w, _ = spanFor(t, `1 + 2 * time()`, now, now, 1000, now)
	if w.from != math.MaxInt64 {
		t.Errorf("a query without series reads from %d", w.from)
	}
	w, _ = spanFor(t, `x @ (1/0)`, now, now, 1000, now)
	if w.atNaN && w.from != math.MaxInt64 {
		t.Errorf("x @ (1/0): from %d", w.from)
	}
	// What the gate lets through resolves: VictoriaMetrics takes the first value of the time over the range (time() is
	// its start), and reads function names in any case (an attacker's review: such times were taken not to shift
	// the span, and a histogram over a day with no data was counted where the query read the data).
	for q, at := range map[string]int64{
		`x @ time()`:                          now - 3_600_000,
		`x @ (END() - END() % 3600)`:          now - now%3_600_000,
		`x @ round(end(), 3600)`:              now,
		`x @ round(end() - 1799, 3600)`:       now,
		`x @ Round(end() + 1801)`:             now + 1_801_000,
		`x @ (1796536800 + step())`:           1_796_536_800_000 + 60_000,
		`x @ (start() - 1d + 2 * step() % 7)`: now - 3_600_000 - 86_400_000 + 1_000, // (2*60) % 7
		`x @ (end() - end() % 3600 - 1d)`:     now - now%3_600_000 - 86_400_000,
	} {
		w, unresolved := spanFor(t, q, now-3_600_000, now, 60_000, now)
		if unresolved != "" || w.to != at {
			t.Errorf("%s: reads to %d (%q unresolved); want %d", q, w.to, unresolved, at)
		}
	}
	for _, q := range []string{`x @ timestamp(y)`, `x @ floor(time())`, `sum(rate(x[1h] @ vector(5)))`} {
		if _, unresolved := spanFor(t, q, now, now, 1000, now); unresolved == "" {
			t.Errorf("%s: the @ time is not known before the query runs, yet it was resolved", q)
		}
	}
	// Huge durations saturate instead of wrapping around to the future.
	w, _ = spanFor(t, `rate(x[100000000y] offset 100000000y)`, now, now, 1000, now)
	if w.from > 0 || now-w.from <= 0 {
		t.Errorf("a window of 100000000y reads from %d", w.from)
	}
}

func TestSubqueryStep(t *testing.T) {
	w, _ := spanFor(t, `max_over_time(x[1d:10s]) + max_over_time(y[1h:1m])`, 0, 0, 60000, 0)
	if w.minSubStep != 10000 {
		t.Errorf("finest subquery step %d, want 10000", w.minSubStep)
	}
}

// Every subexpression is printed whole, so a deep query prints about its depth times its size: past the bound
// there is no answer, and the caller blocks the query whose text holds the pattern.
func TestSubexpressionsBounded(t *testing.T) {
	e, err := metricsql.Parse(`count({__name__=~".+"}) > 0 or up + up`)
	if err != nil {
		t.Fatal(err)
	}
	if subs := subexpressions(e, 1<<20); !subs[`count({__name__=~".+"})`] {
		t.Errorf("the wrapped subexpression is not among %v", subs)
	}
	if subs := subexpressions(e, 20); subs != nil {
		t.Errorf("past the bound: %v; want none", subs)
	}
}

// TestMentionsCountValues: the name in any case of ASCII, anywhere; a query with other bytes than ASCII is taken to
// have it (metricsql reads names as they are written, and the enforcer refuses an aggregate's name with escapes).
func TestMentionsCountValues(t *testing.T) {
	for q, want := range map[string]bool{`count_values("v", x)`: true, `COUNT_VALUES("v", x)`: true, `sum(Count_Values("v", x))`: true,
		`count_value("v", x)`: false, `x{a="é"}`: true, `count`: false, ``: false, `x + count_values("v", y)`: true,
		`sum(rate(http_requests_total{job="api"}[5m])) by (code)`: false} {
		if got := MentionsCountValues(q); got != want {
			t.Errorf("%s: %v; want %v", q, got, want)
		}
	}
}

// TestRawWindowsListed: the walks list each window over raw samples a weighed function reads, with the points it is
// evaluated at (a subquery's inside it, an offset and an @ applied), its weight and the samples it was counted at;
// the windows of cheap functions and subqueries are not listed.
func TestRawWindowsListed(t *testing.T) {
	const now, end, start = int64(1_700_000_000_000), int64(1_700_000_000_000), int64(1_699_913_600_000)
	sub := start - 86_400_000 - staleness - 600_000
	for _, tc := range []struct {
		q    string
		want []Window
	}{
		{`quantile_over_time(0.99, x{a="b"}[1d])`, []Window{{`x{a="b"}`, start, end, 60_000, 86_400_000, 64, 1441 * 86401, false}}},
		{`median_over_time(x[1h] offset 1h)`, []Window{{`x`, start - 3_600_000, end - 3_600_000, 60_000, 3_600_000, 64, 1441 * 3601, false}}},
		{`stddev_over_time(x[1h] @ 1699999000)`, []Window{{`x`, 1_699_999_000_000, 1_699_999_000_000, 60_000, 3_600_000, 1, 3601, false}}},
		// Inside a subquery: its points, from its window (and VictoriaMetrics' staleness before) to a step after.
		{`max_over_time(median_over_time(x[1h])[1d:10m])`, []Window{{`x`, sub, end + 600_000, 600_000, 3_600_000, 64,
			float64((end+600_000-sub)/600_000+1) * 3601, false}}},
		// The same window twice is read twice.
		{`mad_over_time(y[5m]) / mad_over_time(y[5m])`, []Window{{`y`, start, end, 60_000, 300_000, 64, 1441 * 301, false}, {`y`, start, end, 60_000, 300_000, 64, 1441 * 301, false}}},
		{`sum_over_time(x[1d]) + avg_over_time(rate(x[5m])[1h:1m])`, nil},
	} {
		var ws []Window
		rng := &Range{Read: func() (int64, int64, int64, error) { return start, end, 60_000, nil }, SampleInterval: 1000, Windows: &ws}
		if _, err := SubqueryWork(tc.q, nil, false, rng, now); err != nil {
			t.Fatalf("%s: %s", tc.q, err)
		}
		if fmt.Sprint(ws) != fmt.Sprint(tc.want) {
			t.Errorf("%s: windows %+v; want %+v", tc.q, ws, tc.want)
		}
	}
	// An instant query that is one rollup is read both ways VictoriaMetrics may run it; the other reading's windows
	// are marked, for the larger of the two to count.
	var ws []Window
	rng := &Range{Read: func() (int64, int64, int64, error) { return end, end, 300_000, nil }, SampleInterval: 1000, Windows: &ws}
	if _, err := SubqueryWork(`median_over_time(x[1h] @ 1699999000)`, nil, true, rng, now); err != nil {
		t.Fatal(err)
	}
	alt := 0
	for _, w := range ws {
		if w.Alt {
			alt++
		}
	}
	if len(ws) != 2 || alt != 1 {
		t.Errorf("instant: windows %+v; want one of each reading", ws)
	}
}
