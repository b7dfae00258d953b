package ratelimit

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// newTestGate makes a gate from a limits config; the datasource is never contacted unless the test starts it.
func newTestGate(t testing.TB, limitsYAML string, cfg Config) *Gate {
	t.Helper()
	if cfg.ConfigPath == "" {
		cfg.ConfigPath = writeFile(t, filepath.Join(t.TempDir(), "limits.yaml"), limitsYAML)
	}
	if cfg.Datasource.URL == "" {
		cfg.Datasource = datasource.Config{URL: "http://127.0.0.1:1"}
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	return g
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// setUsage publishes usage as if a refresh had just fetched it.
func (g *Gate) setUsage(u map[usageKey]float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.publish(&snapshot{limits: g.snap.Load().limits, usage: u, fetchedAt: time.Now(), fetched: true})
}

func tid(a, p uint32) tenant.ID { return tenant.ID{AccountID: a, ProjectID: p} }

func access(id tenant.ID) *auth.Access { return &auth.Access{Tenant: id} }

const gateLimits = `
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 1000, resolution: hour}
  - {type: rows_inserted, value: 5000}
  - {type: active_series, value: 300}
  - {type: queries, value: 10, account_id: 1}
  - {type: new_series, value: 20, account_id: 2, project_id: 3, resolution: hour}
`

func TestGate(t *testing.T) {
	g := newTestGate(t, gateLimits, Config{RefreshInterval: 5 * time.Second})
	qm, qh := meter{limitfile.Queries, limitfile.Minute}, meter{limitfile.Queries, limitfile.Hour}
	g.setUsage(map[usageKey]float64{
		{tid(1, 0), qm}: 12,
		{tid(1, 0), qh}: 50,
		{tid(2, 0), qm}: 99,
		{tid(2, 1), qm}: 100,
		{tid(3, 0), qh}: 1000,
		{tid(4, 0), meter{limitfile.RowsInserted, limitfile.Minute}}: 6000,
		{tid(5, 0), meter{limitfile.ActiveSeries, 0}}:                300,
		{tid(2, 3), meter{limitfile.NewSeries, limitfile.Hour}}:      25,
		{tid(6, 0), meter{limitfile.RowsInserted, limitfile.Minute}}: 6000,
		{tid(6, 0), meter{limitfile.ActiveSeries, 0}}:                400,
		{tid(7, 0), meter{limitfile.ActiveSeries, 0}}:                150,
		{tid(7, 0), meter{limitfile.RowsInserted, limitfile.Minute}}: 1000,
	})
	for _, tc := range []struct {
		name   string
		id     tenant.ID
		kind   route.Kind
		status int // 0: allowed
		limit  limitfile.Limit
		usage  float64
		reset  time.Duration
		msg    string
	}{
		{"own limit exceeded", tid(1, 0), route.Read, 429, limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 10, Tenant: tid(1, 0), HasTenant: true}, 12, 20 * time.Second,
			"rate limit exceeded for tenant 1:0: limit type=queries resolution=minute value=10 (the tenant's own limit), usage seen 12 in the last minute; retry after 20s"},
		{"writes of a tenant over its query limit pass", tid(1, 0), route.Write, 0, limitfile.Limit{Type: limitfile.RowsInserted, Resolution: limitfile.Minute, Value: 5000}, 0, time.Minute, ""},
		{"admin is not gated", tid(1, 0), route.Admin, 0, limitfile.Limit{}, 0, 0, ""},
		{"just under", tid(2, 0), route.Read, 0, limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 100}, 99, time.Minute, ""},
		{"usage equal to the value rejects", tid(2, 1), route.Read, 429, limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 100}, 100, 6 * time.Second,
			"rate limit exceeded for tenant 2:1: limit type=queries resolution=minute value=100 (the default limit for all tenants), usage seen 100 in the last minute; retry after 6s"},
		{"hourly limit", tid(3, 0), route.Read, 429, limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Hour, Value: 1000}, 1000, 9 * time.Second,
			"limit type=queries resolution=hour value=1000 (the default limit for all tenants), usage seen 1000 in the last hour; retry after 9s"},
		{"rows", tid(4, 0), route.Write, 429, limitfile.Limit{Type: limitfile.RowsInserted, Resolution: limitfile.Minute, Value: 5000}, 6000, 16 * time.Second,
			"tenant 4:0: limit type=rows_inserted resolution=minute value=5000"},
		{"reads of a tenant over its write limit pass", tid(4, 0), route.Read, 0, limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 100}, 0, time.Minute, ""},
		{"active series", tid(5, 0), route.Write, 429, limitfile.Limit{Type: limitfile.ActiveSeries, Value: 300}, 300, 5 * time.Second,
			"rate limit exceeded for tenant 5:0: limit type=active_series value=300 (the default limit for all tenants), usage seen 300 active series; retry after 5s"},
		{"own new_series limit", tid(2, 3), route.Write, 429, limitfile.Limit{Type: limitfile.NewSeries, Resolution: limitfile.Hour, Value: 20, Tenant: tid(2, 3), HasTenant: true}, 25, 869 * time.Second,
			"limit type=new_series resolution=hour value=20 (the tenant's own limit), usage seen 25 in the last hour; retry after 14m29s"},
		{"two limits over: the longer wait wins", tid(6, 0), route.Write, 429, limitfile.Limit{Type: limitfile.RowsInserted, Resolution: limitfile.Minute, Value: 5000}, 6000, 16 * time.Second, "rows_inserted"},
		{"allowed: nearest limit is reported", tid(7, 0), route.Write, 0, limitfile.Limit{Type: limitfile.ActiveSeries, Value: 300}, 150, 5 * time.Second, ""},
		{"unseen tenant gets the defaults at zero", tid(9, 9), route.Read, 0, limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 100}, 0, time.Minute, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The status page shows the usage against the limit that matters; a tenant the datasource has not
			// seen is not listed.
			if tc.limit.Type != 0 {
				sl, ok := shown(t, g, tc.id, tc.limit)
				if listed := tc.id != tid(9, 9); ok != listed || sl.Usage != tc.usage {
					t.Errorf("status page: %+v (listed %v), want usage %v against %+v (listed %v)", sl, ok, tc.usage, tc.limit, listed)
				}
			}
			err := g.check(access(tc.id), rt(tc.kind))
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("got %v, want the request allowed", err)
				}
				return
			}
			var r *limitError
			if !errors.As(err, &r) {
				t.Fatalf("got %v, want a *limitError", err)
			}
			if r.HTTPStatus() != tc.status || r.RetryAfter() != tc.reset || r.Tenant != tc.id || r.Limit != tc.limit || r.Usage != tc.usage {
				t.Errorf("rejection: status %d retry %s tenant %s limit %+v usage %v", r.HTTPStatus(), r.RetryAfter(), r.Tenant, r.Limit, r.Usage)
			}
			if !strings.Contains(r.Error(), tc.msg) {
				t.Errorf("message %q\nwant it to contain %q", r.Error(), tc.msg)
			}
		})
	}

	// Each rejected check is counted by type and resolution.
	before := g.metrics.rejected[meter{limitfile.Queries, limitfile.Minute}].Get()
	for i := 0; i < 3; i++ {
		_ = g.check(access(tid(1, 0)), rt(route.Read))
		_ = g.check(access(tid(2, 0)), rt(route.Read))
	}
	if got := g.metrics.rejected[meter{limitfile.Queries, limitfile.Minute}].Get() - before; got != 3 {
		t.Errorf("rejected_total{type=queries,resolution=minute} grew by %d, want 3", got)
	}
}

