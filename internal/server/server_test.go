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
