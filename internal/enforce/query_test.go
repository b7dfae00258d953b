package enforce

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"
)

// devOnly is a token with extra_labels {team="dev"}; devFiltered adds two extra filters, three branches in all.
func devOnly(t testing.TB) *Enforcer {
	t.Helper()
	return mustNew(t, []Label{{"team", "dev"}}, nil)
}

func devFiltered(t testing.TB) *Enforcer {
	t.Helper()
	return mustNew(t, []Label{{"team", "dev"}}, []string{`{env=~"prod|stage"}`, `{region="eu" or tier="gold"}`})
}

func mustNew(t testing.TB, labels []Label, filters []string) *Enforcer {
	t.Helper()
	e, err := New(labels, filters)
	if err != nil {
		t.Fatalf("New(%v, %q): %s", labels, filters, err)
	}
	return e
}

// F is what devFiltered's three branches turn a one-branch selector body `X` into.
func threeBranches(x string) string {
	if x != "" {
		x += ","
	}
	return x + `team="dev",env=~"prod|stage",Env="" or ` + x + `team="dev",region="eu" or ` + x + `team="dev",tier="gold"`
}

// queryCase is one rewrite: the query, its rewrite for devOnly and for devFiltered.
type queryCase struct{ name, in, labels, filtered string }

func queryCases() []queryCase {
	F := threeBranches
	return []queryCase{
		{"bare metric", `up`, `up{team="dev"}`, `up{` + F("") + `}`},
		{"empty selector", `{}`, `{team="dev"}`, `{` + F("") + `}`},
		{"conflicting enforced label ANDs", `up{team="ops"}`, `up{team="ops",team="dev"}`, `up{` + F(`team="ops"`) + `}`},
		{"regexp on enforced label cannot widen", `up{team=~".*"}`, `up{team=~".*",team="dev"}`, `up{` + F(`team=~".*"`) + `}`},
		{"negative matcher on enforced label", `up{team!="dev"}`, `up{team!="dev",team="dev"}`, `up{` + F(`team!="dev"`) + `}`},
		{"negative regexp on enforced label", `up{team!~"dev"}`, `up{team!~"dev",team="dev"}`, `up{` + F(`team!~"dev"`) + `}`},
		{"same label as enforced is deduplicated", `up{team="dev"}`, `up{team="dev"}`, `up{` + F("") + `}`},
		{"__name__ regexp", `{__name__=~"up|node_.+"}`, `{__name__=~"up|node_.+",team="dev"}`, `{` + F(`__name__=~"up|node_.+"`) + `}`},
		{"__name__ exact", `{__name__="up"}`, `up{team="dev"}`, `up{` + F("") + `}`},
		{"dots in metric name", `metric.with.dots`, `metric.with.dots{team="dev"}`, `metric.with.dots{` + F("") + `}`},
		{"colons in metric name", `foo:bar:rate5m`, `foo:bar:rate5m{team="dev"}`, `foo:bar:rate5m{` + F("") + `}`},
		{"quoted metric name", `{"foo.bar-baz"}`, `foo.bar\-baz{team="dev"}`, `foo.bar\-baz{` + F("") + `}`},
		// VictoriaMetrics v1.79 cannot parse a non-ASCII identifier: the name goes inside the braces.
		{"unicode metric name", `{__name__="métrique"}`, `{__name__=~"métrique",team="dev"}`, `{` + F(`__name__=~"métrique"`) + `}`},
		{"unicode label name", `ïœ_métrique{ключ="значение"}`, `{__name__=~"ïœ_métrique",ключ="значение",team="dev"}`, `{` + F(`__name__=~"ïœ_métrique",ключ="значение"`) + `}`},
		// A name such as nan or Inf, printed bare, would read back as a number.
		{"metric named nan", `{__name__="nAn"}`, `{__name__=~"nAn",team="dev"}`, `{` + F(`__name__=~"nAn"`) + `}`},
		{"metric named inf", `{"Inf",job="a"}`, `{__name__=~"Inf",job="a",team="dev"}`, `{` + F(`__name__=~"Inf",job="a"`) + `}`},
		// A keyword printed bare right of an operator reads as the keyword: VictoriaMetrics v1.79 reprints
		// 0 - (on{team="dev"}) without the parentheses, fails to parse it again and exits.
		{"metric named on, negated", `-{__name__="on"}`, `0 - {__name__=~"on",team="dev"}`, `0 - {` + F(`__name__=~"on"`) + `}`},
		{"metric named BOOL right of an operator", `a + {__name__="BOOL"}`, `a{team="dev"} + {__name__=~"BOOL",team="dev"}`, `a{` + F("") + `} + {` + F(`__name__=~"BOOL"`) + `}`},
		{"metric named group_left after on()", `a and on() {"group_left"}`, `a{team="dev"} and on() {__name__=~"group_left",team="dev"}`, `a{` + F("") + `} and on() {` + F(`__name__=~"group_left"`) + `}`},
		{"metric named ignoring, offset", `a or {__name__="Ignoring"} offset 5m`, `a{team="dev"} or ({__name__=~"Ignoring",team="dev"} offset 5m)`, `a{` + F("") + `} or ({` + F(`__name__=~"Ignoring"`) + `} offset 5m)`},
		{"metric named by", `sum({__name__="by"})`, `sum({__name__=~"by",team="dev"})`, `sum({` + F(`__name__=~"by"`) + `})`},
		// The parser takes a second metric name after an empty one but would refuse the x{__name__=""} it prints.
		{"second name after an empty one", `{"","0"}`, `\0{__name__=~"",team="dev"}`, `\0{` + F(`__name__=~""`) + `}`},
		{"quoted name after an empty __name__", `{__name__="", "x"}`, `x{__name__=~"",team="dev"}`, `x{` + F(`__name__=~""`) + `}`},
		{"rollup", `rate(http_requests_total{job="api"}[5m])`, `rate(http_requests_total{job="api",team="dev"}[5m])`, `rate(http_requests_total{` + F(`job="api"`) + `}[5m])`},
		{"range selector", `foo[5m]`, `foo{team="dev"}[5m]`, `foo{` + F("") + `}[5m]`},
		{"subquery", `rate(foo[5m:1m])`, `rate(foo{team="dev"}[5m:1m])`, `rate(foo{` + F("") + `}[5m:1m])`},
		{"nested subquery with offset", `max_over_time(rate(foo[1m])[1h:5m] offset 1d)`, `max_over_time(rate(foo{team="dev"}[1m])[1h:5m] offset 1d)`, `max_over_time(rate(foo{` + F("") + `}[1m])[1h:5m] offset 1d)`},
		{"aggregation by", `sum(rate(foo[5m])) by (instance)`, `sum(rate(foo{team="dev"}[5m])) by(instance)`, `sum(rate(foo{` + F("") + `}[5m])) by(instance)`},
		{"aggregation without enforced label", `sum without (team) (foo)`, `sum(foo{team="dev"}) without(team)`, `sum(foo{` + F("") + `}) without(team)`},
		{"topk by", `topk(3, foo) by (job)`, `topk(3, foo{team="dev"}) by(job)`, `topk(3, foo{` + F("") + `}) by(job)`},
		{"aggregation limit", `sum(foo) by (team) limit 5`, `sum(foo{team="dev"}) by(team) limit 5`, `sum(foo{` + F("") + `}) by(team) limit 5`},
		{"group_left", `a / on(instance) group_left(team) b`, `a{team="dev"} / on(instance) group_left(team) b{team="dev"}`, `a{` + F("") + `} / on(instance) group_left(team) b{` + F("") + `}`},
		{"ignoring", `a + ignoring(team) b`, `a{team="dev"} + ignoring(team) b{team="dev"}`, `a{` + F("") + `} + ignoring(team) b{` + F("") + `}`},
		{"set or", `a or b`, `a{team="dev"} or b{team="dev"}`, `a{` + F("") + `} or b{` + F("") + `}`},
		{"unless", `a unless b`, `a{team="dev"} unless b{team="dev"}`, `a{` + F("") + `} unless b{` + F("") + `}`},
		{"bool comparison", `a > bool 1`, `a{team="dev"} >bool 1`, `a{` + F("") + `} >bool 1`},
		{"unary minus", `-foo`, `0 - foo{team="dev"}`, `0 - foo{` + F("") + `}`},
		{"keep_metric_names", `(a + b) keep_metric_names`, `(a{team="dev"} + b{team="dev"}) keep_metric_names`, `(a{` + F("") + `} + b{` + F("") + `}) keep_metric_names`},
		{"or filter group", `foo{a="1" or b="2"}`, `foo{a="1",team="dev" or b="2",team="dev"}`, `foo{` + F(`a="1"`) + ` or ` + F(`b="2"`) + `}`},
		{"or filter group without name", `{a="1" or b="2"}`, `{a="1",team="dev" or b="2",team="dev"}`, `{` + F(`a="1"`) + ` or ` + F(`b="2"`) + `}`},
		{"or filter group with enforced label", `{team="ops" or team="sec"}`, `{team="ops",team="dev" or team="sec",team="dev"}`, `{` + F(`team="ops"`) + ` or ` + F(`team="sec"`) + `}`},
		{"WITH", `with (x = up{job="a"}) x + x`, `up{job="a",team="dev"} + up{job="a",team="dev"}`, `up{` + F(`job="a"`) + `} + up{` + F(`job="a"`) + `}`},
		{"WITH nested with args", `with (f(a) = rate(a[5m]), g(b) = f(b) * 2) g(foo)`, `rate(foo{team="dev"}[5m]) * 2`, `rate(foo{` + F("") + `}[5m]) * 2`},
		{"WITH arg used twice", `with (f(a) = a / a) f(foo)`, `foo{team="dev"} / foo{team="dev"}`, `foo{` + F("") + `} / foo{` + F("") + `}`},
		// The parser puts the one *MetricExpr of the argument sum(foo) at both places: it must be rewritten once.
		{"WITH arg shared in the tree", `with (f(a) = a / a) f(sum(foo))`, `sum(foo{team="dev"}) / sum(foo{team="dev"})`, `sum(foo{` + F("") + `}) / sum(foo{` + F("") + `})`},
		{"WITH filter template", `with (sel = {job="a"}) foo{sel}`, `foo{job="a",team="dev"}`, `foo{` + F(`job="a"`) + `}`},
		{"WITH filter template setting the enforced label", `with (sel = {team="ops"}) foo{sel}`, `foo{team="ops",team="dev"}`, `foo{` + F(`team="ops"`) + `}`},
		{"WITH in aggregation", `with (s = {job="a"}) sum(rate(foo{s}[5m])) / sum(rate(bar{s}[5m]))`, `sum(rate(foo{job="a",team="dev"}[5m])) / sum(rate(bar{job="a",team="dev"}[5m]))`, `sum(rate(foo{` + F(`job="a"`) + `}[5m])) / sum(rate(bar{` + F(`job="a"`) + `}[5m]))`},
		{"built-in template ru", `ru(free, max)`, `(clamp_min(max{team="dev"} - clamp_min(free{team="dev"}, 0), 0) / clamp_min(max{team="dev"}, 0)) * 100`, `(clamp_min(max{` + F("") + `} - clamp_min(free{` + F("") + `}, 0), 0) / clamp_min(max{` + F("") + `}, 0)) * 100`},
		{"built-in template alias", `alias(up, "x")`, `label_set(up{team="dev"}, "__name__", "x")`, `label_set(up{` + F("") + `}, "__name__", "x")`},
		{"@ end()", `foo @ end()`, `foo{team="dev"} @ end()`, `foo{` + F("") + `} @ end()`},
		{"@ number", `foo @ 1700000000`, `foo{team="dev"} @ 1700000000`, `foo{` + F("") + `} @ 1700000000`},
		{"@ and offset in rollup", `rate(foo[5m] @ start() offset 1h)`, `rate(foo{team="dev"}[5m] offset 1h @ start())`, `rate(foo{` + F("") + `}[5m] offset 1h @ start())`},
		{"negative offset", `foo offset -5m`, `foo{team="dev"} offset -5m`, `foo{` + F("") + `} offset -5m`},
		{"label_replace onto enforced label", `label_replace(up, "team", "dev", "", "")`, `label_replace(up{team="dev"}, "team", "dev", "", "")`, `label_replace(up{` + F("") + `}, "team", "dev", "", "")`},
		{"label_join onto enforced label", `label_join(up, "team", ",", "job")`, `label_join(up{team="dev"}, "team", ",", "job")`, `label_join(up{` + F("") + `}, "team", ",", "job")`},
		{"absent", `absent(nonexistent{job="x"})`, `absent(nonexistent{job="x",team="dev"})`, `label_set(absent(nonexistent{` + F(`job="x"`) + `}), "job", "x", "team", "dev")`},
		{"count_values", `count_values("team", up)`, `count_values("team", up{team="dev"})`, `count_values("team", up{` + F("") + `})`},
		{"histogram_quantile", `histogram_quantile(0.9, sum(rate(h_bucket[5m])) by (le))`, `histogram_quantile(0.9, sum(rate(h_bucket{team="dev"}[5m])) by(le))`, `histogram_quantile(0.9, sum(rate(h_bucket{` + F("") + `}[5m])) by(le))`},
		{"union", `union(a, b)`, `union(a{team="dev"}, b{team="dev"})`, `union(a{` + F("") + `}, b{` + F("") + `})`},
		{"parens union", `(a, b)`, `(a{team="dev"}, b{team="dev"})`, `(a{` + F("") + `}, b{` + F("") + `})`},
		{"scalar", `scalar(foo) * 2`, `scalar(foo{team="dev"}) * 2`, `scalar(foo{` + F("") + `}) * 2`},
		{"no selector: vector", `vector(1)`, `vector(1)`, `vector(1)`},
		{"no selector: constants folded", `1 + 2`, `3`, `3`},
		{"no selector: time", `time()`, `time()`, `time()`},
		{"string that looks like a selector", `"up{team=\"ops\"}"`, `"up{team=\"ops\"}"`, `"up{team=\"ops\"}"`},
		{"synthetic series with the enforced label", `label_set(time(), "team", "ops")`, `label_set(time(), "team", "ops")`, `label_set(time(), "team", "ops")`},
	}
}

