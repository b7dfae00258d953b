package enforce

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// filtersOf is x{l0=~<value(0)>,l1=~<value(1)>,...}.
func filtersOf(n int, value func(i int) string) string {
	var b strings.Builder
	b.WriteString("x{")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "l%d=~%s", i, value(i))
	}
	b.WriteString("}")
	return b.String()
}

// manyFilters is n distinct regexps re0, re1, ..., each compiled once by metricsql; manyRawFilters the same in
// backticks, as written.
func manyFilters(re string, n int) string {
	return filtersOf(n, func(i int) string { return strconv.Quote(re + strconv.Itoa(i)) })
}

func manyRawFilters(re string, n int) string {
	return filtersOf(n, func(i int) string { return "`" + re + strconv.Itoa(i) + "`" })
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
		// VictoriaMetrics compiles the regexp args of label functions as it evaluates them: a union of 200 took v1.151
		// 2.6 s and 1.5 GB (an attacker's review); they were weighed only beside a regexp filter.
		{"200 label_replace of dense regexps", labelFuncs("label_replace(z, \"a\", \"$1\", \"b\", \"%s\")", `(?:(?:\\pL{30}){30})B`, 200), true},
		{"50 label_match of dense regexps", labelFuncs("label_match(z, \"b\", \"%s\")", `(?:(?:\\pL{30}){30})B`, 50), true},
		{"50 LABEL_MISMATCH of dense regexps", labelFuncs("LABEL_MISMATCH(z, \"b\", \"%s\")", `(?:(?:\\pL{30}){30})B`, 50), true},
		{"20 label_transform of dense regexps", labelFuncs("label_transform(z, \"b\", \"%s\", \"x\")", `(?:(?:\\pL{30}){30})B`, 20), true},
		{"a dashboard's label_replace", `label_replace(rate(x[5m]), "host", "$1", "instance", "([^:]+):\\d+")`, false},
		{"200 distinct \\pL{128}", manyFilters(`\pL{128}`, 200), true},
		{"200 distinct (?i)\\pL{128}", manyFilters(`(?i)\pL{128}`, 200), true},
		{"30 distinct (a{100}){128}", manyFilters(`(?:`+strings.Repeat("a", 100)+`){128}`, 30), true},
		{"two \\pL{128}", manyFilters(`\pL{128}`, 2), false},
		// Pieces that are no regexp alone, joined by the parser.
		{"concatenated pieces", strings.ReplaceAll(manyFilters(`\pL`, 100), `=~"\\pL`, `=~"\\pL" + "{128}`), true},
		// A template used many times: each use is another regexp.
		{"a template of \\pL{128}", `with (p = "\\pL{128}") ` + strings.ReplaceAll(manyFilters("", 200), `=~"`, `=~p + "`), true},
		{"a template of a plain regexp", `with (p = "api|web") ` + strings.ReplaceAll(manyFilters("", 200), `=~"`, `=~p + "`), false},
		// Found by an attacker's review: a repeat split across +, a backtick escape the scan missed, one-pass
		// analysis of short programs, case folding of wide ranges, templates of pieces.
		{"a repeat split across +", strings.ReplaceAll(manyFilters(`\pL{12`, 500), `=~"\\pL{12`, `=~"\\pL{12"+"8}`), true},
		{"a backtick escape", "{`\\``} + " + strings.ReplaceAll(manyFilters(`\pL{128}b`, 500), `{128}`, `\x7b128}`), true},
		{"one-pass analysis", manyRawFilters(`\b{900}\pL`, 20), true},
		{"case folding of wide ranges", `x{a=~"(?i)[` + strings.Repeat("B-\U0001E942", 10) + `]"}`, true},
		{"a template of pieces", `with (p = "aaaaaaaaaaaaaaaaaaaa\\pL{12", r = "8}") ` + strings.ReplaceAll(manyFilters("", 600), `=~"`, `=~p+r+"`), true},
		{"a filter template with a counted repeat, 20 uses", withUses(`[0-9a-f]{64}`, 20), false},
		{"a filter template with .{1,64}, 10 uses", withUses(`.{1,64}`, 10), false},
		{"a k8s pod regexp", `sum(rate(container_cpu_usage_seconds_total{pod=~"api-[a-z0-9]{8,10}-[a-z0-9]{5}"}[5m])) by (pod)`, false},
		{"an IP regexp", `label_replace(up{instance=~"(\d{1,3}\.){3}\d{1,3}:\d{2,5}"}, "ip", "$1", "instance", "((?:\d{1,3}\.){3}\d{1,3}):\d+")`, false},
		{"case-insensitive letters", `up{job=~"(?i)[a-z_-]+api.*"}`, false},
		{"case-insensitive word classes", `sum(rate(http_requests_total{path=~"(?i)/api/v[0-9]+/[\\w-]+/[\\w-]+"}[5m])) by (path)`, false},
		{"case-insensitive host names", `up{instance=~"(?i)[\\w\\.-]+\\.(prod|stage)\\.[\\w\\.-]+"}`, false},
		// Each string folds under the limit, the query over it: the fold is paid at every parse.
		{"many case-insensitive wide ranges", manyRawFilters(`(?i)[A-\x{1E942}]`, 330), true},
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

// labelFuncs is a union of n calls of format, each with its own regexp: re and its number.
func labelFuncs(format, re string, n int) string {
	calls := make([]string, n)
	for i := range calls {
		calls[i] = fmt.Sprintf(format, fmt.Sprintf("%s%d", re, i))
	}
	return "union(" + strings.Join(calls, ",") + ")"
}

// withUses is a dashboard's WITH query: one filter template holding re, used uses times.
func withUses(re string, uses int) string {
	var b strings.Builder
	b.WriteString(`with (f = {cluster="prod", namespace=~"team-.*", container_id=~"` + re + `"}, cpu = rate(container_cpu_usage_seconds_total{f}[5m])) `)
	for i := range uses {
		if i > 0 {
			b.WriteString(" or ")
		}
		fmt.Fprintf(&b, `label_set(sum(cpu) by (pod) / sum(kube_pod_container_resource_limits{f, resource="cpu"}) by (pod), "q", "%d")`, i)
	}
	return b.String()
}
