package gateway

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
)

// TestCountValuesComparisons: in front of a read backend whose count_values is not linear, its comparisons are counted
// (the series of each group times their distinct values, then closer bounds of a group's values, then whole numbers'
// least to most; at one point exactly) and bounded; the counts asked are the ones below, and none where the backends'
// count_values is linear.
func TestCountValuesComparisons(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	hour := func(q string) url.Values { // an hour at 60 s: 61 points
		return url.Values{"query": {q}, "start": {"1699996400"}, "end": {"1700000000"}, "step": {"60"}}
	}
	at := func(q string) url.Values { return url.Values{"query": {q}, "time": {"1700000000"}} }
	l := Limits{MaxCountValuesComparisons: 2e6}
	const with = `WITH (vmgw_arg0 = x, vmgw_sub0 = (vmgw_arg0)[3720000ms:60000ms]) ` // the hour and a step either side
	const series = `label_del(count(count_over_time(vmgw_sub0)), "vmgw_arg0")`
	const first = with + `sum((sum(distinct_over_time(vmgw_sub0))) * ` + series + `) @1700000060&step=60`
	const each = `label_del(sum_over_time((distinct(vmgw_arg0))[3720000ms:60000ms]), "vmgw_arg0")`
	const closer = with + `sum((((distinct(last_over_time(vmgw_sub0)) + label_del(sum(distinct_over_time(vmgw_sub0) - 1), "vmgw_arg0") - ` +
		`label_del(clamp_min(sum(first_over_time(vmgw_sub0) != bool label_del(last_over_time(vmgw_sub0), "vmgw_arg0")) - ` +
		`label_del(distinct(first_over_time(vmgw_sub0)), "vmgw_arg0"), 0), "vmgw_arg0")) <= ` + each + `) or ` + each + `) * ` + series +
		`) @1700000060&step=60`
	const whole = with + `sum((((max_over_time((max(vmgw_arg0))[3720000ms:60000ms]) - label_del(min_over_time((min(vmgw_arg0))[3720000ms:60000ms]), ` +
		`"vmgw_arg0") + 1) and label_del(sum_over_time((sum((vmgw_arg0 % 1) != bool 0))[3720000ms:60000ms]) == 0, "vmgw_arg0")) or ` +
		`label_del(sum(distinct_over_time(vmgw_sub0)), "vmgw_arg0")) * ` + series + `) @1700000060&step=60`
	const point = `sum((distinct(x)) * label_del(count(x), "vmgw_arg0")) @1700000000`
	named := strings.NewReplacer("vmgw_arg0 = x", "vmgw_arg1 = VMGW_ARG0", "vmgw_arg0", "vmgw_arg1", "vmgw_sub0", "vmgw_sub1")
	refusedCount := httperr.New(http.StatusUnprocessableEntity, "duplicate time series on the left side of `!=`")
	for _, tc := range []struct {
		name    string
		rt      route.Route
		args    url.Values
		linear  bool  // and, for the nested rows, -search.maxFanOutPoints on
		answers []any // a count, or its error
		asked   []string
		refused string
	}{
		// 100 series of a value each: 10,000 distinct values and series, 610,000 comparisons.
		{"a few series", ranged, hour(`count_values("v", x)`), false, []any{100 * 100}, []string{first}, ""},
		// 1,000 series of a value each: past the bound on the first count, and on the closer one.
		{"1,000 series of distinct values", ranged, hour(`count_values("v", x)`), false, []any{1000 * 1000, 1000 * 1000, 1000 * 1000},
			[]string{first, closer, whole}, "about 6.1e+07 comparisons"},
		// A fleet of 1,000 hosts of one version (or of two, a rolling upgrade): the closer count admits it.
		{"a fleet of one version", ranged, hour(`count_values("v", x)`), false, []any{1000 * 1000, 2000}, []string{first, closer}, ""},
		// A backend that refuses the closer count leaves the first.
		{"the closer count refused", ranged, hour(`count_values("v", x)`), false, []any{1000 * 1000, refusedCount, refusedCount},
			[]string{first, closer, whole}, "about 6.1e+07 comparisons"},
		// 1,000 hosts flapping between 0 and 1: past the bound on the closer count, within it on whole numbers.
		{"a flapping status", ranged, hour(`count_values("v", x)`), false, []any{1000 * 1000, 100 * 1000, 2 * 1000},
			[]string{first, closer, whole}, ""},
		// Grouped: by each group, its label taken out as VictoriaMetrics takes it out.
		{"by job", ranged, hour(`count_values("v", x) by (job, v)`), false, []any{1000},
			[]string{with + `sum((sum(distinct_over_time(vmgw_sub0)) by(job)) * label_del(count(count_over_time(vmgw_sub0)) by(job), "vmgw_arg0")) @1700000060&step=60`}, ""},
		{"without instance", ranged, hour(`count_values("v", x) without (instance)`), false, []any{1000},
			[]string{with + `sum((sum(distinct_over_time(vmgw_sub0)) without(instance,v,distinct_value)) * label_del(count(count_over_time(vmgw_sub0)) without(instance,v,distinct_value), "vmgw_arg0")) @1700000060&step=60`}, ""},
		// The templates take names the arg does not hold.
		{"an arg named like a template", ranged, hour(`count_values("v", VMGW_ARG0)`), false, []any{1000 * 1000, 1000 * 1000, 1000 * 1000},
			[]string{named.Replace(first), named.Replace(closer), named.Replace(whole)}, "-search.maxCountValuesComparisons"},
		// One point: its distinct values times its series, in each group; with the request's step, the window of
		// its selectors.
		{"instant, 1,000 series of a value each", instant, at(`count_values("v", x)`), false, []any{1e6}, []string{point}, ""},
		{"instant, 2,000 series of a value each", instant, at(`count_values("v", x)`), false, []any{4e6}, []string{point},
			"count_values in the query would make about 4e+06 comparisons"},
		{"instant, 40,000 series of one value", instant, at(`count_values("v", x)`), false, []any{40000}, []string{point}, ""},
		{"instant, a step of 2h", instant, url.Values{"query": {`count_values("v", x)`}, "time": {"1700000000"}, "step": {"2h"}},
			false, []any{4e6}, []string{point + "&step=2h"}, "comparisons"},
		// A range query of one point: its step too.
		{"a range of one point", ranged, url.Values{"query": {`count_values("v", x)`}, "start": {"1700000000"}, "end": {"1700000000"},
			"step": {"7200"}}, false, []any{4e6}, []string{point + "&step=7200"}, "comparisons"},
		// A group label the arg makes: the later operands shielded from 1.79.5's pushdown of the first's labels.
		{"by a label the arg makes", instant, at(`count_values("v", quantiles_over_time("phi", 0.5, x[1h])) by (phi)`), false, []any{1},
			[]string{`sum((distinct(quantiles_over_time("phi", 0.5, x[1h])) by(phi)) * label_del(count(quantiles_over_time("phi", 0.5, x[1h])) by(phi), "vmgw_arg0")) @1700000000`}, ""},
		{"instant, by instance", instant, at(`count_values("v", x) by (instance)`), false, []any{2000},
			[]string{`sum((distinct(x) by(instance)) * label_del(count(x) by(instance), "vmgw_arg0")) @1700000000`}, ""},
		// Values that differ from the query's in a count of its own.
		{"instant, now()", instant, at(`count_values("v", x and on() (now() > 0))`), false, nil, nil, "whose values depend on the range"},
		// A count that would run a count_values again: refused before any count.
		{"nested", ranged, hour(`count_values("a", count_values("b", x))`), false, nil, nil, "whose count_values the gateway would run again"},
		{"a histogram of count_values", ranged, hour(`histogram_over_time(count_values("b", x)[1h:1m])`), false, nil, nil,
			"histogram_over_time in the query reads count_values(\"b\", x), whose count_values the gateway would run again"},
		// The subquery an instant query is, run as a range query off the step's multiples.
		{"an instant query's subquery", instant, at(`count_values("v", x)[1h:1m] offset 30s`), false, nil, nil,
			"directly in the subquery an instant query is"},
		// Linear: nothing counted.
		{"linear", ranged, hour(`count_values("v", x)`), true, nil, nil, ""},
		{"linear, instant", instant, at(`count_values("v", x and on() (now() > 0))`), true, nil, nil, ""},
		{"linear, nested", ranged, hour(`count_values("a", count_values("b", x))`), true, nil, nil, ""},
		{"linear, a histogram of count_values", ranged, hour(`histogram_over_time(count_values("b", x)[1h:1m])`), true, []any{1, 1},
			[]string{`sum(count_over_time((x)[7740000ms:60000ms])) @1700000120.000`,
				`sum(clamp_max(count_over_time((count_values("b", x))[7320000ms:60000ms]), 488)) @1700000060.000`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			l := l
			l.linearCountValues = tc.linear
			if strings.Contains(tc.name, "histogram") {
				l.MaxFanOutPoints = 2e7
			}
			err := checkFanOut(tc.rt, tc.args, nil, nil, l, now, func(judge func(ask func(q, at string) (float64, error)) error) error {
				return judge(func(q, at string) (float64, error) {
					asked = append(asked, q+" @"+at)
					if len(asked) > len(tc.answers) {
						t.Fatalf("asked %q, which the test does not answer", q)
					}
					switch a := tc.answers[len(asked)-1].(type) {
					case error:
						return 0, countError{a}
					case int:
						return float64(a), nil
					default:
						return a.(float64), nil
					}
				})
			})
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused) || httperr.Status(err) != http.StatusBadRequest):
				t.Errorf("got %v; want 400 naming %q", err, tc.refused)
			}
			if !slices.Equal(asked, tc.asked) {
				t.Errorf("asked\n%q\nwant\n%q", asked, tc.asked)
			}
		})
	}
}