func TestQuery(t *testing.T) {
	l, f := devOnly(t), devFiltered(t)
	for _, tt := range queryCases() {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				e    *Enforcer
				want string
			}{{l, tt.labels}, {f, tt.filtered}} {
				got, err := c.e.Query(tt.in)
				if err != nil {
					t.Fatalf("Query(%q) with %s: %s", tt.in, c.e, err)
				}
				if c.want = lifted(t, c.want); got != c.want {
					t.Errorf("Query(%q) with %s\n got: %s\nwant: %s", tt.in, c.e, got, c.want)
				}
				if err := checkEnforced(c.e, got); err != nil {
					t.Errorf("Query(%q) with %s = %s: %s", tt.in, c.e, got, err)
				}
			}
		})
	}
}

// lifted is a rewrite the tables write with `or` inside the braces, as Query sends it: with its selectors of several
// branches lifted into unions (TestLiftOr).
func lifted(t testing.TB, want string) string {
	t.Helper()
	expr, err := metricsql.Parse(want)
	if err != nil {
		t.Fatalf("the table's rewrite %s does not parse: %s", want, err)
	}
	return string(liftOr(expr).AppendString(nil))
}

func TestQueryFilterMetricNames(t *testing.T) {
	// A filter may name a metric: selectors of other metrics then match nothing, and a filter's name never
	// spreads to branches without one (the parser would do that to exact names).
	e := mustNew(t, []Label{{"team", "dev"}}, []string{`up{job="a"}`, `{env="prod"}`})
	tests := []struct{ in, want string }{
		{`up`, `union(up{team="dev",job="a",Job=""}, up{team="dev",env="prod",Env=""})`},
		{`foo`, `union(foo{__name__=~"up",team="dev",job="a",Job=""}, foo{team="dev",env="prod",Env=""})`},
		{`{job="x"}`, `union({__name__=~"up",job="x",team="dev",job="a",Job=""}, {job="x",team="dev",env="prod",Env=""})`},
		{`{__name__=~"u.*"}`, `union(up{__name__=~"u.*",team="dev",job="a",Job=""}, {__name__=~"u.*",team="dev",env="prod",Env=""})`},
		{`metric.with.dots`, `union(metric.with.dots{__name__=~"up",team="dev",job="a",Job=""}, metric.with.dots{team="dev",env="prod",Env=""})`},
		// A range selector alone keeps its branches inside the braces (liftOr), where the name must not spread.
		{`{job="x"}[5m]`, `{__name__=~"up",job="x",team="dev",job="a",Job="" or job="x",team="dev",env="prod",Env=""}[5m]`},
		{`{__name__=~"u.*"}[5m]`, `{__name__="up",__name__=~"u.*",team="dev",job="a",Job="" or __name__=~"u.*",team="dev",env="prod",Env=""}[5m]`},
	}
	for _, tt := range tests {
		got, err := e.Query(tt.in)
		if err != nil {
			t.Fatalf("Query(%q): %s", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("Query(%q)\n got: %s\nwant: %s", tt.in, got, tt.want)
		}
		if err := checkEnforced(e, got); err != nil {
			t.Errorf("Query(%q) = %s: %s", tt.in, got, err)
		}
	}
	// The regexp form must select exactly the filter's metric, even with regexp characters in its name.
	e = mustNew(t, nil, []string{`{__name__="a.b"}`})
	got, err := e.Query(`x`)
	if err != nil {
		t.Fatal(err)
	}
	if want := `x{__name__=~"a\\.b"}`; got != want {
		t.Errorf("Query(x) = %s; want %s", got, want)
	}
}

func TestQueryErrors(t *testing.T) {
	e := devOnly(t)
	for _, q := range []string{``, `up{`, `rate(up[5m]`, `sum(`, `up{team="dev"`, `foo bar`, `with (x = ) x`, `unknown_func(up)`} {
		_, err := e.Query(q)
		if err == nil {
			t.Errorf("Query(%q): want an error", q)
			continue
		}
		if st := statusOf(err); st != http.StatusBadRequest {
			t.Errorf("Query(%q): status %d; want 400 (%s)", q, st, err)
		}
		if !strings.Contains(err.Error(), "cannot parse query") {
			t.Errorf("Query(%q): error %q does not say what failed", q, err)
		}
	}
	// An unrestricted enforcer still refuses what does not parse, and passes the rest unchanged.
	var nilE *Enforcer
	if _, err := nilE.Query(`up{`); statusOf(err) != http.StatusBadRequest {
		t.Errorf("nil Enforcer Query(up{): %v; want 400", err)
	}
	if got, err := nilE.Query(`up{team="ops"}`); err != nil || got != `up{team="ops"}` {
		t.Errorf("nil Enforcer Query = %q, %v; want it unchanged", got, err)
	}
}

func TestSelector(t *testing.T) {
	l, f := devOnly(t), devFiltered(t)
	tests := []struct{ in, labels, filtered string }{
		{`up`, `up{team="dev"}`, `up{` + threeBranches("") + `}`},
		{`{__name__=~".+"}`, `{__name__=~".+",team="dev"}`, `{` + threeBranches(`__name__=~".+"`) + `}`},
		{`{team="ops"}`, `{team="ops",team="dev"}`, `{` + threeBranches(`team="ops"`) + `}`},
		{`{a="1" or b="2"}`, `{a="1",team="dev" or b="2",team="dev"}`, `{` + threeBranches(`a="1"`) + ` or ` + threeBranches(`b="2"`) + `}`},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			e    *Enforcer
			want string
		}{{l, tt.labels}, {f, tt.filtered}} {
			got, err := c.e.Selector(tt.in)
			if err != nil || got != c.want {
				t.Errorf("Selector(%q) with %s = %q, %v; want %q", tt.in, c.e, got, err, c.want)
			}
		}
	}
	for _, s := range []string{`rate(up[5m])`, `up[5m]`, `up offset 5m`, `sum(up)`, `up + 1`, `1`, `"up"`, `up{`, ``} {
		_, err := l.Selector(s)
		if statusOf(err) != http.StatusBadRequest {
			t.Errorf("Selector(%q): %v; want a 400 error", s, err)
		}
	}
}

