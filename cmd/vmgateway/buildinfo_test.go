package main

import (
	"bufio"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestBuildInfo: a binary built the way `make build` builds it (-X main.version=<git describe>) prints that version
// with -version and exports it in vmgateway_build_info, beside an uptime that grows.
func TestBuildInfo(t *testing.T) {
	const v = "v1.2.3-4-gabcdef0-dirty"
	bin := filepath.Join(t.TempDir(), "vmgateway")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("cannot build vmgateway with a version: %s\n%s", err, out)
	}
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil || string(out) != "vmgateway "+v+"\n" {
		t.Fatalf("-version printed %q (%v), want %q", out, err, "vmgateway "+v+"\n")
	}

	addr := vmtest.FreePort(t)
	// The upstreams are never called: only the gateway's own /metrics is read.
	g := runGateway(t, "http://"+addr, exec.Command(bin, "-httpListenAddr="+addr, "-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1"))
	t.Cleanup(func() { g.stop(syscall.SIGTERM) })
	if !g.waitHealthy("") {
		t.Fatalf("vmgateway did not become healthy; logs:\n%s", g.logs.String())
	}

	m := scrapeOwnMetrics(t, g.URL)
	if got, ok := m[`vmgateway_build_info{version="`+v+`"}`]; !ok || got != 1 {
		t.Errorf("want vmgateway_build_info{version=%q} 1 on /metrics; build_info lines: %v", v, linesWith(m, "vmgateway_build_info"))
	}
	if n := len(linesWith(m, "vmgateway_build_info")); n != 1 {
		t.Errorf("want exactly one vmgateway_build_info series, got %d", n)
	}
	first, ok := m["vmgateway_app_uptime_seconds"]
	if !ok || first < 0 || first > 60 {
		t.Fatalf("vmgateway_app_uptime_seconds = %v (present: %v), want the few seconds since start", first, ok)
	}
	time.Sleep(1100 * time.Millisecond)
	second, ok := scrapeOwnMetrics(t, g.URL)["vmgateway_app_uptime_seconds"]
	if !ok || second < first+1 {
		t.Errorf("vmgateway_app_uptime_seconds went from %v to %v in 1.1s (present: %v), want it to grow by at least 1", first, second, ok)
	}
}

// scrapeOwnMetrics reads the gateway's /metrics into series → value; an absent series is absent, never 0.
func scrapeOwnMetrics(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %s", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.StatusCode)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		f, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %s", line, err)
		}
		m[line[:i]] = f
	}
	return m
}

func linesWith(m map[string]float64, prefix string) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}