// TestGateUnlimited: a tenant's `value: unlimited` lifts the default of its place, on the datasource's usage and on
// the gate's own counts, and no other: its writes still meet the default rows limit, and other tenants every default.
func TestGateUnlimited(t *testing.T) {
	g := newTestGate(t, `
limits:
  - {type: queries, value: 3}
  - {type: rows_inserted, value: 5000}
  - {type: queries, value: unlimited, account_id: 8}
`, Config{RefreshInterval: 5 * time.Second})
	g.setUsage(map[usageKey]float64{
		{tid(8, 0), meter{limitfile.Queries, limitfile.Minute}}:      1e6,
		{tid(8, 0), meter{limitfile.RowsInserted, limitfile.Minute}}: 6000,
	})
	for i := 0; i < 10; i++ {
		if err := g.check(access(tid(8, 0)), rt(route.Read)); err != nil {
			t.Fatalf("read %d of the lifted tenant: %v", i+1, err)
		}
	}
	if err := g.check(access(tid(8, 0)), rt(route.Write)); err == nil || !strings.Contains(err.Error(), "rows_inserted") {
		t.Errorf("write of the lifted tenant over the rows default: %v; want the rows limit", err)
	}
	var err error
	for i := 0; i < 4 && err == nil; i++ {
		err = g.check(access(tid(9, 0)), rt(route.Read))
	}
	if err == nil || !strings.Contains(err.Error(), "type=queries resolution=minute value=3") {
		t.Errorf("another tenant's 4th read: %v; want the default", err)
	}
}

