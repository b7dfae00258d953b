package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// TestCheckQueryWork: a query whose subqueries could read past -search.maxQueryWindowPoints over the series the read
// backends select has its selectors' series counted, each once over the span it is read, and is refused past the
// bound on those counts; one within it at the most series a backend selects is not counted.
func TestCheckQueryWork(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	threeHours := func(q string) url.Values { // 3 hours at 1 s: 10,801 points
		return url.Values{"query": {q}, "start": {"1699989200"}, "end": {"1700000000"}, "step": {"1"}}
	}
	// counting answers each count of a selector from series by the selector's name, each window's from samples, and
	// records what it was asked; as fanCounterFor, it asks a count once.
	counting := func(asked *[]string, err error, series map[string]float64, samples float64) fanCounter {
		return func(judge func(ask func(q, at string) (float64, error)) error) error {
			return judge(func(q, at string) (float64, error) {
				if !slices.Contains(*asked, q+" @"+at) {
					*asked = append(*asked, q+" @"+at)
				}
				if err != nil {
					return 0, err
				}
				if strings.HasPrefix(q, "sum(") {
					return samples, nil
				}
				for name, n := range series {
					if strings.HasPrefix(q, "count(last_over_time("+name+"{") || strings.HasPrefix(q, "count(last_over_time("+name+"[") {
						return n, nil
					}
				}
				t.Errorf("asked %s", q)
				return 0, nil
			})
		}
	}
	const attack = `count(max_over_time(m{team="dev"}[3h:1s]))`
	for _, tc := range []struct {
		name      string
		rt        route.Route
		args      url.Values
		maxSeries int64
		series    map[string]float64
		samples   float64
		asked     []string
		refused   string
	}{
		{"the attack over 2,000 series: refused", ranged, threeHours(attack), 0, map[string]float64{"m": 2000}, 0,
			[]string{`count(last_over_time(m{team="dev"}[22209001ms])) @1700000004`}, "would read 1.17e+11 points over all the series"},
		{"the same over 100 series: admitted", ranged, threeHours(attack), 0, map[string]float64{"m": 100}, 0,
			[]string{`count(last_over_time(m{team="dev"}[22209001ms])) @1700000004`}, ""},
		// An SLO ratio: one series of each side, however many a and b hold, which the query alone bounds: not counted.
		{"an SLO panel over many series: not counted", ranged, url.Values{"query": {`avg_over_time((sum(rate(a[5m])) / sum(rate(b[5m])))[30d:1m])`},
			"start": {"1699913600"}, "end": {"1700000000"}, "step": {"21"}}, 0, nil, 0, nil, ""},
		{"an SLO panel by job: counted", ranged, url.Values{"query": {`avg_over_time((sum(rate(a[5m])) by (job) / sum(rate(b[5m])) by (job))[30d:1m])`},
			"start": {"1699913600"}, "end": {"1700000000"}, "step": {"21"}}, 0, map[string]float64{"a": 20, "b": 20}, 0,
			[]string{`count(last_over_time(a[2679702001ms])) @1700000201`, `count(last_over_time(b[2679702001ms])) @1700000201`}, ""},
		// Few points a series (10,830): not counted, whatever the series.
		{"a dashboard's subquery: not counted", ranged, url.Values{"query": {`max_over_time(rate(m[5m])[1h:1m])`},
			"start": {"1699978400"}, "end": {"1700000000"}, "step": {"60"}}, 0, nil, 0, nil, ""},
		// 109,800 points a series: within the bound at the most series a backend selects (its -search.maxUniqueTimeseries
		// set to 10,000), not counted; counted where that is not known.
		{"an hour at 1 s on a known backend: not counted", ranged, url.Values{"query": {`max_over_time(m[1h:1s])`},
			"start": {"1699996400"}, "end": {"1700000000"}, "step": {"60"}}, 10_000, nil, 0, nil, ""},
		{"an hour at 1 s: counted", ranged, url.Values{"query": {`max_over_time(m[1h:1s])`},
			"start": {"1699996400"}, "end": {"1700000000"}, "step": {"60"}}, 0, map[string]float64{"m": 10_000}, 0,
			[]string{`count(last_over_time(m[7927001ms])) @1700000063`}, ""},
		{"the attack on a known backend: counted", ranged, threeHours(attack), 300_000, map[string]float64{"m": 2000}, 0,
			[]string{`count(last_over_time(m{team="dev"}[22209001ms])) @1700000004`}, "would read 1.17e+11 points"},
		// An instant query of it is a point of the range: within the bound at the most series.
		{"the attack's one point on a known backend: not counted", instant, url.Values{"query": {attack}, "time": {"1700000000"}},
			300_000, nil, 0, nil, ""},
		// Windows over raw samples of a sorting function: past the bound at a sample a second, the samples counted, each
		// read by the 1,441 points whose windows cover it at most, weighed 64 points, as over unsorted values.
		{"quantiles over many samples: refused", ranged, url.Values{"query": {`quantile_over_time(0.99, x[1d])`},
			"start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}, 0, map[string]float64{"x": 300}, 2e6,
			[]string{`count(last_over_time(x[173340001ms])) @1700000120`, `sum(count_over_time(x[172920000ms])) @1700000060.000`},
			"would read 1.84e+11 points"},
		{"quantiles over fewer samples: admitted", ranged, url.Values{"query": {`quantile_over_time(0.99, x[1d])`},
			"start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}, 0, map[string]float64{"x": 300}, 5e4,
			[]string{`count(last_over_time(x[173340001ms])) @1700000120`, `sum(count_over_time(x[172920000ms])) @1700000060.000`}, ""},
		// A window of a rollup that reads every sample, a point each: an hour's max over 6 hours at 1 s over 2,000
		// series of a sample a second, 5×10^7 samples each read by up to 3,601 points.
		{"max_over_time over many samples: counted", ranged, url.Values{"query": {`max_over_time(m[1h])`},
			"start": {"1699978400"}, "end": {"1700000000"}, "step": {"1"}}, 0, map[string]float64{"m": 2000}, 5.04e7,
			[]string{`count(last_over_time(m[25504001ms])) @1700000002`, `sum(count_over_time(m[25202000ms])) @1700000001.000`},
			"would read 1.56e+11 points"},
		{"rate over them: not counted", ranged, url.Values{"query": {`rate(m[1h])`},
			"start": {"1699978400"}, "end": {"1700000000"}, "step": {"1"}}, 0, nil, 0, nil, ""},
		{"no subquery: not counted", ranged, threeHours(`sum(rate(m[5m]))`), 0, nil, 0, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			l := Limits{MaxQueryWindowPoints: 1e10, MinSampleInterval: time.Second, maxSeries: tc.maxSeries}
			err := checkQueryWork(tc.rt, tc.args, nil, nil, l, now, counting(&asked, nil, tc.series, tc.samples))
			if !slices.Equal(asked, tc.asked) {
				t.Errorf("asked\n%s\nwant\n%s", strings.Join(asked, "\n"), strings.Join(tc.asked, "\n"))
			}
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %s", err)
			case tc.refused != "" && (httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), tc.refused) ||
				!strings.Contains(err.Error(), "-search.maxQueryWindowPoints")):
				t.Errorf("got %v; want 400 with %q", err, tc.refused)
			}
		})
	}

	// A count that fails: 503, to be sent again; one the backend refuses: 400.
	var asked []string
	err := checkQueryWork(ranged, threeHours(attack), nil, nil, Limits{MaxQueryWindowPoints: 1e10}, now,
		counting(&asked, errors.New("connection refused"), nil, 0))
	if httperr.Status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a failed count: %v; want 503 naming its cause", err)
	}
	asked = nil
	err = checkQueryWork(ranged, threeHours(attack), nil, nil, Limits{MaxQueryWindowPoints: 1e10}, now,
		counting(&asked, countError{errors.New("bad query")}, nil, 0))
	if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "bad query") {
		t.Errorf("a refused count: %v; want 400 naming it", err)
	}
	// More selectors than the gateway counts for one query: refused before any count.
	many := "m"
	for i := range 2 * measureMax {
		many += fmt.Sprintf(` + m{a="%d"}`, i)
	}
	many = "max_over_time((" + many + ")[3h:1s])"
	asked = nil
	err = checkQueryWork(ranged, threeHours(many), nil, nil, Limits{MaxQueryWindowPoints: 1e10}, now,
		counting(&asked, nil, map[string]float64{"m": 1}, 0))
	if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "has 17 selectors") || len(asked) != 0 {
		t.Errorf("many selectors: %v after %d counts; want 400 before any", err, len(asked))
	}
	// Off: nothing counted.
	asked = nil
	if err := checkQueryWork(ranged, threeHours(attack), nil, nil, Limits{}, now, counting(&asked, nil, nil, 0)); err != nil || len(asked) != 0 {
		t.Errorf("off: %v, asked %v", err, asked)
	}
}

// BenchmarkCheckQueryWork: what the bound costs a read that is not counted, on the request path of every read: a
// dashboard's query without a subquery (nothing but a look at its cached tree), and one with a subquery of few points
// a series (its per-series walk).
func BenchmarkCheckQueryWork(b *testing.B) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	l := Limits{MaxQueryWindowPoints: 1e10, MinSampleInterval: time.Second}
	count := fanCounter(func(func(ask func(q, at string) (float64, error)) error) error {
		b.Fatal("counted")
		return nil
	})
	for _, q := range []string{
		`histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{job="api",handler=~"/api/v1/.*"}[5m])) by (le, handler))`,
		`max_over_time(rate(http_requests_total{job="api"}[5m])[1h:1m])`,
	} {
		args := url.Values{"query": {q}, "start": {"1699989200"}, "end": {"1700000000"}, "step": {"15"}}
		b.Run(strings.Fields(strings.NewReplacer("(", " ", "[", " ").Replace(q))[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := checkQueryWork(ranged, args, nil, nil, l, now, count); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
