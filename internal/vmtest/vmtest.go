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
	URL    string
	proc   *Process // the current process
	args   []string // binary first
	dir    string
	starts int
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
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("cannot pick a free port: %w", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr, nil
}

// Start runs victoria-metrics with a temp data dir on a random loopback port and waits until it is ready.
// Extra flags are appended to the command line.
func Start(t testing.TB, flags ...string) *VM {
	t.Helper()
	return startSingle(t, Require(t, Binary), flags)
}

// startSingle runs the single-node server bin as Start describes.
func startSingle(t testing.TB, bin string, flags []string) *VM {
	t.Helper()
	dir := t.TempDir()
	vm, err := startProc(dir, func(addr string) []string {
		return append([]string{
			bin,
			"-storageDataPath=" + filepath.Join(dir, "data"),
			"-httpListenAddr=" + addr,
			"-retentionPeriod=100y",
			"-search.disableCache",
			"-search.latencyOffset=0s",
			"-dedup.minScrapeInterval=0s",
			"-loggerLevel=ERROR",
		}, flags...)
	})
	if err != nil {
		t.Fatalf("%s did not start: %s", bin, err)
	}
	t.Cleanup(vm.Stop)
	return vm
}

// startProc starts a VictoriaMetrics process whose command line args(addr) listens on the HTTP address addr and
// waits until its /health answers. A port picked by FreePort can be taken by someone else before the process
// binds it: it retries a few times on fresh ports.
func startProc(dir string, args func(addr string) []string) (*VM, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		vm := &VM{URL: "http://" + addr, dir: dir, args: args(addr)}
		if lastErr = vm.run(); lastErr == nil {
			return vm, nil
		}
	}
	return nil, lastErr
}

// run starts the process and waits until it is ready; when it is not, the process is gone and the error
// carries its log.
func (vm *VM) run() error {
	vm.starts++
	logf, err := os.Create(filepath.Join(vm.dir, fmt.Sprintf("%s-%d.log", filepath.Base(vm.args[0]), vm.starts)))
	if err != nil {
		return fmt.Errorf("cannot create log file: %w", err)
	}
	cmd := exec.Command(vm.args[0], vm.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := StartProcess(cmd, logf)
	if err != nil {
		return err
	}
	vm.proc = p
	if err := p.WaitReadyAt(30*time.Second, strings.TrimPrefix(vm.URL, "http://"), HTTPOK(vm.URL+"/health")); err != nil {
		p.Stop(os.Kill, 0)
		log, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%s at %s: %w; log:\n%s", filepath.Base(vm.args[0]), vm.URL, err, tail(string(log), 2000))
	}
	return nil
}

// Restart stops VictoriaMetrics if it runs and starts it again on the same port and data dir, as an operator's
// restart or a crash and recovery would; it returns once the new process is ready.
func (vm *VM) Restart(t testing.TB) {
	t.Helper()
	vm.Stop()
	var err error
	// The old process has released the port, but give a slow exit or the OS a few tries.
	for attempt := 0; attempt < 5; attempt++ {
		if err = vm.run(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s did not restart on %s: %s", filepath.Base(vm.args[0]), vm.URL, err)
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

// Stop ends the process early (for outage tests) and waits until it has exited, so the port is closed when it
// returns; the cleanup then finds it gone. Restart brings it back.
func (vm *VM) Stop() { vm.proc.Stop(os.Interrupt, 10*time.Second) }

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
