package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestRateLimitCostHead: a HEAD query runs in VictoriaMetrics as a GET does (Go's server only drops the body), so
// its cost counts like a GET's; a team must not run queries for free by asking for the headers alone.
func TestRateLimitCostHead(t *testing.T) {
	vm := vmtest.StartCurrent(t)
	costData(t, vm)
	g := rlGateway(t, vm.URL, vm.URL, costLimitsYAML)
	big := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "big"}, Mode: auth.ModeRead})
	small := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "small"}, Mode: auth.ModeRead})
	costQuery(t, g, small, 3)
	// Every series of big searchable, asked of VictoriaMetrics itself so that big's budget stays untouched.
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/query?query="+url.QueryEscape(`count(cost_metric{team="big"})`), nil)
		return code == 200 && strings.Contains(body, `"150"]`), fmt.Sprintf("%d %.300s", code, body)
	})

	// big's HEAD query fetches 150 series of its 100: it passes (its cost is known only after it), and counts.
	if code, _, body := do(t, http.MethodHead, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...); code != 200 || body != "" {
		t.Fatalf("big's HEAD query: %d %q", code, body)
	}
	code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=cost_metric", nil, bearer(big)...)
	if typ, msg := decodeError(t, body); code != http.StatusTooManyRequests || typ != "too_many_requests" ||
		!strings.Contains(msg, "usage seen 150 in the last minute") {
		t.Fatalf("big's query after a HEAD query that fetched 150 series: %d %.300s", code, body)
	}
}
