package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 18's cost limits for queries whose answers carry no stats, through the real binary: a query that fails
// after its work, and one whose client leaves before the answer, are charged the time the gateway measured for
// them as query_time_ms, so a team cannot spend cluster time outside its budget by failing or leaving.

// teamCostUsage reads the usage of the cost limit of type typ of each team (key label:team) on g's status page.
func teamCostUsage(t *testing.T, g *gw, typ string) map[string]float64 {
	t.Helper()
	code, _, body := do(t, http.MethodGet, g.URL+"/ratelimit/status?authKey=sk", nil)
	var page struct {
		Usage []struct {
			KeyValue *string `json:"key_value"`
			Limits   []struct {
				Type   string
				Usage  float64
				Source string
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil || code != 200 {
		t.Fatalf("/ratelimit/status: %d %s", code, body)
	}
	out := map[string]float64{}
	for _, e := range page.Usage {
		for _, l := range e.Limits {
			if e.KeyValue != nil && l.Type == typ && l.Source == "local" {
				out[*e.KeyValue] = l.Usage
			}
		}
	}
	return out
}

// queryUntilRefused sends query as team's token until the gateway refuses it for query_time_ms, at most tries
// times; every answer before must have status want. It returns how many were answered.
func queryUntilRefused(t *testing.T, g *gw, token, path string, want, tries int) int {
	t.Helper()
	for i := 0; i < tries; i++ {
		code, _, body := do(t, http.MethodGet, g.URL+path, nil, bearer(token)...)
		if code == http.StatusTooManyRequests {
			if _, msg := decodeError(t, body); !strings.Contains(msg, "limit type=query_time_ms resolution=minute value=") {
				t.Fatalf("query %d refused by another limit: %s", i, msg)
			}
			return i
		}
		if code != want {
			t.Fatalf("query %d: %d %.300s, want %d until refused", i, code, body, want)
		}
	}
	t.Fatalf("%d queries never used up the query_time_ms budget", tries)
	return 0
}

// TestRateLimitCostFailedQueries: VictoriaMetrics v1.151.0 answers a query that fails at its end (a many-to-many
// match over a subquery of 3600 steps: the subquery is computed before the match fails) with 422 and no stats. A
// team whose queries all fail that way is charged their time and refused once its query_time_ms budget is used
// up; another team is served.
func TestRateLimitCostFailedQueries(t *testing.T) {
	const budget = 200
	vm, g, big, small := timeBudgetTeams(t, budget)
	failing := "/api/v1/query?nocache=1&query=" + url.QueryEscape("max_over_time(cost_metric[1h:1s]) + on() cost_metric")
	code, _, body := do(t, http.MethodGet, vm.URL+failing, nil)
	if _, msg := decodeError(t, body); code != 422 || strings.Contains(body, `"stats"`) || !strings.Contains(msg, "duplicate") {
		t.Fatalf("the failing query straight to VictoriaMetrics: %d %s; want 422 without stats", code, body)
	}
	failedBefore := metricValue(t, g, `vmgateway_query_stats_unread_total{reason="failed"}`)
	timedBefore := metricValue(t, g, `vmgateway_query_cost_timed_total`)

	// Each failed query is charged at least a millisecond (its time, rounded up): the budget is used up within
	// `budget` of them, however fast the machine.
	failed := queryUntilRefused(t, g, big, failing, 422, budget+1)
	if failed == 0 {
		t.Fatal("big was refused before any query")
	}
	t.Logf("big was refused after %d failed queries", failed)
	if got := metricValue(t, g, `vmgateway_query_stats_unread_total{reason="failed"}`) - failedBefore; got != float64(failed) {
		t.Errorf(`vmgateway_query_stats_unread_total{reason="failed"} grew by %v, want %d`, got, failed)
	}
	if got := metricValue(t, g, `vmgateway_query_cost_timed_total`) - timedBefore; got != float64(failed) {
		t.Errorf("vmgateway_query_cost_timed_total grew by %v, want %d", got, failed)
	}
	if u := teamCostUsage(t, g, "query_time_ms"); u["big"] < budget {
		t.Errorf("big's query_time_ms usage %v after %d failed queries, want at least %d", u["big"], failed, budget)
	}
	// small's queries succeed with stats, charged exactly what VictoriaMetrics reports for its 3 series.
	for i := 0; i < 3; i++ {
		if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(small)...); code != 200 ||
			strings.Count(body, `"__name__":"cost_metric"`) != 3 || !strings.Contains(body, `"seriesFetched": "3"`) {
			t.Fatalf("small's query %d: %d %.300s", i, code, body)
		}
	}
	if code, _, body := do(t, http.MethodGet, g.URL+failing, nil, bearer(big)...); code != http.StatusTooManyRequests {
		t.Errorf("big after small was served: %d %.300s, want 429", code, body)
	}
}

// TestRateLimitCostLeftEarly: a client that leaves before VictoriaMetrics answered a long query (a subquery of
// 86400 steps over 150 series, uncached) ends it, and is charged the time it ran until then; a team that keeps
// doing so is refused once its budget is used up (the queries it leaves are charged a moment after it left, once
// their upstream requests ended), and another team is served.
func TestRateLimitCostLeftEarly(t *testing.T) {
	const budget = 100
	_, g, big, small := timeBudgetTeams(t, budget)
	long := g.URL + "/api/v1/query?nocache=1&query=" + url.QueryEscape("count(max_over_time(cost_metric[1d:1s]))")
	unansweredBefore := metricValue(t, g, `vmgateway_query_stats_unread_total{reason="unanswered"}`)
	// Each query the client leaves is charged at least a millisecond (the time until it left, rounded up), one
	// VictoriaMetrics answered first its execution time: the budget is used up within `budget` of them. The
	// client leaves after 20 ms whatever the answer, so the loop watches the status page, not the answers.
	left := 0
	for ; left < budget && teamCostUsage(t, g, "query_time_ms")["big"] < budget; left++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, long, nil)
		req.Header.Set("Authorization", "Bearer "+big)
		resp, err := freshClient.Do(req)
		if err == nil {
			code := resp.StatusCode
			resp.Body.Close()
			if code != http.StatusOK && code != http.StatusTooManyRequests {
				t.Fatalf("big's long query %d: %d", left, code)
			}
		}
		cancel()
	}
	if left == 0 {
		t.Fatal("big's budget was used up before any query")
	}
	t.Logf("big's budget was used up after %d queries it left", left)
	// The gateway charges a query the client left once its upstream request has ended: a moment after the client.
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...)
		return code == http.StatusTooManyRequests && strings.Contains(body, "limit type=query_time_ms"), fmt.Sprintf("big: %d %.300s", code, body)
	})
	if got := metricValue(t, g, `vmgateway_query_stats_unread_total{reason="unanswered"}`) - unansweredBefore; got < 1 {
		t.Errorf(`vmgateway_query_stats_unread_total{reason="unanswered"} grew by %v, want the queries left before their answer`, got)
	}
	if u := teamCostUsage(t, g, "query_time_ms"); u["big"] < budget {
		t.Errorf("big's query_time_ms usage %v, want at least %d", u["big"], budget)
	}
	if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(small)...); code != 200 || strings.Count(body, `"__name__":"cost_metric"`) != 3 {
		t.Errorf("small: %d %.300s", code, body)
	}
}

