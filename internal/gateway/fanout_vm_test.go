package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestFanOutCountsAtLeastTheSeriesMade: on real VictoriaMetrics (1.79.5 and the current release), the series the
// gateway's counts say histogram_over_time and quantiles_over_time make are never fewer than those VictoriaMetrics
// answers, and, where they count the buckets as VictoriaMetrics fills them, about as many (under an aggregation the
// count also holds what each worker builds of the one series it reads, which the answer does not show): 10 series of an hour of 1 s
// samples spread over 30 decades, 2 of a few samples of one value, in two jobs.
func TestFanOutCountsAtLeastTheSeriesMade(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).UnixMilli()
	start := end - hour
	var body strings.Builder
	r := rand.New(rand.NewSource(11))
	for i := range 10 {
		for ts := start - 10*minute; ts <= end; ts += 1000 {
			fmt.Fprintf(&body, "hx{job=\"j%d\",i=\"%d\"} %g %d\n", i%2, i, math.Pow(10, -11+r.Float64()*31), ts)
		}
	}
	for i := 10; i < 12; i++ {
		for k := range 5 {
			fmt.Fprintf(&body, "hx{job=\"j%d\",i=\"%d\"} 42 %d\n", i%2, i, end-int64(k)*7*minute)
		}
	}
	queries := []struct {
		q string
		// dense: the count is within 2% of the series VictoriaMetrics answers.
		dense bool
		// shift moves the range's start off the multiples of the step, by ms; nocache asks VictoriaMetrics to keep it.
		shift   int64
		nocache bool
	}{
		{`histogram_over_time(hx{i!~"1[01]"}[5m])`, true, 0, false},
		{`histogram_over_time(hx[5m])`, false, 0, false},
		{`histogram_over_time(hx)`, false, 0, false},
		{`histogram_over_time(hx{i!~"1[01]"}[5m] offset 10m)`, true, 0, false},
		{`sum(histogram_over_time(hx{i!~"1[01]"}[5m])) by (vmrange, job)`, false, 0, false},
		{`sum(histogram_over_time(hx[5m])) without (i)`, false, 0, false},
		{`max(histogram_over_time(hx[5m])) by (job)`, false, 0, false},
		{`histogram_over_time(hx{i=~"1[01]"}[5m])`, false, 0, false},
		{`histogram_over_time(max_over_time(hx{i!~"1[01]"}[1m])[20m:1m])`, false, 0, false},
		{`quantiles_over_time("phi", 0.5, 0.9, hx[5m])`, true, 0, false},
		{`sum(quantiles_over_time("phi", 0.5, 0.9, hx[5m])) by (phi, job)`, false, 0, false},
		// count_values: a series of each value at the points; the 2 series of one value make one. Of 4 series, since
		// 1.79.5 refuses more than 2,000 series of count_values past 16 of each series it reads, and the 4 share some of
		// their values.
		{`count_values("v", hx{i=~"[0-3]"})`, false, 0, false},
		{`count_values("v", hx{i=~"1[01]"})`, false, 0, false},
		{`count_values("v", round(hx, 1e9)) by (job)`, false, 0, false},
		{`count_values("v", round(hx, 1e9)) without (i)`, false, 0, false},
		{`count_values("job", round(hx, 1e9)) by (job, i)`, false, 0, false},
		{`max_over_time(count_values("v", hx{i=~"[0-3]"})[10m:1m])`, false, 0, false},
		{`count_values("v", hx{i=~"[0-3]"})`, false, 3000, false},
		{`count_values("v", hx{i=~"[0-3]"})`, false, 3000, true},
		// Values at the range's own points only, off the multiples of its step: counted at those points.
		{`count_values("v", hx{i=~"[0-3]"} and on() (vector(time()) % 8 == 3))`, false, 3000, true},
	}
	for name, startVM := range map[string]func(testing.TB, ...string) *vmtest.VM{"1.79.5": vmtest.Start, "current": vmtest.StartCurrent} {
		t.Run(name, func(t *testing.T) {
			vm, g := countingGateway(t, startVM, body.String())
			all := &auth.Access{Mode: auth.ModeRead}
			vmtest.Eventually(t, func() (bool, string) {
				ans, err := g.ask(context.Background(), all, `count(count_over_time(hx[2h]))`, strconv.FormatInt(end/1000, 10), 1<<20)
				return err == nil && len(ans) == 1 && ans[0].n == 12, fmt.Sprintf("series %+v %v; want 12", ans, err)
			})
			for _, tc := range queries {
				// The range starts at a multiple of the step, or tc.shift past one.
				start := start - start%8000 + tc.shift
				args := url.Values{"query": {tc.q}, "start": {strconv.FormatInt(start/1000, 10)}, "end": {strconv.FormatInt(end/1000, 10)}, "step": {"8"}}
				if tc.nocache {
					args.Set("nocache", "1")
				}
				rng := &querylimits.Range{Read: func() (int64, int64, int64, error) { return start, end, 8000, nil }}
				fans, err := querylimits.FanOuts(tc.q, nil, false, rng, end)
				if err != nil || len(fans) != 1 {
					t.Fatalf("%s: %+v %v", tc.q, fans, err)
				}
				counted := 0.0
				if n, ok := boundedFanOut(fans[0]); ok {
					counted = n
				} else {
					p := probeFanOut(fans[0], 1)
					ask := func(q, at string) (float64, error) {
						ans, err := g.ask(context.Background(), all, q, at, 1<<20)
						// An exact count that answered nothing counts 0, fewer than VictoriaMetrics makes. 1.79.5 refuses
						// count_values' closer count, which leaves its exact one.
						var refused countError
						if q == p.closer && errors.As(err, &refused) {
							return 0, err
						}
						if err != nil || len(ans) > 1 {
							t.Fatalf("%s: count %s: %+v %v", tc.q, q, ans, err)
						}
						if len(ans) == 0 {
							return 0, nil
						}
						return float64(ans[0].n), nil
					}
					// The buckets are counted where the gateway may count them, whatever the bound.
					counted, err = p.made(ask, func(float64) bool { return true }, func(float64) bool { return true })
					if err != nil {
						t.Fatal(err)
					}
				}
				made := seriesAnswered(t, vm.URL+"/api/v1/query_range?"+args.Encode())
				t.Logf("%s: counted %.0f, made %d", tc.q, counted, made)
				if made == 0 || counted < float64(made) || tc.dense && counted > 1.02*float64(made) {
					t.Errorf("%s: counted %.0f series; VictoriaMetrics answered %d", tc.q, counted, made)
				}
			}
		})
	}
}

// seriesAnswered is the number of series VictoriaMetrics answers the query u with.
func seriesAnswered(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Status string
		Error  string
		Data   struct{ Result []json.RawMessage }
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.Status != "success" {
		t.Fatalf("%s: %v %s", u, err, ans.Error)
	}
	return len(ans.Data.Result)
}
