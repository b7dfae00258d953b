package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

const (
	limit10  = "limits:\n  - {type: queries, value: 10}\n"
	limit100 = "limits:\n  - {type: queries, value: 100}\n"
	broken   = "limits:\n  - {type: queries, value: 100}\n  - {type: queries, value: -1, account_id: 1}\n"
)

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, path, limit10)
	g := newTestGate(t, "", Config{ConfigPath: path})
	usage := map[usageKey]float64{{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 50}
	g.setUsage(usage)
	blocked := func() bool { return g.check(access(tid(1, 0)), rt(route.Read)) != nil }
	if !blocked() {
		t.Fatal("tenant 1:0 at 50 queries allowed under a limit of 10")
	}

	// A valid new config takes effect at once, with the usage already fetched.
	writeFile(t, path, limit100)
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if blocked() {
		t.Fatal("tenant 1:0 still blocked after the limit was raised to 100")
	}
	if g.metrics.reloadsOK.Get() != 2 || g.metrics.lastReloadOK.Get() != 1 {
		t.Errorf("reloads success %d, last successful %v; want 2 and 1", g.metrics.reloadsOK.Get(), g.metrics.lastReloadOK.Get())
	}

	// An invalid config is rejected with its line; the limits in force stay.
	writeFile(t, path, broken)
	err := g.Reload()
	if err == nil || !strings.Contains(err.Error(), "limits.yaml:3: value: want a positive integer (or unlimited, in a tenant's limit), got -1") ||
		!strings.Contains(err.Error(), "the previous limits stay in force") {
		t.Fatalf("got %v", err)
	}
	if g.metrics.reloadsErr.Get() != 1 || g.metrics.lastReloadOK.Get() != 0 {
		t.Errorf("reloads error %d, last successful %v; want 1 and 0", g.metrics.reloadsErr.Get(), g.metrics.lastReloadOK.Get())
	}
	g.setUsage(map[usageKey]float64{{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 99})
	if blocked() || len(g.snap.Load().limits.All()) != 1 {
		t.Fatal("the invalid config replaced the limits in force")
	}
	g.setUsage(map[usageKey]float64{{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 100})
	if !blocked() {
		t.Fatal("the old limit of 100 no longer applies")
	}

	// The periodic check does not report the same broken content again.
	_ = g.reload(false)
	if g.metrics.reloadsErr.Get() != 1 {
		t.Errorf("unchanged broken config reported again: reloads error %d, want 1", g.metrics.reloadsErr.Get())
	}
	// Mended: the periodic check picks it up.
	writeFile(t, path, limit10)
	if err := g.reload(false); err != nil {
		t.Fatal(err)
	}
	g.setUsage(map[usageKey]float64{{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 10})
	if !blocked() || g.metrics.lastReloadOK.Get() != 1 {
		t.Error("the mended config of limit 10 is not in force")
	}
}

func TestReloadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, path, limit10)
	g := newTestGate(t, "", Config{ConfigPath: path})
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	err := g.reload(false)
	if err == nil || !strings.Contains(err.Error(), "cannot read the limits config") {
		t.Fatalf("got %v", err)
	}
	if len(g.snap.Load().limits.All()) != 1 || g.metrics.reloadsErr.Get() != 1 {
		t.Error("the limits in force changed, or the error was not counted")
	}
	// The same content back: loaded again, the gauge recovers.
	if err := os.Rename(path+".moved", path); err != nil {
		t.Fatal(err)
	}
	if err := g.reload(false); err != nil || g.metrics.lastReloadOK.Get() != 1 {
		t.Fatalf("got %v, last successful %v", err, g.metrics.lastReloadOK.Get())
	}
}

func TestConfigCheckInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, path, limit10)
	g := newTestGate(t, "", Config{ConfigPath: path, ConfigCheckInterval: 20 * time.Millisecond})
	g.Start()
	writeFile(t, path, limit100)
	vmtest.Eventually(t, func() (bool, string) {
		l := g.snap.Load().limits.All()
		return len(l) == 1 && l[0].Value == 100, "limit still 10"
	})
}

// configServer serves a limits config over HTTP.
type configServer struct {
	mu     sync.Mutex
	body   string
	status int
}

func (c *configServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != 0 {
		w.WriteHeader(c.status)
		return
	}
	_, _ = w.Write([]byte(c.body))
}

func (c *configServer) set(body string, status int) {
	c.mu.Lock()
	c.body, c.status = body, status
	c.mu.Unlock()
}

func TestConfigFromURL(t *testing.T) {
	cs := &configServer{body: limit10}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1) + "/limits.yaml?token=k3y"
	shown := srv.URL + "/limits.yaml"

	if err := limitfile.ValidateFile(u); err != nil {
		t.Fatal(err)
	}
	g := newTestGate(t, "", Config{ConfigPath: u})
	if l := g.snap.Load().limits.All(); len(l) != 1 || l[0].Value != 10 {
		t.Fatalf("limits %+v", l)
	}
	cs.set(limit100, 0)
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if l := g.snap.Load().limits.All(); l[0].Value != 100 {
		t.Fatalf("limit %d after reload, want 100", l[0].Value)
	}
	for _, tc := range []struct {
		body   string
		status int
		want   string
	}{
		{"", http.StatusNotFound, "cannot fetch the limits config from " + shown + ": unexpected status 404 Not Found"},
		{broken, 0, shown + ":3: value: want a positive integer (or unlimited, in a tenant's limit), got -1"},
	} {
		cs.set(tc.body, tc.status)
		err := g.Reload()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error with %q", err, tc.want)
		} else if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "k3y") {
			t.Errorf("error %q shows a credential", err)
		}
		if err := limitfile.ValidateFile(u); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateFile: got %v, want an error with %q", err, tc.want)
		}
		if l := g.snap.Load().limits.All(); l[0].Value != 100 {
			t.Errorf("limit %d after a failed reload, want 100", l[0].Value)
		}
	}

	// A server that is not there.
	addr := vmtest.FreePort(t)
	err := limitfile.ValidateFile("http://" + addr + "/limits.yaml")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("got %v", err)
	}
}

func TestValidateFile(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.yaml"), limit10)
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), `limits:
  - {type: queries, value: 0}
  - {type: rows, value: 1}
`)
	if err := limitfile.ValidateFile(good); err != nil {
		t.Errorf("valid file: %v", err)
	}
	err := limitfile.ValidateFile(bad)
	if err == nil {
		t.Fatal("invalid file passed")
	}
	for _, want := range []string{"2 errors in the limits config " + bad, bad + ":2: value: want a positive integer (or unlimited, in a tenant's limit), got 0", bad + `:3: type: want one of`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := limitfile.ValidateFile(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}
