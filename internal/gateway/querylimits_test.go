package gateway

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// fakeQueryLimits records what the gateway hands the query limits and answers as told.
type fakeQueryLimits struct {
	args, form url.Values
	timeout    string
	err        error
	// parsed is what the request's shared parse held for its query arg when the limits read it.
	parsed metricsql.Expr
}

func (f *fakeQueryLimits) Applies(*auth.Access, route.Route) bool { return true }

func (f *fakeQueryLimits) Check(_ *auth.Access, _ route.Route, in enforce.Args, _ time.Time) (string, error) {
	// A copy: the maps are the gateway's, and the enforcer rewrites them after the limits have judged them.
	f.args, f.form = maps.Clone(in.URL), maps.Clone(in.Form)
	if q := in.URL.Get("query"); q != "" {
		f.parsed, _ = in.Parsed.Parse(q)
	}
	return f.timeout, f.err
}

// TestQueryLimitsHook checks the gateway's side: URL and form args reach the limits, the body still reaches the
// enforcer and the upstream, the timeout survives the enforcer's rewrite, and a refusal forwards nothing.
func TestQueryLimitsHook(t *testing.T) {
	restricted, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &auth.Access{Tenant: tenant.ID{AccountID: 7}, Mode: auth.ModeRead, Enforcer: restricted}
	g, read, _ := newGateway(t, true, fixedAuth{a: a}, nil)
	ql := &fakeQueryLimits{timeout: "20"}
	g.queryLimits = ql

	req := httptest.NewRequest(http.MethodPost, "/select/7/prometheus/api/v1/query?time=100", strings.NewReader("query=up&start=5"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if ql.args.Get("time") != "100" || ql.form.Get("query") != "up" || ql.form.Get("start") != "5" {
		t.Errorf("the limits saw args %v, form %v", ql.args, ql.form)
	}
	reqs := read.Requests()
	if len(reqs) != 1 {
		t.Fatalf("forwarded %d requests", len(reqs))
	}
	if reqs[0].Query.Get("timeout") != "20" || !strings.Contains(reqs[0].Body, "query=up%7Bteam%3D%22dev%22%7D") {
		t.Errorf("upstream got query %v body %q: want timeout=20 and the enforced query", reqs[0].Query, reqs[0].Body)
	}

	// The query is parsed once per request: the enforcer rewrites the tree the limits parsed.
	rec = serve(g, http.MethodGet, "/select/7/prometheus/api/v1/query?query=rate(hook_shared_parse_total[5m])")
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	read.Requests()
	if ql.parsed == nil || !strings.Contains(string(ql.parsed.AppendString(nil)), `team="dev"`) {
		t.Errorf("the enforcer did not take over the limits' parse of the query: %v", ql.parsed)
	}

	ql.err = httperr.New(http.StatusUnprocessableEntity, "query limit max_query_lookback=1d exceeded")
	rec = serve(g, http.MethodGet, "/select/7/prometheus/api/v1/query?query=rate(x[2d])")
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(errorOf(t, rec), "max_query_lookback") {
		t.Errorf("refusal: %d %s", rec.Code, rec.Body)
	}
	if reqs := read.Requests(); len(reqs) != 0 {
		t.Errorf("a refused request was forwarded: %+v", reqs)
	}

	// The limit's timeout replaces the client's: VictoriaMetrics reads the form's first, where an empty one is none.
	g3, read3, _ := newGateway(t, false, fixedAuth{a: &auth.Access{Mode: auth.ModeRead}}, nil)
	g3.queryLimits = &fakeQueryLimits{timeout: "20"}
	req = httptest.NewRequest(http.MethodPost, "/api/v1/query?timeout=5", strings.NewReader("query=up&timeout="))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec = httptest.NewRecorder()
	g3.ServeHTTP(rec, req)
	reqs = read3.Requests()
	if rec.Code != http.StatusOK || len(reqs) != 1 {
		t.Fatalf("%d %s; %d forwarded", rec.Code, rec.Body, len(reqs))
	}
	if got := reqs[0].Query["timeout"]; len(got) != 1 || got[0] != "20" || strings.Contains(reqs[0].Body, "timeout") {
		t.Errorf("upstream got URL timeout %q, body %q: want timeout=20 alone", got, reqs[0].Body)
	}

	// A body the limits cannot read is refused, even for an unrestricted token in single-node, which the
	// enforcer would let through unread.
	g2, read2, _ := newGateway(t, false, fixedAuth{a: &auth.Access{Mode: auth.ModeFull}}, nil)
	g2.queryLimits = &fakeQueryLimits{}
	req = httptest.NewRequest(http.MethodPost, "/api/v1/query", strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nup\r\n--x--\r\n"))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	rec = httptest.NewRecorder()
	g2.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("multipart body under query limits: %d %s", rec.Code, rec.Body)
	}
	if reqs := read2.Requests(); len(reqs) != 0 {
		t.Errorf("forwarded: %+v", reqs)
	}
}
