package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/vmgateway/vmgateway/internal/tenant"
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
			vm := start(t)
			resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader(body.String()))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			vm.Flush(t)
			vmtest.Eventually(t, func() (bool, string) {
				n := probe(t, vm.URL, fmt.Sprintf("count_over_time(%s[%dms])", `burst{i="0"}`, 3*day), end)[labelsKey(map[string]string{"i": "0", "team": "dev"})]
				return n == int64(len(series[0])), fmt.Sprintf("%d samples of series 0 found; want %d", n, len(series[0]))
			})
			// Two metrics that share their other labels: count_over_time makes duplicates of them, which
			// VictoriaMetrics refuses series by series; their most is counted instead (a review).
			dup := fmt.Sprintf("dupa{job=\"x\"} 1 %d\ndupb{job=\"x\"} 2 %d\n", end-minute, end-minute)
			resp, err = http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader(dup))
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
			vmtest.Eventually(t, func() (bool, string) {
				listed := maxListed
				c, err := g.countSamples(context.Background(), &auth.Access{Mode: auth.ModeRead},
					tenant.ID{}, querylimits.Window{Selector: `{__name__=~"dupa|dupb"}`, From: end - hour, To: end, Step: minute, Window: hour}, &listed)
				return err == nil && c.rest >= 2, fmt.Sprintf("the count of two metrics of the same labels: %+v, %v; want its most, at least the 2 points that read their sample", c, err)
			})
			for _, w := range windows {
				wq, cq, at := probeQuery(w)
				atMs, _ := strconv.ParseFloat(at, 64)
				got := map[string]int64{}
				if wq != "" { // an instant evaluation is counted by the samples covered alone
					got = probe(t, vm.URL, wq, int64(atMs*1000))
				}
				for k, n := range probe(t, vm.URL, cq, int64(atMs*1000)) {
					got[k] += n
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
						if got[key] < exact {
							t.Errorf("%+v, series %d at %s: the probe counts %d; the query reads %d", w, i, pts.name, got[key], exact)
						}
						if pts.name == "the request's points" && w.Window >= 4*s {
							covered := reads(ts, w.From-s-w.Window, w.To+s, w.To-w.From+2*s+w.Window, w.To-w.From+2*s+w.Window)
							if limit := exact + exact*2*s/w.Window + covered + 2*exact/max(1, (w.To-w.From)/s); got[key] > limit {
								t.Errorf("%+v, series %d: the probe counts %d; the query reads %d, %d samples covered", w, i, got[key], exact, covered)
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

// probe asks VictoriaMetrics at base for q at atMs: the number of each series, by labelsKey.
func probe(t *testing.T, base, q string, atMs int64) map[string]int64 {
	t.Helper()
	v := url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(atMs)/1e3, 'f', 3, 64)}, "nocache": {"1"}}
	resp, err := http.Get(base + "/api/v1/query?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", q, resp.StatusCode, b)
	}
	out := map[string]int64{}
	for _, r := range ans.Data.Result {
		s, _ := r.Value[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%s: %s", q, s)
		}
		out[labelsKey(r.Metric)] = int64(f)
	}
	return out
}
