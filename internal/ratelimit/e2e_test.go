package ratelimit

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// importSeries writes one series into VictoriaMetrics with a sample every 5s from 5 minutes ago to 10 minutes
// ahead, valued by f at each sample's offset in seconds from now. Samples ahead of now are invisible to queries
// at now, so increase() over the last minute stays the same for as long as the test runs.
func importSeries(t *testing.T, vm *vmtest.VM, labels string, f func(sec float64) float64) {
	t.Helper()
	now := time.Now()
	var ts, vs []string
	for sec := -300; sec <= 600; sec += 5 {
		ts = append(ts, fmt.Sprint(now.Add(time.Duration(sec)*time.Second).UnixMilli()))
		vs = append(vs, fmt.Sprint(f(float64(sec))))
	}
	line := fmt.Sprintf(`{"metric":{%s},"values":[%s],"timestamps":[%s]}`, labels, strings.Join(vs, ","), strings.Join(ts, ","))
	resp, err := http.Post(vm.URL+"/api/v1/import", "application/json", strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("import %s: status %d", labels, resp.StatusCode)
	}
}

// counter rises at perSec from 0 five minutes ago.
func counter(perSec float64) func(float64) float64 {
	return func(sec float64) float64 { return (sec + 300) * perSec }
}

func gauge(v float64) func(float64) float64 { return func(float64) float64 { return v } }

