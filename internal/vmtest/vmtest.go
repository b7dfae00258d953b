// Package vmtest starts a real VictoriaMetrics single-node for tests: a temp data dir, a random loopback port,
// stopped when the test ends.
package vmtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Binary is where the Debian package `victoria-metrics` installs the single-node server.
const Binary = "/usr/bin/victoria-metrics"

// VM is a running VictoriaMetrics single-node.
type VM struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	cmd *exec.Cmd
}

// Require returns the path of a binary the test needs. Without it the test is skipped on a developer machine
// and fails under CI (CI=true), so a missing install step can never hide behind a skip.
func Require(t testing.TB, path string) string {
	t.Helper()
	if p, err := exec.LookPath(path); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required but missing: .ci/run must install it (apt-get install -y victoria-metrics prometheus redis-server)", path)
	}
	t.Skipf("%s is missing; install the Debian package that ships it to run this test", path)
	return ""
}

// FreePort returns a loopback address with a port that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot pick a free port: %s", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Start runs victoria-metrics with a temp data dir on a random loopback port and waits until it is ready.
// Extra flags are appended to the command line.
func Start(t testing.TB, flags ...string) *VM {
	t.Helper()
	bin := Require(t, Binary)
	dir := t.TempDir()
	var lastErr error
	// A port picked by FreePort can be taken by someone else before victoria-metrics binds it: retry a few times.
	for attempt := 0; attempt < 5; attempt++ {
		addr := FreePort(t)
		args := append([]string{
			"-storageDataPath=" + filepath.Join(dir, "data"),
			"-httpListenAddr=" + addr,
			"-retentionPeriod=100y",
			"-search.disableCache",
			"-search.latencyOffset=0s",
			"-dedup.minScrapeInterval=0s",
			"-loggerLevel=ERROR",
		}, flags...)
		cmd := exec.Command(bin, args...)
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("vm-%d.log", attempt)))
		if err != nil {
			t.Fatalf("cannot create log file: %s", err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("cannot start %s: %s", bin, err)
		}
		vm := &VM{URL: "http://" + addr, cmd: cmd}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait(); _ = logf.Close() }()
		if lastErr = vm.waitReady(done); lastErr == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Signal(os.Interrupt)
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
			})
			return vm
		}
		_ = cmd.Process.Kill()
		<-done
		log, _ := os.ReadFile(logf.Name())
		lastErr = fmt.Errorf("%w; log:\n%s", lastErr, tail(string(log), 2000))
	}
	t.Fatalf("victoria-metrics did not start: %s", lastErr)
	return nil
}

func (vm *VM) waitReady(done <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("victoria-metrics exited early: %v", err)
		default:
		}
		resp, err := http.Get(vm.URL + "/health")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("victoria-metrics at %s not ready after 30s", vm.URL)
}

// Flush asks VictoriaMetrics to make recently written data searchable. New series still take about a second
// to become visible (v1.79 registers them in the index in the background): read back with Eventually.
func (vm *VM) Flush(t testing.TB) {
	t.Helper()
	resp, err := http.Get(vm.URL + "/internal/force_flush")
	if err != nil {
		t.Fatalf("force_flush: %s", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("force_flush: status %d", resp.StatusCode)
	}
}

// Eventually polls cond until it reports true or 15 seconds pass, then fails the test with cond's last message.
func Eventually(t testing.TB, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 15s: %s", msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the process early (for outage tests); the cleanup then finds it gone.
func (vm *VM) Stop() {
	_ = vm.cmd.Process.Signal(os.Interrupt)
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
