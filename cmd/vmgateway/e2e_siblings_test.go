package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// VictoriaMetrics' storage sorts a series' labels by a key some names share (namespace and Namespace among them) and
// drops a repeated label only where no sibling name comes between: a team whose token writes namespace="dev" sent
// namespace="prod",Namespace="x" and its series was stored with both namespace values, read by team prod as its own
// (an attacker's review, on 1.79.5, v1.151 and the cluster). The gateway reads no series with a sibling of the token's
// label names (internal/enforce/siblings.go).

// siblingWrites are team dev's writes that carry a sibling of namespace between the body's namespace and the token's.
func siblingWrites() []struct{ path, ctype, body string } {
	now := time.Now().UnixMilli()
	return []struct{ path, ctype, body string }{
		{"/api/v1/import/prometheus", "text/plain", `sib_prom{namespace="prod",Namespace="x"} 1` + "\n"},
		{"/api/v1/import", "application/json", fmt.Sprintf(`{"metric":{"__name__":"sib_json","namespace":"prod","Namespace":"x"},"values":[1],"timestamps":[%d]}`, now) + "\n"},
		{"/influx/write", "text/plain", "sib_influx,namespace=prod,Namespace=x value=1\n"},
		// A label named with the sort key's own bytes sorts with namespace too (a review of the first version).
		{"/api/v1/import/prometheus", "text/plain", "sib_nultext{namespace=\"prod\",\x00\x00\x00=\"x\"} 1\n"},
		{"/api/v1/import", "application/json", fmt.Sprintf(`{"metric":{"__name__":"sib_nuljson","namespace":"prod","\u0000\u0000\u0000":"x"},"values":[1],"timestamps":[%d]}`, now) + "\n"},
		// The sibling in the client's own extra_label arg: dropped, so these are team dev's alone.
		{"/api/v1/import/prometheus?extra_label=Namespace=x", "text/plain", `sib_arg{namespace="prod"} 1` + "\n"},
		{"/api/v1/import/prometheus?extra_label=%00%00%00=x", "text/plain", `sib_nularg{namespace="prod"} 1` + "\n"},
		// Team dev's own series, which it must still read.
		{"/api/v1/import/prometheus", "text/plain", "sib_ctl 1\n"},
	}
}

// checkSiblingsHidden writes siblingWrites as dev through gwURL, waits until the backend holds the injected series
// under namespace="prod" (directProd lists the names it holds there, read past the gateway), and checks that prod's
// token reads its own series (sib_prod, written directly) and none of dev's, and dev its own.
func checkSiblingsHidden(t *testing.T, gwURL, dev, prod string, flush func(), directProd func() string) {
	t.Helper()
	for _, w := range siblingWrites() {
		code, _, body := do(t, http.MethodPost, gwURL+w.path, strings.NewReader(w.body), append(bearer(dev), "Content-Type", w.ctype)...)
		if code/100 != 2 {
			t.Fatalf("dev's write %s: %d %s", w.path, code, body)
		}
	}
	// The attack's data is there: stored under namespace="prod", next to prod's own series.
	vmtest.Eventually(t, func() (bool, string) {
		flush()
		got := directProd()
		ok := strings.Contains(got, "sib_prom") && strings.Contains(got, "sib_json") && strings.Contains(got, "sib_influx_value") &&
			strings.Contains(got, "sib_nultext") && strings.Contains(got, "sib_nuljson") && strings.Contains(got, "sib_prod")
		return ok, "the series stored under namespace=\"prod\", read directly: " + got
	})
	if got := directProd(); strings.Contains(got, "sib_arg") || strings.Contains(got, "sib_nularg") {
		t.Errorf("dev's write with a sibling in extra_label was stored under namespace=\"prod\": %s", got)
	}
	// And readable: a sample is searchable a moment after its series is indexed.
	vmtest.Eventually(t, func() (bool, string) {
		flush()
		_, _, own := do(t, http.MethodGet, gwURL+"/api/v1/query?query=sib_ctl", nil, bearer(dev)...)
		_, _, prods := do(t, http.MethodGet, gwURL+"/api/v1/query?query=sib_prod", nil, bearer(prod)...)
		return strings.Contains(own, `"sib_ctl"`) && strings.Contains(prods, `"sib_prod"`), "dev's own sib_ctl: " + own + "\nprod's own sib_prod: " + prods
	})
	start := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	for _, path := range []string{
		"/api/v1/series?start=" + start + "&match[]=" + url.QueryEscape(`{__name__=~"sib_.*"}`),
		"/api/v1/export?match[]=" + url.QueryEscape(`{__name__=~"sib_.*"}`),
		"/api/v1/query?query=" + url.QueryEscape(`{__name__=~"sib_.*"}`),
		"/api/v1/query_range?step=60&start=" + start + "&query=" + url.QueryEscape(`sum by (__name__) ({__name__=~"sib_.*"})`),
		"/federate?match[]=" + url.QueryEscape(`{__name__=~"sib_.*"}`),
		"/api/v1/label/__name__/values?start=" + start,
		"/api/v1/label/Namespace/values?start=" + start,
	} {
		code, _, body := do(t, http.MethodGet, gwURL+path, nil, bearer(prod)...)
		if code != 200 {
			t.Errorf("prod's GET %s: %d %s", path, code, body)
			continue
		}
		for _, injected := range []string{"sib_prom", "sib_json", "sib_influx", "sib_nul", "sib_arg", "sib_ctl", `"x"`} {
			if strings.Contains(body, injected) {
				t.Errorf("prod's GET %s reads team dev's %s: %s", path, injected, body)
			}
		}
		if !strings.Contains(path, "Namespace") && !strings.Contains(body, "sib_prod") {
			t.Errorf("prod's GET %s: %s; want its own sib_prod", path, body)
		}
	}
}

func TestSiblingLabelsCrossNoTeams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB, ...string) *vmtest.VM
	}{
		{"1.79.5", vmtest.Start},
		{"current", vmtest.StartCurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := tc.start(t)
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
			dev := mint(t, priv, "-mode=full", "-extraLabels=namespace=dev")
			prod := mint(t, priv, "-mode=read", "-extraLabels=namespace=prod")
			if code, _, body := do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus", strings.NewReader(`sib_prod{namespace="prod"} 7`+"\n")); code/100 != 2 {
				t.Fatalf("prod's series: %d %s", code, body)
			}
			checkSiblingsHidden(t, g.URL, dev, prod, func() { vm.Flush(t) }, func() string {
				_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/label/__name__/values?match[]="+url.QueryEscape(`{namespace="prod"}`), nil)
				return body
			})
		})
	}
}

func TestRealClusterSiblingLabelsCrossNoTeams(t *testing.T) {
	rc := startRealCluster(t)
	tok := func(mode auth.Mode, ns string) string {
		return clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 21}, Mode: mode, ExtraLabels: map[string]string{"namespace": ns}})
	}
	rc.importDirect(t, "21:0", `sib_prod{namespace="prod"} 7`+"\n")
	checkSiblingsHidden(t, rc.g.URL, tok(auth.ModeFull, "dev"), tok(auth.ModeRead, "prod"), func() { rc.c.Flush(t) }, func() string {
		return strings.Join(rc.series(t, "21:0", `{namespace="prod"}`), "\n")
	})
}
