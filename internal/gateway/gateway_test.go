package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// fixedAuth is an Authenticator double: every request carries the same Access, or the same error.
type fixedAuth struct {
	a   *auth.Access
	err error
}

func (f fixedAuth) Authenticate(*http.Request) (*auth.Access, error) { return f.a, f.err }

type denyAll struct{}

func (denyAll) Admit(*auth.Access, route.Route, http.Header) error {
	return &limited{}
}

type limited struct{}

func (*limited) Error() string             { return "rate limit exceeded for tenant 15:0" }
func (*limited) HTTPStatus() int           { return http.StatusTooManyRequests }
func (*limited) RetryAfter() time.Duration { return 1500 * time.Millisecond }

func newGateway(t *testing.T, cluster bool, a Authenticator, l Limiter) (*Gateway, *vmtest.Recorder, *vmtest.Recorder) {
	t.Helper()
	read, write := vmtest.NewRecorder(t), vmtest.NewRecorder(t)
	ru, _ := url.Parse(read.URL)
	wu, _ := url.Parse(write.URL)
	g, err := New(Config{ReadURL: ru, WriteURL: wu, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Cluster: cluster, Auth: a, Limiter: l, AuthHeader: "X-Token"})
	if err != nil {
		t.Fatal(err)
	}
	return g, read, write
}

func serve(g http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct{ Status, ErrorType, Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Status != "error" {
		t.Fatalf("want a JSON error, got %d %q", rec.Code, rec.Body.String())
	}
	return e.Error
}

func TestAuthorize(t *testing.T) {
	restricted, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t15 := tenant.ID{AccountID: 15}
	for _, tc := range []struct {
		name     string
		cluster  bool
		access   auth.Access
		method   string
		path     string
		status   int
		msg      string
		upstream string // read or write: where the request must land, with this path
		path2    string
	}{
		{"read token reads", true, auth.Access{Tenant: t15, Mode: auth.ModeRead}, "GET", "/api/v1/query?query=up", 200, "", "read", "/select/15:0/prometheus/api/v1/query"},
		{"read token writes", true, auth.Access{Tenant: t15, Mode: auth.ModeRead}, "POST", "/api/v1/write", 403, `mode "read" does not allow write API`, "", ""},
		{"write token reads", true, auth.Access{Tenant: t15, Mode: auth.ModeWrite}, "GET", "/api/v1/query?query=up", 403, `mode "write" does not allow read API`, "", ""},
		{"write token writes", true, auth.Access{Tenant: t15, Mode: auth.ModeWrite}, "POST", "/api/v1/import/prometheus", 200, "", "write", "/insert/15:0/prometheus/api/v1/import/prometheus"},
		{"write token deletes", true, auth.Access{Tenant: t15, Mode: auth.ModeWrite}, "POST", "/api/v1/admin/tsdb/delete_series?match[]=up", 403, "admin API", "", ""},
		{"full token deletes", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "POST", "/api/v1/admin/tsdb/delete_series?match[]=up", 200, "", "read", "/delete/15:0/prometheus/api/v1/admin/tsdb/delete_series"},
		{"own tenant in path", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "GET", "/select/15/prometheus/api/v1/labels", 200, "", "read", "/select/15:0/prometheus/api/v1/labels"},
		{"other tenant in path", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "GET", "/select/16/prometheus/api/v1/labels", 403, "the token allows tenant 15:0 only", "", ""},
		{"other project in path", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "POST", "/insert/15:1/prometheus/api/v1/write", 403, "tenant 15:1 in the path", "", ""},
		{"single: tenant 0 path", false, auth.Access{Mode: auth.ModeFull}, "GET", "/select/0/prometheus/api/v1/labels", 200, "", "read", "/prometheus/api/v1/labels"},
		{"single: tenant 5 path", false, auth.Access{Mode: auth.ModeFull}, "GET", "/select/5/prometheus/api/v1/labels", 400, "single-node VictoriaMetrics has no tenants", "", ""},
		{"single: tenant-bound token", false, auth.Access{Tenant: tenant.ID{AccountID: 5}, Mode: auth.ModeFull}, "GET", "/api/v1/labels", 403, "the token is for tenant 5:0, but this gateway serves single-node", "", ""},
		{"restricted token, unenforceable API", false, auth.Access{Mode: auth.ModeFull, Enforcer: restricted}, "GET", "/api/v1/status/top_queries", 403, "", "", ""},
		{"single: top queries", false, auth.Access{Mode: auth.ModeFull}, "GET", "/api/v1/status/top_queries", 200, "", "read", "/prometheus/api/v1/status/top_queries"},
		{"cluster: top queries", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "GET", "/select/15/prometheus/api/v1/status/top_queries?topN=5", 403, "vmselect keeps one list of recent queries for every tenant", "", ""},
		{"cluster: rules", true, auth.Access{Tenant: t15, Mode: auth.ModeRead}, "GET", "/select/15/prometheus/api/v1/rules", 403, "without the tenant, so the answer holds every tenant's rules", "", ""},
		{"cluster: alerts", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "GET", "/api/v1/alerts", 403, "without the tenant, so the answer holds every tenant's rules", "", ""},
		// Its relabel_configs' `if` selectors are parsed unbounded: a million parentheses stopped v1.151 (a review).
		{"metric-relabel-debug", false, auth.Access{Mode: auth.ModeFull}, "POST", "/metric-relabel-debug", 403, "parses the `if` selectors of its relabel_configs", "", ""},
		{"cluster: metric-relabel-debug", true, auth.Access{Tenant: t15, Mode: auth.ModeFull}, "GET", "/select/15/prometheus/metric-relabel-debug", 403, "use it on VictoriaMetrics directly", "", ""},
		{"single: alerts", false, auth.Access{Mode: auth.ModeRead}, "GET", "/api/v1/alerts", 200, "", "read", "/prometheus/api/v1/alerts"},
		{"unknown path", false, auth.Access{Mode: auth.ModeFull}, "GET", "/api/v1/nope", 404, "", "", ""},
		{"multitenant", true, auth.Access{Mode: auth.ModeFull}, "GET", "/select/multitenant/prometheus/api/v1/query?query=up", 403, "multitenant", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.access
			g, read, write := newGateway(t, tc.cluster, fixedAuth{a: &a}, nil)
			rec := serve(g, tc.method, tc.path, "X-Token", "secret", "Authorization", "Bearer x", "AccountID", "99")
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body.String())
			}
			if tc.status != 200 {
				if msg := errorOf(t, rec); !strings.Contains(msg, tc.msg) {
					t.Errorf("error %q, want it to contain %q", msg, tc.msg)
				}
			}
			got := map[string][]vmtest.Recorded{"read": read.Requests(), "write": write.Requests()}
			for side, reqs := range got {
				want := 0
				if side == tc.upstream {
					want = 1
				}
				if len(reqs) != want {
					t.Fatalf("%s upstream got %d requests, want %d", side, len(reqs), want)
				}
				if want == 1 {
					r := reqs[0]
					if r.Path != tc.path2 {
						t.Errorf("forwarded to %s, want %s", r.Path, tc.path2)
					}
					for _, h := range []string{"X-Token", "Authorization", "AccountID"} {
						if r.Header.Get(h) != "" {
							t.Errorf("header %s reached the upstream", h)
						}
					}
				}
			}
		})
	}
}

