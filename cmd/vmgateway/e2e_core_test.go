package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestWriteAndReadBackThroughGateway writes through the gateway in five formats (one of them by vmagent, a real
// remote_write client) into a real VictoriaMetrics and reads everything back through the gateway.
func TestWriteAndReadBackThroughGateway(t *testing.T) {
	vm := vmtest.Start(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL)
	now := time.Now().UnixMilli()

	writes := []struct{ path, contentType, body string }{
		{"/api/v1/import/prometheus", "text/plain", `e2e_prom{src="prom"} 1` + "\n"},
		{"/influx/write", "text/plain", "e2e_influx,src=influx value=2\n"},
		{"/api/v1/import", "application/json", fmt.Sprintf(`{"metric":{"__name__":"e2e_json","src":"json"},"values":[3],"timestamps":[%d]}`, now) + "\n"},
		{"/api/v1/import/csv?format=1:label:src,2:metric:e2e_csv", "text/csv", "csv,4\n"},
		{"/prometheus/api/v1/import/prometheus", "text/plain", `e2e_prefixed{src="prefixed"} 5` + "\n"},
	}
	for _, w := range writes {
		code, _, body := do(t, http.MethodPost, g.URL+w.path, strings.NewReader(w.body), "Content-Type", w.contentType)
		if code/100 != 2 {
			t.Fatalf("write %s: status %d: %s", w.path, code, body)
		}
	}
	// vmagent speaks Prometheus remote_write to the gateway's /api/v1/write.
	agent := startVMAgent(t, g.URL+"/api/v1/write")
	code, _, body := do(t, http.MethodPost, agent+"/api/v1/import/prometheus", strings.NewReader(`e2e_remote{src="vmagent"} 6`+"\n"), "Content-Type", "text/plain")
	if code/100 != 2 {
		t.Fatalf("write into vmagent: %d %s", code, body)
	}
	vm.Flush(t)

	want := map[string]string{"e2e_prom": "1", "e2e_influx_value": "2", "e2e_json": "3", "e2e_csv": "4", "e2e_prefixed": "5", "e2e_remote": "6"}
	for name, value := range want {
		vmtest.Eventually(t, func() (bool, string) {
			vm.Flush(t)
			code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query="+url.QueryEscape(name), nil)
			return code == 200 && strings.Contains(body, `"`+value+`"]`), fmt.Sprintf("query %s: %d %s", name, code, body)
		})
	}
	// The other read APIs, with and without the /prometheus prefix, and as a POST form.
	reads := []struct{ method, path, form, want string }{
		{"GET", "/prometheus/api/v1/export?match[]=e2e_json", "", `"values":[3]`},
		{"GET", "/api/v1/series?match[]=%7Bsrc%3D%22csv%22%7D", "", `"__name__":"e2e_csv"`},
		{"GET", "/api/v1/labels", "", `"src"`},
		{"GET", "/prometheus/api/v1/label/src/values", "", `"vmagent"`},
		{"GET", "/federate?match[]=e2e_prom", "", `e2e_prom{src="prom"} 1`},
		{"POST", "/api/v1/query", "query=e2e_influx_value", `"2"]`},
		{"POST", "/prometheus/api/v1/query_range", fmt.Sprintf("query=e2e_prom&start=%d&end=%d&step=15s", now/1000-300, now/1000+60), `"matrix"`},
	}
	for _, rd := range reads {
		var b io.Reader
		if rd.form != "" {
			b = strings.NewReader(rd.form)
		}
		code, _, body := do(t, rd.method, g.URL+rd.path, b)
		if code != 200 || !strings.Contains(body, rd.want) {
			t.Errorf("%s %s: %d, want %q in %s", rd.method, rd.path, code, rd.want, body)
		}
	}
	// promtool, a real Prometheus API client, queries through the gateway.
	promtool := vmtest.Require(t, "/usr/bin/promtool")
	out, err := exec.Command(promtool, "query", "instant", g.URL, "e2e_csv").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `e2e_csv{src="csv"} => 4`) {
		t.Errorf("promtool query instant: %v\n%s", err, out)
	}
}

func startVMAgent(t *testing.T, remoteWriteURL string, extra ...string) string {
	t.Helper()
	return startClient(t, "/usr/bin/vmagent", append([]string{"-remoteWrite.url=" + remoteWriteURL,
		"-remoteWrite.tmpDataPath=" + t.TempDir(), "-remoteWrite.flushInterval=100ms"}, extra...)...)
}

