package enforce

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// manyFilters is x{l0=~"<re>0",l1=~"<re>1",...}: n distinct regexps, each compiled once by metricsql.
func manyFilters(re string, n int) string {
	var b strings.Builder
	b.WriteString("x{")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "l%d=~%q", i, fmt.Sprintf("%s%d", re, i))
	}
	b.WriteString("}")
	return b.String()
}

// TestRegexpBudget is the table of queries whose regexps metricsql would compile while parsing: dashboards' regexps
// pass, a few bytes that compile to a large program, many times over, are refused before the parser spends the time.
func TestRegexpBudget(t *testing.T) {
	e := devOnly(t)
	hosts := make([]string, 5000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%04d.example.com", i)
	}
	for _, tc := range []struct {
		name, q string
		refused bool
	}{
		{"a dashboard's regexp", `sum(rate(http_requests_total{handler=~"/api/v1/(query|query_range)",code!~"5.."}[5m])) by (handler)`, false},
		{"a Grafana variable of 5000 hosts", `up{instance=~"` + strings.Join(hosts, "|") + `"}`, false},
		{"a class or two", `up{instance=~"[a-z0-9-]+\\.example\\.com:[0-9]{2,5}", job=~"\\pL+"}`, false},
		{"no regexp filter", `label_replace(up, "x", "$1", "instance", "(\\pL{128})")`, false},
		{"200 distinct \\pL{128}", manyFilters(`\pL{128}`, 200), true},
		{"200 distinct (?i)\\pL{128}", manyFilters(`(?i)\pL{128}`, 200), true},
		{"30 distinct (a{100}){128}", manyFilters(`(?:`+strings.Repeat("a", 100)+`){128}`, 30), true},
		{"a few \\pL{128}", manyFilters(`\pL{128}`, 3), false},
		// Pieces that are no regexp alone, joined by the parser.
		{"concatenated pieces", strings.ReplaceAll(manyFilters(`\pL`, 100), `=~"\\pL`, `=~"\\pL" + "{128}`), true},
		// A template used many times: each use is another regexp.
		{"a template of \\pL{128}", `with (p = "\\pL{128}") ` + strings.ReplaceAll(manyFilters("", 200), `=~"`, `=~p + "`), true},
		{"a template of a plain regexp", `with (p = "api|web") ` + strings.ReplaceAll(manyFilters("", 200), `=~"`, `=~p + "`), false},
	} {
		_, err := e.Query(tc.q)
		if tc.refused {
			if err == nil || statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "regexps would compile to a program") {
				t.Errorf("%s: want a 400 about the regexps, got %v", tc.name, err)
			}
		} else if err != nil && strings.Contains(err.Error(), "regexps would compile") {
			t.Errorf("%s: refused: %s", tc.name, err)
		}
	}
}
