package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newTestServer(t *testing.T, cfg Config) (*Server, *[]string) {
	t.Helper()
	var seen []string
	cfg.ListenAddrs = []string{"127.0.0.1:0"}
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.EscapedPath())
	})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, &seen
}

func TestPathPrefix(t *testing.T) {
	s, seen := newTestServer(t, Config{PathPrefix: "/gw/"})
	for _, tc := range []struct {
		target string
		code   int
		passed string
	}{
		{"/gw/api/v1/query", 200, "/api/v1/query"},
		{"/gw", 200, "/"},
		{"/gw/api/v1/label/a%2Fb/values", 200, "/api/v1/label/a%2Fb/values"},
		{"/gwx/api/v1/query", 404, ""},
		{"/api/v1/query", 404, ""},
		{"/%67w/api/v1/query", 200, "/api/v1/query"},
		{"/gw/health", 200, ""},
		{"/health", 404, ""},
	} {
		*seen = nil
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", tc.target, nil))
		if rec.Code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.target, rec.Code, tc.code)
		}
		if tc.passed == "" && len(*seen) != 0 || tc.passed != "" && (len(*seen) != 1 || (*seen)[0] != tc.passed) {
			t.Errorf("%s: handler saw %q, want %q", tc.target, *seen, tc.passed)
		}
	}
}

func TestOwnEndpointProtection(t *testing.T) {
	s, seen := newTestServer(t, Config{BasicAuthUsername: "u", BasicAuthPassword: "p", MetricsAuthKey: "mk"})
	check := func(target string, user, pass string, want int) {
		t.Helper()
		req := httptest.NewRequest("GET", target, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s as %q: %d, want %d: %s", target, user, rec.Code, want, rec.Body.String())
		}
	}
	check("/metrics", "u", "p", 401)          // the key overrides basic auth
	check("/metrics?authKey=mk", "", "", 200) // and needs no basic auth
	check("/metrics?authKey=MK", "", "", 401) // exact match
	check("/debug/pprof/", "", "", 401)       // no pprof key: basic auth protects it
	check("/debug/pprof/", "u", "p", 200)     // and opens it
	check("/api/v1/query", "u", "wrong", 401) // proxied requests need basic auth
	check("/api/v1/query", "u", "p", 200)
	check("/health", "", "", 200) // health is always open, for balancers
	if len(*seen) != 1 {
		t.Fatalf("proxied handler ran %d times, want once", len(*seen))
	}
}

func TestHealthDuringShutdown(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	s.stopping.Store(true)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "shutting down") {
		t.Fatalf("/health while stopping: %d %q", rec.Code, rec.Body.String())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "-httpListenAddr is empty"},
		{Config{ListenAddrs: []string{":0"}, PathPrefix: "gw"}, "-http.pathPrefix"},
		{Config{ListenAddrs: []string{":0"}, BasicAuthPassword: "p"}, "-httpAuth.password is set without -httpAuth.username"},
		{Config{ListenAddrs: []string{":0"}, TLS: func(int) bool { return true }, TLSCertFile: func(int) string { return "" }, TLSKeyFile: func(int) string { return "" }}, "-tlsCertFile and -tlsKeyFile"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate %+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestMayBeOwnMissesNoOwnPath: a path mayBeOwn lets pass the mux by is one the mux would not route to an own
// endpoint, whatever its escapes, dots, slashes or method; and the own paths do reach the mux.
func TestMayBeOwnMissesNoOwnPath(t *testing.T) {
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	s, _ := newTestServer(t, Config{Extra: []Endpoint{{Path: "/-/reload", Handler: noop}, {Path: "/status", Handler: noop, Open: true},
		{Path: "/ratelimit/status", Handler: noop}}})
	skipped := 0
	for _, target := range []string{
		"/api/v1/query", "/api/v1/query_range", "/prometheus/api/v1/query", "/select/0/prometheus/api/v1/query",
		"/api/v1/label/a%2Fb/values", "/api/v1/import/prometheus", "/vmui/", "/vmui", "/", "/federate", "/insert/0/prometheus",
		"/health", "/health/", "/healthz", "/heal%74h", "/%68ealth", "/x/../health", "/./health", "//health", "/health/.",
		"/metrics", "/metric", "/metrics/", "/debug/pprof", "/debug/pprof/", "/debug/pprof/heap", "/debug/pprofx", "/debug",
		"/debug%2Fpprof/", "/debug/pprof%2F", "/debug/./pprof/", "/debug//pprof/", "/-/reload", "/-/reloadx", "/%2D/reload",
		"/status", "/status/", "/statusx", "/ratelimit/status", "/ratelimit/status/", "/ratelimit", "/ratelimit/", "/stat%75s",
		"/api/v1/query/.", "/api/v1/query/..", "/api/v1/%2E%2E/%2E%2E/health", "/api/v1/%2e./health", "/a%20b", "/%C3%A9",
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodConnect, http.MethodOptions} {
			r := httptest.NewRequest(method, target, nil)
			if s.mayBeOwn(r.Method, r.URL.Path) {
				continue
			}
			skipped++
			if h, pattern := s.ownHandler(r, r.URL.Path); h != nil {
				t.Errorf("%s %s: mayBeOwn lets it pass the mux, which routes it to own endpoint %q", method, target, pattern)
			}
		}
	}
	if skipped == 0 {
		t.Fatal("mayBeOwn sent every path to the mux")
	}
	for _, p := range []string{"/health", "/metrics", "/debug/pprof/heap", "/debug/pprof", "/-/reload", "/status", "/ratelimit/status"} {
		if !s.mayBeOwn(http.MethodGet, p) {
			t.Errorf("own path %s does not reach the mux", p)
		}
	}
}
