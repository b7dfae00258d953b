package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 16: the cluster-mode scenarios against a real vmstorage/vminsert/vmselect (v1.150.0) started by the
// test. The recording tests (e2e_cluster_test.go) assert the exact request forwarded; these assert what the real
// cluster stored and answered. `make test-cluster` runs every TestRealCluster*; `make test` runs them too.

// realCluster is a real cluster with a gateway in front: -read.url is vmselect, -write.url vminsert.
type realCluster struct {
	c *vmtest.Cluster
	g *gw
}

func startRealCluster(t *testing.T, flags ...string) *realCluster {
	t.Helper()
	return startRealClusterWith(t, nil, flags...)
}

// startRealClusterWith is startRealCluster with vmselect flags.
func startRealClusterWith(t *testing.T, selectFlags []string, flags ...string) *realCluster {
	t.Helper()
	c := vmtest.StartCluster(t, selectFlags...)
	g := startGateway(t, append([]string{"-read.url=" + c.Select.URL, "-write.url=" + c.Insert.URL, "-clusterMode",
		"-enable.auth", "-auth.publicKeyFiles=" + clusterPublicKeyFile(t)}, flags...)...)
	return &realCluster{c: c, g: g}
}

// importDirect writes Prometheus text straight into tenant tn of the cluster, bypassing the gateway.
func (rc *realCluster) importDirect(t *testing.T, tn, body string) {
	t.Helper()
	code, _, b := do(t, http.MethodPost, rc.c.Insert.URL+"/insert/"+tn+"/prometheus/api/v1/import/prometheus", strings.NewReader(body), "Content-Type", "text/plain")
	if code/100 != 2 {
		t.Fatalf("direct import into %s: %d %s", tn, code, b)
	}
}

// series lists the series of tenant tn (or "multitenant") matching match, straight from vmselect, as sorted
// label sets in export's JSON (the multitenant form carries vm_account_id and vm_project_id).
func (rc *realCluster) series(t testing.TB, tn, match string) []string {
	t.Helper()
	code, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/select/"+tn+"/prometheus/api/v1/export?match[]="+url.QueryEscape(match), nil)
	if code != 200 {
		t.Fatalf("export from %s: %d %s", tn, code, body)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct{ Metric map[string]string }
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export from %s: %s in %q", tn, err, sc.Text())
		}
		var kv []string
		for k, v := range line.Metric {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		out = append(out, strings.Join(kv, ","))
	}
	sort.Strings(out)
	return out
}

// waitSeries waits until tenant tn holds exactly want (sorted label sets) for match.
func (rc *realCluster) waitSeries(t *testing.T, tn, match string, want []string) {
	t.Helper()
	sort.Strings(want)
	vmtest.Eventually(t, func() (bool, string) {
		rc.c.Flush(t)
		got := rc.series(t, tn, match)
		return strings.Join(got, "\n") == strings.Join(want, "\n"), fmt.Sprintf("tenant %s, %s:\n got %q\nwant %q", tn, match, got, want)
	})
}

// tenantCounters reads the per-tenant counters of a cluster node's /metrics: metric{...accountID,projectID} summed
// per "account:project".
func tenantCounters(t testing.TB, nodeURL, metric string) map[string]float64 {
	t.Helper()
	code, _, body := do(t, http.MethodGet, nodeURL+"/metrics", nil)
	if code != 200 {
		t.Fatalf("%s/metrics: %d", nodeURL, code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		labels, value, _ := strings.Cut(line[len(metric)+1:], "} ")
		var acc, proj string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "accountID":
				acc = strings.Trim(v, `"`)
			case "projectID":
				proj = strings.Trim(v, `"`)
			}
		}
		var f float64
		if _, err := fmt.Sscan(value, &f); err != nil {
			t.Fatalf("%s: %q: %s", metric, line, err)
		}
		out[acc+":"+proj] += f
	}
	return out
}

// realTenants are the tenants of the isolation scenario: a token without tenant_id is 0:0.
var realTenants = []struct {
	name     string
	vmAccess any
	id       string
	forms    []string
}{
	{"none", json.RawMessage(`{"mode":0}`), "0:0", []string{"0", "0:0"}},
	{"0:0", auth.VMAccess{Mode: auth.ModeFull}, "0:0", []string{"0", "0:0"}},
	{"15:5", auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: 15, ProjectID: 5}}, "15:5", []string{"15:5"}},
	{"max", auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}}, "4294967295:4294967295", []string{"4294967295:4294967295"}},
}