// TestEndToEnd runs gates against a real VictoriaMetrics holding synthetic per-tenant statistics.
func TestEndToEnd(t *testing.T) {
	vm := vmtest.Start(t)
	const sel = `"__name__":"vm_tenant_select_requests_total","job":"vmcluster"`
	// Tenant 1:0 reads about 600 times a minute, tenant 2:0 about 6 times.
	importSeries(t, vm, sel+`,"accountID":"1","projectID":"0"`, counter(10))
	importSeries(t, vm, sel+`,"accountID":"2","projectID":"0"`, counter(0.1))
	// The same metric from another job must not count: -ratelimit.extraLabels filters it out.
	importSeries(t, vm, `"__name__":"vm_tenant_select_requests_total","job":"other","accountID":"2","projectID":"0"`, counter(100))
	// Tenant 3:0 holds 5000 active series, tenant 2:0 holds 10.
	importSeries(t, vm, `"__name__":"vm_tenant_active_timeseries","job":"vmcluster","accountID":"3","projectID":"0"`, gauge(5000))
	importSeries(t, vm, `"__name__":"vm_tenant_active_timeseries","job":"vmcluster","accountID":"2","projectID":"0"`, gauge(10))
	vm.Flush(t)

	const limits = "limits:\n  - {type: queries, value: %d}\n  - {type: active_series, value: 1000}\n"
	dir := t.TempDir()
	openPath := writeFile(t, filepath.Join(dir, "open.yaml"), fmt.Sprintf(limits, 100))
	closedPath := writeFile(t, filepath.Join(dir, "closed.yaml"), fmt.Sprintf(limits, 100))
	newGate := func(path string, failClosed bool) *Gate {
		g := newTestGate(t, "", Config{
			ConfigPath:          path,
			ConfigCheckInterval: 100 * time.Millisecond,
			RefreshInterval:     100 * time.Millisecond,
			MaxUsageAge:         time.Second,
			FailClosed:          failClosed,
			ExtraLabels:         []string{`job="vmcluster"`},
			Datasource:          datasource.Config{URL: vm.URL, Timeout: time.Second},
		})
		g.Start()
		return g
	}
	open, closed := newGate(openPath, false), newGate(closedPath, true)

	status := func(g *Gate, acc uint32, k route.Kind) (int, string) {
		var r *limitError
		if err := g.check(access(tid(acc, 0)), rt(k)); errors.As(err, &r) {
			return r.HTTPStatus(), r.Error()
		}
		return 200, ""
	}
	want := func(g *Gate, acc uint32, k route.Kind, wantStatus int, wantMsg string) func() (bool, string) {
		return func() (bool, string) {
			st, msg := status(g, acc, k)
			return st == wantStatus && strings.Contains(msg, wantMsg),
				fmt.Sprintf("tenant %d:0 %s: status %d %q, want %d with %q", acc, k, st, msg, wantStatus, wantMsg)
		}
	}

	// Over its limit after a refresh; the other tenants pass.
	vmtest.Eventually(t, want(open, 1, route.Read, 429, "rate limit exceeded for tenant 1:0: limit type=queries resolution=minute value=100"))
	vmtest.Eventually(t, want(open, 3, route.Write, 429, "limit type=active_series value=1000 (the default limit for all tenants), usage seen 5000 active series"))
	for _, c := range []struct {
		acc  uint32
		kind route.Kind
	}{{2, route.Read}, {2, route.Write}, {3, route.Read}, {1, route.Write}} {
		if st, msg := status(open, c.acc, c.kind); st != 200 {
			t.Errorf("tenant %d:0 %s: %d %s, want it to pass", c.acc, c.kind, st, msg)
		}
	}
	if sl, ok := shown(t, open, tid(1, 0), limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 100}); !ok || sl.Usage < 500 || sl.Usage > 700 {
		t.Errorf("tenant 1:0 usage %+v (listed %v), want about 600 queries in the last minute", sl, ok)
	}
	if sl, ok := shown(t, open, tid(2, 0), limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 100}); !ok || sl.Usage > 10 {
		t.Errorf("tenant 2:0 usage %+v (listed %v), want about 6: the job=\"other\" series must not count", sl, ok)
	}

	// An invalid file keeps the old limits, through further refreshes.
	writeFile(t, openPath, "limits:\n  - {type: queries, value: 100000, resolution: week}\n")
	vmtest.Eventually(t, func() (bool, string) {
		return open.metrics.reloadsErr.Get() == 1, fmt.Sprintf("reload errors %d, want 1", open.metrics.reloadsErr.Get())
	})
	waitRefresh(t, open)
	if st, _ := status(open, 1, route.Read); st != 429 || open.metrics.lastReloadOK.Get() != 0 {
		t.Errorf("after an invalid config: tenant 1:0 %d, last reload successful %v; want 429 and 0", st, open.metrics.lastReloadOK.Get())
	}

	// Raising the limit lifts the block after the next check; lowering it brings it back.
	writeFile(t, openPath, fmt.Sprintf(limits, 100000))
	vmtest.Eventually(t, want(open, 1, route.Read, 200, ""))
	writeFile(t, openPath, fmt.Sprintf(limits, 100))
	vmtest.Eventually(t, want(open, 1, route.Read, 429, "value=100 "))

	vmtest.Eventually(t, want(closed, 1, route.Read, 429, "tenant 1:0"))
	vmtest.Eventually(t, want(closed, 2, route.Read, 200, ""))

	// The datasource goes away: both keep the last usage for MaxUsageAge, then follow their policy.
	vm.Stop()
	vmtest.Eventually(t, want(open, 1, route.Read, 200, ""))
	vmtest.Eventually(t, want(closed, 2, route.Read, 503, "the rate limiter has no fresh usage data"))
	for _, g := range []*Gate{open, closed} {
		if g.metrics.refreshErrors.Get() == 0 {
			t.Error("failed refreshes were not counted")
		}
		if age := time.Since(g.snap.Load().fetchedAt); age < time.Second {
			t.Errorf("the policy applied after %s, before MaxUsageAge=1s", age)
		}
	}
}

// waitRefresh waits until g has published usage fetched after the call.
func waitRefresh(t *testing.T, g *Gate) {
	t.Helper()
	since := time.Now()
	vmtest.Eventually(t, func() (bool, string) {
		return g.snap.Load().fetchedAt.After(since), "no refresh"
	})
}
