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
// (series of each group, their distinct values, and closer, the distinct values of their last points) and bounded;
// the counts asked are the ones below, and none where the backends' count_values is linear.
func TestCountValuesComparisons(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	hour := func(q string) url.Values { // an hour at 60 s: 61 points
		return url.Values{"query": {q}, "start": {"1699996400"}, "end": {"1700000000"}, "step": {"60"}}
	}
	at := func(q string) url.Values { return url.Values{"query": {q}, "time": {"1700000000"}} }
	l := Limits{MaxCountValuesComparisons: 2e6}
	const src = `(x)[3720000ms:60000ms]` // the hour and a step either side
	const series, summed = `count(count_over_time(` + src + `))`, `sum(distinct_over_time(` + src + `))`
	const first, square = `sum((` + summed + `) * (` + series + `)) @1700000060`, `sum((` + series + `) ^ 2) @1700000060`
	closer := `sum((count(count_values("distinct_value", last_over_time(` + src + `)))) + ` + summed + ` - ` + series + `) * (` + series + `)) @1700000060`
	closer = strings.Replace(closer, `)))) + `, `))) + `, 1)
	for _, tc := range []struct {
		name    string
		rt      route.Route
		args    url.Values
		linear  bool
		answers []float64
		asked   []string
		refused string
	}{
		// 100 series of a value each: 10,000 distinct values and series, 610,000 comparisons.
		{"a few series", ranged, hour(`count_values("v", x)`), false, []float64{100 * 100}, []string{first}, ""},
		// 1,000 series of a value each: past the bound on the first count, and on the closer one.
		{"1,000 series of distinct values", ranged, hour(`count_values("v", x)`), false, []float64{1000 * 1000, 1e6, 1000 * 1000},
			[]string{first, square, closer}, "about 6.1e+07 comparisons"},
		// A fleet of 1,000 hosts of one version: the closer count admits it.
		{"a fleet of one version", ranged, hour(`count_values("v", x)`), false, []float64{1000 * 1000, 1e6, 1000},
			[]string{first, square, closer}, ""},
		// 2,000 series: the closer count would itself compare more than the bound.
		{"2,000 series", ranged, hour(`count_values("v", x)`), false, []float64{2000 * 2000, 4e6}, []string{first, square},
			"-search.maxCountValuesComparisons"},
		// Grouped: by each group, its label taken out as VictoriaMetrics takes it out.
		{"by job", ranged, hour(`count_values("v", x) by (job, v)`), false, []float64{1000},
			[]string{`sum((sum(distinct_over_time(` + src + `)) by(job)) * (count(count_over_time(` + src + `)) by(job))) @1700000060`}, ""},
		{"without instance", ranged, hour(`count_values("v", x) without (instance)`), false, []float64{1000},
			[]string{`sum((sum(distinct_over_time(` + src + `)) without(instance,v,distinct_value)) * (count(count_over_time(` + src + `)) without(instance,v,distinct_value))) @1700000060`}, ""},
		// One point: at most a distinct value a series, counted as the series squared.
		{"instant, 1,000 series", instant, at(`count_values("v", x)`), false, []float64{1e6}, []string{`sum((count(x)) ^ 2) @1700000000`}, ""},
		{"instant, 2,000 series", instant, at(`count_values("v", x)`), false, []float64{4e6}, []string{`sum((count(x)) ^ 2) @1700000000`},
			"count_values in the query would make about 4e+06 comparisons"},
		{"instant, by instance", instant, at(`count_values("v", x) by (instance)`), false, []float64{2000},
			[]string{`sum((count(x) by(instance)) ^ 2) @1700000000`}, ""},
		// Values that differ from the query's in a count of its own.
		{"instant, now()", instant, at(`count_values("v", x and on() (now() > 0))`), false, nil, nil, "whose values depend on the range"},
		// Linear: nothing counted.
		{"linear", ranged, hour(`count_values("v", x)`), true, nil, nil, ""},
		{"linear, instant", instant, at(`count_values("v", x and on() (now() > 0))`), true, nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			l := l
			l.linearCountValues = tc.linear
			err := checkFanOut(tc.rt, tc.args, nil, nil, l, now, func(judge func(ask func(q, at string) (float64, error)) error) error {
				return judge(func(q, at string) (float64, error) {
					asked = append(asked, q+" @"+at)
					if len(asked) > len(tc.answers) {
						t.Fatalf("asked %q, which the test does not answer", q)
					}
					return tc.answers[len(asked)-1], nil
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