func TestNew(t *testing.T) {
	if e, err := New(nil, nil); err != nil || e != nil || e.Restricted() {
		t.Errorf("New(nil, nil) = %v, %v; want a nil, unrestricted Enforcer", e, err)
	}
	e := devFiltered(t)
	if !e.Restricted() {
		t.Errorf("devFiltered is not restricted")
	}
	if got := e.Labels(); len(got) != 1 || got[0] != (Label{"team", "dev"}) {
		t.Errorf("Labels() = %v", got)
	}
	if got := e.Filters(); len(got) != 2 || got[1] != `{region="eu" or tier="gold"}` {
		t.Errorf("Filters() = %q", got)
	}
	e.Labels()[0].Value = "ops"
	if e.Labels()[0].Value != "dev" {
		t.Errorf("Labels() leaks the enforcer's own slice")
	}
	if got := e.String(); got != `labels {team="dev"} filters [{env=~"prod|stage"}, {region="eu" or tier="gold"}]` {
		t.Errorf("String() = %s", got)
	}
	if got := mustNew(t, nil, []string{`{env="prod"}`}); !got.Restricted() {
		t.Errorf("filters only: not restricted")
	}
	bad := []struct {
		labels  []Label
		filters []string
		want    string
	}{
		{[]Label{{"", "x"}}, nil, "label name is empty"},
		{[]Label{{"1team", "x"}}, nil, `character '1' at position 0`},
		{[]Label{{"te-am", "x"}}, nil, `character '-' at position 2`},
		{[]Label{{"tëam", "x"}}, nil, "must match [a-zA-Z_][a-zA-Z0-9_]*"},
		{[]Label{{"__name__", "x"}}, nil, "__name__ cannot be an extra label"},
		{[]Label{{"vm_account_id", "1"}}, nil, "tenant comes from vm_access.tenant_id"},
		{[]Label{{"vm_project_id", "1"}}, nil, "tenant comes from vm_access.tenant_id"},
		{[]Label{{"team", ""}}, nil, "the value is empty"},
		{[]Label{{"team", "dev"}, {"team", "ops"}}, nil, "given twice"},
		{nil, []string{`rate(up[5m])`}, "got a call of the function rate()"},
		{nil, []string{`sum(up)`}, "aggregate function sum()"},
		{nil, []string{`up[5m]`}, "a range or offset expression"},
		{nil, []string{`up offset 1h`}, "a range or offset expression"},
		{nil, []string{`up or down`}, `a binary operation "or"`},
		{nil, []string{`1`}, "the number 1"},
		{nil, []string{`"x"`}, "the string"},
		{nil, []string{`{}`}, "would match every series"},
		{nil, []string{`{env="prod"`}, "cannot parse it as a series selector"},
		{nil, []string{``}, "cannot parse it as a series selector"},
		{nil, []string{`{vm_account_id="1"}`}, "vm_account_id cannot be filtered on"},
		{nil, []string{`{a="1" or vm_project_id="2"}`}, "vm_project_id cannot be filtered on"},
	}
	for _, b := range bad {
		e, err := New(b.labels, b.filters)
		if err == nil {
			t.Errorf("New(%v, %q) = %v; want an error", b.labels, b.filters, e)
			continue
		}
		if !strings.Contains(err.Error(), b.want) {
			t.Errorf("New(%v, %q): error %q; want it to contain %q", b.labels, b.filters, err, b.want)
		}
	}
}