// TestRealClusterTenantIsolation: each token writes in every path shape; the cluster stores each write in exactly
// the token's tenant, each token reads back exactly its tenant's series, and nothing lands in any other tenant.
func TestRealClusterTenantIsolation(t *testing.T) {
	rc := startRealCluster(t)
	want := map[string][]string{}
	written := 0
	for _, tn := range realTenants {
		tok := clusterToken(t, tn.vmAccess)
		paths := []string{"/api/v1/import/prometheus", "/prometheus/api/v1/import/prometheus"}
		for _, f := range tn.forms {
			paths = append(paths, "/insert/"+f+"/prometheus/api/v1/import/prometheus")
		}
		for i, p := range paths {
			code, _, body := do(t, http.MethodPost, rc.g.URL+p, strings.NewReader(fmt.Sprintf("iso{who=%q,shape=\"%d\"} %d\n", tn.name, i, i)),
				append(bearer(tok), "Content-Type", "text/plain", "AccountID", "16", "ProjectID", "1")...)
			if code/100 != 2 {
				t.Fatalf("tenant %s: write %s: %d %s", tn.name, p, code, body)
			}
			want[tn.id] = append(want[tn.id], fmt.Sprintf("__name__=iso,shape=%d,who=%s", i, tn.name))
			written++
		}
	}
	for id, series := range want {
		rc.waitSeries(t, id, "iso", series)
	}
	// Nothing anywhere else: the multitenant view holds exactly the writes, and the neighbours of each tenant
	// (the headers' 16:1 among them) hold nothing.
	if all := rc.series(t, "multitenant", "iso"); len(all) != written {
		t.Errorf("the cluster holds %d iso series across all tenants, want %d: %q", len(all), written, all)
	}
	for _, tn := range []string{"16:1", "15:0", "0:5", "15:4", "0:1", "4294967295:0", "0:4294967295", "4294967294:4294967295"} {
		if got := rc.series(t, tn, "iso"); len(got) != 0 {
			t.Errorf("tenant %s holds %q", tn, got)
		}
	}
	// Each token reads its own tenant, in both shapes, and nothing else.
	reads := 0
	for _, tn := range realTenants {
		tok := clusterToken(t, tn.vmAccess)
		paths := []string{"/api/v1/export", "/prometheus/api/v1/export"}
		for _, f := range tn.forms {
			paths = append(paths, "/select/"+f+"/prometheus/api/v1/export")
		}
		for _, p := range paths {
			code, _, body := do(t, http.MethodGet, rc.g.URL+p+"?match[]=iso", nil, append(bearer(tok), "AccountID", "16")...)
			if code != 200 || strings.Count(body, `"__name__":"iso"`) != len(want[tn.id]) {
				t.Errorf("tenant %s: GET %s: %d, want its %d series: %s", tn.name, p, code, len(want[tn.id]), body)
			}
			for _, other := range realTenants {
				if other.id != tn.id && strings.Contains(body, `"who":"`+other.name+`"`) {
					t.Errorf("tenant %s: GET %s shows tenant %s's series: %s", tn.name, p, other.id, body)
				}
			}
			reads++
		}
		code, _, body := do(t, http.MethodGet, rc.g.URL+"/api/v1/query?query=count(iso)", nil, bearer(tok)...)
		if code != 200 || !strings.Contains(body, fmt.Sprintf(`"%d"]`, len(want[tn.id]))) {
			t.Errorf("tenant %s: count(iso): %d %s, want %d", tn.name, code, body, len(want[tn.id]))
		}
	}
	t.Logf("%d writes by %d tokens landed in exactly their tenants; %d reads saw exactly their own", written, len(realTenants), reads)
}

// TestRealClusterAttacks: every attack of the recording test, sent to a real cluster holding other tenants'
// data: each is refused, and afterwards the cluster has stored nothing new, deleted nothing, and served no
// request in any tenant (its own per-tenant counters tell).
func TestRealClusterAttacks(t *testing.T) {
	rc := startRealCluster(t)
	secrets := map[string]string{"16:0": "16", "0:0": "0", "15:1": "15_1", "14:0": "14", "4294967295:4294967295": "max", "16:7": "16_7"}
	for tn, owner := range secrets {
		rc.importDirect(t, tn, fmt.Sprintf("up{owner=%q} 666\nsecret{owner=%q} 666\n", owner, owner))
	}
	rc.importDirect(t, "15:0", `up{owner="15",team="dev",env="prod"} 1`+"\n")
	rc.waitSeries(t, "16:0", `{__name__=~".+"}`, []string{"__name__=secret,owner=16", "__name__=up,owner=16"})
	before := rc.series(t, "multitenant", `{__name__=~".+"}`)
	if len(before) != 2*len(secrets)+1 {
		t.Fatalf("seeded %d series, want %d: %q", len(before), 2*len(secrets)+1, before)
	}
	selBefore := tenantCounters(t, rc.c.Select.URL, "vm_tenant_select_requests_total")
	insBefore := tenantCounters(t, rc.c.Insert.URL, "vm_tenant_inserted_rows_total")

	c := &clusterGW{g: rc.g}
	t15 := tenant.ID{AccountID: 15}
	full := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15})
	restricted := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15, ExtraLabels: map[string]string{"team": "dev"}, ExtraFilters: []string{`{env=~"prod|stage"}`}})
	attacks := clusterAttacks()
	sent := 0
	for _, a := range attacks {
		for _, tok := range []string{full, restricted} {
			if tok == restricted && strings.HasPrefix(a.name, "extra_") {
				continue
			}
			code, body := c.send(t, tok, a.req)
			checkClusterError(t, a.name+": "+a.req.path, code, body, a.code, a.msg)
			if foreignValue.MatchString(body) {
				t.Errorf("%s: the answer carries another tenant's value: %s", a.name, body)
			}
			sent++
		}
	}
	for _, bad := range []string{
		clusterToken(t, json.RawMessage(`{"tenant_id":{"account_id":4294967296,"project_id":0}}`)),
		clusterToken(t, json.RawMessage(`{"tenant_id":"multitenant"}`)), "",
	} {
		code, body := c.send(t, bad, clusterGet("/select/16/prometheus/api/v1/query?query=up"))
		checkClusterError(t, "bad token", code, body, 401, "")
		sent++
	}
	// What the cluster saw: no select request in any tenant, no row inserted, nothing deleted or added.
	selAfter := tenantCounters(t, rc.c.Select.URL, "vm_tenant_select_requests_total")
	insAfter := tenantCounters(t, rc.c.Insert.URL, "vm_tenant_inserted_rows_total")
	for tn, n := range selAfter {
		if n != selBefore[tn] {
			t.Errorf("vmselect served %v requests in tenant %s during the attacks", n-selBefore[tn], tn)
		}
	}
	for tn, n := range insAfter {
		if n != insBefore[tn] {
			t.Errorf("vminsert stored %v rows in tenant %s during the attacks", n-insBefore[tn], tn)
		}
	}
	rc.c.Flush(t)
	if after := rc.series(t, "multitenant", `{__name__=~".+"}`); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the cluster's series changed during the attacks:\nbefore %q\nafter  %q", before, after)
	}
	t.Logf("%d attacks refused; the cluster served, stored and deleted nothing for them", sent)
}