func startVMAlert(t *testing.T, flags ...string) string {
	t.Helper()
	return startClient(t, "/usr/bin/vmalert", append([]string{"-notifier.url=http://127.0.0.1:1"}, flags...)...)
}

// startClient runs a VictoriaMetrics tool (vmagent, vmalert) on a free port until the test ends and returns its
// base URL once it answers /health.
func startClient(t *testing.T, path string, flags ...string) string {
	t.Helper()
	return runClient(t, path, flags...).URL
}

// clientProc is a VictoriaMetrics tool runClient started, which a test may also stop early.
type clientProc struct {
	*vmtest.Process
	URL  string
	logs *vmtest.Buffer
}

// runClient is startClient's tool itself. It logs errors only, unless flags give another -loggerLevel.
func runClient(t *testing.T, path string, flags ...string) *clientProc {
	t.Helper()
	bin := vmtest.Require(t, path)
	name := filepath.Base(path)
	addr := vmtest.FreePort(t)
	cmd := exec.Command(bin, append([]string{"-httpListenAddr=" + addr, "-loggerLevel=ERROR"}, flags...)...)
	c := &clientProc{URL: "http://" + addr, logs: &vmtest.Buffer{}}
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	var err error
	if c.Process, err = vmtest.StartProcess(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop(os.Kill, 0)
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, tailLines(c.logs.String(), 30))
		}
	})
	if err := c.WaitReadyAt(15*time.Second, addr, vmtest.HTTPOK(c.URL+"/health")); err != nil {
		t.Fatalf("%s on %s: %s; logs:\n%s", name, addr, err, tailLines(c.logs.String(), 30))
	}
	return c
}

// stop ends the tool as an operator's restart would, and waits until it has exited.
func (c *clientProc) stop() { c.Stop(os.Interrupt, 10*time.Second) }

func decodeError(t *testing.T, body string) (errType, msg string) {
	t.Helper()
	var e struct{ Status, ErrorType, Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Status != "error" {
		t.Fatalf("want a Prometheus-style JSON error, got %q", body)
	}
	return e.ErrorType, e.Error
}

func TestUnknownPathIsRefusedAndNotForwarded(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL)
	for _, p := range []string{"/nope", "/api/v1/nope", "/api/v2/query", "/internal/force_merge", "/snapshot/create", "/metrics/../snapshot/delete_all",
		"/api/v1/admin/tsdb/snapshot", "/flags", "/prometheus/../internal/resetRollupResultCache"} {
		code, _, body := do(t, http.MethodGet, g.URL+p, nil)
		if code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404: %s", p, code, body)
			continue
		}
		if typ, _ := decodeError(t, body); typ != "not_found" {
			t.Errorf("GET %s: errorType %q", p, typ)
		}
	}
	// VictoriaMetrics' /-/reload is the gateway's own reload: disabled without -reloadAuthKey, never forwarded.
	if code, _, body := do(t, http.MethodPost, g.URL+"/-/reload", nil); code != http.StatusForbidden {
		t.Errorf("POST /-/reload: status %d, want 403 (the gateway's own, disabled): %s", code, body)
	}
	if got := rec.Requests(); len(got) != 0 {
		t.Fatalf("unknown paths reached the upstream: %+v", got)
	}
}

// TestDeadUpstreamGives502WithoutCredentials: the client learns which kind of upstream failed and the request id;
// the gateway's log names the backend under that id, without its credentials.
func TestDeadUpstreamGives502WithoutCredentials(t *testing.T) {
	dead := "http://admin:s3cret@" + vmtest.FreePort(t)
	g := startGateway(t, "-read.url="+dead, "-write.url="+dead)
	code, h, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
	if code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", code, body)
	}
	typ, msg := decodeError(t, body)
	host := strings.TrimPrefix(dead, "http://admin:s3cret@")
	id := h.Get("X-Request-Id")
	if typ != "unavailable" || !strings.Contains(msg, "cannot reach the read upstream") || id == "" || !strings.Contains(msg, "request id "+id) ||
		strings.Contains(body, host) || strings.Contains(body, "s3cret") || strings.Contains(body, "admin") {
		t.Fatalf("want an error naming the read upstream and request id %q, without its address or credentials, got %s", id, body)
	}
	if !g.logged("request_id="+id) || !strings.Contains(g.logs.String(), "upstream=http://"+host) || strings.Contains(g.logs.String(), "s3cret") {
		t.Fatalf("the log must name http://%s under request id %s, without the password", host, id)
	}
}