func TestNilEnforcer(t *testing.T) {
	var e *Enforcer
	if e.Restricted() || e.Labels() != nil || e.Filters() != nil || e.String() != "unrestricted" {
		t.Errorf("nil Enforcer is not plainly unrestricted")
	}
}

func TestConcurrentUse(t *testing.T) {
	// One Enforcer serves all requests of a token at once; run with -race.
	e := devFiltered(t)
	want, err := e.Query(`sum(rate(foo{a="1" or b="2"}[5m])) by (job)`)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string)
	for i := 0; i < 8; i++ {
		go func() {
			got := ""
			for j := 0; j < 200; j++ {
				got, _ = e.Query(`sum(rate(foo{a="1" or b="2"}[5m])) by (job)`)
				if got != want {
					break
				}
			}
			done <- got
		}()
	}
	for i := 0; i < 8; i++ {
		if got := <-done; got != want {
			t.Errorf("concurrent Query = %s; want %s", got, want)
		}
	}
}

func statusOf(err error) int {
	if err == nil {
		return 0
	}
	if se, ok := err.(interface{ HTTPStatus() int }); ok {
		return se.HTTPStatus()
	}
	return -1
}

// checkEnforced parses a rewritten query and checks that every branch of every selector in it carries all of
// e's labels and all matchers of at least one filter branch. It is independent of the rewriter's code paths.
func checkEnforced(e *Enforcer, q string) error {
	expr, err := metricsql.Parse(q)
	if err != nil {
		return errorf("the rewritten query does not parse: %s", err)
	}
	var bad error
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok || bad != nil {
			return
		}
		if len(me.LabelFilterss) == 0 {
			bad = errorf("selector %s has no matchers", me.AppendString(nil))
			return
		}
		for _, b := range me.LabelFilterss {
			if err := checkBranch(e, b); err != nil {
				bad = errorf("selector %s: %s", me.AppendString(nil), err)
				return
			}
		}
	})
	return bad
}