// TestRealClusterHeadersAndTenantLabels: hostile AccountID/ProjectID headers never move a write or a read out of
// the token's tenant, and a vm_account_id label in a write body does not either: the cluster keeps it as an
// ordinary label of the token's tenant.
func TestRealClusterHeadersAndTenantLabels(t *testing.T) {
	rc := startRealCluster(t)
	rc.importDirect(t, "16:3", `hdr{owner="16"} 666`+"\n")
	tok := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: 15}})
	c := &clusterGW{g: rc.g}
	var want []string
	for i, h := range [][]string{
		{"AccountID", "16", "ProjectID", "3"},
		{"AccountID", "multitenant"},
		{"ACCOUNTID", "multitenant", "projectid", "0"},
	} {
		for j, p := range []string{"/api/v1/import/prometheus", "/insert/15/prometheus/api/v1/import/prometheus"} {
			code, body := c.send(t, tok, clusterReq{method: "POST", path: p, ctype: "text/plain", header: h,
				body: fmt.Sprintf("hdr{n=\"%d_%d\"} 1\nhdr_label{vm_account_id=\"16\",vm_project_id=\"3\",n=\"%d_%d\"} 1\n", i, j, i, j)})
			if code/100 != 2 {
				t.Fatalf("write with %q: %d %s", h, code, body)
			}
			want = append(want, fmt.Sprintf("__name__=hdr,n=%d_%d", i, j), fmt.Sprintf("__name__=hdr_label,n=%d_%d,vm_account_id=16,vm_project_id=3", i, j))
		}
		code, body := c.send(t, tok, clusterReq{method: "GET", path: "/api/v1/query?query=hdr", header: h})
		if code != 200 || foreignValue.MatchString(body) {
			t.Errorf("read with %q: %d %s", h, code, body)
		}
	}
	rc.waitSeries(t, "15:0", `{__name__=~"hdr.*"}`, want)
	rc.waitSeries(t, "16:3", `{__name__=~"hdr.*"}`, []string{"__name__=hdr,owner=16"})
	if all := rc.series(t, "multitenant", `{__name__=~"hdr.*"}`); len(all) != len(want)+1 {
		t.Errorf("series across all tenants: %d, want %d: %q", len(all), len(want)+1, all)
	}
	// The label is the token tenant's data, and no selector may name it.
	code, body := c.send(t, tok, clusterGet("/api/v1/query?query="+url.QueryEscape(`hdr_label{vm_account_id="16"}`)))
	checkClusterError(t, "selector on vm_account_id", code, body, 403, "vm_account_id")
}

// TestRealClusterWriteFormats: every write format the route table accepts, in the cluster shape, into tenant
// 15:5 of the real cluster, stored there with the token's label.
func TestRealClusterWriteFormats(t *testing.T) {
	rc := startRealCluster(t)
	t155 := tenant.ID{AccountID: 15, ProjectID: 5}
	native := exportNative(t, rc.c.Insert.URL+"/insert/99:99/prometheus/api/v1/import/prometheus",
		rc.c.Select.URL+"/select/99:99/prometheus/api/v1/export/native", rc.c.Flush)
	wt := writeTarget{gw: rc.g, prefix: "/insert/15:5", modern: true, flush: rc.c.Flush,
		export: func(t testing.TB, metric string) string {
			_, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/select/15:5/prometheus/api/v1/export?match[]="+url.QueryEscape(fmt.Sprintf(`{__name__=%q}`, metric)), nil)
			return body
		},
		viaToken: func(via string) string {
			return clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeWrite, ExtraLabels: map[string]string{"team": "dev", "via": via}})
		}}
	write := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeWrite, ExtraLabels: map[string]string{"team": "dev"}})
	read := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}})
	checkWriteFormats(t, wt, write, read, native)
	// Only 15:5 got them (and 99:99 the native seed).
	if all := rc.series(t, "multitenant", `{__name__=~"wf_.*",vm_account_id!="15",vm_account_id!="99"}`); len(all) != 0 {
		t.Errorf("write formats landed outside 15:5: %q", all)
	}
}

// foreignValue finds the other tenant's seeded value, 666, standing as a number of its own: a timestamp such as
// 1796660960321 holds the same digits and is not it.
var foreignValue = regexp.MustCompile(`(^|[^0-9.])666([^0-9]|$)`)

// TestRealClusterRestrictedReads: a token with extra_labels and two extra_filters (rewritten to an `or` filter the
// cluster evaluates) reads exactly the series both allow, in its tenant, through every read API.
func TestRealClusterRestrictedReads(t *testing.T) {
	rc := startRealCluster(t)
	var body strings.Builder
	for _, team := range []string{"dev", "ops"} {
		for _, app := range []string{"api", "db"} {
			for _, tier := range []string{"gold", "silver"} {
				fmt.Fprintf(&body, "rr{team=%q,app=%q,tier=%q} 1\n", team, app, tier)
			}
		}
	}
	rc.importDirect(t, "15:0", body.String())
	rc.importDirect(t, "16:0", `rr{team="dev",app="api",tier="gold",owner="16"} 666`+"\n")
	rc.waitSeries(t, "16:0", "rr", []string{"__name__=rr,app=api,owner=16,team=dev,tier=gold"})
	tok := clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 15}, Mode: auth.ModeRead,
		ExtraLabels: map[string]string{"team": "dev"}, ExtraFilters: []string{`{app="api"}`, `{tier="gold"}`}})
	// team=dev and (app=api or tier=gold): api/gold, api/silver, db/gold.
	vmtest.Eventually(t, func() (bool, string) {
		rc.c.Flush(t)
		code, _, b := do(t, http.MethodGet, rc.g.URL+"/api/v1/query?query=count(rr)", nil, bearer(tok)...)
		return code == 200 && strings.Contains(b, `"3"]`), fmt.Sprintf("count(rr): %d %s", code, b)
	})
	// Each answer holds the three allowed series and none of the others.
	for _, tc := range []struct {
		path string
		n    int
	}{
		{"/api/v1/export?match[]=rr", 3},
		{"/select/15/prometheus/api/v1/series?match[]=rr", 3},
		{"/api/v1/query?query=" + url.QueryEscape(`rr{team="ops"} or rr{tier="silver",app="db"}`), 0},
		{"/api/v1/query_range?step=60&start=" + fmt.Sprint(time.Now().Add(-time.Hour).Unix()) + "&query=" + url.QueryEscape(`sum by (team,app,tier) (rr)`), 3},
		{"/federate?match[]=" + url.QueryEscape(`{__name__=~"r.*"}`), 3},
		{"/api/v1/label/team/values", 0},
	} {
		code, _, b := do(t, http.MethodGet, rc.g.URL+tc.path, nil, bearer(tok)...)
		n := strings.Count(b, "tier")
		bad := code != 200 || n != tc.n || strings.Contains(b, "ops") || foreignValue.MatchString(b) || strings.Contains(b, "owner")
		for _, forbidden := range []string{`"app":"db","team":"dev","tier":"silver"`, `app="db",team="dev",tier="silver"`} {
			bad = bad || strings.Contains(b, forbidden)
		}
		if bad {
			t.Errorf("GET %s: %d, want exactly the %d allowed series: %s", tc.path, code, tc.n, b)
		}
	}
	if code, _, b := do(t, http.MethodGet, rc.g.URL+"/api/v1/label/team/values", nil, bearer(tok)...); code != 200 || !strings.Contains(b, `["dev"]`) {
		t.Errorf("team values: %d %s", code, b)
	}
}

