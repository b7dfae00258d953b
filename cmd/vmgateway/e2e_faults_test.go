package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// freshClient opens a new connection for every request and keeps none, so the gateway's connection count
// depends on the gateway alone.
var freshClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// footprint is what a leak would grow: the gateway's open file descriptors and goroutines.
type footprint struct{ fds, goroutines int }

func (f footprint) String() string { return fmt.Sprintf("%d fds, %d goroutines", f.fds, f.goroutines) }

func measure(t testing.TB, g *gw) footprint {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.Pid()))
	if err != nil {
		t.Fatalf("cannot count the gateway's file descriptors: %s", err)
	}
	return footprint{fds: len(entries), goroutines: int(metricValue(t, g, "go_goroutines"))}
}

// metricValue reads one unlabelled or fully labelled series from the gateway's /metrics. A series that is not
// there fails the test: read as 0 it would pass every "is 0" check after the metric was renamed or dropped.
func metricValue(t testing.TB, g *gw, series string) float64 {
	t.Helper()
	v, err := readMetric(g.URL+"/metrics", series)
	if err != nil {
		t.Fatalf("%s", err)
	}
	return v
}

// waitMetric polls the gateway's series for up to 15 s until ok holds of its value, and fails the test with want (what
// ok asks) and the value it last had.
func waitMetric(t testing.TB, g *gw, series, want string, ok func(float64) bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !ok(metricValue(t, g, series)); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v; want %s", series, metricValue(t, g, series), want)
		}
	}
}

func is(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

func readMetric(metricsURL, series string) (float64, error) {
	resp, err := freshClient.Get(metricsURL)
	if err != nil {
		return 0, fmt.Errorf("/metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", series, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading %s: %w", metricsURL, err)
	}
	return 0, fmt.Errorf("%s has no series %s", metricsURL, series)
}

// settlesNear waits until the footprint is back within tolerance of the baseline: connections are closed and
// goroutines end a moment after the responses went out.
func settlesNear(t testing.TB, g *gw, base footprint, tolerance int) footprint {
	t.Helper()
	var now footprint
	deadline := time.Now().Add(15 * time.Second)
	for {
		now = measure(t, g)
		if now.fds <= base.fds+tolerance && now.goroutines <= base.goroutines+tolerance {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("leak: %s before, still %s 15s after the faults (tolerance %d)", base, now, tolerance)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNoLeakAfterUpstreamFaults puts each upstream fault (and the client faults) to a gateway 50 times and checks
// the answer each time and that its file descriptors and goroutines come back to the baseline.
func TestNoLeakAfterUpstreamFaults(t *testing.T) {
	const rounds, tolerance = 50, 8
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	plain := httptest.NewServer(ok)
	t.Cleanup(plain.Close)
	untrusted := httptest.NewTLSServer(ok)
	t.Cleanup(untrusted.Close)
	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hang); hanging.Close() })
	resetting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		_ = conn.(*net.TCPConn).SetLinger(0)
		_ = conn.Close()
	}))
	t.Cleanup(resetting.Close)
	refused := "http://" + vmtest.FreePort(t)

	type fault struct {
		name     string
		upstream string
		flags    []string
		hit      func(t *testing.T, g *gw) string // one fault; returns what the client saw, "" if as expected
	}
	expect := func(status int, inMsg string) func(t *testing.T, g *gw) string {
		return func(t *testing.T, g *gw) string {
			resp, err := freshClient.Get(g.URL + "/api/v1/query?query=up")
			if err != nil {
				return err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != status || !strings.Contains(string(b), inMsg) {
				return fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			return ""
		}
	}
	for _, f := range []fault{
		{"connection refused", refused, nil, expect(http.StatusBadGateway, "cannot reach the read upstream")},
		{"no answer", hanging.URL, []string{"-read.timeout=200ms"}, expect(http.StatusGatewayTimeout, "did not answer in time")},
		{"reset mid-response", resetting.URL, nil, func(t *testing.T, g *gw) string {
			// A fixed-length answer broken off mid-way fails at the client before or after its headers, depending on
			// whether they had left the gateway's buffer; it must never read as complete.
			resp, err := freshClient.Get(g.URL + "/api/v1/export?match[]=up")
			if err != nil {
				return ""
			}
			defer resp.Body.Close()
			if _, err := io.ReadAll(resp.Body); err == nil {
				return "the broken response read as complete"
			}
			return ""
		}},
		{"TLS: plain upstream", strings.Replace(plain.URL, "http:", "https:", 1), nil, expect(http.StatusBadGateway, "TLS handshake with the read upstream")},
		{"TLS: untrusted certificate", untrusted.URL, nil, expect(http.StatusBadGateway, "TLS handshake with the read upstream")},
		{"client cancels", hanging.URL, nil, func(t *testing.T, g *gw) string {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
			resp, err := freshClient.Do(req)
			if err == nil {
				resp.Body.Close()
				return fmt.Sprintf("answered %d instead of hanging until the client gave up", resp.StatusCode)
			}
			return ""
		}},
		{"client sends headers too slowly", plain.URL, []string{"-http.readHeaderTimeout=100ms"}, func(t *testing.T, g *gw) string {
			c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
			if err != nil {
				return err.Error()
			}
			defer c.Close()
			_, _ = io.WriteString(c, "GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n")
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			// The gateway must cut the connection: EOF or a 408, never a wait until our deadline.
			_, err = io.ReadAll(c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "the connection was still open after 10s"
			}
			return ""
		}},
	} {
		t.Run(f.name, func(t *testing.T) {
			g := startGateway(t, append([]string{"-read.url=" + f.upstream, "-write.url=" + f.upstream}, f.flags...)...)
			if msg := f.hit(t, g); msg != "" { // warm up: the first fault builds what every later one reuses
				t.Fatalf("first fault: %s", msg)
			}
			base := measure(t, g)
			var wg sync.WaitGroup
			errs := make(chan string, rounds)
			for i := 0; i < rounds; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if msg := f.hit(t, g); msg != "" {
						errs <- msg
					}
				}()
			}
			wg.Wait()
			close(errs)
			for msg := range errs {
				t.Fatalf("a fault was answered wrongly: %s", msg)
			}
			after := settlesNear(t, g, base, tolerance)
			t.Logf("%s ×%d: %s before, %s after", f.name, rounds, base, after)
			// The gateway still serves: its /health and a metrics scrape answer.
			if code, _, _ := do(t, http.MethodGet, g.URL+"/health", nil); code != 200 {
				t.Fatalf("/health after the faults: %d", code)
			}
		})
	}
}

