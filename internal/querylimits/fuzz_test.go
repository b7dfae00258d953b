package querylimits

import (
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce/corpus"
	"github.com/vmgateway/vmgateway/internal/httperr"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// FuzzSpan builds a query from the fuzzer's bytes (selectors, windows, offsets, @, subqueries, aggregations,
// operators, WITH templates) and checks the compiled span against a brute-force walk of the AST, which evaluates
// the query point by point. The span may never begin later than what the walk reads (an under-count would let a
// query read beyond max_query_lookback), and should not begin earlier either.
func FuzzSpan(f *testing.F) {
	for _, s := range []string{"", "\x01\x02\x03", "\x02\x05\x01\x03\x04", "\x07\x02\x02\x01\x05\x06\x03", "\x05\x05\x05\x05\x05\x01\x01"} {
		f.Add([]byte(s), uint16(60), uint16(3600), uint16(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, stepSecs, rangeSecs, lookbackMins uint16) {
		g := &gen{data: data}
		q := g.top()
		e, err := metricsql.Parse(q)
		if err != nil {
			t.Skipf("%q: %s", q, err) // the grammar leaves a few corners metricsql refuses, such as `@` twice
		}
		const now = int64(1_800_000_000_000)
		step := int64(stepSecs%3600+1) * 1000
		a, b := now-int64(rangeSecs)*1000, now
		var unresolved string
		root := compile(e, 0, &unresolved)
		if unresolved != "" {
			t.Fatalf("%q: unresolved %s", q, unresolved)
		}
		lookback := int64(lookbackMins%2000) * 60000
		fast := spanOf(&root, a, b, step, now, lookback)
		// The reach of a cached query is the same span as numbers: it must agree with the walk exactly.
		if r := reachOf(&root); r.ok {
			if got := r.from(a, step, lookback); got != fast.from || r.minSubStep != fast.minSubStep {
				t.Fatalf("%q over [%d, %d] step %d: the reach begins at %d (finest subquery step %d), the walk at %d (%d)",
					q, a, b, step, got, r.minSubStep, fast.from, fast.minSubStep)
			}
		}
		// The work is a finite count, some for each subquery's window and each weighted window over raw samples, none
		// without one.
		cw := countWalk(now, 1000)
		cw.span(&root, a, b, step)
		if math.IsNaN(cw.work) || math.IsInf(cw.work, 0) || cw.work < 0 || !cw.atNaN && (cw.work > 0) != hasSubquery(&root) {
			t.Fatalf("%q over [%d, %d] step %d: subquery work %v", q, a, b, step, cw.work)
		}
		// Over all the series (Work.Total's walk): a selector of one series reads no less than the per-series work, one of
		// three no less than that, and the counts move nothing else.
		var whole [2]walk
		for i, n := range [2]float64{1, 3} {
			whole[i] = countWalk(now, 1000)
			whole[i].counts = &Counts{
				Series:  func(string, int64, int64) (float64, error) { return n, nil },
				Samples: func(Window) (float64, error) { return math.Inf(1), nil },
			}
			whole[i].span(&root, a, b, step)
			if w := whole[i].work; math.IsNaN(w) || w < cw.work*(1-1e-9) || i == 1 && w < whole[0].work*(1-1e-9) {
				t.Fatalf("%q over [%d, %d] step %d: work over series of %v each %v; per series %v, over one each %v", q, a, b,
					step, n, w, cw.work, whole[0].work)
			}
			if whole[i].from != cw.from || whole[i].to != cw.to || whole[i].atNaN != cw.atNaN {
				t.Fatalf("%q: counting the series moved the span", q)
			}
		}
		bf := brute{now: now, lookback: lookback, from: math.MaxInt64}
		bf.points(e, a, b, step, a, b)
		if fast.from > bf.from {
			t.Fatalf("%q over [%d, %d] step %d: the span begins at %d, but the query reads from %d: under-counted by %dms",
				q, a, b, step, fast.from, bf.from, fast.from-bf.from)
		}
		if bf.from-fast.from > 1 {
			t.Fatalf("%q over [%d, %d] step %d: the span begins at %d, the query reads from %d: over-counted by %dms",
				q, a, b, step, fast.from, bf.from, bf.from-fast.from)
		}
	})
}

// brute evaluates a query the slow way: at every point of every range (up to maxPoints per range, the ends always
// included), recording the earliest sample time a selector reads.
type brute struct {
	now, lookback int64
	from          int64
}

const maxPoints = 16

// points evaluates e at each point of [a, b] with the given step; start and end are what start() and end() return.
func (bf *brute) points(e metricsql.Expr, a, b, step, start, end int64) {
	n := (b-a)/step + 1
	for i := int64(0); i < n; i++ {
		if n > maxPoints && i == maxPoints/2 {
			i = n - maxPoints/2 // the ends hold the extremes; the middle is skipped for time
		}
		bf.at(e, a+i*step, step, start, end)
	}
	bf.at(e, b, step, start, end)
}

func (bf *brute) at(e metricsql.Expr, t, step, start, end int64) {
	switch x := e.(type) {
	case *metricsql.MetricExpr:
		bf.read(t - max(step, bf.lookback))
	case *metricsql.FuncExpr:
		for _, a := range x.Args {
			bf.at(a, t, step, start, end)
		}
	case *metricsql.AggrFuncExpr:
		for _, a := range x.Args {
			bf.at(a, t, step, start, end)
		}
	case *metricsql.BinaryOpExpr:
		bf.at(x.Left, t, step, start, end)
		bf.at(x.Right, t, step, start, end)
	case *metricsql.RollupExpr:
		if x.At != nil {
			t = int64(bruteAt(x.At, start, end, bf.now, step) * 1000)
			start, end = t, t
		}
		off := x.Offset.Duration(step)
		t, start, end = t-off, start-off, end-off
		_, sel := x.Expr.(*metricsql.MetricExpr)
		w := x.Window.Duration(step)
		if w <= 0 {
			w = step
		}
		if x.ForSubquery() || (x.Window != nil && !sel) {
			inner := step
			if x.Step != nil && x.Step.Duration(step) > 0 {
				inner = x.Step.Duration(step)
			}
			// VictoriaMetrics evaluates a subquery once over the whole range: start() and end() are the range's.
			bf.points(x.Expr, t-w, t, inner, start-w, end)
			return
		}
		if sel {
			if x.Window.Duration(step) <= 0 {
				w = max(step, bf.lookback) // the selector's own lookback, as without a rollup
			}
			bf.read(t - w)
			return
		}
		bf.at(x.Expr, t, step, start, end)
	}
}

func (bf *brute) read(from int64) { bf.from = min(bf.from, from) }

func bruteAt(e metricsql.Expr, start, end, now, step int64) float64 {
	switch x := e.(type) {
	case *metricsql.NumberExpr:
		return x.N
	case *metricsql.DurationExpr:
		return float64(x.Duration(step)) / 1000
	case *metricsql.FuncExpr:
		switch x.Name {
		case "start":
			return float64(start) / 1000
		case "end":
			return float64(end) / 1000
		case "now":
			return float64(now) / 1000
		}
	case *metricsql.BinaryOpExpr:
		l, r := bruteAt(x.Left, start, end, now, step), bruteAt(x.Right, start, end, now, step)
		switch x.Op {
		case "+":
			return l + r
		case "-":
			return l - r
		case "*":
			return l * r
		case "/":
			return l / r
		}
	}
	panic("unexpected @ expression " + string(e.AppendString(nil)))
}

// gen turns bytes into a query of the grammar the span knows.
type gen struct {
	data []byte
	i    int
}

func (g *gen) next(n int) int {
	if g.i >= len(g.data) {
		return 0
	}
	b := g.data[g.i]
	g.i++
	return int(b) % n
}

var (
	windows = []string{"5m", "1h", "30s", "1d", "3i", "1h30m", "2w", "90d"}
	offsets = []string{"1h", "-30m", "1d", "5i", "7d", "-2h"}
	ats     = []string{"1700000000", "start()", "end()", "now()", "(end() - 1h)", "(start() + 600)", "(end() - 3600*24)"}
	steps   = []string{"1m", "10s", "1h", "2i", ""}
)

func (g *gen) top() string {
	if g.next(4) == 0 {
		return "WITH (t = " + g.expr(0) + ", w = " + windows[g.next(len(windows))] + ") t + max_over_time(m[w])"
	}
	return g.expr(0)
}

func (g *gen) expr(depth int) string {
	if depth > 4 {
		return `m{a="b"}`
	}
	switch g.next(12) {
	case 8:
		return "sum(" + g.expr(depth+1) + ") by (a)"
	case 9:
		return "quantile_over_time(0.5, m[" + windows[g.next(len(windows))] + "]" + g.mods() + ")"
	case 10:
		return "(" + g.expr(depth+1) + " or " + g.expr(depth+1) + ")"
	case 11:
		return `histogram_quantiles("phi", 0.5, 0.9, ` + g.expr(depth+1) + ")"

	case 0:
		return `m{a="b"}` + g.mods()
	case 1:
		return "rate(m[" + windows[g.next(len(windows))] + "]" + g.mods() + ")"
	case 2:
		return "max_over_time((" + g.expr(depth+1) + ")[" + windows[g.next(len(windows))] + ":" + steps[g.next(len(steps))] + "]" + g.mods() + ")"
	case 3:
		return "sum(" + g.expr(depth+1) + ")"
	case 4:
		return g.expr(depth+1) + " + " + g.expr(depth+1)
	case 5:
		return "(" + g.expr(depth+1) + ")" + g.mods()
	case 6:
		return "42"
	}
	return "rate(m)"
}

func (g *gen) mods() string {
	var b strings.Builder
	if g.next(2) == 1 {
		b.WriteString(" offset " + offsets[g.next(len(offsets))])
	}
	if g.next(2) == 1 {
		b.WriteString(" @ " + ats[g.next(len(ats))])
	}
	return b.String()
}

// FuzzCheck sends arbitrary args to every judged API: the check never panics, and answers nil, 400 or 422.
func FuzzCheck(f *testing.F) {
	f.Add("rate(x[1d] offset 2d)", "-1h", "now", "30s", "2026-06-01", uint8(0))
	f.Add(`count({__name__=~".+"}) @ end()`, "1700000000000", "", "5i", "", uint8(1))
	f.Add("WITH (f(x) = x[1h:1s]) max_over_time(f(y))", "-292273086-05-16T16:47:06Z", "2026", "1e300", "x", uint8(5))
	// The hostile queries shared with the enforcer's fuzzer, each on another API.
	qs, err := corpus.Queries()
	if err != nil {
		f.Fatal(err)
	}
	for i, q := range qs {
		f.Add(q, "-1h", "now", "30s", "", uint8(i))
	}
	c, err := parseConfig([]byte(checkConfig), "limits.yaml")
	if err != nil {
		f.Fatal(err)
	}
	paths := []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/export", "/api/v1/series", "/federate", "/api/v1/status/tsdb", "/render"}
	f.Fuzz(func(t *testing.T, query, start, end, step, date string, which uint8) {
		rt := mustRoute(t, paths[int(which)%len(paths)])
		args := url.Values{"query": {query}, "match[]": {query}, "start": {start}, "end": {end}, "time": {end}, "step": {step},
			"date": {date}, "max_lookback": {step}, "timeout": {step}}
		_, err := c.Check(limited, rt, enforce.Args{URL: args}, checkNow)
		if s := httperr.Status(err); err != nil && s != http.StatusBadRequest && s != http.StatusUnprocessableEntity {
			t.Fatalf("status %d: %s", s, err)
		}
	})
}