// TestRealClusterDeleteSeries: delete_series removes only the token's series in the token's tenant; a restricted
// full token deletes only its extra_labels' share; read tokens and other tenants' paths delete nothing.
func TestRealClusterDeleteSeries(t *testing.T) {
	rc := startRealCluster(t)
	seed := "del{team=\"dev\"} 1\ndel{team=\"ops\"} 1\nkeep{team=\"dev\"} 1\n"
	for _, tn := range []string{"15:5", "0:0", "16:5", "15:0"} {
		rc.importDirect(t, tn, seed)
	}
	all := []string{"__name__=del,team=dev", "__name__=del,team=ops", "__name__=keep,team=dev"}
	for _, tn := range []string{"15:5", "0:0", "16:5", "15:0"} {
		rc.waitSeries(t, tn, `{__name__=~"del|keep"}`, all)
	}
	t155 := tenant.ID{AccountID: 15, ProjectID: 5}
	reader := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeRead})
	devFull := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeFull, ExtraLabels: map[string]string{"team": "dev"}})
	full := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeFull})
	c := &clusterGW{g: rc.g}
	// v1.150's vmselect deletes on POST only; a GET is forwarded and answered 405 by the cluster, deleting nothing.
	code, body := c.send(t, full, clusterGet("/delete/15:5/prometheus/api/v1/admin/tsdb/delete_series?match[]=del"))
	if code != http.StatusMethodNotAllowed {
		t.Errorf("GET delete_series: %d %s, want the cluster's 405", code, body)
	}
	// Refused: a read token, and another tenant's path.
	code, body = c.send(t, reader, clusterGet("/delete/15:5/prometheus/api/v1/admin/tsdb/delete_series?match[]=del"))
	checkClusterError(t, "read token delete", code, body, 403, `mode "read" does not allow admin API`)
	code, body = c.send(t, full, clusterGet("/delete/16:5/prometheus/api/v1/admin/tsdb/delete_series?match[]=del"))
	checkClusterError(t, "other tenant delete", code, body, 403, "the token allows tenant 15:5 only")

	// dev's full token deletes del: only dev's del in 15:5 goes.
	code, body = c.send(t, devFull, clusterPost("/delete/15:5/prometheus/api/v1/admin/tsdb/delete_series", clusterFormCT, "match%5B%5D=del"))
	if code/100 != 2 {
		t.Fatalf("dev's delete_series: %d %s", code, body)
	}
	rc.waitSeries(t, "15:5", `{__name__=~"del|keep"}`, []string{"__name__=del,team=ops", "__name__=keep,team=dev"})
	// The unrestricted token of 15:5, single-node shape: everything named del in 15:5, nothing elsewhere.
	code, body = c.send(t, full, clusterPost("/api/v1/admin/tsdb/delete_series", clusterFormCT, "match[]="+url.QueryEscape(`{__name__=~"del"}`)))
	if code/100 != 2 {
		t.Fatalf("delete_series: %d %s", code, body)
	}
	rc.waitSeries(t, "15:5", `{__name__=~"del|keep"}`, []string{"__name__=keep,team=dev"})
	for _, tn := range []string{"0:0", "16:5", "15:0"} {
		rc.waitSeries(t, tn, `{__name__=~"del|keep"}`, all)
	}
}

// TestRealClusterTraceRemoved: vmstorage's query trace names the monthly index partitions a search opened, which all
// tenants share, so a full token's trace=1 told its tenant in which months other tenants had data (an attacker's
// review on v1.150). A cluster-mode gateway removes the trace arg for every token; vmselect itself still shows the
// month of another tenant's data in the trace of a tenant with none there.
func TestRealClusterTraceRemoved(t *testing.T) {
	rc := startRealCluster(t)
	old := time.Date(2021, 3, 15, 0, 0, 0, 0, time.UTC).UnixMilli()
	rc.importDirect(t, "7:0", fmt.Sprintf("old_seven 1 %d\n", old))
	rc.importDirect(t, "5:0", "now_five 1\n")
	rc.c.Flush(t)
	rc.waitSeries(t, "5:0", "now_five", []string{"__name__=now_five"})
	args := fmt.Sprintf("/api/v1/series?match[]=nonexistent_probe&start=%d&end=%d&trace=1", old/1000-86400, time.Now().Unix())
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/select/5:0/prometheus"+args, nil)
		return code == 200 && strings.Contains(body, "2021_03"), fmt.Sprintf("vmselect, tenant 5:0: %d %.600s; want its trace to name 2021_03", code, body)
	})
	full := clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 5}, Mode: auth.ModeFull})
	for _, r := range []struct {
		method, path string
		body         io.Reader
	}{
		{http.MethodGet, args, nil},
		{http.MethodPost, "/api/v1/series", strings.NewReader(strings.TrimPrefix(args, "/api/v1/series?"))},
		{http.MethodGet, "/api/v1/query?query=now_five&trace=1", nil},
	} {
		code, _, body := do(t, r.method, rc.g.URL+r.path, r.body, append(bearer(full), "Content-Type", "application/x-www-form-urlencoded")...)
		if code != 200 || strings.Contains(body, `"trace"`) || strings.Contains(body, "2021_03") || strings.Contains(body, "indexDB") {
			t.Errorf("full token: %s %s: %d %.600s; want an answer without a trace", r.method, r.path, code, body)
		}
	}
}