// TestClientLimitFlags: each client limit flag reaches the gateway and is answered with a JSON error naming it,
// and nothing refused reaches the upstream.
func TestClientLimitFlags(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-http.maxHeaderBytes=4096", "-auth.maxTokenSize=1000", "-search.maxQueryLen=100", "-maxReadBodySize=1000")
	tok := mint(t, priv, "-mode=full")
	bigTok := mint(t, priv, "-mode=full", "-subject="+strings.Repeat("s", 1000))

	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		header []string
		status int
		msg    string
	}{
		{"headers", "GET", "/api/v1/query?query=up", "", append(bearer(tok), "X-Pad", strings.Repeat("p", 5000)), 431, "-http.maxHeaderBytes"},
		{"token", "GET", "/api/v1/query?query=up", "", bearer(bigTok), 401, "-auth.maxTokenSize"},
		{"query", "GET", "/api/v1/query?query=" + strings.Repeat("a", 101), "", bearer(tok), 400, "-search.maxQueryLen"},
		{"match[] in a form", "POST", "/api/v1/series", "match%5B%5D=" + strings.Repeat("a", 101), bearer(tok), 400, "-search.maxQueryLen"},
		{"read body", "POST", "/api/v1/query", "query=up&x=" + strings.Repeat("a", 1000), bearer(tok), 413, "-maxReadBodySize"},
	} {
		code, _, body := do(t, tc.method, g.URL+tc.path, strings.NewReader(tc.body), tc.header...)
		if code != tc.status {
			t.Errorf("%s: %d %s; want %d", tc.name, code, body, tc.status)
			continue
		}
		if _, msg := decodeError(t, body); !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: message %q does not name %s", tc.name, msg, tc.msg)
		}
	}
	if got := rec.Requests(); len(got) != 0 {
		t.Errorf("refused requests reached the upstream: %+v", got)
	}
	// A write body is never limited.
	payload := strings.Repeat("limits_probe 1\n", 1000)
	if code, _, body := do(t, "POST", g.URL+"/api/v1/import/prometheus", strings.NewReader(payload), append(bearer(tok), "Content-Type", "text/plain")...); code/100 != 2 {
		t.Errorf("a %d-byte write: %d %s", len(payload), code, body)
	}
	if got := rec.Requests(); len(got) != 1 || got[0].Body != payload {
		t.Errorf("the write did not reach the upstream whole")
	}
}