func checkBranch(e *Enforcer, b []metricsql.LabelFilter) error {
	has := func(want metricsql.LabelFilter) bool {
		for _, lf := range b {
			if lf == want {
				return true
			}
			if want.Label == "__name__" && !want.IsRegexp && !want.IsNegative && lf.Label == "__name__" && lf.IsRegexp &&
				!lf.IsNegative && lf.Value == regexp.QuoteMeta(want.Value) {
				return true
			}
		}
		return false
	}
	for _, l := range e.labels {
		if !has(metricsql.LabelFilter{Label: l.Name, Value: l.Value}) {
			return errorf("branch %v lacks the label %s=%q", b, l.Name, l.Value)
		}
	}
	if len(e.branches) == 0 {
		return nil
	}
next:
	for _, fb := range e.branches {
		for _, lf := range fb {
			if !has(lf) {
				continue next
			}
		}
		return nil
	}
	return errorf("branch %v carries none of the filter branches %v", b, e.branches)
}

type testError string

func (e testError) Error() string { return string(e) }

func errorf(format string, args ...any) error {
	return testError(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// doublingWith returns a WITH query that expands to 2^n selectors.
func doublingWith(n int) string {
	var sb strings.Builder
	sb.WriteString("with (t0 = up")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, ", t%d = t%d + t%d", i, i-1, i-1)
	}
	fmt.Fprintf(&sb, ") t%d", n)
	return sb.String()
}