// TestRealClusterAdminTenants: /admin/tenants names every tenant, so only an unrestricted full token may call it,
// and it learns of its own tenant alone; the real vmselect answers it.
func TestRealClusterAdminTenants(t *testing.T) {
	rc := startRealCluster(t)
	for _, tn := range []string{"15:5", "16:0", "0:0"} {
		rc.importDirect(t, tn, "tn 1\n")
		rc.waitSeries(t, tn, "tn", []string{"__name__=tn"})
	}
	t155 := tenant.ID{AccountID: 15, ProjectID: 5}
	full := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeFull})
	code, _, body := do(t, http.MethodGet, rc.g.URL+"/admin/tenants", nil, bearer(full)...)
	if code != 200 || body != `{"status":"success","data":["15:5"]}` {
		t.Errorf("full token: /admin/tenants: %d %s; want its own tenant alone", code, body)
	}
	// vmselect's trace counts the tenants ("found 3 tenants"): it is never asked for (an attacker's review).
	for _, r := range []struct {
		method, path string
		body         io.Reader
	}{{http.MethodGet, "/admin/tenants?trace=1", nil}, {http.MethodPost, "/admin/tenants", strings.NewReader("trace=1")}} {
		code, _, body := do(t, r.method, rc.g.URL+r.path, r.body, append(bearer(full), "Content-Type", "application/x-www-form-urlencoded")...)
		if code != 200 || body != `{"status":"success","data":["15:5"]}` {
			t.Errorf("full token: %s %s with trace=1: %d %s; want its own tenant alone, without a trace", r.method, r.path, code, body)
		}
	}
	if code, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/admin/tenants?trace=1", nil); !strings.Contains(body, "3 tenants") {
		t.Fatalf("vmselect: /admin/tenants?trace=1: %d %s; want its trace to count 3 tenants", code, body)
	}
	// The tenants are all there to be hidden: vmselect itself names them.
	if code, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/admin/tenants", nil); code != 200 || !strings.Contains(body, `"16:0"`) || !strings.Contains(body, `"0:0"`) {
		t.Fatalf("vmselect: /admin/tenants: %d %s", code, body)
	}
	for _, tc := range []struct {
		name string
		va   auth.VMAccess
		msg  string
	}{
		{"read", auth.VMAccess{Tenant: t155, Mode: auth.ModeRead}, `mode "read" does not allow admin API`},
		{"write", auth.VMAccess{Tenant: t155, Mode: auth.ModeWrite}, `mode "write" does not allow admin API`},
		{"restricted full", auth.VMAccess{Tenant: t155, Mode: auth.ModeFull, ExtraLabels: map[string]string{"team": "dev"}}, "cannot be limited"},
	} {
		code, _, body := do(t, http.MethodGet, rc.g.URL+"/admin/tenants", nil, bearer(clusterToken(t, tc.va))...)
		checkClusterError(t, tc.name+" token: /admin/tenants", code, body, 403, tc.msg)
	}
}

// TestRealClusterVMUI: the real vmselect's vmui through the gateway, in both path shapes: the redirect to the
// trailing slash stays on the gateway, the page and the assets it names load, and another tenant's vmui is refused.
func TestRealClusterVMUI(t *testing.T) {
	rc := startRealCluster(t)
	tok := clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 15, ProjectID: 5}, Mode: auth.ModeRead})
	checkRealVMUI(t, rc.g.URL, tok, []string{"/", "/select/15:5/", "/select/15:5/prometheus/"})
	c := &clusterGW{g: rc.g}
	code, body := c.send(t, tok, clusterGet("/select/16:5/vmui/"))
	checkClusterError(t, "another tenant's vmui", code, body, 403, "the token allows tenant 15:5 only")
}

