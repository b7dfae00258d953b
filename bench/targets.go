//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
)

// target is one way to reach the upstream: directly, or through a proxy process.
type target struct {
	name string
	kind string // direct, vmgateway, vmauth or passthrough (haproxy, nginx, a bare ReverseProxy)
	addr string
	proc *process // nil for direct
	// token is the one this target accepts; empty: the gateway's.
	token string
	// concurrency is the load generator's connections for this target; 0: -concurrency, or
	// -remotewrite.concurrency for the remotewrite workload.
	concurrency int
}

func (t *target) conns(wl string) int {
	switch {
	case t.concurrency > 0:
		return t.concurrency
	case wl == "remotewrite":
		return *remoteWriteConcurrency
	}
	return *concurrency
}

// requests is the mix of raw requests the load generator sends to t for workload wl.
func (t *target) requests(wl, token string) [][]byte {
	if t.token != "" {
		token = t.token
	}
	if wl == "dashboard" {
		return dashboardRequests(t.addr, token, t.kind == "direct" || t.kind == "passthrough")
	}
	return [][]byte{rawRequest(wl, t.addr, token)}
}

// credentials are the RS256 key pair the gateway verifies with and the token both proxies accept.
type credentials struct {
	pubKeyFile string
	pubKeyPEM  []byte
	token      string
	// vmauthToken carries the same restriction in vmauth's own vm_access claim (metrics_extra_labels), for its
	// JWT users' {{.MetricsExtraLabels}} templating.
	vmauthToken string
	pprofKey    string
}

// The token's restriction: every read must be rewritten to carry it and every write must get it as extra_label.
const (
	labelName  = "team"
	labelValue = "dev"
)

func newCredentials(dir string) (*credentials, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	c := &credentials{pubKeyFile: filepath.Join(dir, "jwt.pub.pem"), pubKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
	if err := os.WriteFile(c.pubKeyFile, c.pubKeyPEM, 0o600); err != nil {
		return nil, err
	}
	c.vmauthToken, err = jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"sub":       "bench",
		"exp":       time.Now().Add(24 * time.Hour).Unix(),
		"vm_access": map[string]any{"metrics_extra_labels": []string{labelName + "=" + labelValue}},
	}).SignedString(key)
	if err != nil {
		return nil, err
	}
	c.token, err = jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"sub":       "bench",
		"exp":       time.Now().Add(24 * time.Hour).Unix(),
		"vm_access": auth.VMAccess{ExtraLabels: map[string]string{labelName: labelValue}, Mode: auth.ModeFull},
	}).SignedString(key)
	if err != nil {
		return nil, err
	}
	rnd := make([]byte, 16)
	_, _ = rand.Read(rnd)
	c.pprofKey = hex.EncodeToString(rnd)
	return c, nil
}

func buildGateway(out string) error {
	cmd := exec.Command("go", "build", "-o", out, "./cmd/vmgateway")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/vmgateway (run the bench from the module root): %w", err)
	}
	return nil
}

