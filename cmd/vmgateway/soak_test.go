//go:build soak

package main

// The soak test runs for about a minute: `make soak` (CI runs it after `make test`). Set
// VMGATEWAY_SOAK_DURATION (e.g. 20s) to run it shorter or longer locally.

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// slowProxy is a TCP proxy between the gateway and VictoriaMetrics that can delay every chunk it passes on: a
// slow upstream, as a busy vmselect or a congested link would be.
type slowProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // nanoseconds added before each chunk
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startSlowProxy(t *testing.T, target string) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *slowProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *slowProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

func (p *slowProxy) handle(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		// The upstream is down: the gateway sees its connection closed, as with a dead backend behind a balancer.
		_ = c.Close()
		return
	}
	p.track(c, true)
	p.track(u, true)
	done := make(chan struct{}, 2)
	go func() { p.pipe(u, c); done <- struct{}{} }()
	go func() { p.pipe(c, u); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = u.Close()
	<-done
	p.track(c, false)
	p.track(u, false)
}

func (p *slowProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// outcome is one request of the soak as the client saw it.
type outcome struct {
	kind       string // write, read, garbage
	status     int    // 0: no HTTP answer (connection closed)
	start, end time.Time
	detail     string
}

// soakClient is one of the concurrent clients; writes carry sequence numbers so that every acknowledged one can
// be looked up in VictoriaMetrics.
type soakClient struct {
	id         int
	token      string
	restricted bool
	http       *http.Client
	gwURL      string
	base       int64 // timestamp of value 0, in ms

	seq      int64
	acked    []int64 // seqs of acknowledged writes
	outcomes []outcome
}

const samplesPerWrite = 10

func (c *soakClient) do(kind, method, path, body string, header ...string) outcome {
	o := outcome{kind: kind, start: time.Now()}
	req, err := http.NewRequest(method, c.gwURL+path, strings.NewReader(body))
	if err != nil {
		o.detail = err.Error()
		return o
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		o.end, o.detail = time.Now(), err.Error()
		return o
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	o.end, o.status = time.Now(), resp.StatusCode
	if resp.StatusCode/100 != 2 {
		o.detail = fmt.Sprintf("%s %s: %.200s", method, path, b)
	}
	return o
}

func (c *soakClient) write() outcome {
	c.seq++
	var sb strings.Builder
	for j := int64(0); j < samplesPerWrite; j++ {
		v := c.seq*samplesPerWrite + j
		fmt.Fprintf(&sb, "soak_write{client=\"%d\"} %d %d\n", c.id, v, c.base+v)
	}
	o := c.do("write", http.MethodPost, "/api/v1/import/prometheus", sb.String(), "Authorization", "Bearer "+c.token, "Content-Type", "text/plain")
	if o.status/100 == 2 {
		c.acked = append(c.acked, c.seq)
	}
	return o
}

func (c *soakClient) read(rnd *mrand.Rand) outcome {
	auth := []string{"Authorization", "Bearer " + c.token}
	now := time.Now().Unix()
	sel := fmt.Sprintf(`soak_write{client="%d"}`, c.id)
	switch rnd.IntN(6) {
	case 0:
		return c.do("read", http.MethodGet, "/api/v1/query?query="+url.QueryEscape("count(soak_write)"), "", auth...)
	case 1:
		return c.do("read", http.MethodPost, "/api/v1/query_range", url.Values{"query": {"sum(rate(" + sel + "[1m]))"},
			"start": {fmt.Sprint(now - 3600)}, "end": {fmt.Sprint(now)}, "step": {"60"}}.Encode(), auth...)
	case 2:
		return c.do("read", http.MethodGet, "/api/v1/series?match[]="+url.QueryEscape(sel), "", auth...)
	case 3:
		return c.do("read", http.MethodGet, "/api/v1/labels", "", auth...)
	case 4:
		return c.do("read", http.MethodGet, "/api/v1/label/client/values", "", auth...)
	default:
		return c.do("read", http.MethodGet, "/api/v1/query?query="+url.QueryEscape("max_over_time("+sel+"[2h])"), "", auth...)
	}
}

// garbage sends what a broken or hostile client sends; every answer must be a 4xx (or a closed connection for
// bytes that are not HTTP), never a 2xx or a 5xx.
func (c *soakClient) garbage(rnd *mrand.Rand, badTokens []string) outcome {
	auth := []string{"Authorization", "Bearer " + c.token}
	switch rnd.IntN(7) {
	case 0:
		return rawGarbage(c.gwURL, rnd)
	case 1:
		return c.do("garbage", http.MethodGet, "/api/v1/query?query=up", "", "Authorization", "Bearer "+badTokens[rnd.IntN(len(badTokens))])
	case 2:
		return c.do("garbage", http.MethodGet, "/api/v1/query?query=up", "", append(auth, "X-Huge", strings.Repeat("h", 100<<10))...)
	case 3:
		return c.do("garbage", http.MethodGet, "/api/v1/query?query="+url.QueryEscape("sum(rate(soak_write[5m]"), "", auth...)
	case 4:
		return c.do("garbage", http.MethodGet, "/api/v1/query?query="+strings.Repeat("x", 20<<10), "", auth...)
	case 5:
		return c.do("garbage", http.MethodGet, "/api/v1/admin/tsdb/snapshot", "", auth...)
	default:
		// As curl sends a large body: the gateway refuses it on its Content-Length before the body is sent.
		return c.do("garbage", http.MethodPost, "/api/v1/query", "query=up&pad="+strings.Repeat("p", 5<<20), append(auth, "Expect", "100-continue")...)
	}
}

// rawGarbage opens a connection and sends random bytes, as a port scanner or a confused client would.
func rawGarbage(gwURL string, rnd *mrand.Rand) outcome {
	o := outcome{kind: "garbage", start: time.Now()}
	conn, err := net.Dial("tcp", strings.TrimPrefix(gwURL, "http://"))
	if err != nil {
		o.end, o.detail = time.Now(), err.Error()
		return o
	}
	defer conn.Close()
	b := make([]byte, 64+rnd.IntN(4096))
	_, _ = rand.Read(b)
	b = append(b, "\r\n\r\n"...) // an end of headers, so the server judges the bytes at once
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = conn.Write(b)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	o.end = time.Now()
	if err != nil {
		o.detail = "raw bytes: " + err.Error()
		return o
	}
	resp.Body.Close()
	o.status = resp.StatusCode
	return o
}

func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("VMGATEWAY_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("VMGATEWAY_SOAK_DURATION=%q: %s", s, err)
		}
		return d
	}
	return 60 * time.Second
}

