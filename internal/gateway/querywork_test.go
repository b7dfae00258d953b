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

// TestCheckQueryPoints: a query of more than 10 arms has its selectors' series counted, each once over the span it is
// read, and is refused past -search.maxQueryPoints on those counts; one within it at the most series a backend selects,
// one of fewer arms, and one of more spans than the gateway counts are not counted.
func TestCheckQueryPoints(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	hour := func(q string) url.Values { // an hour at 10 s: 361 points
		return url.Values{"query": {q}, "start": {"1699996400"}, "end": {"1700000000"}, "step": {"10"}}
	}
	arms := func(n int, f string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf(f, i%3)
		}
		return strings.Join(s, " or ")
	}
	count := func(asked *[]string, series float64) fanCounter {
		return func(judge func(ask func(q, at string) (float64, error)) error) error {
			return judge(func(q, at string) (float64, error) {
				if !slices.Contains(*asked, q+" @"+at) { // as fanCounterFor, a count asked once
					*asked = append(*asked, q+" @"+at)
				}
				return series, nil
			})
		}
	}
	for _, tc := range []struct {
		name      string
		q         string
		maxSeries int64
		series    float64
		asked     int
		refused   string
	}{
		// Three spans of m (offsets 0, 1 and 2 s), each counted once; 11 arms of 1,000 series, each 128 points besides
		// its 361: 5.38×10^6.
		{"11 arms of 1,000 series: admitted", arms(11, `m offset %ds`), 0, 1000, 3, ""},
		{"11 arms of 10,000 series: refused", arms(11, `m offset %ds`), 0, 10_000, 3, "would make series of 5.38e+07 points in all"},
		{"at most 5,000 series a selector: not counted", arms(11, `m offset %ds`), 5000, 0, 0, ""},
		{"10 arms: not counted", arms(10, `m offset %ds`), 0, 0, 0, ""},
		{"quantiles of 20 phis: refused", `quantiles("phi", 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, ` +
			`0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.2, m) by (s)`, 0, 10_000, 1, "would make series of 7.71e+07 points"},
		// Sums done as they go hold 128 points of each series they read, not its points; each is an arm.
		{"30 sums done as they go of 1,000 series: admitted", arms(30, `sum(rate(m[5m] offset %ds))`), 0, 1000, 3, ""},
		{"30 sums done as they go of 10,000 series: refused", arms(30, `sum(rate(m[5m] offset %ds))`), 0, 10_000, 3, "would make series of 3.84e+07 points"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			l := Limits{MaxQueryPoints: 3e7, maxSeries: tc.maxSeries}
			err := checkQueryWork(ranged, hour(tc.q), nil, nil, l, now, count(&asked, tc.series))
			if len(asked) != tc.asked {
				t.Errorf("asked %d counts %q; want %d", len(asked), asked, tc.asked)
			}
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %s", err)
			case tc.refused != "" && (httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), tc.refused) ||
				!strings.Contains(err.Error(), "-search.maxQueryPoints")):
				t.Errorf("got %v; want 400 with %q", err, tc.refused)
			}
		})
	}
	// More selectors than -search.maxQuerySelectors, and numbers of more points than the bound: refused before any count.
	var asked []string
	err := checkQueryWork(ranged, hour(arms(51, `m offset %ds`)), nil, nil, Limits{MaxQueryPoints: 3e7, MaxQuerySelectors: 50}, now, count(&asked, 1))
	if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "the query has 51 selectors") ||
		!strings.Contains(err.Error(), "-search.maxQuerySelectors") || len(asked) != 0 {
		t.Errorf("51 selectors: %v after %d counts; want 400 before any", err, len(asked))
	}
	ones := "count(union(" + strings.Repeat("1, ", 99_999) + "1))" // 10^5 series of 361 points
	err = checkQueryWork(ranged, hour(ones), nil, nil, Limits{MaxQueryPoints: 3e7}, now, nil)
	if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "numbers and calls of no selector would make series of 3.61e+07 points") {
		t.Errorf("10^5 numbers: %v; want 400 without a count", err)
	}
	// A query as it goes upstream that does not parse (the rewrite made it a level deeper than the parse allows): refused,
	// not read as reading nothing (a review).
	deep := strings.Repeat("abs(", 1001) + arms(11, "m offset %ds") + strings.Repeat(")", 1001)
	err = checkQueryWork(ranged, hour(deep), nil, nil, Limits{MaxQueryPoints: 3e7, MaxQuerySelectors: 50}, now, count(&asked, 1))
	if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "cannot parse the query as it goes upstream") {
		t.Errorf("a query too deep upstream: %v; want 400", err)
	}
	// 17 spans, more than the gateway counts where -search.maxQuerySelectors is off: refused before any count.
	asked = nil
	many := make([]string, 17)
	for i := range many {
		many[i] = fmt.Sprintf("m offset %ds", i)
	}
	err = checkQueryWork(ranged, hour(strings.Join(many, " or ")), nil, nil, Limits{MaxQueryPoints: 3e7}, now, count(&asked, 1))
	if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "has 17 selectors") ||
		!strings.Contains(err.Error(), "-search.maxQueryPoints") || len(asked) != 0 {
		t.Errorf("17 spans: %v after %d counts; want 400 before any", err, len(asked))
	}
	// Counted for its arms alone, a query has up to -search.maxQuerySelectors of them counted.
	asked = nil
	err = checkQueryWork(ranged, hour(strings.Join(many, " or ")), nil, nil, Limits{MaxQueryPoints: 3e7, MaxQuerySelectors: 50}, now, count(&asked, 1))
	if err != nil || len(asked) != 17 {
		t.Errorf("17 spans under -search.maxQuerySelectors=50: %v after %d counts; want admitted after 17", err, len(asked))
	}
}

// BenchmarkCheckQueryWork: what the bound costs a read that is not counted, on the request path of every read: a
// dashboard's query without a subquery (nothing but a look at its cached tree), and one with a subquery of few points
// a series (its per-series walk).
func BenchmarkCheckQueryWork(b *testing.B) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	l := Limits{MaxQueryWindowPoints: 1e10, MaxQueryPoints: 3e7, MinSampleInterval: time.Second}
	count := fanCounter(func(func(ask func(q, at string) (float64, error)) error) error {
		b.Fatal("counted")
		return nil
	})
	for _, q := range []string{
		`up{job="api"}`,
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