func TestSlowUpstreamGives504(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rec.Respond(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-read.timeout=300ms")
	code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
	if code != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504: %s", code, body)
	}
	if typ, _ := decodeError(t, body); typ != "timeout" {
		t.Fatalf("errorType %q", typ)
	}
}

// TestReadTimeoutKeepsTheSlot: a read whose answer does not begin within -read.timeout gets its 504, but keeps its slot
// at the read backends until the backend answers, as VictoriaMetrics computes a query to its end whatever its client
// does: the next read is forwarded only then. A backend that never answers has the slot back after ten timeouts.
func TestReadTimeoutKeepsTheSlot(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	var slowAnswered, hangClosed, quickArrived atomic.Int64
	rec.Respond(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("query") {
		case "slow":
			time.Sleep(1500 * time.Millisecond) // computing on, as VictoriaMetrics does
			slowAnswered.Store(time.Now().UnixNano())
		case "hang":
			<-r.Context().Done()
			hangClosed.Store(time.Now().UnixNano())
			return
		default:
			quickArrived.Store(time.Now().UnixNano())
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-read.timeout=300ms",
		"-read.maxConcurrentRequests=1", "-read.maxQueueDuration=8s")
	for _, slow := range []string{"slow", "hang"} {
		quickArrived.Store(0)
		start := time.Now()
		if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query="+slow, nil); code != http.StatusGatewayTimeout {
			t.Fatalf("%s: %d %s; want 504", slow, code, body)
		}
		if d := time.Since(start); d > 1200*time.Millisecond {
			t.Errorf("%s: the 504 came after %s, past -read.timeout=300ms", slow, d)
		}
		if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=quick", nil); code != 200 {
			t.Fatalf("the read after %s: %d %s", slow, code, body)
		}
		freed := slowAnswered.Load()
		if slow == "hang" {
			// Freed as the gateway gives up and closes the connection, which the backend sees a moment later.
			freed = start.Add(10 * 300 * time.Millisecond).UnixNano()
			vmtest.Eventually(t, func() (bool, string) {
				return hangClosed.Load() != 0, "the connection of the read that never got its answer is still open"
			})
		}
		if quick := quickArrived.Load(); freed == 0 || quick < freed {
			t.Errorf("the read after %s reached the backend at %d, before the backend was done with %s (%d): the slot was freed "+
				"while the backend still worked", slow, quick, slow, freed)
		}
	}
	waitMetric(t, g, "vmgateway_read_backend_timeouts_kept_total", "two reads kept", is(2))
	waitMetric(t, g, "vmgateway_read_backend_requests", "no read in flight", is(0))
}

