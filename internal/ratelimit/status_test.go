package ratelimit

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

func getStatus(t *testing.T, g *Gate, query string) (int, statusPage, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	g.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ratelimit/status"+query, nil))
	var p statusPage
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("status page is not JSON: %s\n%s", err, rec.Body.String())
		}
	}
	return rec.Code, p, rec.Body.String()
}

func TestStatus(t *testing.T) {
	g, clk := clockGate(t, `
limits:
  - {type: queries, value: 50}
  - {type: queries, value: 5, key: claim:sub}
  - {type: rows_inserted, value: 1000}
  - {type: queries, value: 20, account_id: 1}
`, Config{})
	g.setUsage(map[usageKey]float64{
		{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}:      12,
		{tid(1, 0), meter{limitfile.RowsInserted, limitfile.Minute}}: 300,
		{tid(2, 0), meter{limitfile.Queries, limitfile.Minute}}:      1,
	})
	fetched := g.snap.Load().fetchedAt
	clk.t = fetched.Add(3 * time.Second)
	// Tenant 1:0: 15 reads by alice (5 pass the per-token limit); tenant 2:0: 3 reads without a sub;
	// tenant 9:0, unknown to the datasource: 1 read.
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	admitN(g, alice, 15)
	admitN(g, access(tid(2, 0)), 3)
	admitN(g, access(tid(9, 0)), 1)

	code, p, body := getStatus(t, g, "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	if p.Datasource.AgeSeconds != 3 || !p.Datasource.Fetched || p.Datasource.Stale || p.Redis != nil || p.DryRun {
		t.Errorf("page header: %+v", p)
	}
	if len(p.Defaults) != 3 || p.Defaults[1] != (statusLimitSpec{Type: "queries", Resolution: "minute", Value: 5, Key: "claim:sub"}) {
		t.Errorf("defaults %+v", p.Defaults)
	}
	type row struct {
		tenant, key, value, limit, scope, source string
		usage, remaining                         float64
		ds, local                                *float64
	}
	f := func(v float64) *float64 { return &v }
	want := []row{
		{"1:0", "", "", "queries/minute=20", "tenant", "datasource", 12, 8, f(12), f(5)},
		{"1:0", "", "", "rows_inserted/minute=1000", "default", "datasource", 300, 700, f(300), nil},
		{"1:0", "claim:sub", "alice", "queries/minute=5", "default", "local", 5, 0, nil, f(5)},
		{"2:0", "", "", "queries/minute=50", "default", "local", 3, 47, f(1), f(3)},
		{"2:0", "", "", "rows_inserted/minute=1000", "default", "datasource", 0, 1000, f(0), nil},
		{"2:0", "claim:sub", "", "queries/minute=5", "default", "local", 3, 2, nil, f(3)},
		{"9:0", "", "", "queries/minute=50", "default", "local", 1, 49, f(0), f(1)},
		{"9:0", "claim:sub", "", "queries/minute=5", "default", "local", 1, 4, nil, f(1)},
	}
	var got []row
	for _, e := range p.Usage {
		for _, l := range e.Limits {
			r := row{tenant: e.Tenant, key: e.Key, limit: l.Type + "/" + l.Resolution + "=" + strconv.FormatUint(l.Value, 10), scope: l.Scope,
				source: l.Source, usage: l.Usage, remaining: l.Remaining}
			if e.KeyValue != nil {
				r.value = *e.KeyValue
			}
			if l.Datasource != nil {
				r.ds = &l.Datasource.Value
				if l.Datasource.AgeSeconds != 3 {
					t.Errorf("%s %s: datasource age %v, want 3", e.Tenant, r.limit, l.Datasource.AgeSeconds)
				}
			}
			if l.Local != nil {
				r.local = &l.Local.Value
			}
			if l.Shared != nil {
				t.Errorf("a shared figure without Redis: %+v", l)
			}
			got = append(got, r)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(got), len(want), body)
	}
	eq := func(a, b *float64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
	for i := range want {
		w, g := want[i], got[i]
		if w.tenant != g.tenant || w.key != g.key || w.value != g.value || w.limit != g.limit || w.scope != g.scope ||
			w.source != g.source || w.usage != g.usage || w.remaining != g.remaining || !eq(w.ds, g.ds) || !eq(w.local, g.local) {
			t.Errorf("row %d:\n got  %+v\n want %+v", i, g, w)
		}
	}

	// One tenant; bad input.
	if _, p, _ := getStatus(t, g, "?tenant=2"); len(p.Usage) != 2 || p.Usage[0].Tenant != "2:0" {
		t.Errorf("?tenant=2: %+v", p.Usage)
	}
	if code, _, body := getStatus(t, g, "?tenant=x"); code != 400 || !strings.Contains(body, "cannot parse tenant") {
		t.Errorf("?tenant=x: %d %s", code, body)
	}
	rec := httptest.NewRecorder()
	g.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ratelimit/status", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

// TestStatusLifts: the page lists the defaults a tenant is spared, and ?tenant= only that tenant's; its usage entry
// lacks the lifted limit and keeps the others.
func TestStatusLifts(t *testing.T) {
	g, _ := clockGate(t, `
limits:
  - {type: queries, value: 50}
  - {type: rows_inserted, value: 1000}
  - {type: queries, value: unlimited, account_id: 7}
  - {type: rows_inserted, value: unlimited, account_id: 8}
`, Config{})
	g.setUsage(map[usageKey]float64{{tid(7, 0), meter{limitfile.RowsInserted, limitfile.Minute}}: 10})
	_, p, body := getStatus(t, g, "")
	if len(p.Lifted) != 2 || p.Lifted[0] != (statusLift{Tenant: "7:0", Type: "queries", Resolution: "minute"}) || p.Lifted[1].Tenant != "8:0" {
		t.Errorf("lifted_defaults %+v; want 7:0's queries a minute, then 8:0's rows: %s", p.Lifted, body)
	}
	_, p, body = getStatus(t, g, "?tenant=7:0")
	if len(p.Lifted) != 1 || p.Lifted[0].Tenant != "7:0" || len(p.Usage) != 1 {
		t.Fatalf("?tenant=7:0: %s", body)
	}
	if ls := p.Usage[0].Limits; len(ls) != 1 || ls[0].Type != "rows_inserted" {
		t.Errorf("7:0's limits %+v; want rows_inserted alone", ls)
	}
}

func TestStatusShared(t *testing.T) {
	r := vmtest.StartRedis(t)
	const limits = "limits:\n  - {type: queries, value: 50}\n"
	var shift atomic.Int64
	a := sharedGate(t, limits, RedisConfig{URL: "redis://:pw@" + r.Addr}, func() time.Time { return time.Now().Add(time.Duration(shift.Load())) })
	b := sharedGate(t, limits, RedisConfig{URL: "redis://:pw@" + r.Addr})
	admitN(a, access(tid(0, 0)), 10)
	admitN(b, access(tid(0, 0)), 30)
	// In the next second a's lease has ended: a claims again and sees b's counts.
	shift.Store(int64(time.Second))
	_ = a.check(access(tid(0, 0)), rt(route.Read))
	_, p, body := getStatus(t, a, "")
	if p.Redis == nil || !p.Redis.Up || strings.Contains(body, ":pw@") {
		t.Fatalf("redis: %+v", p.Redis)
	}
	if len(p.Usage) != 1 || len(p.Usage[0].Limits) != 1 {
		t.Fatalf("usage: %s", body)
	}
	l := p.Usage[0].Limits[0]
	if l.Source != "shared" || l.Shared == nil || l.Shared.Value < 41 || l.Local == nil || l.Local.Value != 11 {
		t.Errorf("limit %+v: want the shared count (41, less what a holds unused) larger than a's own 11\n%s", l, body)
	}
}