func TestRejectionsCarryTheirHeaders(t *testing.T) {
	authErr := fixedAuth{err: errors.New("boom")}
	g, read, _ := newGateway(t, false, authErr, nil)
	if rec := serve(g, "GET", "/api/v1/query?query=up"); rec.Code != 500 || len(read.Requests()) != 0 {
		t.Fatalf("an error without a status must be a 500 and forward nothing: %d", rec.Code)
	}
	g, read, _ = newGateway(t, true, fixedAuth{a: &auth.Access{Tenant: tenant.ID{AccountID: 15}, Mode: auth.ModeFull}}, denyAll{})
	rec := serve(g, "GET", "/api/v1/query?query=up")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "2" || len(read.Requests()) != 0 {
		t.Fatalf("limited: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if msg := errorOf(t, rec); !strings.Contains(msg, "15:0") {
		t.Errorf("limit error %q does not name the tenant", msg)
	}
}

// TestNoAuthClusterRoutesByPath: without -enable.auth the gateway is a router, the path names the tenant, and the
// limiter sees that tenant.
func TestNoAuthClusterRoutesByPath(t *testing.T) {
	var seen tenant.ID
	g, read, _ := newGateway(t, true, nil, limiterFunc(func(a *auth.Access, _ route.Route) error { seen = a.Tenant; return nil }))
	if rec := serve(g, "GET", "/select/7:3/prometheus/api/v1/query?query=up"); rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if r := read.Requests(); len(r) != 1 || r[0].Path != "/select/7:3/prometheus/api/v1/query" {
		t.Fatalf("forwarded %+v", r)
	}
	if seen != (tenant.ID{AccountID: 7, ProjectID: 3}) {
		t.Fatalf("limiter saw tenant %s", seen)
	}
}

type limiterFunc func(*auth.Access, route.Route) error

func (f limiterFunc) Admit(a *auth.Access, rt route.Route, _ http.Header) error { return f(a, rt) }

// vouchRecorder is a ResponseWriter that records whether the gateway vouched for its connection.
type vouchRecorder struct {
	*httptest.ResponseRecorder
	vouched bool
}

func (v *vouchRecorder) VouchConnection() { v.vouched = true }

// TestVouchForAuthenticated: the gateway vouches for the connection of a request with a valid token, through the
// access log's writer, and not for one refused at authentication (h1 evicts the idle connections nobody vouched for
// first at -http.maxConnections).
func TestVouchForAuthenticated(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	ru, _ := url.Parse(rec.URL)
	g, err := New(Config{ReadURL: ru, WriteURL: ru, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: byToken{"good": {Mode: auth.ModeFull}}, AuthHeader: "X-Token"})
	if err != nil {
		t.Fatal(err)
	}
	h := accesslog.Wrap(g, nil)
	for _, tc := range []struct {
		token string
		vouch bool
	}{{"good", true}, {"forged", false}, {"", false}} {
		w := &vouchRecorder{ResponseRecorder: httptest.NewRecorder()}
		r := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=up", nil)
		r.Header.Set("X-Token", tc.token)
		h.ServeHTTP(w, r)
		if w.vouched != tc.vouch || (w.Code == 200) != tc.vouch {
			t.Errorf("token %q: %d, vouched %v; want %v", tc.token, w.Code, w.vouched, tc.vouch)
		}
	}
}
