package enforce

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
)

// TestCheckDepth: chains and nestings past maxQueryDepth are refused before metricsql sees them, whatever their
// shape; real queries and what only looks deep (strings, selectors, ranges) pass.
func TestCheckDepth(t *testing.T) {
	n := maxQueryDepth
	for _, tc := range []struct {
		name string
		q    string
		ok   bool
	}{
		{"unary minus chain", strings.Repeat("-", n+1) + "up", false},
		{"unary minus chain at the limit", strings.Repeat("-", n-1) + "up", true},
		{"spaced unary minus", strings.Repeat("- ", n+1) + "up", false},
		{"parentheses", strings.Repeat("(", n+1) + "up" + strings.Repeat(")", n+1), false},
		{"minus and parentheses", strings.Repeat("-(", n/2+1) + "up" + strings.Repeat(")", n/2+1), false},
		{"function calls", strings.Repeat("abs(", n+1) + "up" + strings.Repeat(")", n+1), false},
		{"binary chain", strings.Repeat("up+", n+1) + "up", false},
		{"or chain", strings.Repeat("a or ", n+1) + "up", false},
		{"OR chain in capitals", strings.Repeat("a OR ", n+1) + "up", false},
		{"arguments do not add up", "f(" + strings.Repeat("a+b, ", n) + "c)", true},
		{"parentheses in a string", `label_replace(up, "a", "` + strings.Repeat("(", 2*n) + `", "b", "")`, true},
		{"or inside a selector", "{" + strings.Repeat(`a="1" or `, 2*n) + `a="2"}`, true},
		{"operators in a selector", `up{a=~"` + strings.Repeat("-", 2*n) + `"}`, true},
		{"a comment", "up # " + strings.Repeat("(", 2*n), true},
	} {
		err := checkDepth(tc.q)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v; want ok=%v", tc.name, err, tc.ok)
		}
		if !tc.ok {
			if _, err := parse(tc.q); err == nil || !strings.Contains(err.Error(), "nests more than") {
				t.Errorf("%s: parse gives %v; want the depth refusal", tc.name, err)
			}
		}
	}
	for _, q := range append(benchQueries, struct{ name, q string }{"cases", ""}) {
		if err := checkDepth(q.q); err != nil {
			t.Errorf("%s: %s", q.name, err)
		}
	}
	for _, c := range queryCases() {
		if err := checkDepth(c.in); err != nil {
			t.Errorf("query case %s: %s", c.name, err)
		}
	}
}

// hostileQueries are the most expensive shapes per byte found for a 16 KiB query within the bounds: just under the
// depth limit, or long flat chains and selectors that rewrite into many branches.
func hostileQueries() []struct{ name, q string } {
	pad := func(s string) string { // fill up to 16 KiB with a harmless long label value
		return `label_replace(` + s + `, "x", "` + strings.Repeat("v", max(0, 16<<10-len(s)-40)) + `", "", "")`
	}
	return []struct{ name, q string }{
		{"unary_minus_990", pad(strings.Repeat("-", 990) + "up")},
		{"parens_990", pad(strings.Repeat("(", 990) + "up" + strings.Repeat(")", 990))},
		{"calls_990", pad(strings.Repeat("abs(", 990) + "up" + strings.Repeat(")", 990))},
		{"args_of_binary_ops", "union(" + strings.Repeat("up+up+up+up+up+up+up+up+up+up, ", 16<<10/32) + "up)"},
		{"selector_or_branches", "{" + strings.Repeat(`a="1" or `, 16<<10/9) + `a="2"}`},
		{"many_selectors", "sum(" + strings.Repeat("a{b=\"c\"},", 16<<10/9) + "up)"},
	}
}

// BenchmarkHostileQueryPerByte is the worst-case cost of the parse and rewrite per byte of query, for the bound
// -search.maxTotalQueryLen puts on a request: the work the gateway does for one request is at most this times
// the request's selector bytes. Run: go test -run '^$' -bench HostileQueryPerByte -benchmem ./internal/enforce/
func BenchmarkHostileQueryPerByte(b *testing.B) {
	e := devFiltered(b)
	for _, hq := range hostileQueries() {
		if _, err := e.queryUncached(hq.q, true, false, nil); err != nil {
			b.Fatalf("%s: %.300s", hq.name, err)
		}
		b.Run(hq.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(hq.q)))
			start := time.Now()
			for b.Loop() {
				_, _ = e.queryUncached(hq.q, true, false, nil)
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/float64(len(hq.q)), "ns/byte")
		})
	}
}