// settle waits until the gateway's goroutines and RSS are back within bounds of the baseline, forcing a GC
// (through pprof's heap profile) so the heap of the load is collected, and returns the last figures.
func settle(t *testing.T, g *gw, pprofKey string, base footprint, baseRSS int) (footprint, int, bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		forceGC(t, g, pprofKey)
		now := measure(t, g)
		rss, _ := rssKiB(t, g.Pid())
		ok := now.goroutines <= base.goroutines+soakGoroutineSlack && now.fds <= base.fds+soakGoroutineSlack && rss <= maxSettledRSS(baseRSS)
		if ok || time.Now().After(deadline) {
			return now, rss, ok
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// forceGC has the gateway collect its garbage: the heap profile endpoint runs a GC first with gc=1.
func forceGC(t *testing.T, g *gw, pprofKey string) {
	t.Helper()
	resp, err := freshClient.Get(g.URL + "/debug/pprof/heap?gc=1&authKey=" + pprofKey)
	if err != nil {
		t.Fatalf("forcing a GC: %s", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// soakGoroutineSlack allows for kept-alive upstream connections beyond those of the baseline (two goroutines and
// one descriptor each): the clients are 32, so a leak of one per request or per fault (tens of thousands of
// requests) stands far beyond it.
const soakGoroutineSlack = 40

// maxSettledRSS: once the load is gone the heap is back near the baseline; the runtime returns freed pages to the
// OS gradually, so some slack remains. A leak of even a few hundred bytes per request would exceed it.
func maxSettledRSS(baseKiB int) int { return baseKiB + max(baseKiB/2, 16<<10) }

// TestSoak: 32 clients (full, read-only and restricted tokens) read and write through the gateway into a real
// VictoriaMetrics for about a minute, with garbage requests throughout, a slow-upstream phase and an upstream
// restart. Every write acknowledged with 2xx must be stored, no request may get a 5xx outside the upstream
// outage, and the gateway's goroutines, descriptors and RSS must return near their baseline.
func TestSoak(t *testing.T) {
	total := soakDuration(t)
	vm := vmtest.Start(t)
	proxy := startSlowProxy(t, strings.TrimPrefix(vm.URL, "http://"))
	priv, pub := keyPair(t, "ec")
	strangerPriv, _ := keyPair(t, "ec")
	const pprofKey = "soak"
	g := startGateway(t, "-read.url="+proxy.URL(), "-write.url="+proxy.URL(), "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-pprofAuthKey="+pprofKey, "-loggerLevel=ERROR", "-read.timeout=20s", "-write.timeout=20s")

	full := mint(t, priv, "-mode=full", "-subject=soak-full")
	restricted := mint(t, priv, "-mode=full", "-extraLabels=team=restricted", "-subject=soak-restricted")
	readOnly := mint(t, priv, "-mode=read", "-subject=soak-reader")
	badTokens := []string{"garbage", "a.b.c", mint(t, strangerPriv, "-mode=full"), mint(t, priv, "-lifetime=-1h"), noneToken(t)}

	const clients = 32
	base := time.Now().Add(-2 * time.Hour).UnixMilli()
	transport := &http.Transport{MaxIdleConnsPerHost: clients, IdleConnTimeout: time.Minute, ExpectContinueTimeout: 10 * time.Second}
	hc := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	cs := make([]*soakClient, clients)
	for i := range cs {
		tok, restr := full, false
		switch i % 4 {
		case 1:
			tok, restr = restricted, true
		case 2:
			if i%8 == 2 {
				tok = readOnly
			}
		}
		cs[i] = &soakClient{id: i, token: tok, restricted: restr, http: hc, gwURL: g.URL, base: base}
	}

	// run drives every client until stop closes: mostly writes and reads, some garbage.
	run := func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func(c *soakClient) {
				defer wg.Done()
				rnd := mrand.New(mrand.NewPCG(uint64(c.id), 42))
				for {
					select {
					case <-stop:
						return
					default:
					}
					var o outcome
					switch p := rnd.IntN(100); {
					case p < 45 && c.token != readOnly:
						o = c.write()
					case p < 90:
						o = c.read(rnd)
					default:
						o = c.garbage(rnd, badTokens)
					}
					c.outcomes = append(c.outcomes, o)
					time.Sleep(time.Duration(5+rnd.IntN(30)) * time.Millisecond)
				}
			}(c)
		}
		wg.Wait()
	}

	// Warm up, then take the baseline with the load paused and idle client connections closed.
	warm := make(chan struct{})
	time.AfterFunc(3*time.Second, func() { close(warm) })
	run(warm)
	transport.CloseIdleConnections()
	time.Sleep(time.Second) // let the server close the connections of the warm-up
	forceGC(t, g, pprofKey)
	baseFP := measure(t, g)
	baseRSS, _ := rssKiB(t, g.Pid())
	for _, c := range cs {
		c.outcomes = c.outcomes[:0]
	}

	stop := make(chan struct{})
	loadDone := make(chan struct{})
	start := time.Now()
	go func() { run(stop); close(loadDone) }()

	// The fault schedule, as fractions of the soak: slow upstream from 25% to 45%, upstream down from 55% until
	// VictoriaMetrics is ready again.
	at := func(frac float64) { time.Sleep(time.Until(start.Add(time.Duration(frac * float64(total))))) }
	at(0.25)
	proxy.delay.Store(int64(150 * time.Millisecond))
	slowFrom := time.Now()
	at(0.45)
	proxy.delay.Store(0)
	slowTo := time.Now()
	at(0.55)
	outageFrom := time.Now()
	vm.Stop()
	time.Sleep(2 * time.Second)
	vm.Restart(t)
	outageTo := time.Now()
	at(1)
	close(stop)
	<-loadDone
	elapsed := time.Since(start)
	_, peakRSS := rssKiB(t, g.Pid())
	transport.CloseIdleConnections()

	// The outage window: from the stop until VictoriaMetrics is ready again, plus a second for the gateway's broken
	// keep-alive connections to the proxy to be noticed.
	grace := time.Second
	inOutage := func(o outcome) bool {
		return !o.end.Before(outageFrom) && !o.start.After(outageTo.Add(grace))
	}
	byStatus := map[string]map[int]int{"write": {}, "read": {}, "garbage": {}}
	var requests, outage5xx int
	var bad []string
	for _, c := range cs {
		for _, o := range c.outcomes {
			requests++
			byStatus[o.kind][o.status]++
			switch {
			case o.status >= 500 && inOutage(o):
				outage5xx++
			case o.status >= 500:
				bad = append(bad, fmt.Sprintf("%s %d outside the outage at +%s: %s", o.kind, o.status, o.start.Sub(start).Round(time.Millisecond), o.detail))
			case o.kind == "garbage" && (o.status/100 == 2 || o.status/100 == 3):
				bad = append(bad, fmt.Sprintf("garbage answered %d: %s", o.status, o.detail))
			case o.kind == "garbage" && o.status == 0 && !strings.HasPrefix(o.detail, "raw bytes") && !inOutage(o):
				bad = append(bad, "garbage got no answer: "+o.detail)
			case o.kind != "garbage" && o.status == 0 && !inOutage(o):
				bad = append(bad, fmt.Sprintf("%s got no answer at +%s: %s", o.kind, o.start.Sub(start).Round(time.Millisecond), o.detail))
			case o.kind != "garbage" && o.status/100 == 4:
				bad = append(bad, fmt.Sprintf("%s answered %d: %s", o.kind, o.status, o.detail))
			}
		}
	}
	var acked, ackedRows int
	for _, c := range cs {
		acked += len(c.acked)
	}
	ackedRows = acked * samplesPerWrite

	// Median latency of answered reads and writes, outside and inside the slow phase.
	var normal, slow []time.Duration
	for _, c := range cs {
		for _, o := range c.outcomes {
			if o.kind == "garbage" || o.status/100 != 2 {
				continue
			}
			if !o.start.Before(slowFrom) && o.start.Before(slowTo) {
				slow = append(slow, o.end.Sub(o.start))
			} else {
				normal = append(normal, o.end.Sub(o.start))
			}
		}
	}

	after, afterRSS, settled := settle(t, g, pprofKey, baseFP, baseRSS)
	t.Logf("soak: %s with %d clients; %d requests (%.0f/s): writes %v, reads %v, garbage %v",
		elapsed.Round(time.Second), clients, requests, float64(requests)/elapsed.Seconds(), sortedCounts(byStatus["write"]), sortedCounts(byStatus["read"]), sortedCounts(byStatus["garbage"]))
	t.Logf("soak: slow upstream (+150ms a chunk) from +%s to +%s; upstream down from +%s to +%s; %d requests got a 5xx in the outage window, %d outside",
		slowFrom.Sub(start).Round(time.Millisecond), slowTo.Sub(start).Round(time.Millisecond), outageFrom.Sub(start).Round(time.Millisecond), outageTo.Sub(start).Round(time.Millisecond), outage5xx, len(bad))
	t.Logf("soak: median latency of answered reads and writes %s normally, %s in the slow phase", median(normal), median(slow))
	t.Logf("soak: gateway before %s, RSS %d KiB; peak RSS %d KiB; after %s, RSS %d KiB", baseFP, baseRSS, peakRSS, after, afterRSS)
	for _, name := range []string{`vmgateway_upstream_errors_total{upstream="read",reason="unreachable"}`, `vmgateway_upstream_errors_total{upstream="write",reason="unreachable"}`,
		`vmgateway_upstream_errors_total{upstream="read",reason="aborted_response"}`, `vmgateway_panics_total`} {
		// Figures for the log, not checks: a fault the soak did not happen to hit has no series yet.
		if v, err := readMetric(g.URL+"/metrics", name); err == nil {
			t.Logf("soak: %s %v", name, v)
		} else {
			t.Logf("soak: %s: none (%s)", name, err)
		}
	}
	for i, b := range bad {
		if i == 20 {
			t.Errorf("... and %d more", len(bad)-20)
			break
		}
		t.Error(b)
	}
	if !settled {
		t.Errorf("the gateway did not return near its baseline: before %s and RSS %d KiB, after %s and RSS %d KiB (allowed +%d goroutines/fds, RSS up to %d KiB)",
			baseFP, baseRSS, after, afterRSS, soakGoroutineSlack, maxSettledRSS(baseRSS))
	}
	if outage5xx == 0 {
		t.Errorf("no request met the upstream outage: the fault was not injected under load")
	}
	if n := metricValue(t, g, "vmgateway_panics_total"); n != 0 {
		t.Errorf("%v panics during the soak", n)
	}

	// Every acknowledged write is stored. Flushed at each look: rows VictoriaMetrics took after one flush (its
	// ingestion shards drain on their own clock) are searchable only after the next (a CI run on a loaded machine
	// missed 12 % of them within the wait after a single flush).
	var missing []string
	var stored int
	vmtest.Eventually(t, func() (bool, string) {
		vm.Flush(t)
		values := exportedValues(t, vm.URL, "soak_write", "client")
		missing, stored = missing[:0], 0
		for _, set := range values {
			stored += len(set)
		}
		for _, c := range cs {
			for _, s := range c.acked {
				for j := int64(0); j < samplesPerWrite; j++ {
					if !values[fmt.Sprint(c.id)][s*samplesPerWrite+j] {
						missing = append(missing, fmt.Sprintf("client %d seq %d sample %d", c.id, s, j))
					}
				}
			}
		}
		return len(missing) == 0, fmt.Sprintf("%d of %d acknowledged rows are not stored, e.g. %v", len(missing), ackedRows, head(missing, 5))
	})
	t.Logf("soak: %d writes acknowledged, warm-up included (%d rows); %d rows stored; none lost", acked, ackedRows, stored)
}

func sortedCounts(m map[int]int) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, 0, len(codes))
	for _, c := range codes {
		name := fmt.Sprint(c)
		if c == 0 {
			name = "no answer"
		}
		parts = append(parts, fmt.Sprintf("%s:%d", name, m[c]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2].Round(100 * time.Microsecond)
}