// TestRateLimitCostTimeWithoutStats: VictoriaMetrics 1.79.5 reports no stats at all; a query_time_ms limit then
// counts the time the gateway measured for each query. With a budget of a millisecond a minute, a team's first
// query uses it up and its next is refused, while another team is served.
func TestRateLimitCostTimeWithoutStats(t *testing.T) {
	vm := vmtest.Start(t)
	costData(t, vm)
	g := rlGateway(t, vm.URL, vm.URL, "limits:\n  - {type: query_time_ms, value: 1, key: label:team}\n  - {type: series_fetched, value: 1, key: label:team}\n",
		"-ratelimit.statusAuthKey=sk")
	big := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "big"}, Mode: auth.ModeRead})
	small := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "small"}, Mode: auth.ModeRead})
	// The first answer with all of big's series is charged its time; a first one before the data was searchable
	// is charged too and refuses the next: then the data is checked straight at VictoriaMetrics.
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/query?query="+url.QueryEscape("count(cost_metric)"), nil)
		return strings.Contains(body, `,"153"]`), body
	})
	code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...)
	if code != 200 || strings.Count(body, `"__name__":"cost_metric"`) != 150 || strings.Contains(body, `"stats"`) {
		t.Fatalf("big's first query against 1.79.5: %d %.300s", code, body)
	}
	code, _, body = do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...)
	if _, msg := decodeError(t, body); code != http.StatusTooManyRequests || !strings.Contains(msg, "limit type=query_time_ms resolution=minute value=1 key=label:team") {
		t.Errorf("big's second query: %d %s", code, body)
	}
	if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(small)...); code != 200 || strings.Count(body, `"__name__":"cost_metric"`) != 3 {
		t.Errorf("small's first query: %d %.300s", code, body)
	}
	// Without stats, series_fetched is charged the series each answer held.
	if u := teamCostUsage(t, g, "series_fetched"); len(u) != 2 || u["big"] != 150 || u["small"] != 3 {
		t.Errorf("series_fetched usage %v, want big 150 and small 3: the series of their answers", u)
	}
	if u := teamCostUsage(t, g, "query_time_ms"); u["big"] < 1 || u["small"] < 1 {
		t.Errorf("query_time_ms usage %v, want each team's query charged at least a millisecond", u)
	}
}