// checkRealVMUI loads vmui below each root through the gateway at gwURL, as a browser would.
func checkRealVMUI(t *testing.T, gwURL, tok string, roots []string) {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, root := range roots {
		req, _ := http.NewRequest(http.MethodGet, gwURL+root+"vmui", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if resp.StatusCode/100 != 3 || err != nil || loc.Host != strings.TrimPrefix(gwURL, "http://") || loc.Path != root+"vmui/" {
			t.Errorf("GET %svmui: %d Location %q, want %svmui/ on the gateway", root, resp.StatusCode, resp.Header.Get("Location"), root)
			continue
		}
		var auth []string
		if tok != "" {
			auth = bearer(tok)
		}
		code, _, page := do(t, http.MethodGet, loc.String(), nil, auth...)
		if code != 200 || !strings.Contains(page, "<!DOCTYPE html>") {
			t.Errorf("GET %s: %d %.200s", loc, code, page)
			continue
		}
		// The page names its assets relative to itself: each must load through the gateway.
		assets := 0
		for _, attr := range []string{`src="./`, `href="./`} {
			rest := page
			for {
				i := strings.Index(rest, attr)
				if i < 0 {
					break
				}
				rest = rest[i+len(attr):]
				ref := rest[:strings.IndexByte(rest, '"')]
				code, _, body := do(t, http.MethodGet, gwURL+root+"vmui/"+ref, nil, auth...)
				if code != 200 || len(body) == 0 {
					t.Errorf("vmui asset %svmui/%s: %d", root, ref, code)
				}
				assets++
			}
		}
		if assets == 0 {
			t.Errorf("the vmui page below %s names no asset: %.500s", root, page)
		}
	}
}

// TestRealClusterRateLimits: usage comes from the cluster itself. A single-node VictoriaMetrics scrapes
// vminsert's and vmselect's /metrics (vm_tenant_inserted_rows_total, vm_tenant_select_requests_total); a tenant
// over its queries limit and one over its rows_inserted limit get 429, while tenants below them pass.
func TestRealClusterRateLimits(t *testing.T) {
	c := vmtest.StartCluster(t)
	cfg := filepath.Join(t.TempDir(), "scrape.yml")
	scrape := fmt.Sprintf("scrape_configs:\n- job_name: vmcluster\n  scrape_interval: 1s\n  static_configs:\n  - targets: [%q, %q]\n",
		strings.TrimPrefix(c.Insert.URL, "http://"), strings.TrimPrefix(c.Select.URL, "http://"))
	if err := os.WriteFile(cfg, []byte(scrape), 0o600); err != nil {
		t.Fatal(err)
	}
	ds := vmtest.Start(t, "-promscrape.config="+cfg)
	const limits = "limits:\n  - {type: queries, value: 30}\n  - {type: rows_inserted, value: 300}\n"
	// Two replicas without shared counts: each stops the busy reader at 30 by its own count at the latest, so
	// together they let the cluster count more than the limit, which only the datasource can tell.
	replicas := []*gw{
		rlGateway(t, c.Select.URL, ds.URL, limits, "-clusterMode", "-write.url="+c.Insert.URL),
		rlGateway(t, c.Select.URL, ds.URL, limits, "-clusterMode", "-write.url="+c.Insert.URL),
	}
	g := replicas[0]
	busyReader, calmReader := rlToken(t, tenant.ID{AccountID: 21}, "busy-reader"), rlToken(t, tenant.ID{AccountID: 22}, "calm-reader")
	busyWriter, calmWriter := rlToken(t, tenant.ID{AccountID: 23}, "busy-writer"), rlToken(t, tenant.ID{AccountID: 24}, "calm-writer")

	// The calm tenants appear in the cluster's counters too, far below their limits.
	for _, tok := range []string{calmReader, calmWriter} {
		if code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(tok)...); code != 200 {
			t.Fatalf("calm query: %d %s", code, b)
		}
		if code, _, b := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("calm 1\n"), append(bearer(tok), "Content-Type", "text/plain")...); code != 204 {
			t.Fatalf("calm write: %d %s", code, b)
		}
	}
	// The busy tenants' counters exist at the scraper before their bursts: increase() then counts the bursts from
	// a small first value instead of taking a counter first seen at 30 for a counter that had always been 30.
	if code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(busyReader)...); code != 200 {
		t.Fatalf("busy reader's first query: %d %s", code, b)
	}
	if code, _, b := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("busy 1\n"), append(bearer(busyWriter), "Content-Type", "text/plain")...); code != 204 {
		t.Fatalf("busy writer's first write: %d %s", code, b)
	}
	for _, sel := range []string{`vm_tenant_select_requests_total{accountID="21"}`, `vm_tenant_inserted_rows_total{accountID="23"}`} {
		vmtest.Eventually(t, func() (bool, string) {
			_, _, b := do(t, http.MethodGet, ds.URL+"/api/v1/series?match[]="+url.QueryEscape(sel), nil)
			return strings.Contains(b, `"accountID"`), "the scraper has not stored " + sel + ": " + b
		})
	}
	var rows strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&rows, "busy{i=\"%d\"} 1\n", i)
	}
	// Each round adds usage the scraper sees a second later and the gateway a refresh after that; the busy tenants
	// are cut off within a few rounds. The reader's queries alternate between the replicas until both refuse.
	var readBody, writeBody string
	queries, written := 0, 0
	refusedBy := map[int]bool{}
	vmtest.Eventually(t, func() (bool, string) {
		r := queries % len(replicas)
		code, _, b := do(t, http.MethodGet, replicas[r].URL+"/api/v1/query?query=up", nil, bearer(busyReader)...)
		queries++
		if code == 429 {
			readBody = b
			refusedBy[r] = true
		} else if code != 200 {
			return false, fmt.Sprintf("busy reader: %d %s", code, b)
		}
		if writeBody == "" {
			code, _, b = do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader(rows.String()), append(bearer(busyWriter), "Content-Type", "text/plain")...)
			switch code {
			case 429:
				writeBody = b
			case 204:
				written += 100
			default:
				return false, fmt.Sprintf("busy writer: %d %s", code, b)
			}
		}
		return len(refusedBy) == len(replicas) && writeBody != "", fmt.Sprintf("after %d queries and %d rows: reader %q writer %q", queries, written, readBody, writeBody)
	})
	for _, tc := range []struct{ body, want string }{
		{readBody, "rate limit exceeded for tenant 21:0: limit type=queries resolution=minute value=30"},
		{writeBody, "rate limit exceeded for tenant 23:0: limit type=rows_inserted resolution=minute value=300"},
	} {
		if typ, msg := decodeError(t, tc.body); typ != "too_many_requests" || !strings.Contains(msg, tc.want) {
			t.Errorf("429 body %s, want %q", tc.body, tc.want)
		}
	}
	// The busy reader may still write and the busy writer read; the calm tenants pass both ways.
	for _, tc := range []struct {
		name, tok string
		write     bool
	}{{"calm reader", calmReader, false}, {"calm writer", calmWriter, true}, {"busy reader's write", busyReader, true}, {"busy writer's read", busyWriter, false}} {
		var code int
		var b string
		if tc.write {
			code, _, b = do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("calm 1\n"), append(bearer(tc.tok), "Content-Type", "text/plain")...)
		} else {
			code, _, b = do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(tc.tok)...)
		}
		if code/100 != 2 {
			t.Errorf("%s: %d %s", tc.name, code, b)
		}
	}
	// A fresh gateway has counted nothing itself: what stops the busy tenants there is the cluster's usage, read
	// from the scraper. Counting alone it would admit 30 queries and 3 batches of 100 rows.
	g2 := rlGateway(t, c.Select.URL, ds.URL, limits, "-clusterMode", "-write.url="+c.Insert.URL)
	passedReads, passedWrites := 0, 0
	vmtest.Eventually(t, func() (bool, string) {
		rc, _, rb := do(t, http.MethodGet, g2.URL+"/api/v1/query?query=up", nil, bearer(busyReader)...)
		wc, _, wb := do(t, http.MethodPost, g2.URL+"/api/v1/import/prometheus", strings.NewReader("busy 1\n"), append(bearer(busyWriter), "Content-Type", "text/plain")...)
		if rc/100 == 2 {
			passedReads++
		}
		if wc/100 == 2 {
			passedWrites++
		}
		return rc == 429 && wc == 429, fmt.Sprintf("fresh gateway: reader %d %s, writer %d %s", rc, rb, wc, wb)
	})
	if passedReads >= 30 {
		t.Errorf("the fresh gateway admitted %d queries of the busy reader: its own count stopped it, not the cluster's usage", passedReads)
	}
	t.Logf("a fresh gateway admitted %d queries and %d writes before the cluster's usage stopped them", passedReads, passedWrites)
	// The usage the gateway acted on is the cluster's own count, as the scraper stored it.
	sel := tenantCounters(t, c.Select.URL, "vm_tenant_select_requests_total")
	ins := tenantCounters(t, c.Insert.URL, "vm_tenant_inserted_rows_total")
	if sel["21:0"] <= 30 || ins["23:0"] <= 300 {
		t.Errorf("the cluster counted %v queries of 21:0 and %v rows of 23:0, want them over the limits", sel["21:0"], ins["23:0"])
	}
	t.Logf("cut off after %d queries (cluster counted %v) and %d rows (cluster counted %v)", queries, sel["21:0"], written, ins["23:0"])
}

