package querylimits

import (
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// TestBlockedRewrites is the table of an exact blocked pattern and queries that an attacker rewrote to read the
// same data the same way (blocked), and queries that only look alike (served).
func TestBlockedRewrites(t *testing.T) {
	for _, tc := range []struct {
		pattern, query string
		blocked        bool
	}{
		{`count({__name__=~".+"})`, `count({__name__=~".+"} offset 0s)`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+"} offset 0)`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+"} offset -0m)`, true},
		{`count({__name__=~".+"})`, `count by () ({__name__=~".+"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".{1,}"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~"..*"})`, false}, // the same language, not the same simplified regexp
		{`count({__name__=~".+"})`, `count({__name__=~"(?:.+)"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~"(.+)"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~"((.)+)"})`, true},
		{`count({__name__=~".+"})`, `count({__name__!=""})`, true},
		{`count({__name__=~".+"})`, `count({__name__!~""})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+",job=~".*"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+",__name__=~".+"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+"}) > 0.0`, true},
		{`count({__name__=~".+"})`, `COUNT({__name__=~".+"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+",job!=""})`, false},
		{`count({__name__=~".+"})`, `count({__name__=~".+"} offset 1s)`, false},
		{`count({__name__=~".+"})`, `count by (job) ({__name__=~".+"})`, false},
		{`count({__name__=~".+"})`, `count without () ({__name__=~".+"})`, false},
		{`count({__name__=~".+"})`, `count({__name__=~".*"})`, false}, // matches every name and refused by VictoriaMetrics
		{`rate(http_requests_total[5m])`, `rate(http_requests_total[300s])`, true},
		{`rate(http_requests_total[5m])`, `Rate(http_requests_total[5m])`, true},
		{`rate(http_requests_total[5m])`, `rate({__name__="http_requests_total"}[5m])`, true},
		{`rate(http_requests_total[5m])`, `rate({__name__=~"http_requests_total"}[5m])`, true},
		{`rate(http_requests_total[5m])`, `rate(http_requests_total[0.0833333333h])`, false}, // 299999ms
		{`rate(http_requests_total[5m])`, `rate(http_requests_total[5m1ms])`, false},
		{`rate(http_requests_total[5m])`, `rate(http_requests_total[5i])`, false},
		{`sum(x{a="1",b="2"}) by (a,b)`, `sum by (b, a, b) (x{b="2", a="1", a="1"})`, true},
		{`sum(x{a="1",b="2"}) by (a,b)`, `sum by (a) (x{b="2", a="1"})`, false},
		{`x{a="1" or b="2"}`, `x{b="2" or a="1"}`, true},
		{`x{a="1"}`, `x{a=~"1"}`, true},
		{`{__name__="nAn"}`, `nA\n`, true}, // a metric named nAn, which written bare is the number NaN
		{`{__name__="nAn"}`, `{__name__=~"nAn"}`, true},
		{`{__name__="nAn"}`, `nAn`, false},
		{`nAn`, `NaN`, true},
		{`x{a="1"}`, `x{a=~"1|1"}`, true},
		{`x{a="1"}`, `x{a=~"(?i)1"}`, true}, // a digit has no case
		{`x{a="A"}`, `x{a=~"(?i)a"}`, false},
		{`x{a="1"}`, `x{a!~"1"}`, false},
		{`x{a=""}`, `x{a=~""}`, true},
		{`x * on(a,b) group_left(c) y`, `x * on(b,a) group_left(c,c) y`, true},
		{`x + y`, `x + ignoring() y`, true},
		{`x + y`, `x + on() y`, false},
		{`max_over_time(x[1h:1m])`, `max_over_time(x[60m:60s])`, true},
		{`max_over_time(x[1h:1m])`, `max_over_time(x[1h:])`, false},
		{`count({__name__=~".+"})`, `label_set(count({__name__=~".+"} offset 0s), "a", "b")`, true},
		{`count({__name__=~".+"})`, `WITH (s = {__name__=~".{1,}"}) count(s)`, true},
		// An offset on anything but a plain selector, or inside a rollup's brackets, makes a subquery: not the same.
		{`count_over_time(x[5m])`, `count_over_time((x offset 0s)[5m])`, false},
		{`rate(http_requests_total[5m])`, `rate((http_requests_total offset 0s)[5m])`, false},
		{`(sum(rate(x[5m]))) offset 0s`, `sum(rate(x[5m]))`, false},
		{`(x + 0) offset 0s`, `x + 0`, false},
		{`(x offset 0s) offset 0s`, `x`, false},
		{`sum(rate(x[5m]))`, `(sum(rate(x[5m]))) offset 0s`, true}, // it holds the pattern whole
		{`rate(x[5m])`, `rate(x[5m] offset 0s)`, true},
		{`max_over_time(x[1h:1m])`, `max_over_time(x[1h:1m] offset 0s)`, true},
		// An or branch that matches every series of the name makes the whole selector match them.
		{`x{a="1"}`, `x{a="1" or b=~".*"}`, false},
		{`x`, `x{a="1" or b=~".*"}`, true},
		{`x`, `x or x`, true},
		{`x or y`, `x`, false},
		// What a whole, anchored match cannot tell apart.
		{`count({__name__=~".+"})`, `count({__name__=~"^.+$"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~".+?"})`, true},
		{`count({__name__=~".+"})`, `count({__name__=~"[\\s\\S]+"})`, true},
		{`x{a=""}`, `x{a=~"^$"}`, true},
		{`x{a="1"}`, `x{a=~"^1$"}`, true},
		{`x{a="1"}`, `x{a=~"(?m)^1$"}`, false}, // line anchors: not the ends (compared as written)
		{`x * ignoring() group_left(c) y`, `x * ignoring() group_left(c,c) y`, true},
	} {
		c := mustConfig(t, "limits:\n  - blocked_queries:\n      - pattern: '"+strings.ReplaceAll(tc.pattern, "'", "''")+"'\n")
		_, err := c.Check(limited, mustRoute(t, "/api/v1/query"), enforce.Args{URL: url.Values{"query": {tc.query}}}, checkNow)
		if blocked := err != nil && strings.Contains(err.Error(), "blocked query"); blocked != tc.blocked {
			t.Errorf("pattern %s, query %s: blocked %v, want %v (%v)", tc.pattern, tc.query, blocked, tc.blocked, err)
		}
	}
}

