package gateway

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// TestCheckFanOut: the series histogram_over_time and quantiles_over_time make are bounded from the query where an
// aggregation VictoriaMetrics does as it goes bounds them, and otherwise counted, an inner call first, no more once
// the query is past the bound; the counts asked are the ones below.
func TestCheckFanOut(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	hour := func(q string) url.Values { // an hour at 8 s: 451 points
		return url.Values{"query": {q}, "start": {"1699996400"}, "end": {"1700000000"}, "step": {"8"}}
	}
	l := Limits{MaxFanOutPoints: 2e7}
	// counting answers each count from answers, in order, and records what it was asked.
	counting := func(asked *[]string, err error, answers ...float64) fanCounter {
		return func(judge func(ask func(q, at string) (float64, error)) error) error {
			i := 0
			return judge(func(q, at string) (float64, error) {
				*asked = append(*asked, q+" @"+at)
				if err != nil {
					return 0, err
				}
				i++
				return answers[i-1], nil
			})
		}
	}
	const win = `[3916000ms]` // the hour, a step either side, and the window of 5m
	for _, tc := range []struct {
		name    string
		rt      route.Route
		args    url.Values
		answers []float64
		asked   []string
		refused string
	}{
		{"a few series of a histogram: counted, admitted", ranged, hour(`histogram_over_time(x{team="dev"}[5m])`), []float64{3 * 488},
			[]string{`sum(clamp_max(count_over_time(x{team="dev"}` + win + `), 488)) @1700000008.000`}, ""},
		// 300 series of every bucket: 6.6e7 points.
		// 300 series of every bucket: 6.6e7 points. Past the bound on their samples, the buckets are counted.
		{"300 series of a histogram: refused", ranged, hour(`histogram_over_time(x{team="dev"}[5m])`), []float64{300 * 488, 300 * 488},
			[]string{`sum(clamp_max(count_over_time(x{team="dev"}` + win + `), 488)) @1700000008.000`,
				`count(histogram_over_time(x{team="dev"}` + win + `)) @1700000008.000`},
			"histogram_over_time in the query would make 146400 series"},
		{"300 series of 80 buckets: admitted", ranged, hour(`histogram_over_time(x{team="dev"}[5m])`), []float64{300 * 488, 300 * 80},
			[]string{`sum(clamp_max(count_over_time(x{team="dev"}` + win + `), 488)) @1700000008.000`,
				`count(histogram_over_time(x{team="dev"}` + win + `)) @1700000008.000`}, ""},
		{"under histogram_quantile: VictoriaMetrics builds them all the same", ranged,
			hour(`histogram_quantile(0.9, histogram_over_time(x[5m]))`), []float64{300 * 488, 300 * 200},
			[]string{`sum(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`, `count(histogram_over_time(x` + win + `)) @1700000008.000`},
			"-search.maxFanOutPoints"},
		// A heatmap: 488 series at most, from the query alone.
		{"a heatmap", ranged, hour(`sum(histogram_over_time(x[5m])) by (vmrange)`), nil, nil, ""},
		{"count of it", ranged, hour(`count(histogram_over_time(x[5m]))`), nil, nil, ""},
		// By another label too: the groups of it, counted.
		{"a heatmap of each job", ranged, hour(`sum(histogram_over_time(x[5m])) by (vmrange, job)`), []float64{100 * 488, 1e6},
			[]string{`(sum(clamp_max(sum(clamp_max(count_over_time(x` + win + `), 488)) by(job), 15616))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`,
				`(sum(clamp_max(count(histogram_over_time(x` + win + `)) by(vmrange,job), 32))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(count(histogram_over_time(x` + win + `)) without (vmrange)) @1700000008.000`}, "would make 48800 series"},
		{"by job alone", ranged, hour(`max(histogram_over_time(x[5m])) by (job)`), []float64{40},
			[]string{`(sum(clamp_max(count(count_over_time(x` + win + `)) by(job), 32))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`}, ""},
		{"without a label", ranged, hour(`sum(histogram_over_time(x[5m])) without (instance)`), []float64{100 * 488, 45000},
			[]string{`(sum(clamp_max(sum(clamp_max(count_over_time(x` + win + `), 488)) without(instance), 15616))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`,
				`(sum(clamp_max(count(histogram_over_time(x` + win + `)) without(instance), 32))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(count(histogram_over_time(x` + win + `)) without (vmrange)) @1700000008.000`}, "would make 45000 series"},
		// A limit is applied in each of VictoriaMetrics' workers: not counted.
		{"limited", ranged, hour(`sum(histogram_over_time(x[5m])) by (vmrange, job) limit 10`), []float64{100 * 488, 1e6},
			[]string{`(sum(clamp_max(sum(clamp_max(count_over_time(x` + win + `), 488)) by(job), 15616))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`,
				`(sum(clamp_max(count(histogram_over_time(x` + win + `)) by(vmrange,job), 32))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(count(histogram_over_time(x` + win + `)) without (vmrange)) @1700000008.000`}, "would make 48800 series"},
		// A phi label given by an expression: any label of the aggregation may be it.
		{"quantiles by an unknown label", ranged, hour(`sum(quantiles_over_time(label_set(vector(NaN), "__name__", "phi"), 0.5, 0.9, x[5m])) by (phi, job)`),
			[]float64{30000}, []string{`(sum(clamp_max(count(count_over_time(x` + win + `)) by(phi,job), 32))) + clamp_max(count(count_over_time(x` + win + `)), 32) @1700000008.000`}, "would make 60000 series"},
		{"quantiles of an unknown label", ranged, hour(`sum(quantiles_over_time(label_set(vector(NaN), "__name__", "phi"), 0.5, 0.9, x[5m]))`),
			nil, nil, ""},
		// Under an @ the gateway cannot resolve (the gate lets none through): refused.
		{"an unknown @", ranged, hour(`histogram_over_time(x[5m] @ timestamp(y))`), nil, nil, "whose time the gateway cannot work out"},
		// By the metric's name: the series (count_over_time drops the name).
		{"by the name", ranged, hour(`sum(histogram_over_time(x[5m]) keep_metric_names) by (__name__, vmrange)`), []float64{1},
			[]string{`(sum(clamp_max(count_over_time(x` + win + `), 488))) + clamp_max(count(count_over_time(x` + win + `)), 32) * max(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`}, ""},
		// The rewrite of a token of two filters: a union under the sum, built in full.
		{"a union under a sum", ranged, hour(`sum(union(histogram_over_time(x{a="1"}[5m]), histogram_over_time(x{b="1"}[5m]))) by (vmrange)`),
			[]float64{40 * 488, 60 * 488, 60 * 488},
			[]string{`sum(clamp_max(count_over_time(x{a="1"}` + win + `), 488)) @1700000008.000`, `sum(clamp_max(count_over_time(x{b="1"}` + win + `), 488)) @1700000008.000`,
				`count(histogram_over_time(x{b="1"}` + win + `)) @1700000008.000`},
			"would make 48800 series"},
		// Past the bound after the first count: the second is not asked.
		{"past the bound at the first", ranged, hour(`histogram_over_time(x[5m]) + histogram_over_time(y[5m])`), []float64{100 * 488, 100 * 488, 1},
			[]string{`sum(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`, `count(histogram_over_time(x` + win + `)) @1700000008.000`},
			"would make 48800 series"},
		// A subquery: its points counted; the inner histogram first, and the outer not asked once that is past.
		{"nested", ranged, hour(`histogram_over_time(histogram_over_time(x[5m])[1h:1m])`), []float64{1000 * 488, 1000 * 488, 1},
			[]string{`sum(clamp_max(count_over_time(x[8040000ms]), 488)) @1700000120.000`, `count(histogram_over_time(x[8040000ms])) @1700000120.000`},
			"would make 488000 series"},
		{"over a subquery", ranged, hour(`histogram_over_time(rate(x[1m])[1h:1m])`), []float64{5 * 61},
			[]string{`sum(clamp_max(count_over_time((rate(x[1m]))[7216000ms:60000ms]), 488)) @1700000008.000`}, ""},
		// Under a rollup over a subquery, each series the function makes is held beside the rollup's series of it: 35,000
		// series of 128 points and of 451, 2.25e7 points (counted at 451 alone before, 1.69e7, and admitted).
		{"under a rollup over a subquery", ranged, hour(`max_over_time(histogram_over_time(x[5m])[1h:1m])`), []float64{35000, 35000},
			[]string{`sum(clamp_max(count_over_time(x[8040000ms]), 488)) @1700000120.000`, `count(histogram_over_time(x[8040000ms])) @1700000120.000`},
			"would make 35000 series"},
		// A rollup of ten functions makes ten series of each: 5,000 series of 128 points and ten of 451 each, 2.35e7
		// points (one rollup's would be 3.2e6).
		{"ten rollups over a subquery", ranged, hour(`count(aggr_over_time((` + strings.TrimSuffix(strings.Repeat(`"max_over_time", `, 10), ", ") +
			`), histogram_over_time(x[5m])[1h:1m]))`), []float64{5000, 5000},
			[]string{`sum(clamp_max(count_over_time(x[8040000ms]), 488)) @1700000120.000`, `count(histogram_over_time(x[8040000ms])) @1700000120.000`},
			"would make 5000 series"},
		// Past the bound over a subquery, the buckets are not counted: VictoriaMetrics would build them all to count them.
		{"over a subquery, past the bound", ranged, hour(`histogram_over_time(rate(x[1m])[1h:1m])`), []float64{1000 * 122},
			[]string{`sum(clamp_max(count_over_time((rate(x[1m]))[7216000ms:60000ms]), 488)) @1700000008.000`}, "would make 122000 series"},
		// quantiles_over_time: a series of each phi of each series read.
		{"quantiles", ranged, hour(`quantiles_over_time("phi", 0.5, 0.9, x[5m])`), []float64{30000},
			[]string{`count(count_over_time(x` + win + `)) @1700000008.000`}, "quantiles_over_time in the query would make 60000 series"},
		{"quantiles by phi", ranged, hour(`sum(quantiles_over_time("phi", 0.5, 0.9, x[5m])) by (phi)`), nil, nil, ""},
		// An instant query: one point; VictoriaMetrics' own reading of it too.
		// Each series costs 32 points besides its one: 2.4e6 series of 5,000 are past the bound, their buckets counted.
		{"instant", instant, url.Values{"query": {`histogram_over_time(x[1h])`}, "time": {"1700000000"}}, []float64{5000 * 488, 5000 * 100},
			[]string{`sum(clamp_max(count_over_time(x[4200000ms]), 488)) @1700000300.000`, `count(histogram_over_time(x[4200000ms])) @1700000300.000`}, ""},
		{"no histogram", ranged, hour(`quantile_over_time(0.9, x[5m])`), nil, nil, ""},
		// count_values_over_time: a series of each value of each series, no more than its samples: counted as a
		// histogram's buckets are, without the 488.
		// Its count builds every distinct value of the series each worker reads: asked where those are few enough.
		{"values counted", ranged, hour(`count_values_over_time("v", x[5m])`), []float64{12 * 4000, 12 * 4000, 12 * 3900},
			[]string{`sum(clamp_max(count_over_time(x` + win + `), 2147483647)) @1700000008.000`,
				`clamp_max(count(count_over_time(x` + win + `)), 32) * max(count_over_time(x` + win + `)) @1700000008.000`,
				`count(count_values_over_time("v", x` + win + `)) @1700000008.000`}, "count_values_over_time in the query would make 46800 series"},
		{"few values counted", ranged, hour(`count_values_over_time("code", x[5m])`), []float64{200 * 4000, 32 * 4000, 200 * 3},
			[]string{`sum(clamp_max(count_over_time(x` + win + `), 2147483647)) @1700000008.000`,
				`clamp_max(count(count_over_time(x` + win + `)), 32) * max(count_over_time(x` + win + `)) @1700000008.000`,
				`count(count_values_over_time("code", x` + win + `)) @1700000008.000`}, ""},
		{"values of dense data", ranged, hour(`count_values_over_time("v", x[5m])`), []float64{2 * 3.6e6, 2 * 3.6e6},
			[]string{`sum(clamp_max(count_over_time(x` + win + `), 2147483647)) @1700000008.000`,
				`clamp_max(count(count_over_time(x` + win + `)), 32) * max(count_over_time(x` + win + `)) @1700000008.000`},
			"count_values_over_time in the query would make 7200000 series"},
		// count_values: a series of each value its arg takes at the range's points, each of 451. Its arg's points are
		// counted as a subquery at the step (the range starts at a multiple of it), and the distinct values of each
		// series where that is past the bound and the count of them within it.
		{"count_values, few points", ranged, hour(`count(count_values("v", x))`), []float64{10 * 451},
			[]string{`sum(count_over_time((x)[3616000ms:8000ms])) @1700000008.000`}, ""},
		{"count_values, many points of few values", ranged, hour(`count(count_values("v", x))`), []float64{300 * 451, 300},
			[]string{`sum(count_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time((x)[3616000ms:8000ms])) @1700000008.000`}, ""},
		// Past the bound on each series' values too, counted across the series (50,000 series of one version are one).
		{"count_values, many points of as many values", ranged, hour(`count(count_values("v", x))`), []float64{300 * 451, 300 * 451, 300 * 400},
			[]string{`sum(count_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`count(count by(distinct_value) (count_values_over_time("distinct_value", (x)[3616000ms:8000ms]))) @1700000008.000`},
			"count_values in the query would make 120000 series"},
		// Within each of its groups, less its own label, as VictoriaMetrics groups them.
		{"count_values by job", ranged, hour(`count_values("v", x) by (job, v)`), []float64{50000 * 451, 50000, 20},
			[]string{`sum(count_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`count(count by(distinct_value,job) (count_values_over_time("distinct_value", (x)[3616000ms:8000ms]))) @1700000008.000`}, ""},
		{"count_values without i", ranged, hour(`count_values("v", x) without (i)`), []float64{50000 * 451, 50000, 20},
			[]string{`sum(count_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`count(count without(i) (count_values_over_time("distinct_value", (x)[3616000ms:8000ms]))) @1700000008.000`}, ""},
		{"count_values of one value across the series", ranged, hour(`count_values("v", x)`), []float64{50000 * 451, 50000, 1},
			[]string{`sum(count_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time((x)[3616000ms:8000ms])) @1700000008.000`,
				`count(count by(distinct_value) (count_values_over_time("distinct_value", (x)[3616000ms:8000ms]))) @1700000008.000`}, ""},
		// Grouped by the metric's name, which count_values_over_time drops: the values of every name would be counted as
		// one group's, fewer than count_values makes; the closer count is not asked, and the exact one stands.
		{"count_values by the metric's name", ranged, hour(`count_values("v", {__name__=~"x|y"}) by (__name__)`), []float64{50000 * 451, 50000},
			[]string{`sum(count_over_time(({__name__=~"x|y"})[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time(({__name__=~"x|y"})[3616000ms:8000ms])) @1700000008.000`},
			"count_values in the query would make 50000 series"},
		// Too many distinct values to build a series of each to count them across the series (3.3e7 points): not asked.
		{"count_values of a rate", ranged, hour(`count_values("v", rate(x[5m]))`), []float64{1e6, 999_000},
			[]string{`sum(count_over_time((rate(x[5m]))[3616000ms:8000ms])) @1700000008.000`,
				`sum(distinct_over_time((rate(x[5m]))[3616000ms:8000ms])) @1700000008.000`}, "count_values in the query would make 999000 series"},
		// A range that does not start at a multiple of its step: counted at its own points too, as a range query (450 of
		// them), and the larger count kept.
		{"count_values off the step's multiples", ranged, url.Values{"query": {`count_values("v", x)`}, "start": {"1699996403"},
			"end": {"1700000000"}, "step": {"8"}}, []float64{10, 100 * 450},
			[]string{`sum(count_over_time((x)[3613000ms:8000ms])) @1700000008.000`, `count(x) @1699996403:1700000000:8`}, "count_values in the query would make 45000 series"},
		// Inside a subquery, at its points: 78 of them a series, each rolled up at the range's 451.
		{"count_values inside a subquery", ranged, hour(`max_over_time(count_values("v", x)[10m:1m])`), []float64{40000, 40000, 40000},
			[]string{`sum(count_over_time((x)[4740000ms:60000ms])) @1700000120.000`,
				`sum(distinct_over_time((x)[4740000ms:60000ms])) @1700000120.000`,
				`count(count by(distinct_value) (count_values_over_time("distinct_value", (x)[4740000ms:60000ms]))) @1700000120.000`}, "count_values in the query would make 40000 series"},
		// An instant query's count_values makes no more series than its arg: not counted.
		{"count_values, instant", instant, url.Values{"query": {`count_values("v", x)`}, "time": {"1700000000"}}, nil, nil, ""},
		// The subquery an instant query is runs as a range query over its window, at points the request's time and
		// offset place; a count_values under a function inside it is in a subquery of that range.
		{"count_values in an instant subquery", instant, url.Values{"query": {`count(count_values("v", x))[1h:1s] offset 500ms`},
			"time": {"1700000000"}}, nil, nil, "count_values directly in the subquery an instant query is"},
		{"count_values deeper in an instant subquery", instant, url.Values{"query": {`max_over_time(count_values("v", x)[5m:1m])[1h:1m]`},
			"time": {"1700000000"}}, []float64{10},
			[]string{`sum(count_over_time((x)[4860000ms:60000ms])) @1700000180.000`}, ""},
		// An arg whose values depend on the range cannot be counted by another query.
		{"count_values of end()", ranged, hour(`count_values("v", x and on() (end() == 1700000000))`), nil, nil,
			"count_values in the query reads x and on() (end() == 1700000000), whose values depend on the range"},
		{"a subquery of now()", ranged, hour(`histogram_over_time((x and on() (now() % 2 < 1))[1h:1m])`), nil, nil,
			"histogram_over_time in the query reads x and on() ((now() % 2) < 1), whose values depend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			err := checkFanOut(tc.rt, tc.args, nil, nil, l, now, counting(&asked, nil, tc.answers...))
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
	// Heatmaps the query alone bounds past the limit: 488 buckets at 11,000 points of each of 4 calls, in each of up to
	// 32 workers. Counted: the first's series fill every bucket in each worker, 1.7e8 points alone, and no more is asked.
	var asked []string
	day := url.Values{"query": {strings.Repeat(`sum(histogram_over_time(x[5m])) by (vmrange) + `, 3) + `sum(histogram_over_time(x[5m])) by (vmrange)`},
		"start": {"1699912000"}, "end": {"1700000000"}, "step": {"8"}}
	dayWin := `[88316000ms]`
	busy := `clamp_max(count(count_over_time(x` + dayWin + `)), 32)`
	if err := checkFanOut(ranged, day, nil, nil, l, now, counting(&asked, nil, 2*488*32, 2*488*32)); err == nil ||
		!strings.Contains(err.Error(), "would make 31232 series") || !slices.Equal(asked, []string{
		`(sum(clamp_max(sum(clamp_max(count_over_time(x` + dayWin + `), 488)) by(), 15616))) + ` + busy + ` * max(clamp_max(count_over_time(x` + dayWin + `), 488)) @1700000008.000`,
		`(sum(clamp_max(count(histogram_over_time(x` + dayWin + `)) by(vmrange), 32))) + ` + busy + ` * max(count(histogram_over_time(x` + dayWin + `)) without (vmrange)) @1700000008.000`}) {
		t.Errorf("four heatmaps over a day at 8 s: %v, asked %q; want counted and refused", err, asked)
	}
	// One of 12 series of 30 buckets each: admitted on the buckets they fill, in the 12 workers they keep busy.
	asked = nil
	oneDay := url.Values{"query": {`sum(histogram_over_time(x[5m])) by (vmrange)`}, "start": {"1699912000"}, "end": {"1700000000"}, "step": {"8"}}
	if err := checkFanOut(ranged, oneDay, nil, nil, l, now, counting(&asked, nil, 2*12*488, 2*12*30)); err != nil || len(asked) != 2 {
		t.Errorf("a heatmap of 12 series over a day at 8 s: %v, asked %q; want counted and admitted", err, asked)
	}
	// Where the read backends run a query on 2 workers, the query alone bounds one over 12 hours: 1.1e7 points, no count.
	asked = nil
	l2 := l
	l2.workers = 2
	half := url.Values{"query": {`sum(histogram_over_time(x[5m])) by (vmrange)`}, "start": {"1699956800"}, "end": {"1700000000"}, "step": {"8"}}
	if err := checkFanOut(ranged, half, nil, nil, l2, now, counting(&asked, nil)); err != nil || len(asked) != 0 {
		t.Errorf("a heatmap over 12 hours at 8 s on 2 workers: %v, asked %q; want admitted without a count", err, asked)
	}
	// A heatmap inside a subquery: the workers hold its groups at the subquery's 27 points, and only the 488 groups reach
	// the rollup's 2,881 (counted at 2,881 in each worker before, 9.1e7 points, where it makes 3.3e6).
	sub := url.Values{"query": {`max_over_time(sum(histogram_over_time(x[5m])) by (vmrange)[1h:1h])`}, "start": {"1699913600"},
		"end": {"1700000000"}, "step": {"30"}}
	if err := checkFanOut(ranged, sub, nil, nil, l, now, nil); err != nil {
		t.Errorf("a heatmap under max_over_time over a day at 30 s: %v; want admitted from the query alone", err)
	}
	// Without a read backend to count them, the bound of the query alone refuses them.
	if err := checkFanOut(ranged, day, nil, nil, l, now, nil); err == nil || !strings.Contains(err.Error(), "in each of the 32 workers a read backend runs the query on") {
		t.Errorf("four heatmaps over a day at 8 s, no count: %v; want refused naming the workers", err)
	}
	// On 2 workers, a group by job is held at most twice, however many series it has.
	asked = nil
	if err := checkFanOut(ranged, hour(`sum(histogram_over_time(x[5m])) by (vmrange, job)`), nil, nil, l2, now, counting(&asked, nil, 3*976+2*488)); err != nil ||
		!slices.Equal(asked, []string{`(sum(clamp_max(sum(clamp_max(count_over_time(x` + win + `), 488)) by(job), 976))) + clamp_max(count(count_over_time(x` + win +
			`)), 2) * max(clamp_max(count_over_time(x` + win + `), 488)) @1700000008.000`}) {
		t.Errorf("a heatmap of each job on 2 workers: %v, asked %q", err, asked)
	}
	// Short windows over years at a step of a day: the buckets are not counted over a span the query limits would refuse
	// the team's own count of (10^8 at one sample a second), which the query itself does not read.
	years := url.Values{"query": {`histogram_over_time(x[1s])`}, "start": {"1384640000"}, "end": {"1700000000"}, "step": {"86400"}}
	lw := Limits{MaxFanOutPoints: 1e7, MaxSubqueryWindowPoints: 1e8, MinSampleInterval: time.Second}
	asked = nil
	if err := checkFanOut(ranged, years, nil, nil, lw, now, counting(&asked, nil, 10*488, 1)); err == nil || len(asked) != 1 ||
		!strings.Contains(asked[0], "sum(clamp_max(count_over_time(x[315532801000ms]), 488))") {
		t.Errorf("histograms of 1s windows over ten years: %v, asked %q; want refused on the samples alone", err, asked)
	}
	// Within it, over a day, they are.
	asked = nil
	if err := checkFanOut(ranged, url.Values{"query": {`histogram_over_time(x[5m])`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}},
		nil, nil, lw, now, counting(&asked, nil, 20*488, 20*100)); err != nil || len(asked) != 2 {
		t.Errorf("histograms over a day: %v, asked %q; want admitted on the buckets", err, asked)
	}
	// A start off the step's multiples in the form beside one on them in the URL: VictoriaMetrics reads the form's, and
	// the counts would be at the other's points.
	asked = nil
	twice := url.Values{"query": {`count_values("v", x)`}, "start": {"1699996403"}, "end": {"1700000000"}, "step": {"8"}}
	if err := checkFanOut(ranged, url.Values{"start": {"1699996400"}}, twice, nil, l, now, counting(&asked, nil, 1, 1, 1)); err == nil ||
		!strings.Contains(err.Error(), "gives start more than once") || len(asked) != 0 {
		t.Errorf("two starts: %v, asked %q; want refused before any count", err, asked)
	}
	// The query's lookback goes with its counts, to the range query too.
	asked = nil
	lb := url.Values{"query": {`count_values("v", x)`}, "start": {"1699996403"}, "end": {"1700000000"}, "step": {"8"}, "max_lookback": {"1h"}}
	if err := checkFanOut(ranged, url.Values{"lookback_delta": {"10m"}}, lb, nil, l, now, counting(&asked, nil, 10, 10)); err != nil || !slices.Equal(asked, []string{
		`sum(count_over_time((x)[3613000ms:8000ms])) @1700000008.000&max_lookback=1h&lookback_delta=10m`,
		`count(x) @1699996403:1700000000:8&max_lookback=1h&lookback_delta=10m`}) {
		t.Errorf("a lookback: %v, asked %q", err, asked)
	}
	// The same text twice is one value; a query without such calls is not judged on them.
	if err := checkFanOut(ranged, url.Values{"step": {"8"}}, twice, nil, l, now, counting(&asked, nil, 1, 1, 1)); err != nil {
		t.Errorf("the same step twice: %v", err)
	}
	if err := checkFanOut(ranged, url.Values{"start": {"1699996400"}}, url.Values{"query": {`rate(x[5m])`}, "start": {"1699996403"}}, nil, l, now, nil); err != nil {
		t.Errorf("two starts without a counted call: %v", err)
	}
	// Without a limit, nothing is asked.
	asked = nil
	if err := checkFanOut(ranged, hour(`histogram_over_time(x[5m])`), nil, nil, Limits{}, now, counting(&asked, nil)); err != nil || len(asked) != 0 {
		t.Errorf("no limit: %v, asked %q", err, asked)
	}
	// The backends' refusal of a count is the query's (400); their failure is not (503); a full team's 429 is kept.
	for _, e := range []struct {
		err  error
		want int
	}{{countError{errors.New("the read backend did not count them: bad")}, http.StatusBadRequest},
		{context.DeadlineExceeded, http.StatusServiceUnavailable},
		{httperr.New(http.StatusTooManyRequests, "full"), http.StatusTooManyRequests}} {
		err := checkFanOut(ranged, hour(`histogram_over_time(x[5m])`), nil, nil, l, now, counting(&asked, e.err))
		if httperr.Status(err) != e.want {
			t.Errorf("count failing with %v: %v; want %d", e.err, err, e.want)
		}
	}
	if err := checkFanOut(ranged, hour(`histogram_over_time(x[5m])`), nil, nil, l, now, counting(&asked, context.Canceled)); !errors.Is(err, errGoneInQueue) {
		t.Errorf("client gone: %v", err)
	}
	// The same call repeated is asked of the counter as often (which asks the backends once: fanCounterFor), and held
	// as often: 9 × 10 series of 451 points pass, 9 × 4,000 do not.
	same := strings.TrimSuffix(strings.Repeat(`count(count_values("v", x)) + `, measureMax+1), " + ")
	for _, n := range []float64{10 * 451, 4000 * 451} {
		asked = nil
		nines := []float64{n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n}
		err := checkFanOut(ranged, hour(same), nil, nil, l, now, counting(&asked, nil, nines...))
		if n == 10*451 && (err != nil || len(asked) != 9) || n > 10*451 && (err == nil || !strings.Contains(err.Error(), "would make")) {
			t.Errorf("nine of one count_values over %v points: %v, asked %d", n, err, len(asked))
		}
	}
	// More calls than are counted for one query.
	var calls []string
	for i := range measureMax + 1 {
		calls = append(calls, fmt.Sprintf(`histogram_over_time(x%d[5m])`, i))
	}
	nine := strings.Join(calls, " + ")
	if err := checkFanOut(ranged, hour(nine), nil, nil, l, now, counting(&asked, nil)); err == nil || !strings.Contains(err.Error(), "at most 8 are counted") {
		t.Errorf("nine calls: %v", err)
	}
}

// TestVMSeconds: the seconds vmSeconds prints are read back as the ms given, by a float times 1000 truncated (how
// VictoriaMetrics reads a step, and 1.79.5 a time) and by their digits (how v1.151 reads a time).
func TestVMSeconds(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	ms := []int64{0, 1, 999, 1003, 8000, 60_007, 1_699_996_403_123, 1_700_000_000_001}
	for range 100_000 {
		ms = append(ms, r.Int63n(4e12))
	}
	for _, m := range ms {
		s := vmSeconds(m)
		f, err := strconv.ParseFloat(s, 64)
		whole, frac, _ := strings.Cut(s, ".")
		w, werr := strconv.ParseInt(whole, 10, 64)
		d, derr := strconv.ParseInt((frac + "000")[:3], 10, 64)
		if err != nil || werr != nil || derr != nil || int64(f*1e3) != m || w*1000+d != m {
			t.Fatalf("vmSeconds(%d) = %q: read back as %d and %d", m, s, int64(f*1e3), w*1000+d)
		}
	}
}

// TestPinSpan: a range query with count_values goes upstream with the start, end and step the gateway counted it at,
// absolute, in the URL alone, moved to the step's multiples where VictoriaMetrics would move them.
func TestPinSpan(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	cv := `count_values("v", x)`
	for _, tc := range []struct {
		name     string
		rt       route.Route
		q, form  url.Values
		want     string // q encoded after the pin; "" when not pinned
		wantForm string
	}{
		// 450 points from 3.5 s past a multiple of 8 s: to the multiple before, and 450 points.
		{"off the multiples", ranged, url.Values{"query": {cv}, "start": {"1699996403.5"}, "end": {"1700000000"}, "step": {"8"}}, nil,
			"end=1699999992&query=" + url.QueryEscape(cv) + "&start=1699996400&step=8", ""},
		// With nocache, and under 50 points, too: VictoriaMetrics' points move by less than a step, and are counted.
		{"nocache", ranged, url.Values{"query": {cv}, "start": {"1699996403.5"}, "end": {"1700000000"}, "step": {"8s"}, "nocache": {"1"}}, nil,
			"end=1699999992&nocache=1&query=" + url.QueryEscape(cv) + "&start=1699996400&step=8", ""},
		{"nocache=false", ranged, url.Values{"query": {cv}, "start": {"1699996403.5"}, "end": {"1700000000"}, "step": {"8"}, "nocache": {"False"}}, nil,
			"end=1699999992&nocache=False&query=" + url.QueryEscape(cv) + "&start=1699996400&step=8", ""},
		{"under 50 points", ranged, url.Values{"query": {cv}, "start": {"1699999903.5"}, "end": {"1700000000"}, "step": {"8"}}, nil,
			"end=1699999992&query=" + url.QueryEscape(cv) + "&start=1699999896&step=8", ""},
		// A time relative to now, and .0005 s, which v1.151 reads as 1 ms, made absolute as the gateway reads them.
		{"relative", ranged, url.Values{"query": {cv}, "start": {"1699996400.0005"}, "end": {"now"}, "step": {"1"}, "nocache": {"1"}}, nil,
			"end=1700000000&nocache=1&query=" + url.QueryEscape(cv) + "&start=1699996400&step=1", ""},
		// The form's start, end and step go: the URL's are the ones read.
		{"in the form", ranged, url.Values{}, url.Values{"query": {cv}, "start": {"1699996400"}, "end": {"1700000000"}, "step": {"8"}},
			"end=1700000000&start=1699996400&step=8", "query=" + url.QueryEscape(cv)},
		{"no count_values", ranged, url.Values{"query": {`rate(x[5m])`}, "start": {"1699996403.5"}, "end": {"1700000000"}, "step": {"8"}}, nil, "", ""},
		// An instant query: its time, and nocache, so that VictoriaMetrics does not move it by its latency offset; a
		// time relative to now (or none) made absolute; a range query without count_values is left as sent.
		{"instant", instant, url.Values{"query": {cv}, "time": {"1699996403.5"}}, nil,
			"nocache=1&query=" + url.QueryEscape(cv) + "&time=1699996403.5", ""},
		{"instant of now", instant, url.Values{"query": {`max_over_time(histogram_over_time(x[5m])[1h:1m])`}, "latency_offset": {"1h"}},
			url.Values{"nocache": {"0"}}, "latency_offset=1h&nocache=1&query=" + url.QueryEscape(`max_over_time(histogram_over_time(x[5m])[1h:1m])`) +
				"&time=1700000000", ""},
		{"histogram range", ranged, url.Values{"query": {`histogram_over_time(x[5m])`}, "start": {"1699996403.5"}, "end": {"now"}, "step": {"8"}}, nil, "", ""},
		{"escaped", ranged, url.Values{"query": {`count\_values("v", x)`}, "start": {"1699996400"}, "end": {"1700000000"}, "step": {"8"}}, nil,
			"end=1700000000&query=" + url.QueryEscape(`count\_values("v", x)`) + "&start=1699996400&step=8", ""},
		{"two starts", ranged, url.Values{"query": {cv}, "start": {"1699996403.5", "1699996400"}, "end": {"1700000000"}, "step": {"8"}}, nil, "", ""},
		// A backslash, a byte past ASCII or a counted name anywhere but in a call is no call: VictoriaMetrics keeps
		// its cache, and its latency offset, for these (before, every one was pinned and sent with nocache=1).
		{"escaped regexp", instant, url.Values{"query": {`sum(rate(http_requests_total{instance=~"10\\.0\\..*"}[5m]))`}}, nil, "", ""},
		{"label value past ASCII", instant, url.Values{"query": {`up{city="Zürich"}`}}, nil, "", ""},
		{"names in strings", instant, url.Values{"query": {`up{job="histogram_over_time",le="count_values"}`}}, nil, "", ""},
		{"escaped regexp, range", ranged, url.Values{"query": {`histogram_over_time(x{a=~"b\\.c"}[5m])`}, "start": {"1699996403.5"}, "end": {"1700000000"}, "step": {"8"}}, nil, "", ""},
		{"count_values in a string, range", ranged, url.Values{"query": {`rate(x{job="count_values"}[5m])`}, "start": {"1699996403.5"}, "end": {"1700000000"}, "step": {"8"}}, nil, "", ""},
		// A time that reads as several (no zone): left as sent, for checkFanOut to refuse.
		{"time without a zone", instant, url.Values{"query": {cv}, "time": {"2026-06-15T11:00:00"}}, nil, "", ""},
		// A function's name written with escapes, or past ASCII beside it, is still the function.
		{"escaped name", instant, url.Values{"query": {`histogram\_over\_time(x[5m])`}, "time": {"1699996403.5"}}, nil,
			"nocache=1&query=" + url.QueryEscape(`histogram\_over\_time(x[5m])`) + "&time=1699996403.5", ""},
		{"call beside a value past ASCII", instant, url.Values{"query": {`HISTOGRAM_over_time(x{city="Zürich"}[5m])`}, "time": {"1699996403.5"}}, nil,
			"nocache=1&query=" + url.QueryEscape(`HISTOGRAM_over_time(x{city="Zürich"}[5m])`) + "&time=1699996403.5", ""},
	} {
		before := tc.q.Encode()
		pinned := pinSpan(tc.rt, tc.q, tc.form, nil, now)
		switch {
		case tc.want == "" && (pinned || tc.q.Encode() != before):
			t.Errorf("%s: pinned to %s; want as sent", tc.name, tc.q.Encode())
		case tc.want != "" && (!pinned || tc.q.Encode() != tc.want || tc.form.Encode() != tc.wantForm):
			t.Errorf("%s: %v %s, form %s; want %s, form %s", tc.name, pinned, tc.q.Encode(), tc.form.Encode(), tc.want, tc.wantForm)
		}
	}
}