// TestRealClusterModes: a read token's writes and deletes and a write token's reads are refused, and the cluster
// neither stores nor serves anything for them; the allowed direction works.
func TestRealClusterModes(t *testing.T) {
	rc := startRealCluster(t)
	t155 := tenant.ID{AccountID: 15, ProjectID: 5}
	reader := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeRead})
	writer := clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeWrite})
	c := &clusterGW{g: rc.g}
	code, body := c.send(t, writer, clusterPost("/insert/15:5/prometheus/api/v1/import/prometheus", "text/plain", "modes{by=\"writer\"} 1\n"))
	if code/100 != 2 {
		t.Fatalf("writer's write: %d %s", code, body)
	}
	rc.waitSeries(t, "15:5", "modes", []string{"__name__=modes,by=writer"})
	selBefore := tenantCounters(t, rc.c.Select.URL, "vm_tenant_select_requests_total")
	insBefore := tenantCounters(t, rc.c.Insert.URL, "vm_tenant_inserted_rows_total")
	refused := 0
	for _, r := range []clusterReq{
		clusterPost("/insert/15:5/prometheus/api/v1/import/prometheus", "text/plain", "modes{by=\"reader\"} 1\n"),
		clusterPost("/api/v1/import/prometheus", "text/plain", "modes{by=\"reader\"} 1\n"),
		clusterPost("/influx/write", "text/plain", "modes,by=reader v=1\n"),
		clusterPost("/delete/15:5/prometheus/api/v1/admin/tsdb/delete_series", clusterFormCT, "match[]=modes"),
	} {
		code, body := c.send(t, reader, r)
		checkClusterError(t, "read token: "+r.path, code, body, 403, `mode "read" does not allow`)
		refused++
	}
	for _, r := range []clusterReq{
		clusterGet("/select/15:5/prometheus/api/v1/query?query=modes"),
		clusterGet("/api/v1/export?match[]=modes"),
		clusterGet("/select/15:5/vmui/"),
	} {
		code, body := c.send(t, writer, r)
		checkClusterError(t, "write token: "+r.path, code, body, 403, `mode "write" does not allow read API`)
		refused++
	}
	selAfter := tenantCounters(t, rc.c.Select.URL, "vm_tenant_select_requests_total")
	insAfter := tenantCounters(t, rc.c.Insert.URL, "vm_tenant_inserted_rows_total")
	if selAfter["15:5"] != selBefore["15:5"] || insAfter["15:5"] != insBefore["15:5"] {
		t.Errorf("refused requests reached the cluster: selects %v→%v, rows %v→%v", selBefore["15:5"], selAfter["15:5"], insBefore["15:5"], insAfter["15:5"])
	}
	rc.waitSeries(t, "15:5", "modes", []string{"__name__=modes,by=writer"})
	code, body = c.send(t, reader, clusterGet("/select/15:5/prometheus/api/v1/query?query=modes"))
	if code != 200 || !strings.Contains(body, `"by":"writer"`) {
		t.Errorf("reader's query: %d %s", code, body)
	}
	t.Logf("%d requests refused by mode; the cluster saw none of them", refused)
}

// TestRealClusterQueriesThatStopVMSelect: a few calls that parse make vmselect v1.150 panic and exit, which would stop
// every tenant's reads; the gateway refuses them with 400 for restricted and unrestricted tokens alike (the v1.150
// cluster is parsed for every token), on both query APIs, and vmselect is still up after them.
func TestRealClusterQueriesThatStopVMSelect(t *testing.T) {
	rc := startRealCluster(t)
	t155 := tenant.ID{AccountID: 15, ProjectID: 5}
	toks := map[string]string{
		"restricted":   clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}}),
		"unrestricted": clusterToken(t, auth.VMAccess{Tenant: t155, Mode: auth.ModeRead}),
	}
	for _, c := range []struct{ query, msg string }{
		{`limit_offset("a", "b", x)`, "limit_offset's limit must be a number"},
		{`limit_offset(NaN, 1, x)`, "limit_offset's limit must be a number"},
		{`limit_offset(-1e20, 0, x)`, "limit_offset's limit must be a number"},
		{`sum(quantiles_over_time())`, "quantiles_over_time() is called without the series it rolls up"},
		{`-(time() @ (time() @ 1))`, "the @ modifier's time must be"},
		{`sum_over_time(time()[5m:1m] @ 1e19)`, "the @ modifier's time must be"},
		{`rate(time()[5m:99999999999d])`, "is longer than 100 years"},
	} {
		for name, tok := range toks {
			for _, api := range []string{"/api/v1/query?", "/api/v1/query_range?start=-1h&step=7m&"} {
				code, _, body := do(t, http.MethodGet, rc.g.URL+api+"query="+url.QueryEscape(c.query), nil, bearer(tok)...)
				checkClusterError(t, name+" "+api+c.query, code, body, 400, c.msg)
			}
		}
	}
	if code, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/health", nil); code != 200 {
		t.Fatalf("vmselect after the refused queries: %d %s", code, body)
	}
}