// FuzzNormalize: the normal form leaves the request's parse as it was (the other steps share it), parses again,
// and is its own normal form, so a pattern and a query meet in it whichever was written first.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{`count({__name__=~".+"} offset 0s)`, `sum by (b, a) (x{b="2", a=~"1|1"})`, `x{a="1" or b!=""}`,
		`max_over_time(rate(x[5m] @ end())[1h:60s])`, `x * on(b,a) group_left(c) y > 0.0`, `Rate(x{a=~"(?i)1"}[300s])`,
		`WITH (f(a) = sum(a) by ()) f({__name__=~".{1,}",job=~".*"})`, `{__name__=~".*"}`, `x[5i] offset -0s`,
		`x * ignoring() group_left(c) y`, `0*-01`, `x{a="1" or b=~".*"}`, `(x offset 0s)[5m]`, `x{a=~"^(.+?)$"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		e, err := enforce.ParseMetricsQL(q)
		if err != nil || len(q) > 4096 {
			return
		}
		before := string(e.AppendString(nil))
		if e2, err := enforce.ParseMetricsQL(before); err != nil || string(e2.AppendString(nil)) != before {
			return // metricsql prints a few queries in a form it does not read back alike (escaped names)
		}
		n := string(normalize(e).AppendString(nil))
		if after := string(e.AppendString(nil)); after != before {
			t.Fatalf("normalize changed the query it read: %s became %s", before, after)
		}
		again, err := canonical(n)
		if err != nil {
			t.Fatalf("the normal form %s of %s does not parse: %s", n, q, err)
		}
		if again != n {
			t.Fatalf("the normal form of %s is %s, whose own is %s", q, n, again)
		}
	})
}

// TestNormalFormBounded: the normal form is printed in proportion to the query however its regexps are written
// (Simplify writes counted repeats out, a class such as \pL prints hundreds of ranges), and the memo keeps only
// short regexps.
func TestNormalFormBounded(t *testing.T) {
	many := func(re string, n int) string {
		var b strings.Builder
		b.WriteString("x{")
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "l%d=~%q", i, re+strconv.Itoa(i))
		}
		b.WriteString("}")
		return b.String()
	}
	for _, q := range []string{
		many(`\pL{128}`, 10), many(`(?i)\pL{128}`, 10), many(`[a-z]{1000}`, 10), many(strings.Repeat(`\pL`, 300), 3),
		many(`(?:`+strings.Repeat("a", 100)+`){128}`, 10), many(`\pL{127}zz`, 40),
	} {
		// The gateway's parse refuses most of these (enforce's regexp budget); the normal form holds without it.
		e, err := metricsql.Parse(q)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(normalize(e).AppendString(nil)); n > 4*len(q)+64 {
			t.Errorf("a query of %d bytes (%.40s...) has a normal form of %d", len(q), q, n)
		}
	}
	var kept int
	regexps.m.Range(func(k, v any) bool {
		if len(k.(string)) > memoKeyMax || len(v.(regexpForm).text) > 4*memoKeyMax+64 {
			t.Errorf("the memo keeps %d bytes for a regexp of %d", len(v.(regexpForm).text), len(k.(string)))
		}
		kept++
		return true
	})
	if kept > memoSize {
		t.Errorf("the memo keeps %d regexps; at most %d", kept, memoSize)
	}
}

// TestNormalFormOfLongOrChain: `a or b or c ...` nests to the left, and comparing each level's sides for `x or x`
// once printed the whole chain at every level. The normal form's work now grows with the chain, not its square:
// twice the terms allocate about twice the bytes.
func TestNormalFormOfLongOrChain(t *testing.T) {
	chain := func(n int) metricsql.Expr {
		terms := make([]string, n)
		for i := range terms {
			terms[i] = fmt.Sprintf(`m%d{job="j%d"}`, i, i)
		}
		return mustParse(t, strings.Join(terms, " or "))
	}
	allocated := func(e metricsql.Expr) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		normalize(e)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := chain(500), chain(1000)
	normalize(small) // the memo and the parser's own caches, filled once
	a, b := allocated(small), allocated(large)
	if b > 3*a {
		t.Errorf("the normal form of 1000 terms or'ed allocates %d bytes, of 500 terms %d: the work grows with the square of the chain", b, a)
	}
	if e := normalize(chain(3)).AppendString(nil); string(e) != `(m0{job="j0"} or m1{job="j1"}) or m2{job="j2"}` {
		t.Errorf("normal form %s", e)
	}
	if e := normalize(mustParse(t, `x or x offset 0s or (x or x)`)).AppendString(nil); string(e) != `x` {
		t.Errorf("x or x offset 0s or (x or x): normal form %s; want x", e)
	}
}

func mustParse(t *testing.T, q string) metricsql.Expr {
	t.Helper()
	e, err := metricsql.Parse(q)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
