package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// costUsage reads a tenant's cost-limit figures from a status page: usage, remaining and the shared count
// (-1 without Redis), by limit type.
func costUsage(t *testing.T, g *gw, tn string) map[string][3]float64 {
	t.Helper()
	code, _, body := do(t, http.MethodGet, g.URL+"/ratelimit/status?authKey=sk", nil)
	var page struct {
		Usage []struct {
			Tenant string
			Limits []struct {
				Type             string
				Usage, Remaining float64
				Shared           *struct{ Value float64 }
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil || code != 200 {
		t.Fatalf("/ratelimit/status: %d %s", code, body)
	}
	out := map[string][3]float64{}
	for _, e := range page.Usage {
		if e.Tenant != tn {
			continue
		}
		for _, l := range e.Limits {
			shared := -1.0
			if l.Shared != nil {
				shared = l.Shared.Value
			}
			out[l.Type] = [3]float64{l.Usage, l.Remaining, shared}
		}
	}
	return out
}

// TestRealClusterCostLimits: cost limits against a real cluster, whose vmselect ends its answers with the stats,
// through two gateway replicas sharing Redis. Tenant 31's query fetches 150 series of its budget of 100 on one
// replica; the other refuses its next query (429 naming the limit, the headers showing nothing left), while
// tenant 32, whose queries fetch 3 series, passes on both. Execution time is counted too.
func TestRealClusterCostLimits(t *testing.T) {
	c := vmtest.StartCluster(t)
	redis := vmtest.StartRedis(t).Addr
	const limits = "limits:\n  - {type: series_fetched, value: 100}\n  - {type: query_time_ms, value: 3600000, resolution: hour}\n"
	flags := []string{"-clusterMode", "-write.url=" + c.Insert.URL, "-ratelimit.redis.url=redis://" + redis, "-ratelimit.redis.keyPrefix=cluster-costs",
		"-ratelimit.headers=both", "-ratelimit.statusAuthKey=sk"}
	ds := c.Select.URL + "/select/0:0/prometheus"
	a := rlGateway(t, c.Select.URL, ds, limits, flags...)
	b := rlGateway(t, c.Select.URL, ds, limits, flags...)
	for _, g := range []*gw{a, b} {
		vmtest.Eventually(t, func() (bool, string) {
			v := metricValue(t, g, "vmgateway_ratelimit_redis_up")
			return v == 1, fmt.Sprintf("vmgateway_ratelimit_redis_up %v", v)
		})
	}
	big, small := rlToken(t, tenant.ID{AccountID: 31}, "big"), rlToken(t, tenant.ID{AccountID: 32}, "small")
	for tn, n := range map[string]int{"31:0": 150, "32:0": 3} {
		var body strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&body, "cost_metric{i=\"%d\"} %d\n", i, i)
		}
		code, _, out := do(t, http.MethodPost, c.Insert.URL+"/insert/"+tn+"/prometheus/api/v1/import/prometheus", strings.NewReader(body.String()), "Content-Type", "text/plain")
		if code/100 != 2 {
			t.Fatalf("import into %s: %d %s", tn, code, out)
		}
	}
	for tn, n := range map[string]int{"31:0": 150, "32:0": 3} {
		vmtest.Eventually(t, func() (bool, string) {
			c.Flush(t)
			_, _, out := do(t, http.MethodGet, c.Select.URL+"/select/"+tn+"/prometheus/api/v1/query?query="+url.QueryEscape("count(cost_metric)"), nil)
			return strings.Contains(out, `"value":[`) && strings.Contains(out, fmt.Sprintf(`,"%d"]`, n)), tn + ": " + out
		})
	}

	// small's query fetches its 3 series: 3 of 100 left, on the headers of the next answer.
	code, _, body := do(t, http.MethodGet, a.URL+"/api/v1/query?query=cost_metric", nil, bearer(small)...)
	if code != 200 || strings.Count(body, `"__name__":"cost_metric"`) != 3 || !strings.Contains(body, `"seriesFetched": "3"`) {
		t.Fatalf("small's first query on a: %d %.300s", code, body)
	}
	code, h, body := do(t, http.MethodGet, a.URL+"/api/v1/query?query=cost_metric", nil, bearer(small)...)
	if code != 200 || !strings.Contains(h.Get("Ratelimit-Policy"), `"series_fetched-minute";q=100;w=60`) ||
		!strings.Contains(h.Get("Ratelimit-Policy"), `"query_time_ms-hour";q=3600000;w=3600`) {
		t.Fatalf("small's second query on a: %d %v %.300s", code, h, body)
	}
	// big's first query passes (its cost is known only after the answer) and fetches 150 series.
	code, _, body = do(t, http.MethodGet, a.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...)
	if code != 200 || strings.Count(body, `"__name__":"cost_metric"`) != 150 || !strings.Contains(body, `"seriesFetched": "150"`) {
		t.Fatalf("big's first query on a: %d %.300s", code, body)
	}
	// a adds it in Redis within a quarter second; b reads the shared sum at big's next request and refuses it.
	vmtest.Eventually(t, func() (bool, string) {
		u := costUsage(t, a, "31:0")
		return u["series_fetched"][2] == 150, fmt.Sprintf("a's figures for 31:0: %v", u)
	})
	code, h, body = do(t, http.MethodGet, b.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...)
	typ, msg := decodeError(t, body)
	if code != http.StatusTooManyRequests || typ != "too_many_requests" ||
		!strings.Contains(msg, "rate limit exceeded for tenant 31:0: limit type=series_fetched resolution=minute value=100") ||
		!strings.Contains(msg, "usage seen 150 in the last minute counted by all gateways sharing Redis") {
		t.Fatalf("big on b: %d %s", code, body)
	}
	if h.Get("Retry-After") == "" || h.Get("Ratelimit") != `"series_fetched-minute";r=0;t=`+h.Get("Ratelimit-Reset") || h.Get("Ratelimit-Remaining") != "0" {
		t.Errorf("big's 429 headers on b: %v", h)
	}
	// small passes on b, and b's status page shows what small has left of both budgets.
	for i := 0; i < 3; i++ {
		if code, _, body := do(t, http.MethodGet, b.URL+"/api/v1/query?query=cost_metric", nil, bearer(small)...); code != 200 || strings.Count(body, `"__name__":"cost_metric"`) != 3 {
			t.Fatalf("small on b: %d %.300s", code, body)
		}
	}
	vmtest.Eventually(t, func() (bool, string) {
		u := costUsage(t, b, "32:0")
		return u["series_fetched"][0] == 15 && u["series_fetched"][1] == 85, fmt.Sprintf("b's figures for 32:0: %v, want 15 used of 100", u)
	})
	if got := metricValue(t, b, `vmgateway_ratelimit_rejected_total{type="series_fetched",resolution="minute"}`); got != 1 {
		t.Errorf("b rejected series_fetched %v times, want 1", got)
	}
	// Execution time: counted from the same stats, in whole milliseconds rounded up. A subquery evaluated at 86400
	// steps takes vmselect some milliseconds whatever the machine; the count grows by what it reported.
	before := costUsage(t, a, "32:0")["query_time_ms"][0]
	code, _, body = do(t, http.MethodGet, a.URL+"/api/v1/query?query="+url.QueryEscape("max_over_time(count(cost_metric)[1d:1s])"), nil, bearer(small)...)
	var answer struct {
		Stats struct{ ExecutionTimeMsec float64 }
	}
	if err := json.Unmarshal([]byte(body), &answer); code != 200 || err != nil || answer.Stats.ExecutionTimeMsec < 1 {
		t.Fatalf("small's subquery on a: %d %v %.300s", code, err, body)
	}
	vmtest.Eventually(t, func() (bool, string) {
		u := costUsage(t, a, "32:0")["query_time_ms"]
		return u[0]-before >= answer.Stats.ExecutionTimeMsec && u[0]+u[1] == 3600000,
			fmt.Sprintf("a's query_time_ms for 32:0: %v, was %v before a query of %v ms", u, before, answer.Stats.ExecutionTimeMsec)
	})
	t.Logf("the subquery took vmselect %v ms", answer.Stats.ExecutionTimeMsec)
}