// timeBudgetTeams starts VictoriaMetrics v1.151.0 with the cost data and a gateway that limits each team's
// query_time_ms to budget, and returns the tokens of teams big and small, big's series loaded.
func timeBudgetTeams(t *testing.T, budget int) (vm *vmtest.VM, g *gw, big, small string) {
	t.Helper()
	vm = vmtest.StartCurrent(t)
	costData(t, vm)
	g = rlGateway(t, vm.URL, vm.URL, fmt.Sprintf("limits:\n  - {type: query_time_ms, value: %d, key: label:team}\n", budget),
		"-ratelimit.statusAuthKey=sk")
	big = respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "big"}, Mode: auth.ModeRead})
	small = respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "small"}, Mode: auth.ModeRead})
	costQuery(t, g, big, 150)
	return vm, g, big, small
}

// TestRateLimitCostKeptRead: a query whose answer does not begin within -read.timeout gets its 504, but the backend
// computes it to its end, in the slot the gateway keeps for it until then (TestReadTimeoutKeepsTheSlot): the team is
// charged that whole time, not the timeout's. Before, a query VictoriaMetrics computed for 202 s was charged the 60 s
// of the timeout (an attacker's review). The backend is a recorder that takes 1.5 s to answer, as a slow query does.
func TestRateLimitCostKeptRead(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	var answered atomic.Int64
	rec.Respond(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Query().Get("query"), "slow") {
			time.Sleep(1500 * time.Millisecond)
			answered.Store(time.Now().UnixNano())
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})
	g := rlGateway(t, rec.URL, rec.URL, "limits:\n  - {type: query_time_ms, value: 100000, key: label:team}\n",
		"-ratelimit.statusAuthKey=sk", "-read.timeout=300ms", "-read.maxConcurrentRequests=1")
	dev := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeRead})
	start := time.Now()
	if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=slow", nil, bearer(dev)...); code != http.StatusGatewayTimeout {
		t.Fatalf("the slow query: %d %s; want 504", code, body)
	}
	gaveUp := time.Since(start)
	vmtest.Eventually(t, func() (bool, string) {
		u, ok := teamCostUsage(t, g, "query_time_ms")["dev"]
		return ok && answered.Load() != 0, fmt.Sprintf("dev's query_time_ms usage %v (charged: %v), backend answered: %v", u, ok, answered.Load() != 0)
	})
	worked := time.Duration(answered.Load() - start.UnixNano())
	if u := teamCostUsage(t, g, "query_time_ms")["dev"]; u < float64((worked-100*time.Millisecond)/time.Millisecond) {
		t.Errorf("dev was charged %v ms for a query the backend computed for %v (the gateway gave up after %v)", u, worked, gaveUp)
	}
}