func startGateway(ctx context.Context, name, bin, dir, upstreamAddr string, c *credentials, extra ...string) (*process, error) {
	limits := filepath.Join(dir, "limits.yml")
	// Limits no run can reach: the check runs on every request, and never rejects.
	const cfg = "limits:\n  - {type: queries, value: 1000000000000}\n  - {type: rows_inserted, value: 1000000000000}\n"
	if err := os.WriteFile(limits, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	up := "http://" + upstreamAddr
	return startGatewayProc(ctx, name, bin, upstreamAddr, c, append([]string{
		"-enable.auth", "-auth.publicKeyFiles=" + c.pubKeyFile,
		"-enable.rateLimit", "-ratelimit.config=" + limits, "-datasource.url=" + up,
		"-loggerLevel=WARN",
	}, extra...)...)
}

// startOpenGateway is the gateway with nothing to check or enforce: no -enable.auth, no rate limits. Every request
// still goes through its server, router and upstream client.
func startOpenGateway(ctx context.Context, name, bin, upstreamAddr string, c *credentials) (*process, error) {
	return startGatewayProc(ctx, name, bin, upstreamAddr, c, "-loggerLevel=ERROR")
}

// startGatewayProc runs a gateway binary on a free address in front of the upstream, with flags after its own
// (a flag given twice takes the later value).
func startGatewayProc(ctx context.Context, name, bin, upstreamAddr string, c *credentials, flags ...string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	up := "http://" + upstreamAddr
	return startProcess(ctx, name, bin, addr, append([]string{
		"-httpListenAddr=" + addr, "-read.url=" + up, "-write.url=" + up, "-pprofAuthKey=" + c.pprofKey,
	}, flags...)...)
}

func startVMAuth(ctx context.Context, name, bin, dir, upstreamAddr string, c *credentials) (*process, error) {
	cfgPath := filepath.Join(dir, name+".yml")
	var cfg string
	if *vmauthJWT {
		// vmauth v1.137+ verifies the JWT itself and fills the url_prefix's {{.MetricsExtraLabels}} from the token's
		// vm_access claim: the nearest it comes to the gateway's job (it adds extra_label; it does not rewrite the
		// query).
		var keys strings.Builder
		for _, l := range strings.Split(strings.TrimSpace(string(c.pubKeyPEM)), "\n") {
			keys.WriteString("          " + l + "\n")
		}
		cfg = fmt.Sprintf("users:\n  - jwt:\n      public_keys:\n        - |\n%s    url_prefix: %q\n", keys.String(),
			"http://"+upstreamAddr+"/?extra_label={{.MetricsExtraLabels}}")
	} else {
		// Older vmauth (v1.79) merges the url_prefix query args into every proxied request, replacing a client's own
		// extra_label. It compares the bearer token as a string.
		cfg = fmt.Sprintf("users:\n  - bearer_token: %q\n    url_prefix: %q\n", c.token,
			"http://"+upstreamAddr+"/?extra_label="+labelName+"="+labelValue)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return startProcess(ctx, name, bin, addr,
		"-auth.config="+cfgPath, "-httpListenAddr="+addr, "-loggerLevel=WARN", "-pprofAuthKey="+c.pprofKey)
}

// tokenFor is the token target kind accepts.
func (c *credentials) tokenFor(kind string) string {
	if kind == "vmauth" && *vmauthJWT {
		return c.vmauthToken
	}
	return c.token
}

// process is a proxy under test, started with its log in -out.
type process struct {
	name, addr string
	pid        int
	cmd        *exec.Cmd
	logPath    string
	exited     chan struct{}
}

func startProcess(ctx context.Context, name, bin, addr string, args ...string) (*process, error) {
	logPath := filepath.Join(*outDir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the bench dies, so do its children: a leftover proxy would skew the next run on a shared machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &process{name: name, addr: addr, pid: cmd.Process.Pid, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("started %s (pid %d) on %s\n", name, p.pid, addr)
				return p, nil
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%s exited at start; its log (%s):\n%s", name, logPath, tail(logPath))
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s did not answer /health within 15s; its log (%s):\n%s", name, logPath, tail(logPath))
		}
	}
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// sanityCheck makes sure each target does the job it is measured for before it is measured: the right answers,
// and through a proxy, the restriction applied before the upstream sees a request.
func sanityCheck(t *target, up *upstream, token string) error {
	if t.token != "" {
		token = t.token
	}
	do := func(method, path, tok string, body []byte, header ...string) (int, []byte, error) {
		req, err := http.NewRequest(method, "http://"+t.addr+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if body != nil {
			req.Header.Set("Content-Type", "text/plain")
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("sanity check of %s: %s", t.name, fmt.Sprintf(format, args...))
	}

	code, body, err := do(http.MethodGet, "/api/v1/query_range?"+readQuery, token, nil)
	if err != nil || code != http.StatusOK || !bytes.Equal(body, matrixJSON) {
		return fail("read: status %d, err %v, body %.200q", code, err, body)
	}
	readArgs, _ := url.ParseQuery(up.last(&up.lastRead))
	code, _, err = do(http.MethodPost, "/api/v1/import/prometheus", token, importBody)
	if err != nil || code != http.StatusNoContent {
		return fail("write: status %d, err %v", code, err)
	}
	writeArgs, _ := url.ParseQuery(up.last(&up.lastWrite))
	// The upstream answers a remote write 204 only when every byte of the batch arrived with its snappy encoding.
	code, body, err = do(http.MethodPost, "/api/v1/write", token, remoteWriteBody, "Content-Encoding", "snappy",
		"Content-Type", "application/x-protobuf", "X-Prometheus-Remote-Write-Version", "0.1.0")
	if err != nil || code != http.StatusNoContent {
		return fail("remote write: status %d, err %v, body %.200q", code, err, body)
	}
	remoteWriteArgs, _ := url.ParseQuery(up.last(&up.lastRemoteWrite))
	if t.proc == nil || t.kind == "passthrough" || t.kind == "open" {
		// Nothing to enforce: the answers and the bodies came through.
		return nil
	}
	want := labelName + "=" + labelValue
	if el := writeArgs["extra_label"]; len(el) == 0 || el[len(el)-1] != want {
		return fail("the upstream got a write with extra_label=%q; want %s last", el, want)
	}
	if el := remoteWriteArgs["extra_label"]; len(el) == 0 || el[len(el)-1] != want {
		return fail("the upstream got a remote write with extra_label=%q; want %s last", el, want)
	}
	switch t.kind {
	case "vmgateway":
		if q := readArgs.Get("query"); !strings.Contains(q, fmt.Sprintf(`%s="%s"`, labelName, labelValue)) {
			return fail("the upstream got query %q; want it rewritten to carry %s", q, want)
		}
		if code, _, _ := do(http.MethodGet, "/api/v1/query_range?"+readQuery, "", nil); code != http.StatusUnauthorized {
			return fail("a read without a token got status %d; want 401 (is -enable.auth on?)", code)
		}
	case "vmauth":
		if el := readArgs["extra_label"]; len(el) == 0 || el[len(el)-1] != want {
			return fail("the upstream got a read with extra_label=%q; want %s", el, want)
		}
	}
	return nil
}

// Run is one measured run of one workload against one target.
type Run struct {
	Workload   string  `json:"workload"`
	Target     string  `json:"target"`
	Round      int     `json:"round"`
	Requests   uint64  `json:"requests"`
	Errors     uint64  `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"requests_per_second"`
	P50us      float64 `json:"p50_us"`
	P90us      float64 `json:"p90_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	// CPUPer1k is the proxy's user+system CPU milliseconds per 1000 requests, i.e. microseconds per request.
	CPUPer1k float64 `json:"proxy_cpu_ms_per_1k"`
	// SysCPUPer1k is the kernel's part of CPUPer1k: on loopback, mostly the TCP stack of both ends.
	SysCPUPer1k float64 `json:"proxy_sys_cpu_ms_per_1k"`
	// DriverCPUPer1k is the same for this process: load generator and upstream together.
	DriverCPUPer1k float64 `json:"driver_cpu_ms_per_1k"`
	PeakRSSMiB     float64 `json:"proxy_peak_rss_mib,omitempty"`
	// PeakSinceStart is set when the peak could not be reset before the run: it is the process's lifetime peak.
	PeakSinceStart bool `json:"proxy_peak_since_start,omitempty"`
	// OtherCores is how many cores' worth of CPU everything else on the machine used during the run.
	OtherCores float64 `json:"other_processes_cores"`
}

// measure runs workload wl against t once. extra, if set, runs when measuring starts (the profiler).
func measure(ctx context.Context, t *target, wl string, round int, token string, extra func()) (Run, error) {
	var proc0, proc1, sys0, sys1, self0, self1, busy0, busy1 time.Duration
	var sampleErr error
	pid := 0
	if t.proc != nil {
		pid = t.proc.pid
	}
	reset := true
	sample := func(proc, sys, self, busy *time.Duration) {
		var err error
		if pid != 0 {
			var user time.Duration
			if user, *sys, err = cpuTimes(pid); err != nil {
				sampleErr = err
			}
			*proc = user + *sys
		}
		if *self, err = selfCPUTime(); err != nil {
			sampleErr = err
		}
		if *busy, err = machineBusy(); err != nil {
			sampleErr = err
		}
	}
	onStart := func() {
		if pid != 0 {
			reset = resetPeakRSS(pid)
		}
		sample(&proc0, &sys0, &self0, &busy0)
		if extra != nil {
			extra()
		}
	}
	onEnd := func() { sample(&proc1, &sys1, &self1, &busy1) }
	lr := runLoad(ctx, t.addr, t.requests(wl, token), t.conns(wl), *warmup, *duration, onStart, onEnd)
	if ctx.Err() != nil {
		return Run{}, ctx.Err()
	}
	if sampleErr != nil {
		return Run{}, sampleErr
	}
	if lr.ok == 0 {
		return Run{}, fmt.Errorf("%s %s: no request succeeded in %s (errors: %d, first: %s)", wl, t.name, lr.elapsed, lr.errors, lr.firstError)
	}
	secs := lr.elapsed.Seconds()
	per1k := func(d time.Duration) float64 { return float64(d) / 1e6 / float64(lr.ok) * 1000 }
	r := Run{
		Workload: wl, Target: t.name, Round: round,
		Requests: lr.ok, Errors: lr.errors, FirstError: lr.firstError,
		Seconds: secs, RPS: float64(lr.ok) / secs,
		P50us: lr.hist.quantile(0.50), P90us: lr.hist.quantile(0.90), P99us: lr.hist.quantile(0.99),
		P999us: lr.hist.quantile(0.999), MaxUs: float64(lr.hist.max) / 1e3,
		DriverCPUPer1k: per1k(self1 - self0),
		OtherCores:     max(0, float64(busy1-busy0-(proc1-proc0)-(self1-self0))/float64(lr.elapsed)),
	}
	if pid != 0 {
		r.CPUPer1k, r.SysCPUPer1k = per1k(proc1-proc0), per1k(sys1-sys0)
		_, hwm, err := memStatus(pid)
		if err != nil {
			return Run{}, err
		}
		r.PeakRSSMiB, r.PeakSinceStart = hwm, !reset
	}
	return r, nil
}

// Stream is the streaming check: one large write through a proxy, and how much its memory grew meanwhile.
type Stream struct {
	Target       string  `json:"target"`
	BodyMiB      float64 `json:"body_mib"`
	RSSBeforeMiB float64 `json:"rss_before_mib"`
	PeakMiB      float64 `json:"peak_rss_mib"`
	// GrowthMiB is VmHWM after the write minus VmRSS before it.
	GrowthMiB      float64 `json:"rss_growth_mib"`
	Seconds        float64 `json:"seconds"`
	MiBPerSec      float64 `json:"mib_per_second"`
	PeakSinceStart bool    `json:"peak_since_start,omitempty"`
}

func streamCheck(ctx context.Context, t *target, up *upstream, token string, size int64) (Stream, error) {
	if t.token != "" {
		token = t.token
	}
	pid := t.proc.pid
	reset := resetPeakRSS(pid)
	before, _, err := memStatus(pid)
	if err != nil {
		return Stream{}, err
	}
	written := up.written.Load()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+t.addr+"/api/v1/import/prometheus", &patternReader{left: size})
	if err != nil {
		return Stream{}, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Stream{}, fmt.Errorf("streaming check through %s: %w", t.name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusNoContent {
		return Stream{}, fmt.Errorf("streaming check through %s: status %d", t.name, resp.StatusCode)
	}
	if got := up.written.Load() - written; got != size {
		return Stream{}, fmt.Errorf("streaming check through %s: the upstream got %d bytes of %d", t.name, got, size)
	}
	_, peak, err := memStatus(pid)
	if err != nil {
		return Stream{}, err
	}
	mib := float64(size) / (1 << 20)
	return Stream{
		Target: t.name, BodyMiB: mib, RSSBeforeMiB: before, PeakMiB: peak, GrowthMiB: peak - before,
		Seconds: elapsed.Seconds(), MiBPerSec: mib / elapsed.Seconds(), PeakSinceStart: !reset,
	}, nil
}

// patternReader yields left bytes of Prometheus text lines without holding them: the bench must not be the
// process whose memory grows.
type patternReader struct {
	left int64
	off  int
}

var pattern = bytes.Repeat([]byte("bench_stream_bytes_total{job=\"stream\",instance=\"10.0.0.1:8080\"} 1 1700000000000\n"), 64)

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := 0
	for n < len(b) {
		c := copy(b[n:], pattern[p.off:])
		n += c
		p.off = (p.off + c) % len(pattern)
	}
	p.left -= int64(n)
	return n, nil
}

// Profile is the CPU profile of the gateway taken during one extra run of a workload.
type Profile struct {
	Workload string `json:"workload"`
	Path     string `json:"path"`
	TopPath  string `json:"top_path,omitempty"`
	// AllocsPath is the gateway's allocation profile (pprof's allocs: every allocation since it started, sampled).
	AllocsPath string `json:"allocs_path,omitempty"`
	Run        Run    `json:"run"`
}

func profileGateway(ctx context.Context, t *target, wl, bin string, c *credentials, res *Results) error {
	path := filepath.Join(*outDir, "gateway-"+wl+".cpu.pprof")
	secs := max(1, int(duration.Seconds())-1)
	u := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d&authKey=%s", t.addr, secs, c.pprofKey)
	errc := make(chan error, 1)
	start := func() { go func() { errc <- fetch(ctx, u, path) }() }
	fmt.Printf("profiling vmgateway during one more %s run (%ds)\n", wl, secs)
	r, err := measure(ctx, t, wl, 0, c.token, start)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	// The allocations since the gateway started: every round's requests, for where the garbage comes from.
	allocs := filepath.Join(*outDir, "gateway-"+wl+".allocs.pprof")
	if err := fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/allocs?authKey=%s", t.addr, c.pprofKey), allocs); err != nil {
		return err
	}
	p := &Profile{Workload: wl, Path: path, AllocsPath: allocs, Run: r}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=40", bin, path).CombinedOutput()
	if err == nil {
		p.TopPath = filepath.Join(*outDir, "gateway-"+wl+".top.txt")
		if err := os.WriteFile(p.TopPath, top, 0o644); err != nil {
			return err
		}
	}
	res.Profiles = append(res.Profiles, p)
	return nil
}

func fetch(ctx context.Context, u, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: status %d: %s", strings.Split(u, "?")[0], resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
