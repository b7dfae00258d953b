package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestMeasuredSamples: with the default flags (one sample a second assumed), a day-long quantile_over_time panel over
// a team's 15 s data, which VictoriaMetrics answers at once, was refused (a legitimate user's review). The gateway now
// counts the samples its windows read, in the team's own series, and forwards it, answering what VictoriaMetrics
// answers; over a team's own 1 s data the same panel is refused on the count; another team's count is of its own
// series; -search.measureSamples=false refuses as before.
func TestMeasuredSamples(t *testing.T) {
	now := time.Now().Unix()
	var data strings.Builder
	for ts := now - 2*86400; ts <= now; ts += 15 {
		fmt.Fprintf(&data, "panel{team=\"dev\",host=\"a\"} %d %d000\npanel{team=\"dev\",host=\"b\"} %d %d000\n", ts%101, ts, ts%103, ts)
	}
	data.WriteString(secondsOfCPU())
	day := url.Values{"start": {fmt.Sprint(now - 86400)}, "end": {fmt.Sprint(now)}, "step": {"60"}}
	ask := func(q string) url.Values {
		v := url.Values{"query": {q}}
		for k, vs := range day {
			v[k] = vs
		}
		return v
	}
	for name, start := range map[string]func(testing.TB, ...string) *vmtest.VM{"1.79.5": vmtest.Start, "current": vmtest.StartCurrent} {
		t.Run(name, func(t *testing.T) {
			vm := start(t)
			importInto(t, vm.URL+"/api/v1/import/prometheus", data.String())
			vm.Flush(t)
			vmtest.Eventually(t, func() (bool, string) {
				_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/series?match[]=panel&match[]=cpu", nil)
				n := strings.Count(body, `"__name__"`)
				return n == 3, fmt.Sprintf("%d series listed: %s", n, body)
			})
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
			dev, ops := mint(t, priv, "-mode=read", "-extraLabels=team=dev"), mint(t, priv, "-mode=read", "-extraLabels=team=ops")
			probes := func() float64 {
				return scrapeSum(t, vm.URL+"/metrics", "vm_http_requests_total", `path="/api/v1/query"`)
			}

			panel := ask(`quantile_over_time(0.99, panel[1d])`)
			before := probes()
			code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+panel.Encode(), nil, bearer(dev)...)
			if code != http.StatusOK {
				t.Fatalf("the panel over 15s data: %d %s", code, body)
			}
			direct := panel
			direct.Set("extra_label", "team=dev")
			_, _, want := do(t, http.MethodGet, vm.URL+"/api/v1/query_range?"+direct.Encode(), nil)
			if a, b := resultOf(t, body), resultOf(t, want); a != b || !strings.Contains(a, `"host":"b"`) {
				t.Errorf("the panel through the gateway answers\n%.400s\nVictoriaMetrics with extra_label\n%.400s", a, b)
			}
			// VictoriaMetrics counts a request once it is done with it, after the answer. A count is asked in two parts, and
			// for -search.maxQueryWindowPoints the panel's series and, past it at a sample a second, their samples.
			vmtest.Eventually(t, func() (bool, string) {
				n := probes() - before
				return n == 4, fmt.Sprintf("%v counts asked of VictoriaMetrics; want 4", n)
			})
			// No count is kept: the team may have written samples since.
			before = probes()
			if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+panel.Encode(), nil, bearer(dev)...); code != http.StatusOK {
				t.Fatalf("the panel again: %d %s", code, body)
			}
			vmtest.Eventually(t, func() (bool, string) {
				n := probes() - before
				return n == 4, fmt.Sprintf("the panel again asked %v counts; want 4", n)
			})
			// A token of two filters: the union's two windows read series of their own, and the panel passes as it does
			// for one (a legitimate user's review: a first version added the windows' most and refused it at twice its
			// cost).
			split := mint(t, priv, "-mode=read", `-extraFilters={team="dev",host="a"}`, `-extraFilters={team="dev",host="b"}`)
			code, _, body = do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+panel.Encode(), nil, bearer(split)...)
			if code != http.StatusOK {
				t.Fatalf("the panel through two filters: %d %s", code, body)
			}
			filtered := ask(`quantile_over_time(0.99, panel[1d])`)
			filtered["extra_filters[]"] = []string{`{team="dev",host="a"}`, `{team="dev",host="b"}`}
			_, _, want = do(t, http.MethodGet, vm.URL+"/api/v1/query_range?"+filtered.Encode(), nil)
			if a, b := resultOf(t, body), resultOf(t, want); a != b {
				t.Errorf("the panel through two filters answers\n%.400s\nVictoriaMetrics with extra_filters[]\n%.400s", a, b)
			}

			// A window counted over no data, then filled with a sample a second: counted again, and refused (an attacker's
			// review: a count kept for a minute admitted the query, 27 s of VictoriaMetrics' CPU for one series).
			late := ask(`quantile_over_time(0.99, late[1d])`)
			if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+late.Encode(), nil, bearer(dev)...); code != http.StatusOK {
				t.Fatalf("the panel over no data: %d %s", code, body)
			}
			importInto(t, vm.URL+"/api/v1/import/prometheus", strings.ReplaceAll(secondsOfCPU(), "cpu{", "late{"))
			vm.Flush(t)
			// Wait until VictoriaMetrics counts as many samples in late's day as in cpu's, which holds the same seconds, with
			// the selector the gateway counts with: the listing of late's series, or a count of another selector, came
			// while 1.79.5 still answered team dev's selector from what it had searched before the samples were in (2 runs
			// of 5 under load counted none and admitted the panel).
			vmtest.Eventually(t, func() (bool, string) {
				count := func(m string) string {
					q := url.Values{"query": {"sum(count_over_time(" + m + "[1d]))"}, "time": {fmt.Sprint(now)}, "extra_label": {"team=dev"}}
					_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/query?"+q.Encode(), nil)
					return resultOf(t, body)
				}
				l, c := count("late"), count("cpu")
				return l == c && l != "[]", fmt.Sprintf("late's day counts %s, cpu's %s", l, c)
			})
			code, _, body = do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+late.Encode(), nil, bearer(dev)...)
			if code != http.StatusBadRequest || !strings.Contains(body, "as VictoriaMetrics counted them") {
				t.Errorf("the panel over the samples written since: %d %s; want 400 on the count", code, body)
			}

			// The team's own 1 s data: refused on the count.
			cpu := ask(`quantile_over_time(0.99, cpu[1d])`)
			code, _, body = do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+cpu.Encode(), nil, bearer(dev)...)
			if code != http.StatusBadRequest || !strings.Contains(body, "as VictoriaMetrics counted them") || !strings.Contains(body, "-search.maxSubqueryWindowPoints") {
				t.Errorf("the panel over 1s data: %d %s; want 400 on the count", code, body)
			}
			// Team ops has no cpu series: its count is of its own, and its panel passes (empty).
			code, _, body = do(t, http.MethodGet, g.URL+"/api/v1/query_range?"+cpu.Encode(), nil, bearer(ops)...)
			if code != http.StatusOK || resultOf(t, body) != "[]" {
				t.Errorf("team ops' panel over cpu: %d %s; want 200 and no series", code, body)
			}
			for result, want := range map[string]float64{"admitted": 5, "refused": 2, "failed": 0} {
				if got := metricValue(t, g, `vmgateway_query_samples_measured_total{result="`+result+`"}`); got != want {
					t.Errorf("vmgateway_query_samples_measured_total{result=%q} = %v; want %v", result, got, want)
				}
			}

			// Not measured: refused at one sample a second, as before.
			off := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, "-search.measureSamples=false")
			code, _, body = do(t, http.MethodGet, off.URL+"/api/v1/query_range?"+panel.Encode(), nil, bearer(dev)...)
			if code != http.StatusBadRequest || !strings.Contains(body, "-search.minSampleInterval") {
				t.Errorf("-search.measureSamples=false: %d %s; want 400", code, body)
			}
		})
	}
}

// resultOf is the data.result of a query's JSON answer, as compact JSON.
func resultOf(t *testing.T, body string) string {
	t.Helper()
	var ans struct {
		Data struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatalf("not a query answer: %.300s", body)
	}
	return string(ans.Data.Result)
}
