package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestRangePointsBound against the real 1.79.5: by default a range query past 11,000 points per series (counted as
// Prometheus counts them) gets 400 naming -search.maxPointsPerTimeseries and never reaches VictoriaMetrics, in the
// URL or the form; 11,000 are answered in full; -search.maxPointsPerTimeseries=0 forwards what VictoriaMetrics' own
// limit (30,000) lets through. Over 29,000 steps count_values("v", time()) took this VictoriaMetrics to 7 GB.
func TestRangePointsBound(t *testing.T) {
	vm := vmtest.Start(t)
	const end = 1_700_000_000
	rangeArgs := func(query string, steps int) url.Values {
		return url.Values{"query": {query}, "start": {strconv.Itoa(end - steps)}, "end": {strconv.Itoa(end)}, "step": {"1"}}
	}
	// VictoriaMetrics' count of the requests of path it was sent, read once it reached at least want: its /metrics
	// lags the requests by up to a second.
	sent := func(path string, want float64) float64 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := scrapeSum(t, vm.URL+"/metrics", "vm_http_requests_total", `path="`+path+`"`)
			if n >= want || time.Now().After(deadline) {
				return n
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	forwarded := func(want float64) float64 { return sent("/api/v1/query_range", want) }
	type answer struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	send := func(t *testing.T, g *gw, inForm bool, args url.Values) (int, answer) {
		t.Helper()
		var resp *http.Response
		var err error
		if inForm {
			resp, err = http.PostForm(g.URL+"/api/v1/query_range", args)
		} else {
			resp, err = http.Get(g.URL + "/api/v1/query_range?" + args.Encode())
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var a answer
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("%d %.300s: not JSON: %s", resp.StatusCode, body, err)
		}
		return resp.StatusCode, a
	}

	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL)
	// 11,000 intervals, 11,001 points: what Grafana asks at its finest.
	code, a := send(t, g, false, rangeArgs("time()", 11000))
	if code != http.StatusOK || len(a.Data.Result) != 1 || len(a.Data.Result[0].Values) != 11001 {
		t.Fatalf("11000 intervals: %d %+v; want 200 with 11001 points", code, a.Error)
	}
	before := forwarded(1)
	for _, inForm := range []bool{false, true} {
		for _, steps := range []int{11001, 29000} {
			code, a := send(t, g, inForm, rangeArgs(`count_values("v", time())`, steps))
			if code != http.StatusBadRequest || a.Status != "error" || a.ErrorType != "bad_data" ||
				!strings.Contains(a.Error, "asks for "+strconv.Itoa(steps)+" points per series") || !strings.Contains(a.Error, "-search.maxPointsPerTimeseries") {
				t.Errorf("%d steps (form %v): %d %+v; want 400 bad_data naming the points and the flag", steps, inForm, code, a)
			}
		}
	}
	// A valid start in the form and an unreadable one in the URL: VictoriaMetrics reads the form's, so the URL's
	// cannot be skipped as VictoriaMetrics' to refuse.
	args := rangeArgs(`count_values("v", time())`, 29000)
	resp, err := http.Post(g.URL+"/api/v1/query_range?start=yesterday", "application/x-www-form-urlencoded", strings.NewReader(args.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `cannot read start=\"yesterday\"`) {
		t.Errorf("an unreadable start beside a readable one: %d %.300s; want 400 naming it", resp.StatusCode, body)
	}

	// count_values in a subquery is bounded the same way: in an instant query it costs VictoriaMetrics what the range
	// query does.
	instants := func(want float64) float64 { return sent("/api/v1/query", want) }
	instantsBefore := instants(0)
	instant := func(query string) (int, string) {
		// At a step of a second unless the query says otherwise after a tab: a window over anything but a selector
		// is a subquery at the request's step.
		step := "1"
		if q, s, ok := strings.Cut(query, "\t"); ok {
			query, step = q, s
		}
		resp, err := http.Get(g.URL + "/api/v1/query?" + url.Values{"query": {query}, "time": {strconv.Itoa(end)}, "step": {step}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	const points = "count_values in the query is evaluated at"
	for q, want := range map[string]string{
		`count_values("v", time())[29000s:1s]`:                             points,
		`count(count_values("v", time())[11001s:1s])`:                      points,
		`WITH (w = 20000s) max_over_time(count_values("v", time())[w:1s])`: points,
		`max_over_time(count_values("v", time())[29000s]) + step()`:        points,
		"max_over_time(count_values(\"v\", time())[12000s #]\n:1s])":       points,
		`time() + max_over_time(count\_values("v", time())[100s:1s])`:      "aggregate function written with escapes",
		// VictoriaMetrics evaluates a subquery from a step and 5 minutes earlier: 12,042 points at 25 ms.
		`count(count_values("v", time())[1s:25ms])`: points,
		// A rollup function over anything but a window or a selector is a subquery at the request's step.
		"max_over_time(count_values(\"v\", time()))\t0.025": points,
	} {
		if code, body := instant(q); code != http.StatusBadRequest || !strings.Contains(body, want) || !strings.Contains(body, `"errorType":"bad_data"`) {
			t.Errorf("%s: %d %.300s; want 400 saying %q", q, code, body, want)
		}
	}
	// Other subqueries are left to VictoriaMetrics' own bound on their points (30,000 in 1.79.5).
	// The query is judged as it goes upstream: for a token with four filters the rewrite copies the rollup call,
	// count_values and all, into each arg of a union (which v1.150 evaluates at once), so one count_values of 6,300
	// points becomes four, as much memory as one of 12,600.
	priv, pub := keyPair(t, "rsa")
	authed := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	var filters []string
	for _, team := range []string{"a", "b", "c", "d"} {
		filters = append(filters, `-extraFilters={team="`+team+`"}`)
	}
	tok := mint(t, priv, append([]string{"-mode=read"}, filters...)...)
	req, _ := http.NewRequest(http.MethodGet, authed.URL+"/api/v1/query?"+url.Values{"time": {strconv.Itoa(end)}, "step": {"1"},
		"query": {`quantile_over_time(scalar(max_over_time(count_values("v", time())[6000s:1s])), up[5m])`}}.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "evaluated 4 times") {
		t.Errorf("count_values copied by the rewrite: %d %.400s; want 400 counting the four copies", resp.StatusCode, body)
	}

	if code, body := instant(`max_over_time(time()[25000s:1s])`); code != http.StatusOK || !strings.Contains(body, `"`+strconv.Itoa(end)+`"]`) {
		t.Errorf("a subquery of 25000 points without count_values: %d %.300s; want 200 with the last time", code, body)
	}
	instants(instantsBefore + 1)
	time.Sleep(1500 * time.Millisecond)
	if after := instants(instantsBefore + 1); after != instantsBefore+1 {
		t.Errorf("VictoriaMetrics counted %v instant queries more; want only the subquery without count_values", after-instantsBefore)
	}

	// Without the bound VictoriaMetrics' own limit of 30,000 points is what is left.
	open := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-search.maxPointsPerTimeseries=0")
	code, a = send(t, open, false, rangeArgs("time()", 29000))
	if code != http.StatusOK || len(a.Data.Result) != 1 || len(a.Data.Result[0].Values) != 29001 {
		t.Errorf("29000 intervals with the bound off: %d %+v; want 200 with 29001 points", code, a.Error)
	}
	// Sent after the refused ones: once VictoriaMetrics counted it, it had counted them too, had any reached it.
	forwarded(before + 1)
	time.Sleep(1500 * time.Millisecond)
	if after := forwarded(before + 1); after != before+1 {
		t.Errorf("VictoriaMetrics counted %v range queries more; want only the one sent with the bound off", after-before)
	}
}