func TestGateNilAccessIsTenantZero(t *testing.T) {
	g := newTestGate(t, "limits:\n  - {type: queries, value: 5}\n", Config{})
	g.setUsage(map[usageKey]float64{{tid(0, 0), meter{limitfile.Queries, limitfile.Minute}}: 5})
	if err := g.check(nil, rt(route.Read)); err == nil {
		t.Fatal("nil Access: allowed, want tenant 0:0's limit to apply")
	}
	if err := g.check(access(tid(0, 1)), rt(route.Read)); err != nil {
		t.Fatalf("tenant 0:1: %v", err)
	}
}

func TestGateStale(t *testing.T) {
	const cfg = `
limits:
  - {type: queries, value: 10}
  - {type: queries, value: 1, account_id: 3}
`
	usage := map[usageKey]float64{
		{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 50,
		{tid(2, 0), meter{limitfile.Queries, limitfile.Minute}}: 1,
	}
	maxAge := 30 * time.Second
	later := func() time.Time { return time.Now().Add(maxAge + time.Second) }

	t.Run("last usage stays in force until MaxUsageAge", func(t *testing.T) {
		g := newTestGate(t, cfg, Config{MaxUsageAge: maxAge})
		g.setUsage(usage)
		g.markStale(time.Now().Add(maxAge - time.Second))
		if g.check(access(tid(1, 0)), rt(route.Read)) == nil {
			t.Fatal("tenant 1:0 allowed before the usage is stale")
		}
	})

	t.Run("fail open", func(t *testing.T) {
		g := newTestGate(t, cfg, Config{MaxUsageAge: maxAge})
		g.setUsage(usage)
		q10 := limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 10}
		if sl, ok := shown(t, g, tid(1, 0), q10); !ok || sl.Usage != 50 || sl.Source != fromDatasource {
			t.Fatalf("tenant 1:0 before the usage is stale: %+v (listed %v), want the datasource's 50", sl, ok)
		}
		g.markStale(later())
		// The datasource's usage no longer counts (issue 10: the gate's own counts, never stale, still do).
		for _, id := range []tenant.ID{tid(1, 0), tid(2, 0), tid(3, 0)} {
			ql, listed := limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 10}, false
			if id == tid(3, 0) {
				// Listed for its own limit; the others were listed for the datasource's usage alone.
				ql, listed = limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 1, Tenant: id, HasTenant: true}, true
			}
			if sl, ok := shown(t, g, id, ql); ok != listed || sl.Usage != 0 || sl.Datasource != nil {
				t.Errorf("tenant %s on the status page: %+v (listed %v), want usage 0 with the datasource's usage ignored", id, sl, ok)
			}
		}
		for _, id := range []tenant.ID{tid(1, 0), tid(2, 0)} {
			if err := g.check(access(id), rt(route.Read)); err != nil {
				t.Errorf("tenant %s: %v, want allowed with the datasource's usage ignored", id, err)
			}
		}
		if err := g.check(access(tid(3, 0)), rt(route.Read)); err != nil {
			t.Errorf("tenant 3:0's first request: %v", err)
		}
		if err := g.check(access(tid(3, 0)), rt(route.Read)); err == nil || !strings.Contains(err.Error(), "counted by this gateway") {
			t.Errorf("tenant 3:0's second request under a limit of 1: %v, want rejected by the gate's own count", err)
		}
		if !g.snap.Load().stale {
			t.Error("snapshot not marked stale")
		}
		// Fresh usage restores the limits.
		g.setUsage(usage)
		if g.check(access(tid(1, 0)), rt(route.Read)) == nil {
			t.Error("tenant 1:0 allowed after fresh usage arrived")
		}
	})

	t.Run("fail closed", func(t *testing.T) {
		g := newTestGate(t, cfg, Config{MaxUsageAge: maxAge, FailClosed: true, RefreshInterval: 2 * time.Second})
		g.setUsage(usage)
		fetched := g.snap.Load().fetchedAt
		g.markStale(later())
		for _, id := range []tenant.ID{tid(1, 0), tid(2, 0), tid(3, 0), tid(9, 9)} {
			var r *limitError
			if err := g.check(access(id), rt(route.Read)); !errors.As(err, &r) {
				t.Fatalf("tenant %s: got %v, want a rejection", id, err)
			}
			if r.HTTPStatus() != http.StatusServiceUnavailable || r.RetryAfter() != 2*time.Second {
				t.Errorf("status %d retry %s, want 503 and 2s", r.HTTPStatus(), r.RetryAfter())
			}
			for _, part := range []string{"the rate limiter has no fresh usage data",
				"the last successful refresh from the datasource was at " + fetched.UTC().Format(time.RFC3339),
				"more than -ratelimit.maxUsageAge=30s ago", "retry after 2s"} {
				if !strings.Contains(r.Error(), part) {
					t.Errorf("message %q does not contain %q", r.Error(), part)
				}
			}
		}
		// No limit applies to writes here: they pass.
		if err := g.check(access(tid(1, 0)), rt(route.Write)); err != nil {
			t.Errorf("write: %v, want allowed (no write limits configured)", err)
		}
		if got := g.metrics.staleRejected.Get(); got != 4 {
			t.Errorf("stale_rejected_total = %d, want 4", got)
		}
	})

	t.Run("fail closed before any refresh succeeded", func(t *testing.T) {
		g := newTestGate(t, cfg, Config{MaxUsageAge: maxAge, FailClosed: true})
		g.markStale(later())
		err := g.check(access(tid(2, 0)), rt(route.Read))
		if err == nil || !strings.Contains(err.Error(), "no refresh from the datasource has succeeded since the gateway started at") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.yaml"), "limits: []\n")
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "limits:\n  - {type: x, value: 1}\n")
	ds := datasource.Config{URL: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no config", Config{Datasource: ds}, "no limits config: set -ratelimit.config"},
		{"missing config", Config{ConfigPath: filepath.Join(dir, "nope.yaml"), Datasource: ds}, "cannot read the limits config"},
		{"invalid config", Config{ConfigPath: bad, Datasource: ds}, "bad.yaml:2: type: want one of"},
		{"no datasource", Config{ConfigPath: good}, "datasource URL is empty"},
		{"bad extra labels", Config{ConfigPath: good, Datasource: ds, ExtraLabels: []string{`job="a" or x="b"`}}, "-ratelimit.extraLabels"},
		{"max age below refresh", Config{ConfigPath: good, Datasource: ds, RefreshInterval: time.Minute, MaxUsageAge: time.Second},
			"-ratelimit.maxUsageAge=1s is shorter than -ratelimit.refreshInterval=1m0s"},
		{"negative check interval", Config{ConfigPath: good, Datasource: ds, ConfigCheckInterval: -time.Second}, "is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func rt(k route.Kind) route.Route { return route.Route{API: "test", Kind: k} }
