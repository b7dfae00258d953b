package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/route"
)

// fakeDatasource answers instant queries from a table keyed by the query text, and records the queries.
type fakeDatasource struct {
	mu      sync.Mutex
	answers map[string]string // query → result array JSON
	status  int
	queries []string
}

func (f *fakeDatasource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query().Get("query")
	f.queries = append(f.queries, q)
	if f.status != 0 {
		w.WriteHeader(f.status)
		_, _ = fmt.Fprint(w, `{"status":"error","errorType":"unavailable","error":"storage is down"}`)
		return
	}
	res, ok := f.answers[q]
	if !ok {
		res = "[]"
	}
	_, _ = fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":%s}}`, res)
}

func (f *fakeDatasource) set(status int) {
	f.mu.Lock()
	f.status = status
	f.mu.Unlock()
}

func sample(acc, proj, v string) string {
	return fmt.Sprintf(`{"metric":{"accountID":%q,"projectID":%q},"value":[1700000000,%q]}`, acc, proj, v)
}

func TestRefresh(t *testing.T) {
	f := &fakeDatasource{answers: map[string]string{
		`sum(increase(vm_tenant_select_requests_total{job="vmcluster"}[1m])) by (accountID, projectID)`: "[" + strings.Join([]string{
			sample("1", "0", "150"),
			sample("2", "0", "20"),
			`{"metric":{"projectID":"0"},"value":[1700000000,"999"]}`, // no accountID: limits nobody
			sample("3", "0", "NaN"),
			sample("x", "0", "999"),
		}, ",") + "]",
		`sum(vm_tenant_active_timeseries{job="vmcluster"}) by (accountID, projectID)`: "[" + sample("2", "0", "301") + "]",
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	g := newTestGate(t, `
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 1000, resolution: hour}
  - {type: active_series, value: 300}
`, Config{ExtraLabels: []string{"job=vmcluster"}, Datasource: datasource.Config{URL: srv.URL}})

	if err := g.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	sort.Strings(f.queries)
	want := []string{
		`sum(increase(vm_tenant_select_requests_total{job="vmcluster"}[1h])) by (accountID, projectID)`,
		`sum(increase(vm_tenant_select_requests_total{job="vmcluster"}[1m])) by (accountID, projectID)`,
		`sum(vm_tenant_active_timeseries{job="vmcluster"}) by (accountID, projectID)`,
	}
	if strings.Join(f.queries, "\n") != strings.Join(want, "\n") {
		t.Errorf("queries:\n%s\nwant:\n%s", strings.Join(f.queries, "\n"), strings.Join(want, "\n"))
	}
	s := g.snap.Load()
	if !s.fetched || len(s.usage) != 3 {
		t.Errorf("usage %v, want 3 entries (1:0 and 2:0 queries, 2:0 active series)", s.usage)
	}
	for _, tc := range []struct {
		id      uint32
		kind    route.Kind
		blocked bool
	}{{1, route.Read, true}, {1, route.Write, false}, {2, route.Read, false}, {2, route.Write, true}, {3, route.Read, false}} {
		if err := g.check(access(tid(tc.id, 0)), rt(tc.kind)); (err != nil) != tc.blocked {
			t.Errorf("tenant %d:0 %s: got %v, want blocked=%v", tc.id, tc.kind, err, tc.blocked)
		}
	}

	// A failing datasource: the refresh fails as a whole, is counted, and the last usage stays in force.
	f.set(http.StatusServiceUnavailable)
	g.poll(context.Background())
	if got := g.metrics.refreshErrors.Get(); got != 1 {
		t.Errorf("refresh_errors_total = %d, want 1", got)
	}
	if g.snap.Load() != s {
		t.Error("a failed refresh replaced the snapshot")
	}
	err := g.refresh(context.Background())
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "storage is down") {
		t.Errorf("refresh error %v, want the status and the datasource's message", err)
	}
	if g.check(access(tid(1, 0)), rt(route.Read)) == nil {
		t.Error("tenant 1:0 allowed after a failed refresh; the last usage must stay in force")
	}

	// Every metric of the gate is exported.
	var buf bytes.Buffer
	g.metrics.set.WritePrometheus(&buf)
	for _, name := range []string{
		"vmgateway_ratelimit_refresh_duration_seconds_count 1",
		"vmgateway_ratelimit_refresh_errors_total 1",
		`vmgateway_ratelimit_rejected_total{type="queries",resolution="minute"} 2`,
		`vmgateway_ratelimit_rejected_total{type="active_series"} 1`,
		`vmgateway_ratelimit_config_reloads_total{status="success"} 1`,
		`vmgateway_ratelimit_config_reloads_total{status="error"} 0`,
		"vmgateway_ratelimit_config_last_reload_successful 1",
		"vmgateway_ratelimit_snapshot_age_seconds ",
		"vmgateway_ratelimit_usage_stale 0",
		"vmgateway_ratelimit_limits 3",
		"vmgateway_ratelimit_stale_rejected_total 0",
	} {
		if !strings.Contains(buf.String(), name) {
			t.Errorf("metrics lack %q:\n%s", name, buf.String())
		}
	}
}

// TestRefreshLeavesOutWritersSeries: the usage queries leave out the series that carry a label name a write token was
// admitted with, from the next refresh on: a team that writes vm_tenant_* series into the datasource's store (an
// attacker's review set every team's usage of the hour with one sample) carries its label there. The tenant labels
// and the names -ratelimit.extraLabels selects on are never left out, and reads add nothing.
func TestRefreshLeavesOutWritersSeries(t *testing.T) {
	f := &fakeDatasource{answers: map[string]string{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	g := newTestGate(t, "limits:\n  - {type: rows_inserted, value: 100}\n",
		Config{ExtraLabels: []string{`job="vmcluster"`}, Datasource: datasource.Config{URL: srv.URL}})
	restricted := func(labels ...string) *auth.Access {
		var ls []enforce.Label
		for i := 0; i < len(labels); i += 2 {
			ls = append(ls, enforce.Label{Name: labels[i], Value: labels[i+1]})
		}
		e, err := enforce.New(ls, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &auth.Access{Mode: auth.ModeFull, Enforcer: e}
	}
	query := func() string {
		t.Helper()
		f.mu.Lock()
		f.queries = nil
		f.mu.Unlock()
		if err := g.refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return strings.Join(f.queries, "\n")
	}
	if q := query(); q != `sum(increase(vm_tenant_inserted_rows_total{job="vmcluster"}[1m])) by (accountID, projectID)` {
		t.Errorf("before any write: %s", q)
	}
	_ = g.Admit(restricted("team", "dev"), rt(route.Read), nil)
	_ = g.Admit(restricted("zone", "eu"), rt(route.Read), nil)
	if q := query(); strings.Contains(q, "team") || strings.Contains(q, "zone") {
		t.Errorf("after reads: %s", q)
	}
	for _, a := range []*auth.Access{restricted("team", "dev"), restricted("team", "ops", "env", "prod"),
		restricted("job", "x"), restricted("accountID", "7"), access(tid(1, 0)), nil} {
		_ = g.Admit(a, rt(route.Write), nil)
	}
	if q := query(); q != `sum(increase(vm_tenant_inserted_rows_total{job="vmcluster",env="",team=""}[1m])) by (accountID, projectID)` {
		t.Errorf("after writes: %s", q)
	}
	// Bounded: past maxWriterLabels, a name is not left out (and the operator is told).
	for i := range maxWriterLabels + 5 {
		_ = g.Admit(restricted(fmt.Sprintf("l%02d", i), "v"), rt(route.Write), nil)
	}
	if n := len(*g.writers.names.Load()); n != maxWriterLabels {
		t.Errorf("%d names left out; want %d", n, maxWriterLabels)
	}
}
