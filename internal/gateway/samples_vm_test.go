package gateway

import (
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestProbeCountsAtLeastTheQuery: on real VictoriaMetrics (1.79.5 and the current release), over two days of samples
// at irregular times (15 s apart with jitter, bursts of one a second, gaps of half an hour), the count probeQuery asks
// for is never less than what the window reads per series at any alignment of the query's points VictoriaMetrics may
// use (the request's own, aligned to the step, an instant query's time a little later), counted here from the samples
// themselves; and, for windows longer than the step, not much more.
func TestProbeCountsAtLeastTheQuery(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).UnixMilli()
	series := make([][]int64, 2)
	var body strings.Builder
	r := rand.New(rand.NewSource(7))
	for i := range series {
		for ts := end - 2*day; ts <= end; {
			series[i] = append(series[i], ts)
			fmt.Fprintf(&body, "burst{team=\"dev\",i=\"%d\"} 1 %d\n", i, ts)
			switch phase := (ts / (6 * hour)) % 4; {
			case ts%(6*hour) < 10*minute:
				ts += 1000 + r.Int63n(7) // a burst: one a second
			case phase == 2 && ts%(6*hour) < 40*minute:
				ts += 30 * minute // a gap
			default:
				ts += 15000 + r.Int63n(3000) - 1500
			}
		}
	}
	sel := `burst{team="dev"}`
	windows := []querylimits.Window{
		{Selector: sel, From: end - day, To: end, Step: minute, Window: day},
		{Selector: sel, From: end - day + 7123, To: end - 13000, Step: 5 * minute, Window: hour},
		{Selector: sel, From: end - 2*hour, To: end, Step: 10 * minute, Window: 5 * minute},
		{Selector: sel, From: end - 3*hour - 1, To: end - 3*hour - 1, Step: 5 * minute, Window: 6 * hour},
		{Selector: sel, From: end - 12*hour + 333, To: end - 2*hour, Step: 15000, Window: 2 * hour},
	}
	starts := map[string]func(testing.TB, ...string) *vmtest.VM{"1.79.5": vmtest.Start, "current": vmtest.StartCurrent}
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			// The gateway's own count, against the backend (no restriction: the selector is the test's).
			vm, g := countingGateway(t, start, body.String())
			all := &auth.Access{Mode: auth.ModeRead}
			count := func(w querylimits.Window) (seriesCounts, error) {
				listed := maxListed
				return g.countSamples(context.Background(), all, w, &listed)
			}
			vmtest.Eventually(t, func() (bool, string) {
				ans, err := g.ask(context.Background(), all, fmt.Sprintf("count_over_time(%s[%dms])", `burst{i="0"}`, 3*day),
					strconv.FormatFloat(float64(end)/1e3, 'f', 3, 64), maxCountAnswer)
				return err == nil && len(ans) == 1 && ans[0].n == int64(len(series[0])),
					fmt.Sprintf("series 0 counted %+v, %v; want %d samples", ans, err, len(series[0]))
			})
			// Two metrics that share their other labels: count_over_time makes duplicates of them, which
			// VictoriaMetrics refuses series by series; their most is counted instead (a review).
			dup := fmt.Sprintf("dupa{job=\"x\"} 1 %d\ndupb{job=\"x\"} 2 %d\n", end-minute, end-minute)
			resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader(dup))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			vm.Flush(t)
			vmtest.Eventually(t, func() (bool, string) {
				c, err := count(querylimits.Window{Selector: `{__name__=~"dupa|dupb"}`, From: end - hour, To: end, Step: minute, Window: hour})
				return err == nil && c.rest >= 2, fmt.Sprintf("the count of two metrics of the same labels: %+v, %v; want its most, at least the 2 points that read their sample", c, err)
			})
			for _, w := range windows {
				c, err := count(w)
				if err != nil || c.rest != 0 {
					t.Fatalf("%+v: counted %+v, %v", w, c, err)
				}
				s := w.Step
				// Aligned, a range's last point goes up to the step; an instant evaluation (From == To) is one point.
				alignedTo := w.To + (s-mod(w.To, s))%s
				if w.To == w.From {
					alignedTo = w.From - mod(w.From, s)
				}
				for i, ts := range series {
					key := labelsKey(map[string]string{"i": fmt.Sprint(i), "team": "dev"})
					for _, pts := range []struct {
						name     string
						from, to int64
					}{
						{"the request's points", w.From, w.To},
						{"aligned to the step", w.From - mod(w.From, s), alignedTo},
						{"a step later", w.From + s - 1, w.To + s - 1},
						{"a step earlier", w.From - s + 1, w.To - s + 1},
					} {
						exact := reads(ts, pts.from, pts.to, s, w.Window)
						if c.of(key) < exact {
							t.Errorf("%+v, series %d at %s: the probe counts %d; the query reads %d", w, i, pts.name, c.of(key), exact)
						}
						if pts.name == "the request's points" && w.Window >= 4*s {
							covered := reads(ts, w.From-s-w.Window, w.To+s, w.To-w.From+2*s+w.Window, w.To-w.From+2*s+w.Window)
							if limit := exact + exact*2*s/w.Window + covered + 2*exact/max(1, (w.To-w.From)/s); c.of(key) > limit {
								t.Errorf("%+v, series %d: the probe counts %d; the query reads %d, %d samples covered", w, i, c.of(key), exact, covered)
							}
						}
					}
				}
			}
		})
	}
}

const (
	minute = int64(time.Minute / time.Millisecond)
	hour   = 60 * minute
	day    = 24 * hour
)

func mod(a, m int64) int64 { return ((a % m) + m) % m }

// reads is what a window of length win reads of samples ts at the points from, from+step, ..., to: the samples in
// (t-win, t] of each.
func reads(ts []int64, from, to, step, win int64) int64 {
	var n int64
	for t := from; t <= to; t += step {
		lo, _ := slices.BinarySearch(ts, t-win+1)
		hi, _ := slices.BinarySearch(ts, t+1)
		n += int64(hi - lo)
	}
	return n
}

// countingGateway starts a VictoriaMetrics with start, writes data into it (Prometheus text) and returns it with a
// gateway in front of it, for the gateway's own counts.
func countingGateway(t *testing.T, start func(testing.TB, ...string) *vmtest.VM, data string) (*vmtest.VM, *Gateway) {
	t.Helper()
	vm := start(t)
	resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	vm.Flush(t)
	ru, _ := url.Parse(vm.URL)
	g, err := New(Config{ReadURL: ru, WriteURL: ru, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	return vm, g
}