// FuzzCheckDepth: checkDepth errs only upwards: a query it lets through parses into a tree no deeper than
// maxQueryDepth. WITH templates are left out: their expansion is bounded by checkWithBudget instead.
func FuzzCheckDepth(f *testing.F) {
	for _, s := range []string{"-up", "- - (a + b) * -c", "f(a+b, -(c))", "a or b and c unless d", `{a="(("} + 1`, "1 + 2 * 3 ^ 4 ^ 5",
		"sum(rate(x[5m])) by (a) / ignoring(b) group_left count(y) > bool 0.5", "- 1e-5 - -Inf", "a atan2 b default c if d ifnot e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		if containsFold(q, "with") || checkDepth(q) != nil {
			return
		}
		expr, err := metricsql.Parse(q)
		if err != nil {
			return
		}
		if d := exprDepth(expr); d > maxQueryDepth {
			t.Fatalf("checkDepth let through a query %d levels deep: %.200q", d, q)
		}
	})
}

// deepWith is a query whose WITH templates without args each wrap the one before in per calls of abs, over inner, to
// about levels levels once expanded, where its text nests per levels deep.
func deepWith(inner string, levels, per int) string {
	defs := []string{"t0=" + inner}
	k := 0
	for k = 1; k <= levels/per; k++ {
		defs = append(defs, fmt.Sprintf("t%d=%st%d%s", k, strings.Repeat("abs(", per), k-1, strings.Repeat(")", per)))
	}
	return fmt.Sprintf("WITH (%s) count(t%d)", strings.Join(defs, ","), k-1)
}

// TestExpandedDepth: WITH templates without args nest deeper than their text, ten levels a template here (an
// attacker's review: 6.2 KB of them got a query of a hundred selectors past every limit, which read it as reading
// nothing, and took v1.151 to 2.4 GB); past maxQueryDepth once expanded, the query is refused, before metricsql
// expands it where the templates' estimate says so, and one within it passes. A query without templates whose text is
// within the bound and whose parse is not (a window is a level the text does not count) is refused on the parse.
func TestExpandedDepth(t *testing.T) {
	inner := "union(" + strings.TrimSuffix(strings.Repeat("hw,", 100), ",") + ")"
	deep := deepWith(inner, 1010, 10)
	if err := checkDepth(deep); err != nil {
		t.Fatalf("the text alone nests too deeply: %v", err)
	}
	if _, err := checkWithBudget(tokenize(deep)); err != errTooDeep {
		t.Errorf("%d levels of templates, before the parse: %v; want refused", 1010, err)
	}
	if _, err := ParseMetricsQL(deep); err != errTooDeep {
		t.Errorf("%d levels of templates: %v; want refused", 1010, err)
	}
	if e, err := ParseMetricsQL(deepWith(inner, 980, 10)); err != nil || exprDepth(e) < 980 {
		t.Errorf("980 levels of templates: %v; want parsed", err)
	}
	// At the bound: x under 1,000 calls is 1,000 levels deep; under 999 calls and a rate over a window, 1,001.
	if e, err := ParseMetricsQL(strings.Repeat("abs(", 1000) + "x" + strings.Repeat(")", 1000)); err != nil || exprDepth(e) != 1000 {
		t.Errorf("1,000 levels: %v; want parsed", err)
	}
	windowed := strings.Repeat("abs(", 999) + "rate(x[5m])" + strings.Repeat(")", 999)
	if err := checkDepth(windowed); err != nil {
		t.Fatalf("the text of 999 calls and a rate: %v", err)
	}
	if _, err := ParseMetricsQL(windowed); err != errTooDeep {
		t.Errorf("1,001 levels as parsed: %v; want refused", err)
	}
}

// TestOneSelector: a query that is one selector alone is told from the text, strings and braces skipped; anything that
// may make more arms (an operator, a keyword, a call, a window, an offset, a list, a template, an escape) is not one.
func TestOneSelector(t *testing.T) {
	for q, want := range map[string]bool{
		`up`: true, `up{job="api"}`: true, `{__name__=~"a|b"}`: true, `x{host=~"` + strings.Repeat("h1|", 5000) + `h2"}`: true,
		`x{a="or (1) + [5m]", b='}{', c=` + "`or`" + `}`: true, `1`: true, `x{a="\"}"}`: true,
		`a or b`: false, `a OR b`: false, `a+b`: false, `-a`: false, `rate(x[5m])`: false, `x[5m]`: false, `x offset 5m`: false,
		`x @ 100`: false, `a unless b`: false, `a and b`: false, `a default b`: false, `with (a=b) a`: false, `a o\r b`: false,
		`x # comment`: false, `a > bool 1`: false, `x{a="1"} or y{b="2"}`: false, `x{a="}"} or y`: false,
	} {
		if got := OneSelector(q); got != want {
			t.Errorf("OneSelector(%.60q) = %v; want %v", q, got, want)
		}
	}
}
