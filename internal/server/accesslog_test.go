package server

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestServerRefusalsLogged: what the server refuses before the gateway sees a request (outside the path prefix,
// headers too large, a bad auth key) and its own endpoints get an access-log line and a request id too.
func TestServerRefusalsLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := accesslog.Open(accesslog.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{ListenAddrs: []string{"127.0.0.1:0"}, MaxHeaderBytes: 8 << 10, ReadHeaderTimeout: 10 * time.Second,
		MaxGracefulShutdown: time.Second, PathPrefix: "/gw", MetricsAuthKey: "k", AccessLog: l,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addrs()[0].String()
	for _, tc := range []struct {
		id, path, big string
		code          int
	}{
		{"outside", "/other", "", 404},
		{"big", "/gw/api/v1/query", strings.Repeat("a", 9<<10), 431},
		{"metrics-key", "/gw/metrics?authKey=wrong", "", 401},
		{"health", "/gw/health", "", 200},
		{"proxied", "/gw/api/v1/query", "", 204},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
		req.Header.Set("X-Request-Id", tc.id)
		if tc.big != "" {
			req.Header.Set("X-Big", tc.big)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error, RequestID string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("X-Request-Id") != tc.id || tc.code >= 400 && e.RequestID != tc.id {
			t.Errorf("%s: %d, X-Request-Id %q, error %+v", tc.id, resp.StatusCode, resp.Header.Get("X-Request-Id"), e)
		}
	}
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := vmtest.JSONLines(t, path, "request_id")
	for id, want := range map[string][3]string{"outside": {"404", "", `path "/other" is outside -http.pathPrefix="/gw"`},
		"big": {"431", "", "the request line and headers are"}, "metrics-key": {"401", "/metrics", "/metrics needs the authKey"},
		"health": {"200", "/health", ""}, "proxied": {"204", "", ""}} {
		m := got[id]
		if m == nil {
			t.Errorf("%s: no line", id)
			continue
		}
		if status, _ := json.Marshal(m["status"]); string(status) != want[0] || m["api"] != want[1] || !strings.HasPrefix(m["reason"].(string), want[2]) ||
			(want[2] == "" && m["reason"] != "") {
			t.Errorf("%s: status %v, api %q, reason %q; want %v", id, m["status"], m["api"], m["reason"], want)
		}
	}
	if m := got["proxied"]; m != nil && m["path"] != "/gw/api/v1/query" {
		t.Errorf("path %q: want the client's, prefix included", m["path"])
	}
}