// TestRealClusterActiveQueriesWithoutIDs: vmselect numbers the queries of every tenant from one counter and shows
// each running query's number as its id, so a tenant seeing two of its own ids would count the other tenants'
// queries in between; through the gateway the entries come without it.
func TestRealClusterActiveQueriesWithoutIDs(t *testing.T) {
	// 2.6 million points a query, which vmselect refuses at once by default (100,000), and runs for a while with this.
	rc := startRealClusterWith(t, []string{"-search.maxPointsSubqueryPerTimeseries=5000000"})
	tok := clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 15, ProjectID: 5}, Mode: auth.ModeRead})
	// Some of vmselect's work each: one is always among the running queries.
	// Each one new, so that no cache answers it.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			q := fmt.Sprintf("count_over_time(vector(%d)[30d:1s])", i)
			req, _ := http.NewRequest(http.MethodGet, rc.g.URL+"/api/v1/query?query="+url.QueryEscape(q), nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	var body string
	vmtest.Eventually(t, func() (bool, string) {
		var code int
		code, _, body = do(t, http.MethodGet, rc.g.URL+"/api/v1/status/active_queries", nil, bearer(tok)...)
		return code == 200 && strings.Contains(body, "count_over_time"), fmt.Sprintf("active_queries: %d %s", code, body)
	})
	if strings.Contains(body, `"id"`) || !strings.Contains(body, `"duration"`) {
		t.Errorf("active_queries through the gateway: %s; want the running query without its id", body)
	}
	// vmselect itself numbers them: what the gateway drops.
	vmtest.Eventually(t, func() (bool, string) {
		code, _, raw := do(t, http.MethodGet, rc.c.Select.URL+"/select/15:5/prometheus/api/v1/status/active_queries", nil)
		return code == 200 && strings.Contains(raw, "count_over_time") && strings.Contains(raw, `"id":"`), fmt.Sprintf("vmselect's active_queries: %d %s", code, raw)
	})
}

// TestRealClusterQueryTimeoutNotRetried: a query that runs out of the time its client gave it (timeout=1ms; vmselect
// keeps deadlines in whole seconds, so a query running as the second turns fails) gets vmselect's 503 back as it
// is, under -retryStatusCodes=502,503 (docs/cluster-mode.md's example): it is not run again on the other vmselect,
// and neither vmselect is marked broken for the other teams (an attacker's review had both marked 71 % of the time).
func TestRealClusterQueryTimeoutNotRetried(t *testing.T) {
	c := vmtest.StartCluster(t)
	second := c.StartSelect(t)
	g := startGateway(t, "-read.url="+c.Select.URL+","+second.URL, "-write.url="+c.Insert.URL, "-clusterMode",
		"-retryStatusCodes=502,503", "-enable.auth", "-auth.publicKeyFiles="+clusterPublicKeyFile(t))
	tok := clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}})
	var b strings.Builder
	now := time.Now().Add(-time.Hour).UnixMilli()
	for i := 0; i < 3000; i++ {
		for j := int64(0); j < 60; j++ {
			fmt.Fprintf(&b, "timeout_metric{team=\"dev\",i=\"%d\"} %d %d\n", i, i+int(j), now+j*60_000)
		}
	}
	if code, _, body := do(t, http.MethodPost, c.Insert.URL+"/insert/3/prometheus/api/v1/import/prometheus", strings.NewReader(b.String())); code/100 != 2 {
		t.Fatalf("import: %d %s", code, body)
	}
	vmtest.Eventually(t, func() (bool, string) {
		c.Flush(t)
		code, _, body := do(t, http.MethodGet, c.Select.URL+"/select/3/prometheus/api/v1/query?query=count(timeout_metric)", nil)
		return code == 200 && strings.Contains(body, `"3000"`), fmt.Sprintf("count: %d %s", code, body)
	})

	q := g.URL + "/api/v1/query_range?start=-2h&end=now&step=60s&timeout=1ms&query=" + url.QueryEscape("sum(rate(timeout_metric[10m]))")
	// Sent back to back by two clients, some query is fetching its series whenever a second turns, and fails; timing
	// each to a second's end missed them all on a loaded machine.
	var timedOut, sent atomic.Int64
	var unexpected atomic.Value
	deadline := time.Now().Add(45 * time.Second)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && timedOut.Load() < 3 && unexpected.Load() == nil {
				sent.Add(1)
				req, _ := http.NewRequest(http.MethodGet, q, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					unexpected.Store(err.Error())
					return
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				code, body := resp.StatusCode, string(b)
				switch {
				case code == http.StatusOK:
				case code == http.StatusServiceUnavailable && strings.Contains(body, "request timeout reached"):
					timedOut.Add(1)
				default:
					unexpected.Store(fmt.Sprintf("%d %s", code, body))
				}
			}
		}()
	}
	wg.Wait()
	if u := unexpected.Load(); u != nil {
		t.Fatalf("query with timeout=1ms: %s", u)
	}
	if timedOut.Load() == 0 {
		t.Fatalf("no query of %d ran out of its 1ms: vmselect answered every one in time", sent.Load())
	}
	if got := metricValue(t, g, `vmgateway_upstream_retries_total{upstream="read"}`); got != 0 {
		t.Errorf("%d queries ran out of their time and %v were sent to the other vmselect", timedOut.Load(), got)
	}
	for _, sel := range []string{c.Select.URL, second.URL} {
		if got := metricValue(t, g, `vmgateway_backend_broken{upstream="read",backend="`+sel+`"}`); got != 0 {
			t.Errorf("vmselect %s marked broken after queries ran out of their time", sel)
		}
	}
	t.Logf("%d queries of %d ran out of their time", timedOut.Load(), sent.Load())
}