// TestKeptReadsOfAHungBackend: a read kept past its timeout counts as in flight at its backend until that answers, so
// least_loaded sends the next reads to the other backend; a backend that hangs does not draw every read into slots
// it never frees while the other one serves (found by an attacker's review).
func TestKeptReadsOfAHungBackend(t *testing.T) {
	healthy, hung := vmtest.NewRecorder(t), vmtest.NewRecorder(t)
	hung.Respond(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	g := startGateway(t, "-read.url="+hung.URL, "-read.url="+healthy.URL, "-write.url="+healthy.URL, "-read.timeout=300ms",
		"-read.maxConcurrentRequests=4", "-read.maxQueueDuration=1s")
	codes := map[int]int{}
	for i := 0; i < 16; i++ {
		code, _, _ := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
		codes[code]++
	}
	if codes[http.StatusTooManyRequests] > 0 || codes[200] < 14 {
		t.Errorf("16 reads, one backend hung: %v; want every read but the first one or two answered by the other", codes)
	}
}

// TestForwardedRequest checks exactly what reaches the upstream: the gateway's own path, the upstream's Host,
// X-Forwarded-For from the connection, no client credentials or tenant headers, the body byte for byte.
func TestForwardedRequest(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL+"/base/", "-write.url="+rec.URL)
	recHost := strings.TrimPrefix(rec.URL, "http://")

	code, _, body := do(t, http.MethodGet, g.URL+"/prometheus/api/v1/query?query=up&time=123", nil,
		"Authorization", "Bearer secret-token", "AccountID", "7", "ProjectID", "8", "X-Forwarded-For", "6.6.6.6", "Host", "evil.example")
	if code != 200 {
		t.Fatalf("query: %d %s", code, body)
	}
	payload := bytes.Repeat([]byte("e2e_payload 1\n"), 1000)
	code, _, body = do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus?extra_label=a=b", bytes.NewReader(payload), "Content-Type", "text/plain")
	if code/100 != 2 {
		t.Fatalf("import: %d %s", code, body)
	}
	got := rec.Requests()
	if len(got) != 2 {
		t.Fatalf("want 2 forwarded requests, got %d", len(got))
	}
	q := got[0]
	if q.Method != "GET" || !strings.HasPrefix(q.Path, "/base/") || !strings.HasSuffix(q.Path, "/api/v1/query") || q.Query.Get("query") != "up" || q.Query.Get("time") != "123" {
		t.Errorf("query forwarded as %s %s?%s", q.Method, q.Path, q.RawQuery)
	}
	if q.Host != recHost {
		t.Errorf("Host %q, want the upstream's %q", q.Host, recHost)
	}
	if q.Header.Get("Authorization") != "" || q.Header.Get("AccountID") != "" || q.Header.Get("ProjectID") != "" {
		t.Errorf("client credentials or tenant headers forwarded: %v", q.Header)
	}
	if xff := q.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the connection's 127.0.0.1 only", xff)
	}
	w := got[1]
	if w.Method != "POST" || !strings.HasSuffix(w.Path, "/api/v1/import/prometheus") || w.Body != string(payload) {
		t.Errorf("import forwarded as %s %s with %d body bytes", w.Method, w.Path, len(w.Body))
	}
}

func TestOwnEndpoints(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-pprofAuthKey=pk", "-metricsAuthKey=mk",
		"-reloadAuthKey", "rk-inline", "-datasource.url=http://dsuser:dspass@"+strings.TrimPrefix(rec.URL, "http://"))
	do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
	do(t, http.MethodGet, g.URL+"/nope", nil)

	if code, _, body := do(t, http.MethodGet, g.URL+"/health", nil); code != 200 || !strings.Contains(body, "OK") {
		t.Errorf("/health: %d %q", code, body)
	}
	if code, _, _ := do(t, http.MethodGet, g.URL+"/metrics", nil); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the key: %d", code)
	}
	code, _, body := do(t, http.MethodGet, g.URL+"/metrics?authKey=mk", nil)
	for _, want := range []string{`vmgateway_requests_total{api="query",code="200"} 1`, `vmgateway_requests_total{api="unknown",code="404"} 1`,
		`vmgateway_request_duration_seconds_bucket{api="query"`, "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics: %d, want %q", code, want)
		}
	}
	if code, _, _ := do(t, http.MethodGet, g.URL+"/debug/pprof/", nil); code != http.StatusUnauthorized {
		t.Errorf("pprof without the key: %d", code)
	}
	if code, _, body := do(t, http.MethodGet, g.URL+"/debug/pprof/?authKey=pk", nil); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof with the key: %d", code)
	}
	// The pprof key shows the command line, not the other keys and passwords on it.
	code, _, body = do(t, http.MethodGet, g.URL+"/debug/pprof/cmdline?authKey=pk", nil)
	if code != 200 || !strings.Contains(body, "-metricsAuthKey=secret") || !strings.Contains(body, "-reloadAuthKey\x00secret") ||
		!strings.Contains(body, "-read.url="+rec.URL) {
		t.Errorf("pprof cmdline: %d %q", code, body)
	}
	for _, secret := range []string{"mk", "pk", "rk-inline", "dspass", "dsuser"} {
		if slices.Contains(strings.FieldsFunc(body, func(r rune) bool { return r == 0 || r == '=' || r == ':' || r == '@' || r == '/' }), secret) {
			t.Errorf("pprof cmdline shows %q: %q", secret, body)
		}
	}

	// Without -pprofAuthKey and basic auth, profiles stay off: they expose memory.
	g2 := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL)
	if code, _, _ := do(t, http.MethodGet, g2.URL+"/debug/pprof/", nil); code != http.StatusForbidden {
		t.Errorf("pprof open without a key: %d", code)
	}
}