func TestQueryTooManySelectors(t *testing.T) {
	e := devOnly(t)
	if _, err := e.Query(doublingWith(12)); err != nil {
		t.Fatalf("4096 selectors: %s", err)
	}
	_, err := e.Query(doublingWith(14))
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "more than 10000 series selectors") {
		t.Fatalf("16384 selectors: %v; want a 400 error about the selector count", err)
	}
}

// TestFingerprint: the same restriction in any order has one fingerprint, another has another, and the
// unrestricted one is the zero value, which no restriction has.
func TestFingerprint(t *testing.T) {
	mk := func(labels []Label, filters ...string) Fingerprint {
		e, err := New(labels, filters)
		if err != nil {
			t.Fatal(err)
		}
		return e.Fingerprint()
	}
	a := mk([]Label{{"team", "dev"}, {"env", "prod"}}, `{a="1"}`, `{b="2"}`)
	if b := mk([]Label{{"env", "prod"}, {"team", "dev"}}, `{b="2"}`, `{a="1"}`); a != b {
		t.Errorf("the same restriction in another order: %x, %x", a, b)
	}
	seen := map[Fingerprint]string{a: "a", mk([]Label{{"team", "dev"}, {"env", "prod"}}): "the labels alone"}
	for name, fp := range map[string]Fingerprint{
		"one label less":       mk([]Label{{"team", "dev"}}, `{a="1"}`, `{b="2"}`),
		"another value":        mk([]Label{{"team", "ops"}, {"env", "prod"}}, `{a="1"}`, `{b="2"}`),
		"a filter less":        mk([]Label{{"team", "dev"}, {"env", "prod"}}, `{a="1"}`),
		"the label as filter":  mk(nil, `{team="dev"}`),
		"the filter as label":  mk([]Label{{"team", "dev"}}),
		"a value across items": mk([]Label{{"env", "prod\x00team=dev"}}), // the separator of two items once (a review)
		"labels across parts":  mk([]Label{{"env", "prod"}}, `{team="dev"}`),
	} {
		if fp == (Fingerprint{}) {
			t.Errorf("%s: the zero fingerprint", name)
		}
		if other, ok := seen[fp]; ok {
			t.Errorf("%s: the fingerprint of %s", name, other)
		}
		seen[fp] = name
	}
	if (*Enforcer)(nil).Fingerprint() != (Fingerprint{}) {
		t.Error("the unrestricted fingerprint is not the zero value")
	}
}

// TestQueryPushdownWork: VictoriaMetrics' optimizer copies the filters common to both sides of each binary operator
// into the selectors below it, cubic in a chain; a query whose copying would burn its CPU for seconds is refused for
// every token, and queries of dashboards' size pass.
func TestQueryPushdownWork(t *testing.T) {
	chain := func(n, filters int) string {
		parts := make([]string, n)
		for i := range parts {
			fs := make([]string, filters)
			for j := range fs {
				fs[j] = fmt.Sprintf(`a%d_%d=""`, i, j)
			}
			parts[i] = "x{" + strings.Join(fs, ",") + "}"
		}
		return strings.Join(parts, " * ")
	}
	for _, tc := range []struct {
		name, query string
		refused     bool
	}{
		{"a chain of 300 (5 s in v1.151)", chain(300, 1), true},
		{"a chain of 120", chain(120, 1), true},
		{"a chain of 60", chain(60, 1), false},
		{"a chain of 30 of 15 filters", chain(30, 15), false},
		{"a chain of 40 of 15 filters", chain(40, 15), true},
		{"a WITH template of a long chain", "with (c = " + chain(150, 1) + ") c", true},
		{"a ratio", `sum(rate(http_requests_total{job="a",code=~"5.."}[5m])) by (job) / sum(rate(http_requests_total{job="a"}[5m])) by (job) * 100`, false},
		{"many aggregated terms", strings.Repeat(`sum(rate(x{job="a",instance="b"}[5m])) + `, 40) + "1", false},
		{"a chain of 200 of one filter", strings.Repeat(`x{job="a"} * `, 199) + `x{job="a"}`, false},
		// label_set makes a filter of each pair: 40 uses of one of 300 pairs took v1.151 9 s (a review).
		{"label_set of 300 pairs 40 times", "with (L = " + labelSet(300) + ") " + strings.Repeat("L * ", 39) + "L", true},
		{"label_set of 300 pairs twice", "with (L = " + labelSet(300) + ") L * L", false},
		{"label_set of 3 pairs 40 times", `with (L = label_set(x, "a", "1", "b", "2", "c", "3")) ` + strings.Repeat("L * ", 39) + "L", false},
		// `or` keeps the filters both sides have: 100 hosts optimize in 13 ms.
		{"an or of 100 hosts", strings.Repeat(`up{instance="h", job="j"} or `, 99) + `up{instance="h"}`, false},
		{"an or of 100 distinct hosts", orHosts(100), false},
		// Each `or` branch of a selector gets the pushed filters and is worked out again above (a review: 2-5 s).
		{"a selector of 1000 branches under operators", "x{" + strings.Repeat(`a="" or `, 999) + `a=""} * y{` + bFilters(500) + "}" +
			strings.Repeat(" * z", 8), true},
		{"a selector of 3 branches under operators", `x{a="1" or b="2" or c="3"} * on(job) group_left() y{job="j"} * z`, false},
		{"1024 selectors of one filter from WITH", doublingWith(10), false},
		// The optimizer compares and copies filters as printed strings: one of 11 KB under 270 `* x` took v1.151 10 s,
		// under 200 5.7 s, and a control byte prints as four (a review).
		{"a long filter under 270 operators", longChain(`x{a="`+strings.Repeat("v", 11000)+`"}`, 270), true},
		{"a long filter under 200 operators", longChain(`x{a="`+strings.Repeat("v", 11000)+`"}`, 200), true},
		{"a long aggregated filter under 270 operators", longChain(`sum by (a) (x{a="`+strings.Repeat("v", 11000)+`"})`, 270), true},
		{"a filter of control bytes under 380 operators", longChain(`x{a="`+strings.Repeat("\x01", 2000)+`"}`, 380), true},
		{"a long filter from WITH strings under 200 operators", doublingString(12) + " " + longChain("x{a=s12}", 200), true},
		{"a long filter under 10 operators", longChain(`x{a="`+strings.Repeat("v", 11000)+`"}`, 10), false},
		{"a Grafana variable of 500 hosts in a ratio", `sum(rate(x{instance=~"` + hostsRegexp(500) + `"}[5m])) by (job) / sum(rate(y{instance=~"` + hostsRegexp(500) + `"}[5m])) by (job)`, false},
		{"a Grafana variable of 200 hosts in five terms", strings.Repeat(`rate(x{instance=~"`+hostsRegexp(200)+`"}[5m]) + `, 4) + "1", false},
	} {
		checkRefused(t, tc.name, tc.query, tc.refused, "optimizer would work out and copy label filters")
	}
}

