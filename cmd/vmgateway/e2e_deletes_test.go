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
	write := func(team string) { writeTeamSeries(t, vm, "spaced_metric", team) }
	count := func(team string) string { return teamSeries(t, vm, "spaced_metric", team) }
	write("dev")
	write("ops")
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

// TestDeletesSpacedAcrossReplicas: replicas that share a Redis space a team's deletes together: after dev deletes
// through one, its delete through the other gets 429 and is not forwarded, while ops deletes through it. With Redis
// gone each replica spaces alone: a third team deletes through both. Against VictoriaMetrics 1.79.5 and a real
// redis-server.
func TestDeletesSpacedAcrossReplicas(t *testing.T) {
	vm := vmtest.Start(t)
	redis := vmtest.StartRedis(t)
	write := func(team string) { writeTeamSeries(t, vm, "replicated_metric", team) }
	gone := func(team string) bool {
		return !strings.Contains(teamSeries(t, vm, "replicated_metric", team), `"`+team+`"`)
	}
	for _, team := range []string{"dev", "ops", "qa"} {
		write(team)
	}
	replicas := [2]*gw{}
	for i := range replicas {
		replicas[i] = rlGateway(t, vm.URL, vm.URL, limit50, "-ratelimit.redis.url=redis://"+redis.Addr, "-ratelimit.redis.keyPrefix=deletes", "-deleteSeries.minInterval=30s")
		vmtest.Eventually(t, func() (bool, string) {
			v := metricValue(t, replicas[i], "vmgateway_ratelimit_redis_up")
			return v == 1, fmt.Sprintf("replica %d: vmgateway_ratelimit_redis_up %v", i, v)
		})
	}
	token := func(team string) string {
		return respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": team}, Mode: auth.ModeFull})
	}
	del := func(g *gw, team string) (int, http.Header, string) {
		return do(t, http.MethodPost, g.URL+"/api/v1/admin/tsdb/delete_series?match[]=replicated_metric", nil, bearer(token(team))...)
	}

	if code, _, body := del(replicas[0], "dev"); code != 204 || !gone("dev") {
		t.Fatalf("dev's delete through the first replica: %d %s; series gone: %v", code, body, gone("dev"))
	}
	write("dev")
	code, h, body := del(replicas[1], "dev")
	if _, msg := decodeError(t, body); code != http.StatusTooManyRequests || !strings.Contains(msg, "deleted series less than -deleteSeries.minInterval=30s ago") {
		t.Fatalf("dev's delete through the second replica: %d %s; want 429", code, body)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 30 {
		t.Errorf("Retry-After %q, want 1 to 30 seconds", h.Get("Retry-After"))
	}
	if gone("dev") {
		t.Error("the delete refused by the second replica reached VictoriaMetrics")
	}
	if got := metricValue(t, replicas[1], "vmgateway_delete_series_refused_total"); got != 1 {
		t.Errorf("second replica's vmgateway_delete_series_refused_total = %v, want 1", got)
	}
	// The second replica remembers the refusal: dev's next delete there costs Redis nothing.
	calls := metricValue(t, replicas[1], "vmgateway_ratelimit_redis_calls_total")
	if code, _, body := del(replicas[1], "dev"); code != http.StatusTooManyRequests {
		t.Errorf("dev's third delete: %d %s; want 429", code, body)
	}
	if got := metricValue(t, replicas[1], "vmgateway_ratelimit_redis_calls_total"); got != calls {
		t.Errorf("a delete refused by the replica's own spacing called Redis: %v calls, %v before", got, calls)
	}
	if code, _, body := del(replicas[1], "ops"); code != 204 || !gone("ops") {
		t.Fatalf("ops' delete through the second replica: %d %s; series gone: %v", code, body, gone("ops"))
	}

	redis.Stop()
	if code, _, body := del(replicas[0], "qa"); code != 204 || !gone("qa") {
		t.Fatalf("qa's delete through the first replica, Redis down: %d %s; series gone: %v", code, body, gone("qa"))
	}
	write("qa")
	if code, _, body := del(replicas[1], "qa"); code != 204 || !gone("qa") {
		t.Fatalf("qa's delete through the second replica, Redis down: %d %s; want each replica to space alone", code, body)
	}
	for i, g := range replicas {
		if v := metricValue(t, g, "vmgateway_ratelimit_redis_errors_total"); v < 1 {
			t.Errorf("replica %d counted %v Redis errors with Redis down", i, v)
		}
	}
}

// writeTeamSeries writes metric{team="<team>"} into vm directly and waits until VictoriaMetrics finds it.
func writeTeamSeries(t *testing.T, vm *vmtest.VM, metric, team string) {
	t.Helper()
	body := fmt.Sprintf("%s{team=%q} 1\n", metric, team)
	if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus", strings.NewReader(body), "Content-Type", "text/plain"); code != 204 {
		t.Fatalf("import: %d %s", code, b)
	}
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		got := teamSeries(t, vm, metric, team)
		return strings.Contains(got, `"`+team+`"`), team + "'s series not found after its write: " + got
	})
}

// teamSeries is VictoriaMetrics' /api/v1/series answer for metric{team="<team>"}, asked directly.
func teamSeries(t *testing.T, vm *vmtest.VM, metric, team string) string {
	t.Helper()
	_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/series?match[]="+url.QueryEscape(fmt.Sprintf(`%s{team=%q}`, metric, team)), nil)
	return body
}