func TestBasicAuthAndPathPrefix(t *testing.T) {
	vm := vmtest.Start(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-http.pathPrefix=/gw", "-httpAuth.username=u", "-httpAuth.password=p")
	if code, _, _ := do(t, http.MethodGet, g.URL+"/gw/api/v1/labels", nil); code != http.StatusUnauthorized {
		t.Errorf("no basic auth: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/gw/api/v1/labels", nil)
	req.SetBasicAuth("u", "p")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("basic auth + prefix: %v %v", err, resp)
	}
	resp.Body.Close()
	if code, _, _ := do(t, http.MethodGet, g.URL+"/api/v1/labels", nil); code != http.StatusNotFound {
		t.Errorf("path outside the prefix: %d", code)
	}
	// vmui's redirect from /vmui to /vmui/ must stay below the prefix.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ = http.NewRequest(http.MethodGet, g.URL+"/gw/vmui", nil)
	req.SetBasicAuth("u", "p")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	if resp.StatusCode/100 != 3 || loc == nil || loc.Path != "/gw/vmui/" {
		t.Fatalf("vmui redirect: %d Location %v, want /gw/vmui/", resp.StatusCode, loc)
	}
}

// TestVMUIThroughGateway: the real vmui of the current single-node release and of the cluster's vmselect, its
// page, its assets and its redirect, through the gateway in both modes, in both path shapes and below a path
// prefix. (Debian's 1.79.5 ships without vmui's assets.)
func TestVMUIThroughGateway(t *testing.T) {
	vm := vmtest.StartCurrent(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-http.pathPrefix=/gw")
	checkRealVMUI(t, g.URL, "", []string{"/gw/", "/gw/prometheus/", "/gw/select/0:0/", "/gw/select/0/prometheus/"})

	c := vmtest.StartCluster(t)
	g = startGateway(t, "-read.url="+c.Select.URL, "-write.url="+c.Insert.URL, "-http.pathPrefix=/gw", "-clusterMode")
	checkRealVMUI(t, g.URL, "", []string{"/gw/", "/gw/prometheus/", "/gw/select/0:0/", "/gw/select/0/prometheus/"})
}

// TestGracefulShutdown: SIGTERM makes /health answer 503 during -http.shutdownDelay while an in-flight request
// still completes.
func TestGracefulShutdown(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	// The upstream holds the request until the test has seen the shutdown delay begin: it is in flight for sure.
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	rec.Respond(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-http.shutdownDelay=1s", "-http.maxGracefulShutdownDuration=5s")
	type result struct {
		code int
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := http.Get(g.URL + "/api/v1/query?query=up")
		if err != nil {
			inflight <- result{0, err}
			return
		}
		resp.Body.Close()
		inflight <- result{resp.StatusCode, nil}
	}()
	<-arrived
	_ = g.Signal(syscall.SIGTERM)
	vmtest.Eventually(t, func() (bool, string) {
		resp, err := http.Get(g.URL + "/health")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, fmt.Sprintf("/health answered %d during the shutdown delay", resp.StatusCode)
	})
	close(release)
	r := <-inflight
	if r.err != nil || r.code != 200 {
		t.Fatalf("in-flight request during shutdown: %d %v", r.code, r.err)
	}
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not exit after SIGTERM")
	}
	if g.Err() != nil {
		t.Fatalf("gateway exited with %v; logs:\n%s", g.Err(), g.logs.String())
	}
}

// TestFlagErrorsBeforeAnyComponent: every flag is checked before a component is built, so a bad flag stops the
// start before the verifier has fetched its keys: the JWKS endpoint is never asked.
func TestFlagErrorsBeforeAnyComponent(t *testing.T) {
	var fetches atomic.Int64
	jwks := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_, _ = io.WriteString(w, `{"keys":[]}`)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = jwks.Serve(ln) }()
	t.Cleanup(func() { _ = jwks.Close() })
	base := []string{"-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1",
		"-enable.auth", "-auth.jwksEndpoints=http://" + ln.Addr().String() + "/jwks"}
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"-enable.rateLimit", "-ratelimit.headers=draft07"}, `-ratelimit.headers="draft07": want none, draft03`},
		{[]string{"-enable.rateLimit", "-ratelimit.redis.batchSize=0"}, "-ratelimit.redis.batchSize=0: want a positive number"},
		{[]string{"-tls"}, "-tlsCertFile and -tlsKeyFile"},
		{[]string{"-http.pathPrefix=gw"}, "-http.pathPrefix"},
		{[]string{"-httpAuth.username=u"}, "-httpAuth.username and -enable.auth both use the Authorization header"},
		{[]string{"-accessLog.path=stdout", "-accessLog.skipStatusCodes=1000"}, "-accessLog.skipStatusCodes: 1000 is not an HTTP status code"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, gatewayBin, append(append(base, "-httpListenAddr=127.0.0.1:0"), tc.flags...)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: want a failed start mentioning %q, got err=%v:\n%s", tc.flags, tc.want, err, out)
		}
		if n := fetches.Swap(0); n != 0 {
			t.Errorf("%v: the JWKS endpoint was fetched %d times: the verifier was built before the flags were checked", tc.flags, n)
		}
	}
	// The check above can fail: with good flags the verifier fetches the keys at once.
	startGateway(t, base...)
	if fetches.Load() == 0 {
		t.Error("a start with good flags did not fetch the JWKS endpoint")
	}
}

func TestFlagErrorsStopTheStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"-read.url=http://x", "-write.url=http://x", "-http.shutdownDelay=soon"}, nil, "-http.shutdownDelay"},
		{[]string{"-write.url=http://x"}, nil, "-read.url is required"},
		{[]string{"-read.url=ftp://x", "-write.url=http://x"}, nil, "invalid -read.url"},
		{[]string{"-read.url=http://x", "-write.url=http://x", "-loggerFormat=xml"}, nil, "-loggerFormat"},
		{[]string{"-read.url=http://x", "-write.url=http://x", "-tls"}, nil, "-tlsCertFile and -tlsKeyFile"},
		{[]string{"-read.url=http://x", "-write.url=http://x", "-nosuchflag"}, nil, "nosuchflag"},
		{[]string{"-read.url=http://x", "-write.url=http://x", "-gc.minHeapGrowth=-1"}, nil, "-gc.minHeapGrowth=-1 is out of range"},
		{[]string{"-envflag.enable", "-envflag.prefix=VMG_", "-write.url=http://x"}, []string{"VMG_read_url=http://x", "VMG_http_idleConnTimeout=forever"}, "VMG_http_idleConnTimeout"},
		{[]string{"-read.url=http://x", "-write.url=http://x", "-httpListenAddr=" + busy}, nil, "cannot listen on -httpListenAddr=" + busy},
	} {
		// A start that wrongly succeeds must not hang the test: the gateway would serve until killed.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, gatewayBin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: want a failed start mentioning %q, got err=%v:\n%s", tc.args, tc.want, err, out)
		}
		cancel()
	}
	out, err := exec.Command(gatewayBin, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "vmgateway ") {
		t.Errorf("-version: %v %q", err, out)
	}
}

func TestEnvFlags(t *testing.T) {
	vm := vmtest.Start(t)
	g := startGatewayEnv(t, []string{"VMG_read_url=" + vm.URL, "VMG_write_url=http://127.0.0.1:1", "VMG_http_pathPrefix=/fromenv"},
		"-envflag.enable", "-envflag.prefix=VMG_", "-write.url="+vm.URL, "-http.pathPrefix=/fromenv")
	// -write.url from the command line wins over the unreachable one in the environment.
	code, _, body := do(t, http.MethodPost, g.URL+"/fromenv/api/v1/import/prometheus", strings.NewReader("envflag_probe 1\n"), "Content-Type", "text/plain")
	if code/100 != 2 {
		t.Fatalf("write with env flags: %d %s", code, body)
	}
	if code, _, body := do(t, http.MethodGet, g.URL+"/fromenv/api/v1/labels", nil); code != 200 {
		t.Fatalf("read with -read.url from env: %d %s", code, body)
	}
}

