package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// gatewayBin is the vmgateway binary built once for the end-to-end tests, which run it as a real process.
var gatewayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmgateway-e2e")
	if err != nil {
		panic(err)
	}
	gatewayBin = filepath.Join(dir, "vmgateway")
	// A data race in the gateway shows in the process the tests start, not in the test binary: build it the way
	// the tests are built; startGateway fails the test whose gateway reported a race.
	args := []string{"build", "-o", gatewayBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot build vmgateway: %s\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// raceReport starts what the race detector prints.
const raceReport = "WARNING: DATA RACE"

// gw is a running vmgateway process.
type gw struct {
	*vmtest.Process
	URL  string
	logs *vmtest.Buffer
}

// runGateway starts cmd, a vmgateway serving at url, with its output in the gateway's logs.
func runGateway(t testing.TB, url string, cmd *exec.Cmd) *gw {
	t.Helper()
	g := &gw{URL: url, logs: &vmtest.Buffer{}}
	cmd.Stdout, cmd.Stderr = g.logs, g.logs
	var err error
	if g.Process, err = vmtest.StartProcess(cmd); err != nil {
		t.Fatal(err)
	}
	return g
}

// startGateway runs vmgateway with the given flags on a free loopback port and waits for /health.
func startGateway(t testing.TB, flags ...string) *gw {
	t.Helper()
	return startGatewayEnv(t, nil, flags...)
}

func startGatewayEnv(t testing.TB, env []string, flags ...string) *gw {
	t.Helper()
	var lastLogs string
	for attempt := 0; attempt < 3; attempt++ {
		addr := vmtest.FreePort(t)
		prefix := ""
		for _, f := range flags {
			if p, ok := strings.CutPrefix(f, "-http.pathPrefix="); ok {
				prefix = p
			}
		}
		// The label-truncation check and the backends' capacities and flags are off unless a test's own flag, given
		// later, turns them on: their GET /metrics would be one more request at every recording upstream. So is the spacing
		// of deletes, which the tests of every API's routing send one after another (TestDeletesAreSpaced has it).
		base := []string{"-httpListenAddr=" + addr, "-loggerLevel=DEBUG", "-write.labelTruncationCheckInterval=0", "-read.maxConcurrentRequests=-1", "-read.learnBackendFlags=false",
			"-write.maxConcurrentRequests=-1", "-deleteSeries.minInterval=0"}
		cmd := exec.Command(gatewayBin, append(base, flags...)...)
		cmd.Env = append(os.Environ(), env...)
		g := runGateway(t, "http://"+addr, cmd)
		if g.waitHealthy(prefix) {
			t.Cleanup(func() {
				g.stop(syscall.SIGKILL)
				if logs := g.logs.String(); strings.Contains(logs, raceReport) {
					t.Errorf("the gateway reported a data race:\n%s", logs[strings.Index(logs, raceReport):])
				}
				if t.Failed() {
					t.Logf("vmgateway logs:\n%s", tailLines(g.logs.String(), 40))
				}
			})
			return g
		}
		g.stop(syscall.SIGKILL)
		lastLogs = g.logs.String()
		if !strings.Contains(lastLogs, "address already in use") {
			break
		}
	}
	t.Fatalf("vmgateway did not become healthy; logs:\n%s", lastLogs)
	return nil
}

// logged reports whether the gateway's log holds s within a few seconds. The log reaches the buffer through a pipe
// copied by exec's goroutine, so a line written just before a response may arrive after the client has read it.
func (g *gw) logged(s string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(g.logs.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func (g *gw) waitHealthy(prefix string) bool {
	return g.WaitReadyAt(15*time.Second, strings.TrimPrefix(g.URL, "http://"), vmtest.HTTPOK(g.URL+prefix+"/health")) == nil
}

func (g *gw) stop(sig syscall.Signal) { g.Stop(sig, 20*time.Second) }

// rssKiB reads a process's current and peak resident memory from /proc.
func rssKiB(t testing.TB, pid int) (cur, peak int) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("cannot read process status: %s", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "VmRSS:":
			cur = n
		case "VmHWM:":
			peak = n
		}
	}
	return cur, peak
}

// do sends a request and returns status, headers and body.
func do(t testing.TB, method, url string, body io.Reader, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("bad request %s %s: %s", method, url, err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if method == http.MethodPost && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %s", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func netListen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// TestGatewayBuiltLikeTheTests: under -race the gateway the e2e tests start is a race build too, so a data race in
// the gateway fails them; without -race it is a plain build.
func TestGatewayBuiltLikeTheTests(t *testing.T) {
	out, err := exec.Command("go", "version", "-m", gatewayBin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %s\n%s", err, out)
	}
	if got := strings.Contains(string(out), "-race=true"); got != raceEnabled {
		t.Fatalf("the tests run with race=%v but the gateway binary's build settings say:\n%s", raceEnabled, out)
	}
}

// flood sends requests on conns connections of their own, each calling send with its client again and again until
// the returned stop is called (which waits for them) or send returns false.
func flood(conns int, send func(*http.Client) bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for {
				select {
				case <-done:
					return
				default:
				}
				if !send(client) {
					return
				}
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}