// TestQueryErrorSize: VictoriaMetrics wraps an error rising through a query with the whole optimized expression at
// every binary operator, so a label_replace that fails under 150 `* x` beside one filter of 11 KB (whose copies the
// optimizer puts into every selector) made v1.151 run out of memory past 6.7 GB, and under 80 took it to 1.7 GB (a
// review); the optimizer's weight, which counts the filter's bytes, refuses those first. Under 300 operators of
// short selectors, a failing label_replace took v1.151's peak memory from 66 to 136 MB; a chain that the weight
// admits, and whose error would be larger, is refused for the size of the error.
func TestQueryErrorSize(t *testing.T) {
	long := `"` + strings.Repeat("v", 11000) + `"`
	failing := func(filter string) string { return `label_replace(x{a=` + filter + `}, "c", "$1", "b", "(")` }
	for _, tc := range []struct {
		name, query string
		refusal     string // "": admitted
	}{
		{"a failing label_replace beside a long filter under 150 operators", longChain(failing(long), 150), "optimizer would work out"},
		{"the same under 40 operators", longChain(failing(long), 40), "optimizer would work out"},
		{"the same under 10 operators", longChain(failing(long), 10), ""},
		{"a selector under 400 operators", longChain("x", 400), "in the error, over 64 MiB"},
		{"a selector under 200 operators", longChain("x", 200), ""},
		// An `or` gives its branches no filter they lack: 150 hosts pass (a review found them refused).
		{"an or of 150 hosts", orHosts(150), ""},
		{"a failing label_replace under 150 operators", longChain(failing(`"a"`), 150), ""},
		{"40 subqueries in each other around a long filter", strings.Repeat("rate((", 40) + "x{a=" + long + "}" + strings.Repeat(")[5m:1m])", 40), ""},
	} {
		for _, e := range []*Enforcer{nil, devOnly(t)} {
			_, err := e.Query(tc.query)
			if tc.refusal != "" {
				// A restricted token's selectors all carry its filter, which the optimizer's weight may refuse first.
				if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), tc.refusal) &&
					!(e.Restricted() && strings.Contains(err.Error(), "optimizer would work out")) {
					t.Errorf("%s (restricted=%v): %v; want a 400 with %q", tc.name, e.Restricted(), err, tc.refusal)
				}
			} else if err != nil {
				t.Errorf("%s (restricted=%v): %v", tc.name, e.Restricted(), err)
			}
		}
	}
}

// longChain is first under n `* x`, left-deep as the parser builds it.
func longChain(first string, n int) string { return first + strings.Repeat(" * x", n) }

// doublingString is a WITH of strings s0 (16 bytes) to sk, each twice the one before: sk is 16·2^k bytes.
func doublingString(k int) string {
	var sb strings.Builder
	sb.WriteString(`with (s0 = "` + strings.Repeat("v", 16) + `"`)
	for i := 1; i <= k; i++ {
		fmt.Fprintf(&sb, ", s%d = s%d + s%d", i, i-1, i-1)
	}
	return sb.String() + ")"
}

// hostsRegexp is an alternation of n hosts, as Grafana expands a multi-value variable.
func hostsRegexp(n int) string {
	hs := make([]string, n)
	for i := range hs {
		hs[i] = fmt.Sprintf("host-%d.example.com:9100", i)
	}
	return strings.Join(hs, "|")
}

