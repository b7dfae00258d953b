package enforce

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// twoBranches is a token whose filters give every selector two branches, one of them naming metrics.
func twoBranches(t testing.TB) *Enforcer {
	return mustNew(t, []Label{{"team", "dev"}}, []string{`{env="prod"}`, `{__name__=~"app_.*"}`})
}

func TestLiftOr(t *testing.T) {
	const (
		a = `team="dev",env="prod",Env=""`
		b = `team="dev",__name__=~"app_.*"`
	)
	e := twoBranches(t)
	for _, tc := range []struct{ in, want string }{
		{`up`, `union(up{` + a + `}, up{` + b + `})`},
		{`0 - up`, `0 - union(up{` + a + `}, up{` + b + `})`},
		{`up offset 1h`, `union(up{` + a + `} offset 1h, up{` + b + `} offset 1h)`},
		{`up @ end()`, `union(up{` + a + `} @ end(), up{` + b + `} @ end())`},
		// A rollup's series: the call is copied, its other args with it.
		{`rate(up[5m])`, `union(rate(up{` + a + `}[5m]), rate(up{` + b + `}[5m]))`},
		{`rate(up)`, `union(rate(up{` + a + `}), rate(up{` + b + `}))`},
		{`rate(up[5m] offset 1m @ 100)`, `union(rate(up{` + a + `}[5m] offset 1m @ 100), rate(up{` + b + `}[5m] offset 1m @ 100))`},
		{`sum(rate(up[5m])) by (job)`, `sum(union(rate(up{` + a + `}[5m]), rate(up{` + b + `}[5m]))) by(job)`},
		{`quantile_over_time(0.9, up[5m])`, `union(quantile_over_time(0.9, up{` + a + `}[5m]), quantile_over_time(0.9, up{` + b + `}[5m]))`},
		{`quantile_over_time(scalar(x), up[5m])`, `union(quantile_over_time(scalar(union(x{` + a + `}, x{` + b + `})), up{` + a + `}[5m]), ` +
			`quantile_over_time(scalar(union(x{` + a + `}, x{` + b + `})), up{` + b + `}[5m]))`},
		{`rate(up{job="x"}[5m]) keep_metric_names`, `union(rate(up{job="x",` + a + `}[5m]) keep_metric_names, rate(up{job="x",` + b + `}[5m]) keep_metric_names)`},
		// A subquery's query is instant: lifted inside it.
		{`max_over_time(rate(up[1m])[10m:1m])`, `max_over_time(union(rate(up{` + a + `}[1m]), rate(up{` + b + `}[1m]))[10m:1m])`},
		{`rate((up)[5m:])`, `rate(union(up{` + a + `}, up{` + b + `})[5m:])`},
		// So is the query under a window, an offset or an @ over anything but a selector (an attacker's review).
		{`max_over_time(sum(up)[5m])`, `max_over_time(sum(union(up{` + a + `}, up{` + b + `}))[5m])`},
		{`sum(up) offset 1h`, `sum(union(up{` + a + `}, up{` + b + `})) offset 1h`},
		{`max_over_time(count_values("v", up) @ end())`, `max_over_time(count_values("v", union(up{` + a + `}, up{` + b + `})) @ end())`},
		// absent over all of its series: absent only when absent for every branch, with the labels every branch sets
		// (absentLabels).
		{`absent_over_time(up[5m])`, `label_set((vector(1) and on() absent_over_time(up{` + a + `}[5m])) and on() absent_over_time(up{` + b + `}[5m]), "team", "dev")`},
		// A rollup over several metrics, which would drop their names before the union, keeps the braces.
		{`rate({__name__=~"a|b"}[5m])`, `rate({__name__=~"a|b",` + a + ` or __name__=~"a|b",` + b + `}[5m])`},
		{`rate({job="x"}[5m])`, `rate({job="x",` + a + ` or job="x",` + b + `}[5m])`},
		{`last_over_time({__name__=~"a|b"} @ end())`, `last_over_time({__name__=~"a|b",` + a + ` or __name__=~"a|b",` + b + `} @ end())`},
		{`absent(up)`, `label_set(absent(union(up{` + a + `}, up{` + b + `})), "team", "dev")`},
		// A range alone has nothing to stand for it but the braces.
		{`up[5m]`, `up{` + a + ` or ` + b + `}[5m]`},
		// Each side of a binary `or` is lifted on its own.
		{`sum(x{region="eu"} or y)`, `sum(union(x{region="eu",` + a + `}, x{region="eu",` + b + `}) or union(y{` + a + `}, y{` + b + `}))`},
	} {
		got, err := e.Query(tc.in)
		if err != nil {
			t.Errorf("Query(%q): %s", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Query(%q)\n got: %s\nwant: %s", tc.in, got, tc.want)
		}
		if err := checkEnforced(e, got); err != nil {
			t.Errorf("Query(%q) = %s: %s", tc.in, got, err)
		}
	}
	one := devOnly(t)
	if got, err := one.Query(`rate(up{a="1" or b="2"}[5m])`); err != nil || got != `union(rate(up{a="1",team="dev"}[5m]), rate(up{b="2",team="dev"}[5m]))` {
		t.Errorf("a client's own branches: %q %v", got, err)
	}
	if got, err := one.Query(`sum(rate(up[5m]))`); err != nil || got != `sum(rate(up{team="dev"}[5m]))` {
		t.Errorf("one branch: %q %v", got, err)
	}
}

// TestLiftBounded: rollups nested in the other args of rollups multiply the copies; past maxLifted selectors the query
// goes out with its branches inside the braces, at once.
func TestLiftBounded(t *testing.T) {
	e := devFiltered(t) // three branches
	q := "x"
	for i := 0; i < 12; i++ {
		q = fmt.Sprintf("quantile_over_time(scalar(%s), y[5m])", q)
	}
	start := time.Now()
	out, err := e.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `" or `) || strings.Contains(out, "union(") || len(out) > 8*len(q)+2000 {
		t.Errorf("3^12 copies: %d bytes %.300s; want the branches inside the braces", len(out), out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
	// Copies of a long selector in nested rollups: found past the bound before the lifted query is printed (an
	// attacker's review measured 106 MB allocated and 245 ms of CPU a query when it was printed first).
	q = `s`
	for i := 0; i < 7; i++ {
		q = fmt.Sprintf("quantile_over_time(scalar(%s), s[5m])", q)
	}
	q = `with (s = y{job="` + strings.Repeat("a", 14000) + `"}) ` + q
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err = twoBranches(t).Query(q)
	runtime.ReadMemStats(&after)
	if err != nil || !strings.Contains(out, `" or `) {
		t.Errorf("a long selector copied: %.200s %v; want the branches inside the braces", out, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("a long selector copied: %d MiB allocated", n>>20)
	}
	// Longer than VictoriaMetrics reads: the braces.
	long := `sum(rate(x{job=~"` + strings.Repeat("a", 6000) + `"}[5m]))`
	if out, err := e.Query(long); err != nil || !strings.Contains(out, `" or `) || len(out) > 4*len(long) {
		t.Errorf("a long query: %d bytes %.200s %v; want the branches inside the braces", len(out), out, err)
	}
	// Under the bound it is lifted.
	out, err = e.Query("quantile_over_time(scalar(quantile_over_time(0.5, x[5m])), y[5m])")
	if err != nil || strings.Contains(out, `" or `) || strings.Count(out, "{") != 12 {
		t.Errorf("3×(3+1) selectors: %s %v", out, err)
	}
}

// TestVMLiftedAnswers: a token with several extra_filters reads on VictoriaMetrics 1.79.5, which cannot parse `or`
// inside braces, what VictoriaMetrics' own enforcement args give it there (extra_label and extra_filters[] on the
// client's query), and on v1.151 the lifted query answers as the query with the branches inside the braces does.
func TestVMLiftedAnswers(t *testing.T) {
	old, current := vmtest.Start(t), vmtest.StartCurrent(t)
	// The last sample a minute ago, evaluated at the last sample: 1.79.5 hides the last 30 s (-search.latencyOffset).
	end := time.Now().Add(-time.Minute).Truncate(time.Minute)
	data := liftData(end)
	for _, vm := range []*vmtest.VM{old, current} {
		post(t, vm.URL+"/api/v1/import/prometheus", "text/plain", data)
		vm.Flush(t)
		vmtest.Eventually(t, func() (bool, string) {
			n := len(seriesOf(t, vm.URL, `{__name__=~"lift_.*|app_.*"}`))
			return n == 72, fmt.Sprintf("%d series visible; want 72", n)
		})
	}
	// Each query, and how it goes out: lifted, or with `or` inside the braces still (a rollup over several metrics,
	// which 1.79.5 refuses); clientOr: the client's own `or` inside braces, which 1.79.5 refuses as sent; none: it
	// answers no series.
	// absent: the labels of the one series an absent query answers, which the gateway sets (absentLabels) where
	// neither the braces nor extra_filters[] have them.
	queries := []struct {
		q                      string
		braces, clientOr, none bool
		absent                 string
	}{
		{q: `lift_requests_total`},
		{q: `{__name__=~"lift_.*|app_.*"}`},
		{q: `rate(lift_requests_total[5m])`},
		{q: `sum(rate(lift_requests_total[5m])) by (env)`},
		{q: `sum(increase({__name__=~"lift_.*"}[10m])) by (region)`, braces: true},
		{q: `sum(increase({__name__=~"lift_.*"}[10m] offset 1m)) by (region) + sum(lift_errors_total)`, braces: true},
		{q: `quantile_over_time(0.5, app_queue_size[10m])`},
		{q: `absent_over_time(lift_requests_total[5m])`, none: true},
		{q: `absent_over_time(nothing_total[5m])`, absent: `{team="dev"}`},
		{q: `absent(nothing_total{job="x",env!="a"})`, absent: `{job="x",team="dev"}`},
		{q: `absent_over_time(nothing_total{job="x"}[5m:1m])`, absent: `{job="x",team="dev"}`},
		{q: `max_over_time(rate(lift_requests_total[2m])[10m:1m])`},
		{q: `max_over_time(sum({__name__=~"lift_.*"})[10m:1m])`},
		{q: `max_over_time(sum(app_queue_size)[10m])`},
		{q: `sum(app_queue_size) by (env) offset 5m`},
		{q: `app_queue_size offset 5m`},
		{q: `0 - app_queue_size`},
		{q: `topk(3, app_queue_size)`},
		{q: `count(app_queue_size) by (tier)`},
		{q: `lift_errors_total / lift_requests_total`},
		{q: `label_replace(app_queue_size, "e", "$1", "env", "(.*)")`},
		{q: `rate(lift_requests_total)`},
		{q: `last_over_time({__name__=~"lift_.*|app_.*"} @ end())`, braces: true},
		{q: `timestamp(lift_requests_total)`},
		{q: `sum(app_queue_size{region="eu" or env="test"}) by (env)`, clientOr: true},
	}
	for _, e := range []*Enforcer{devFiltered(t), twoBranches(t)} {
		filters := url.Values{"extra_label": e.readLabelArgs, "extra_filters[]": e.extraFiltersArgs}
		for _, tc := range queries {
			q := tc.q
			out, err := e.Query(q)
			if err != nil {
				t.Fatalf("Query(%q): %s", q, err)
			}
			expr, err := parse(q)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.rewrite(expr); err != nil {
				t.Fatal(err)
			}
			braces := string(expr.AppendString(nil))
			if strings.Contains(out, `" or `) != tc.braces {
				t.Errorf("%s: the query sent %s; want braces=%v", q, out, tc.braces)
			}
			for _, rng := range []bool{false, true} {
				name := fmt.Sprintf("%s with %s (range %v)", q, e, rng)
				want := liftAnswer(t, current.URL, braces, nil, end, rng).labelled(t, tc.absent)
				if want.err != "" || (len(want.series) == 0) != tc.none {
					t.Fatalf("%s: v1.151 answers %s", name, want)
				}
				oracle := liftAnswer(t, old.URL, q, filters, end, rng).labelled(t, tc.absent)
				if tc.clientOr {
					// 1.79.5 cannot read the client's query: the lifted one must answer there as v1.151 does.
					oracle = want
				} else if oracle.err != "" {
					t.Fatalf("%s: VictoriaMetrics 1.79.5 refuses it with its own enforcement args: %s", name, oracle.err)
				}
				switch got := liftAnswer(t, old.URL, out, filters, end, rng); {
				case tc.braces:
					if got.err == "" {
						t.Errorf("%s: 1.79.5 now reads `or` inside braces: %s", name, got)
					}
				case !got.same(oracle):
					t.Errorf("%s on 1.79.5: the lifted %s answers\n%s\nwant what extra_filters[] give:\n%s", name, out, got, oracle)
				}
				if got := liftAnswer(t, current.URL, out, nil, end, rng); !got.same(want) || (tc.absent != "" && got.series[tc.absent] == nil) {
					t.Errorf("%s on v1.151: the lifted %s answers\n%s\nwant what %s answers:\n%s", name, out, got, braces, want)
				}
			}
		}
	}
}

// liftData is 3 metrics of 24 series each (team, env, region, tier), a sample every 15 s for 30 minutes up to end.
func liftData(end time.Time) string {
	var sb strings.Builder
	n := 0
	for _, m := range []string{"lift_requests_total", "lift_errors_total", "app_queue_size"} {
		for _, team := range []string{"dev", "ops"} {
			for _, env := range []string{"prod", "stage", "test"} {
				for _, region := range []string{"eu", "us"} {
					for _, tier := range []string{"gold", "silver"} {
						n++
						for i := 120; i >= 0; i-- {
							ts := end.Add(-time.Duration(i) * 15 * time.Second)
							v := float64((120-i)*n) / 7
							if m == "app_queue_size" {
								// Distinct values, so that topk has no ties to break as it likes.
								v = float64(n) + float64(i%13)/100
							}
							fmt.Fprintf(&sb, "%s{team=%q,env=%q,region=%q,tier=%q} %g %d\n", m, team, env, region, tier, v, ts.UnixMilli())
						}
					}
				}
			}
		}
	}
	return sb.String()
}

// answer is a query's answer: its error, or its series by their labels, each a list of (time, value).
type answer struct {
	err    string
	series map[string][][2]float64
}

func (a answer) String() string {
	if a.err != "" {
		return "error: " + a.err
	}
	keys := make([]string, 0, len(a.series))
	for k := range a.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d series", len(keys))
	for _, k := range keys {
		fmt.Fprintf(&sb, "\n%s %v", k, a.series[k])
	}
	return sb.String()
}

// labelled is a, an absent query's one series, with the labels the gateway gives it (none: a as it is).
func (a answer) labelled(t *testing.T, labels string) answer {
	t.Helper()
	if labels == "" || a.err != "" {
		return a
	}
	if len(a.series) != 1 {
		t.Fatalf("an absent query answers %s; want one series", a)
	}
	out := answer{series: map[string][][2]float64{}}
	for _, ps := range a.series {
		out.series[labels] = ps
	}
	return out
}

// same reports whether a and b are the same answer, values equal up to the rounding of sums taken in another order.
func (a answer) same(b answer) bool {
	if a.err != b.err || len(a.series) != len(b.series) {
		return false
	}
	for k, ps := range a.series {
		qs, ok := b.series[k]
		if !ok || len(ps) != len(qs) {
			return false
		}
		for i := range ps {
			if ps[i][0] != qs[i][0] || math.Abs(ps[i][1]-qs[i][1]) > 1e-9*math.Max(1, math.Abs(ps[i][1])) {
				return false
			}
		}
	}
	return true
}

// liftAnswer asks VictoriaMetrics q (with args) at end, or over the 20 minutes before it, without its cache; it
// fails the test on a status other than 200 and 422.
func liftAnswer(t *testing.T, base, q string, args url.Values, end time.Time, rng bool) answer {
	t.Helper()
	v := url.Values{"query": {q}, "nocache": {"1"}}
	for k, vs := range args {
		v[k] = vs
	}
	path := "/api/v1/query"
	if rng {
		path = "/api/v1/query_range"
		v.Set("start", fmt.Sprint(end.Add(-20*time.Minute).Unix()))
		v.Set("end", fmt.Sprint(end.Unix()))
		v.Set("step", "60")
	} else {
		v.Set("time", fmt.Sprint(end.Unix()))
	}
	resp, err := http.PostForm(base+path, v)
	if err != nil {
		t.Fatalf("%s: %s", q, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || (resp.StatusCode != 200 && resp.StatusCode != 422) {
		t.Fatalf("%s %s: %d %s", path, q, resp.StatusCode, b)
	}
	if ans.Status != "success" {
		// The error quotes the query, which differs: the kind of failure is what must match.
		msg := ans.Error
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return answer{err: msg}
	}
	out := answer{series: map[string][][2]float64{}}
	for _, r := range ans.Data.Result {
		vals := r.Values
		if !rng {
			vals = [][2]any{r.Value}
		}
		k := labelsOf(r.Metric)
		for _, p := range vals {
			ts, _ := p[0].(float64)
			s, _ := p[1].(string)
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("%s: the value %v: %s", q, p[1], err)
			}
			out.series[k] = append(out.series[k], [2]float64{ts, f})
		}
	}
	return out
}

func labelsOf(m map[string]string) string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(out)
	return "{" + strings.Join(out, ",") + "}"
}

// TestRequestKeepsBranchesInBraces: where every read backend reads `or` inside the braces (Args.Braces), a selector
// of several branches goes out as one, so that VictoriaMetrics reads each series once and aggregates a rollup over it
// as it goes; otherwise it is lifted. The cache tells the two apart.
func TestRequestKeepsBranchesInBraces(t *testing.T) {
	e := twoBranches(t)
	const q = `sum(histogram_over_time(up[5m])) by (vmrange)`
	const braces = `sum(histogram_over_time(up{team="dev",env="prod",Env="" or team="dev",__name__=~"app_.*"}[5m])) by(vmrange)`
	const lifted = `sum(union(histogram_over_time(up{team="dev",env="prod",Env=""}[5m]), histogram_over_time(up{team="dev",__name__=~"app_.*"}[5m]))) by(vmrange)`
	for range 2 {
		for _, b := range []bool{true, false} {
			out, _, err := e.Request(rtQuery, Args{URL: url.Values{"query": {q}}, Braces: b}, false)
			want := lifted
			if b {
				want = braces
			}
			if err != nil || out.URL["query"][0] != want {
				t.Errorf("braces %v: %q %v; want %q", b, out.URL["query"], err, want)
			}
		}
	}
}