// TestConcurrencyFlags: with -maxConcurrentRequests=1 and no queue, a second request while one is in flight gets
// 429 with Retry-After; the rejection is counted, and the in-flight gauge shows the one request.
func TestConcurrencyFlags(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	arrived, release := make(chan struct{}, 10), make(chan struct{})
	rec.Respond(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-maxConcurrentRequests=1", "-maxQueueDuration=0")
	first := make(chan int, 1)
	go func() {
		code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=first", nil)
		first <- code
	}()
	<-arrived
	if n := metricValue(t, g, "vmgateway_concurrent_requests"); n != 1 {
		t.Errorf("vmgateway_concurrent_requests = %v with one request in flight", n)
	}
	code, h, body := do(t, "GET", g.URL+"/api/v1/query?query=second", nil)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("second request: %d Retry-After %q %s", code, h.Get("Retry-After"), body)
	}
	if typ, msg := decodeError(t, body); typ != "too_many_requests" || !strings.Contains(msg, "-maxConcurrentRequests=1") {
		t.Fatalf("second request: %s %s", typ, msg)
	}
	close(release)
	if c := <-first; c != 200 {
		t.Fatalf("first request: %d", c)
	}
	if n := metricValue(t, g, `vmgateway_concurrency_rejected_total{scope="global"}`); n != 1 {
		t.Errorf(`vmgateway_concurrency_rejected_total{scope="global"} = %v, want 1`, n)
	}
	if got := len(rec.Requests()); got != 1 {
		t.Errorf("the upstream saw %d requests, want 1", got)
	}
}

func TestLimitFlagErrors(t *testing.T) {
	for _, flagArg := range []string{"-maxConcurrentRequests=-1", "-search.maxQueryLen=-5", "-maxQueueDuration=-1s", "-auth.maxTokenSize=-1"} {
		out, err := runGatewayOnce("-read.url=http://x", "-write.url=http://x", flagArg)
		name, _, _ := strings.Cut(strings.TrimPrefix(flagArg, "-"), "=")
		if err == nil || !strings.Contains(out, "-"+name) {
			t.Errorf("%s: want a failed start naming the flag, got %v:\n%s", flagArg, err, out)
		}
	}
}

func runGatewayOnce(args ...string) (string, error) {
	out, err := exec.Command(gatewayBin, args...).CombinedOutput()
	return string(out), err
}

// TestClientCancellationReachesUpstream: a client that gives up ends the upstream's request too, through the
// real binary, so a dashboard closed mid-query frees VictoriaMetrics at once.
func TestClientCancellationReachesUpstream(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	started, canceled := make(chan struct{}, 1), make(chan struct{}, 1)
	rec.Respond(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		canceled <- struct{}{}
	})
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/api/v1/query_range?query=up", nil)
	go func() {
		if resp, err := freshClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	cancel()
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request still runs 10s after the client went away")
	}
	// The series appears with its first count, a moment after the upstream saw the cancellation.
	vmtest.Eventually(t, func() (bool, string) {
		n, err := readMetric(g.URL+"/metrics", `vmgateway_upstream_errors_total{upstream="read",reason="client_canceled"}`)
		return err == nil && n == 1, fmt.Sprintf("client_canceled = %v (%v)", n, err)
	})
}

// TestMetricValueFailsOnAbsentSeries: metricValue fails the test for a series the gateway does not export, and
// reads a present one, labelled or not, zero included.
func TestMetricValueFailsOnAbsentSeries(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL)
	do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
	if v := metricValue(t, g, `vmgateway_requests_total{api="query",code="200"}`); v != 1 {
		t.Errorf("requests_total = %v, want 1", v)
	}
	for _, absent := range []string{"vmgateway_no_such_metric_total", `vmgateway_requests_total{api="query",code="599"}`, "vmgateway_requests_total"} {
		ft := &fatalTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			metricValue(ft, g, absent)
		}()
		<-done
		if !strings.Contains(ft.msg, "has no series "+absent) {
			t.Errorf("metricValue(%s) did not fail the test: %q", absent, ft.msg)
		}
	}
}