// TestCountValuesGroups: the groups count_values counts its values in, as the counts group them; one group where that
// cannot be told apart.
func TestCountValuesGroups(t *testing.T) {
	for _, tc := range []struct {
		label string
		g     *querylimits.Grouping
		want  string
	}{
		{"v", nil, ""},
		{"v", &querylimits.Grouping{}, ""},
		{"v", &querylimits.Grouping{Op: "by", Labels: []string{"job"}}, " by(job)"},
		{"v", &querylimits.Grouping{Op: "BY", Labels: []string{"v", "job"}}, " by(job)"},
		{"v", &querylimits.Grouping{Op: "by", Labels: []string{"v"}}, ""},
		{"v", &querylimits.Grouping{Op: "without", Labels: []string{"job"}}, " without(job,v,distinct_value)"},
		{"", &querylimits.Grouping{Op: "by", Labels: []string{"job"}}, ""},
		{"v", &querylimits.Grouping{Op: "by", Labels: []string{"__name__"}}, ""},
		{"v", &querylimits.Grouping{Op: "by", Labels: []string{"distinct_value"}}, ""},
		{"v", &querylimits.Grouping{Op: "without", Labels: []string{"*"}}, ""},
	} {
		if got := countValuesGroups(querylimits.FanOut{Label: tc.label, ValuesBy: tc.g}); got != tc.want {
			t.Errorf("%q %+v: %q; want %q", tc.label, tc.g, got, tc.want)
		}
	}
}