// TestStreamingWriteKeepsMemoryFlat sends a 1 GiB import through the gateway to an upstream that discards it and
// checks the gateway's peak RSS: the body must stream, never be buffered.
func TestStreamingWriteKeepsMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer; run without -short")
	}
	var received atomic.Int64
	sinkSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		received.Add(n)
		w.WriteHeader(http.StatusNoContent)
	})}
	addr := vmtest.FreePort(t)
	ln, err := netListen(addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = sinkSrv.Serve(ln) }()
	t.Cleanup(func() { _ = sinkSrv.Close() })

	g := startGateway(t, "-read.url=http://"+addr, "-write.url=http://"+addr)
	_, before := rssKiB(t, g.Pid())
	const size = 1 << 30
	resp, err := http.Post(g.URL+"/api/v1/import/prometheus", "text/plain", io.LimitReader(repeatReader("big_import_line{a=\"b\"} 1\n"), size))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || received.Load() != size {
		t.Fatalf("status %d, upstream received %d of %d bytes", resp.StatusCode, received.Load(), size)
	}
	_, after := rssKiB(t, g.Pid())
	growth := after - before
	t.Logf("gateway peak RSS %d KiB before, %d KiB after a 1 GiB import: growth %d KiB", before, after, growth)
	if growth > 32*1024 {
		t.Fatalf("peak RSS grew by %d KiB for a 1 GiB import: the body is being buffered", growth)
	}
}

type repeatReader string

func (r repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], r)
	}
	return n, nil
}

// TestCORSPreflight: a browser on another origin asks (OPTIONS, never with the token) before it sends a request with
// one; the gateway with -enable.auth answers it itself, 204 with Authorization allowed, and the request that follows
// is authenticated as any other (a legitimate user's review: every preflight got 401, so no page on another origin
// could call the gateway). Nothing but the real request reaches the upstream.
func TestCORSPreflight(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t))
	code, h, body := do(t, http.MethodOptions, g.URL+"/api/v1/query", nil, "Origin", "https://dashboards.example",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	if code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v %s", code, h, body)
	}
	if n := len(rec.Requests()); n != 0 {
		t.Fatalf("the preflight reached the upstream: %d requests", n)
	}
	// The refusal is readable by the page: it allows any origin, as the gateway's every own answer to a page does.
	if code, h, body := do(t, http.MethodPost, g.URL+"/api/v1/query?query=up", nil, "Origin", "https://dashboards.example"); code != http.StatusUnauthorized ||
		h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(string(body), `"status":"error"`) {
		t.Errorf("the request after the preflight, without a token: %d %v %s; want 401 that allows the origin", code, h, body)
	}
	tok := rlToken(t, tenant.ID{}, "browser")
	if code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/query?query=up", nil, "Origin", "https://dashboards.example",
		"Authorization", "Bearer "+tok); code != http.StatusOK || len(rec.Requests()) != 1 {
		t.Errorf("the request after the preflight, with a token: %d %s, %d forwarded", code, body, len(rec.Requests()))
	}
}

// TestMethodsNotForwarded: VictoriaMetrics answers any method as GET, so the gateway forwards only the methods its
// clients send; TRACE, CONNECT, a lowercase `get` and the like were forwarded as sent, for whatever proxy stood between
// to act on (an attacker's review). They get 405 with Allow, in the JSON shape, and reach nothing.
func TestMethodsNotForwarded(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL)
	for _, m := range []string{"TRACE", "get", "DELETE", "PATCH", "PROPFIND"} {
		code, h, body := do(t, m, g.URL+"/api/v1/query?query=up", nil)
		if typ, msg := decodeError(t, body); code != http.StatusMethodNotAllowed || typ != "bad_data" ||
			!strings.Contains(msg, fmt.Sprintf("the method %q is not forwarded", m)) || h.Get("Allow") != "GET, HEAD, POST, PUT, OPTIONS" {
			t.Errorf("%s: %d %v %s; want 405 with Allow", m, code, h, body)
		}
	}
	// CONNECT with a path, which Go's client does not send.
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "CONNECT /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("CONNECT: %d; want it refused", resp.StatusCode)
	}
	if got := rec.Requests(); len(got) != 0 {
		t.Fatalf("%d requests reached the upstream: %+v", len(got), got)
	}
	for _, m := range []string{"PUT", "OPTIONS", "HEAD"} {
		if code, _, body := do(t, m, g.URL+"/api/v1/query?query=up", nil); code != 200 {
			t.Errorf("%s: %d %s; want it forwarded", m, code, body)
		}
	}
	if got := rec.Requests(); len(got) != 3 {
		t.Errorf("%d requests reached the upstream, want PUT, OPTIONS and HEAD", len(got))
	}
}