// fatalTB records Fatalf and ends the goroutine as the real one would, so a check's failure can be tested.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestUpstreamDialTimeout: a read backend that drops connection attempts (its accept queue is full) is given up on
// after -read.dialTimeout, not the 10 s default: the client gets 504 saying the backend did not accept the
// connection in time, and a second backend of the kind serves the next attempt of the same request. A dial timeout
// that is not positive stops the start with a line naming the flag.
func TestUpstreamDialTimeout(t *testing.T) {
	vm := vmtest.Start(t)
	dropping := "http://" + vmtest.Unaccepting(t)
	g := startGateway(t, "-read.url="+dropping, "-write.url="+vm.URL, "-read.dialTimeout=300ms")
	start := time.Now()
	code, _, body := do(t, "GET", g.URL+"/api/v1/query?query=up", nil)
	if took := time.Since(start); code != http.StatusGatewayTimeout || !strings.Contains(body, "did not accept the connection in time") || took > 8*time.Second {
		t.Fatalf("a read backend that drops connections: %d %s after %s; want 504 well before the 10 s default", code, body, took)
	}
	g.stop(syscall.SIGTERM)

	// The timed-out backend is skipped; the request goes on to the next one.
	g = startGateway(t, "-read.url="+dropping, "-read.url="+vm.URL, "-write.url="+vm.URL, "-read.dialTimeout=300ms", "-loadBalancingPolicy=first_available")
	if code, _, body := do(t, "GET", g.URL+"/api/v1/query?query=up", nil); code != 200 {
		t.Fatalf("with a second read backend: %d %s", code, body)
	}

	for _, flagValue := range []string{"-read.dialTimeout=0s", "-write.dialTimeout=-1s"} {
		code, _, stderr := runGatewayExit(t, "-read.url="+vm.URL, "-write.url="+vm.URL, flagValue)
		if code == 0 || !strings.Contains(stderr, flagValue+": want a positive duration") {
			t.Errorf("%s: exit %d, stderr %q", flagValue, code, stderr)
		}
	}
}

// TestStalledReaderFreesSlot: a client that asks for a large export and then reads nothing (its receive window
// full) cannot keep its concurrency slot, nor VictoriaMetrics' request: after -http.answerIdleTimeout the gateway
// cuts it off, the upstream request ends, and the next request gets the slot.
func TestStalledReaderFreesSlot(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	exporting, exportEnded := make(chan struct{}, 1), make(chan struct{}, 1)
	rec.Respond(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/api/v1/export") {
			_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
			return
		}
		defer func() { exportEnded <- struct{}{} }()
		exporting <- struct{}{}
		line := []byte(`{"metric":{"__name__":"up","job":"node"},"values":[1],"timestamps":[1700000000000]}` + "\n")
		chunk := bytes.Repeat(line, (64<<10)/len(line))
		for range 4096 { // about 256 MiB, more than every buffer on the way
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-maxConcurrentRequests=1", "-maxQueueDuration=0",
		"-http.answerIdleTimeout=500ms")
	c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := io.WriteString(c, "GET /api/v1/export?match[]=up HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exporting:
	case <-time.After(10 * time.Second):
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		got, _ := io.ReadAll(c)
		t.Fatalf("the export did not reach the upstream; the gateway answered %q", got)
	}
	if code, _, body := do(t, "GET", g.URL+"/api/v1/query?query=up", nil); code != http.StatusTooManyRequests {
		t.Fatalf("while the export holds the only slot another request got %d %s; want 429", code, body)
	}
	select {
	case <-exportEnded:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream still exports 20s after the client stopped reading, with -http.answerIdleTimeout=500ms")
	}
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, "GET", g.URL+"/api/v1/query?query=up", nil)
		return code == http.StatusOK, fmt.Sprintf("after the stalled client was cut off, the next request got %d %s", code, body)
	})
}
