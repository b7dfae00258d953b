package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestDeletesAreSpaced: a delete resets caches VictoriaMetrics shares between every team (its rollup result cache,
// its MetricName->TSID cache), so a team may delete once per -deleteSeries.minInterval: a team that writes a series and
// deletes it in a loop had every other team's caches emptied as fast as it liked. Its next delete gets 429 with
// Retry-After and is not forwarded; another team deletes meanwhile; after the interval the first team deletes again.
// Against VictoriaMetrics v1.151.0, whose series are checked gone.
func TestDeletesAreSpaced(t *testing.T) {
	vm := vmtest.StartCurrent(t)
	write := func(team string) {
		t.Helper()
		body := fmt.Sprintf("spaced_metric{team=%q} 1\n", team)
		if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus", strings.NewReader(body), "Content-Type", "text/plain"); code != 204 {
			t.Fatalf("import: %d %s", code, b)
		}
		vm.Flush(t)
	}
	count := func(team string) string {
		_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/series?match[]="+url.QueryEscape(fmt.Sprintf(`spaced_metric{team=%q}`, team)), nil)
		return body
	}
	write("dev")
	write("ops")
	vmtest.Eventually(t, func() (bool, string) {
		return strings.Contains(count("dev"), `"dev"`) && strings.Contains(count("ops"), `"ops"`), count("dev") + count("ops")
	})
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t),
		"-deleteSeries.minInterval=3s")
	dev := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeFull})
	ops := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "ops"}, Mode: auth.ModeFull})
	del := g.URL + "/api/v1/admin/tsdb/delete_series?match[]=spaced_metric"

	if code, _, body := do(t, http.MethodPost, del, nil, bearer(dev)...); code != 204 {
		t.Fatalf("dev's first delete: %d %s", code, body)
	}
	if body := count("dev"); strings.Contains(body, `"dev"`) {
		t.Errorf("dev's series is still there after its delete: %s", body)
	}
	write("dev")
	code, h, body := do(t, http.MethodPost, del, nil, bearer(dev)...)
	if _, msg := decodeError(t, body); code != http.StatusTooManyRequests ||
		!strings.Contains(msg, `deleted series less than -deleteSeries.minInterval=3s ago`) {
		t.Fatalf("dev's second delete at once: %d %s; want 429", code, body)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 3 {
		t.Errorf("Retry-After %q, want 1 to 3 seconds", h.Get("Retry-After"))
	}
	vmtest.Eventually(t, func() (bool, string) {
		return strings.Contains(count("dev"), `"dev"`), "dev's series written again: " + count("dev")
	})
	if body := count("dev"); !strings.Contains(body, `"dev"`) {
		t.Errorf("the refused delete reached VictoriaMetrics: %s", body)
	}
	if got := metricValue(t, g, "vmgateway_delete_series_refused_total"); got != 1 {
		t.Errorf("vmgateway_delete_series_refused_total = %v, want 1", got)
	}
	// Another team is spaced apart: ops deletes now.
	if code, _, body := do(t, http.MethodPost, del, nil, bearer(ops)...); code != 204 {
		t.Fatalf("ops' delete: %d %s", code, body)
	}
	if body := count("ops"); strings.Contains(body, `"ops"`) {
		t.Errorf("ops' series is still there after its delete: %s", body)
	}
	// After the interval dev deletes again.
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, http.MethodPost, del, nil, bearer(dev)...)
		return code == 204, fmt.Sprintf("dev's delete: %d %s", code, body)
	})
	if body := count("dev"); strings.Contains(body, `"dev"`) {
		t.Errorf("dev's series is still there after its delete: %s", body)
	}
}
