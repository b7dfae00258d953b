package enforce

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// doublingChain is the classic template bomb: each definition uses the previous one twice.
func doublingChain(n int) string {
	defs := []string{"t0=up"}
	for i := 1; i <= n; i++ {
		defs = append(defs, fmt.Sprintf("t%d=t%d+t%d", i, i-1, i-1))
	}
	return "with (" + strings.Join(defs, ", ") + fmt.Sprintf(") t%d", n)
}

// escapedChain is doublingChain with every use of a template written with an escaped first letter.
func escapedChain(n int) string {
	defs := []string{"t0=up"}
	for i := 1; i <= n; i++ {
		defs = append(defs, fmt.Sprintf(`t%d=\t%d+\t%d`, i, i-1, i-1))
	}
	return "with (" + strings.Join(defs, ", ") + fmt.Sprintf(`) \t%d`, n)
}

func TestUnescapeIdent(t *testing.T) {
	for in, want := range map[string]string{
		"t0": "t0", `\t0`: "t0", `\x74\x30`: "t0", `\u0074x`: "tx", `\xZZ`: `\xZZ`, `a\`: `a\`, `\U0074`: "t",
	} {
		if got := unescapeIdent(in); got != want {
			t.Errorf("unescapeIdent(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestWithBudget(t *testing.T) {
	e := devOnly(t)
	for _, tc := range []struct {
		name, q string
		refused bool
	}{
		{"no templates", `sum(rate(http_requests_total{job="api"}[5m])) by (instance)`, false},
		{"a label called with", `up{with="x"} + with_metric`, false},
		{"plain templates", `with (f(x) = rate(x[5m]), cf = {job="api"}) sum(f(http_requests_total{cf})) / sum(f(errors_total{cf}))`, false},
		{"nested templates", `with (a = with (b = up) b + b) a * a`, false},
		{"doubling chain of 10", doublingChain(10), false},
		{"doubling chain of 20", doublingChain(20), true},
		{"doubling chain of 60", doublingChain(60), true},
		{"wide template calls", `with (f(x) = x+x+x+x+x+x+x+x, g(x) = f(f(x)), h(x) = g(g(x)), k(x) = h(h(x))) k(k(up))`, true},
		{"filter template chain", `with (f0 = {a="1"}, f1 = {f0, f0, f0, f0}, f2 = {f1, f1, f1, f1}, f3 = {f2, f2, f2, f2}, f4 = {f3, f3, f3, f3}, f5 = {f4, f4, f4, f4}, f6 = {f5, f5, f5, f5}, f7 = {f6, f6, f6, f6}, f8 = {f7, f7, f7, f7}) up{f8}`, true},
		{"templates in a comment and a string", "# with (t1=t0+t0)\nlabel_replace(up, \"x\", \"with (a=b)\", \"\", \"\")", false},
		// Few terms, many bytes: 13 doublings of a 14 KB string would be 115 MB to parse, print and match.
		{"doubling chain of a long string", strings.Replace(doublingChain(13), "t0=up", `t0={a="`+strings.Repeat("x", 14000)+`"}`, 1), true},
		// metricsql unescapes names before it looks templates up: \t0 is t0.
		{"doubling chain of escaped names", escapedChain(20), true},
		{"doubling chain of hex-escaped names", strings.ReplaceAll(escapedChain(20), `\t`, `\x74`), true},
		{"a long string used a few times", `with (s = {a="` + strings.Repeat("x", 14000) + `"}) up{s} + up{s} + up{s}`, false},
	} {
		// Without the budget, the refused ones would not fail: they would run for hours, until the test timeout.
		_, err := e.Query(tc.q)
		if tc.refused {
			if err == nil || statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "WITH templates expand to more than") {
				t.Errorf("%s: want a 400 about WITH templates, got %v", tc.name, err)
			}
		} else if err != nil {
			t.Errorf("%s: refused: %s", tc.name, err)
		}
	}
}
