package querylimits

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// TestLimiterURL loads the config from an http URL, re-reads it every check interval, and keeps the limits in
// force when the new content is invalid or the URL fails.
func TestLimiterURL(t *testing.T) {
	var mu sync.Mutex
	body, status := "limits:\n  - max_query_lookback: 1d\n", http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	set := func(b string, s int) { mu.Lock(); body, status = b, s; mu.Unlock() }

	l, err := New(srv.URL+"/limits.yaml?token=secret", 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Stop()
	rt := mustRoute(t, "/api/v1/query")
	refused := func() bool {
		_, err := l.Check(limited, rt, enforce.Args{URL: url.Values{"query": {"rate(x[2d])"}}}, time.Now())
		return err != nil
	}
	if !refused() {
		t.Fatal("2d under a 1d lookback was served")
	}
	set("limits:\n  - max_query_lookback: 3d\n", http.StatusOK)
	waitFor(t, func() bool { return !refused() }, "the new 3d lookback was not loaded")

	set("limits:\n  - max_query_lookback: 3\n", http.StatusOK)
	err = l.Reload()
	if err == nil || !strings.Contains(err.Error(), "/limits.yaml:2: max_query_lookback") || strings.Contains(err.Error(), "secret") {
		t.Errorf("reload of an invalid config: %v; want the line, and the URL without its query", err)
	}
	set("", http.StatusInternalServerError)
	if err := l.Reload(); err == nil || !strings.Contains(err.Error(), "unexpected status") {
		t.Errorf("reload from a failing URL: %v", err)
	}
	if refused() {
		t.Error("the 3d lookback in force was dropped by a failed reload")
	}

	if _, err := New("", 0); err == nil {
		t.Error("an empty path was accepted")
	}
	if _, err := New(srv.URL, -time.Second); err == nil {
		t.Error("a negative check interval was accepted")
	}
}

func waitFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal(msg)
}

// TestLimiterMissingFile: a config that cannot be read is named as the query limits config, not another one.
func TestLimiterMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	if _, err := New(path, 0); err == nil || !strings.HasPrefix(err.Error(), "cannot read the query limits config: ") {
		t.Fatalf("New(%s): %v, want it to name the query limits config", path, err)
	}
}