// checkRefused checks query for an unrestricted token and a restricted one: refused with a 400 whose message has msg,
// or admitted.
func checkRefused(t *testing.T, name, query string, refused bool, msg string) {
	t.Helper()
	for _, e := range []*Enforcer{nil, devOnly(t)} {
		_, err := e.Query(query)
		if refused {
			if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), msg) {
				t.Errorf("%s (restricted=%v): %v; want a 400 with %q", name, e.Restricted(), err, msg)
			}
		} else if err != nil {
			t.Errorf("%s (restricted=%v): %v", name, e.Restricted(), err)
		}
	}
}

// orHosts is an `or` of n selectors of distinct hosts, as a dashboard's variable expands.
func orHosts(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`node_load1{instance="host-%d:9100",job="node"}`, i)
	}
	return strings.Join(parts, " or ")
}

// labelSet is label_set(x, ...) of k pairs of distinct names.
func labelSet(k int) string {
	var sb strings.Builder
	sb.WriteString("label_set(x")
	for i := range k {
		fmt.Fprintf(&sb, `, "a%d", "v"`, i)
	}
	return sb.String() + ")"
}

// bFilters is k filters on distinct names: b0="",b1="",...
func bFilters(k int) string {
	fs := make([]string, k)
	for i := range fs {
		fs[i] = fmt.Sprintf(`b%d=""`, i)
	}
	return strings.Join(fs, ",")
}

// copies is the pairs of label_copy from b into c0, c1, ...
func copies(n int) string {
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, `, "b", "c%d"`, i)
	}
	return sb.String()
}

// TestQueryLabelGrowth: nested label functions multiply a label value as the query runs, where none of
// VictoriaMetrics' limits look: 24 label_join of a label with itself took v1.151 0.6-6 s and up to 2.7 GB from a query
// of 700 bytes, and a 4 MB label made that way and pushed into the selectors of an operator's other side ran it out
// of memory from 641 bytes; copies of a long value add up (reviews). A query whose series' labels could weigh over
// 256 KiB is refused; the label functions dashboards use pass.
func TestQueryLabelGrowth(t *testing.T) {
	joins := func(n int) string {
		q := `label_set(vector(1), "a", "xxxxxxxxxxxxxxxx")`
		for range n {
			q = `label_join(` + q + `, "a", "", "a", "a")`
		}
		return q
	}
	replaces := func(n int) string {
		q := `label_set(vector(1), "a", "xxxxxxxxxxxxxxxx")`
		for range n {
			q = `label_replace(` + q + `, "a", "$1$1", "a", "(.*)")`
		}
		return q
	}
	for _, tc := range []struct {
		name, query string
		refused     bool
	}{
		{"24 label_join doubling a label", "count(" + joins(24) + ")", true},
		{"24 label_replace doubling a label", "count(" + replaces(24) + ")", true},
		{"a 4 MB label pushed under 20 operators", joins(18) + ` * on(a) (label_set(time(), "q")` + strings.Repeat(" * m", 20) + ")", true},
		{"label_transform of a doubled value", `label_transform(` + joins(3) + `, "a", ".", "$0$0$0$0")`, true},
		// Copies add up: a 60 KB value copied into 100 labels took v1.151 to 3.8 GB from 5 KB (a review).
		{"a long value copied into 100 labels", `label_copy(label_join(label_set(cpu, "a", "` + strings.Repeat("x", 4000) + `"), "b", ""` +
			strings.Repeat(`, "a"`, 15) + `)` + copies(100) + `)`, true},
		{"100 label_join of one source in each other", strings.Repeat(`label_join(`, 100) + "cpu" + strings.Repeat(`, "b", "", "a")`, 100), true},
		{"a value copied into 3 labels", `label_copy(up, "instance", "a", "instance", "b", "job", "c")`, false},
		{"label_transform of a prefix", `label_transform(cpu, "inst", "^i(.*)$", "instance-$1")`, false},
		{"a group_left of two labels", `a * on(instance) group_left(team, owner) b`, false},
		{"a label_join of sixteen labels", `label_join(up, "all", ","` + strings.Repeat(`, "a"`, 16) + `)`, false},
		{"a label_join of two labels", `label_join(up, "hostport", ":", "host", "port")`, false},
		{"a label_join of eight labels", `label_join(up, "all", ",", "a", "b", "c", "d", "e", "f", "g", "h")`, false},
		{"a label_replace of a host", `label_replace(up, "host", "$1", "instance", "(.*):\\d+")`, false},
		{"three label_replace in each other", `label_replace(label_replace(label_replace(up, "a", "$1", "instance", "(.*)"), "b", "$1", "job", "(.*)"), "c", "$1-$2", "a", "(.*):(.*)")`, false},
		{"a doubled label, twice", "count(" + joins(2) + ")", false},
	} {
		checkRefused(t, tc.name, tc.query, tc.refused, "label functions could make the labels of one series weigh over 256 KiB")
	}
}

// TestQueryErrorSizeEscapedNames: a metric name of control bytes prints four bytes for each in VictoriaMetrics'
// errors, and is weighed so (a review): under 70 operators, 400 of them are refused where 400 letters pass.
func TestQueryErrorSizeEscapedNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		metric  string
		refused bool
	}{
		{"letters", strings.Repeat("a", 400), false},
		{"control bytes", strings.Repeat(`\x01`, 400), true},
	} {
		q := `{__name__="` + tc.metric + `"}` + strings.Repeat(` * {__name__="`+tc.metric+`"}`, 70)
		_, err := (*Enforcer)(nil).Query(q)
		if tc.refused != (err != nil) {
			t.Errorf("%s: %v; want refused=%v", tc.name, err, tc.refused)
		}
	}
}
