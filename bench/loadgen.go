//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator keeps exactly -concurrency keep-alive connections, each sending one prepared request after
// another and timing each from the first byte written to the last byte read. It writes raw HTTP/1.1 rather than
// going through net/http's client, so it spends as little of the shared CPU as it can, the same for every target.

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// loadResult is one run of the load generator.
type loadResult struct {
	ok, errors uint64
	firstError string
	elapsed    time.Duration
	hist       histogram
}

// readQuery is the Grafana latency panel of a dashboard over the last hour.
var readQuery = url.Values{
	"query": {`histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{job="api",handler=~"/api/v1/.*"}[5m])) by (le, handler))`},
	"start": {"1700000000"}, "end": {"1700003600"}, "step": {"15"},
}.Encode()

// importBody is a small Prometheus text import, as a scrape of a few series.
var importBody = func() []byte {
	var b strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, "http_requests_total{job=\"api\",instance=\"10.0.0.%d:8080\",code=\"200\",handler=\"/api/v1/query\"} %d 1700000000000\n", i, 1000+i)
	}
	return []byte(b.String())
}()

// rawRequest is the request of workload wl as bytes on the wire.
func rawRequest(wl, addr, token string) []byte {
	var b strings.Builder
	switch wl {
	case "read":
		fmt.Fprintf(&b, "GET /api/v1/query_range?%s HTTP/1.1\r\n", readQuery)
	case "write":
		b.WriteString("POST /api/v1/import/prometheus HTTP/1.1\r\n")
	case "remotewrite":
		b.WriteString("POST /api/v1/write HTTP/1.1\r\n")
	}
	ua := "Grafana/11.0.0"
	if wl == "remotewrite" {
		ua = "vmagent"
	}
	fmt.Fprintf(&b, "Host: %s\r\nUser-Agent: %s\r\nAuthorization: Bearer %s\r\n", addr, ua, token)
	switch wl {
	case "write":
		fmt.Fprintf(&b, "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(importBody), importBody)
	case "remotewrite":
		// The headers vmagent sends with every batch.
		fmt.Fprintf(&b, "Content-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: %d\r\n\r\n%s",
			len(remoteWriteBody), remoteWriteBody)
	default:
		b.WriteString("Accept: application/json\r\n\r\n")
	}
	return []byte(b.String())
}

// runLoad sends reqs to addr over conns connections, each connection taking them in turn from its own starting
// point (a mix is spread evenly at any moment): warm for warm, then measure for dur. onStart and onEnd run right
// at the edges of the measured window (CPU and RSS samples).
func runLoad(ctx context.Context, addr string, reqs [][]byte, conns int, warm, dur time.Duration, onStart, onEnd func()) loadResult {
	var phase atomic.Int32
	workers := make([]*worker, conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{addr: addr, reqs: reqs, next: i % len(reqs), phase: &phase}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	sleep(ctx, warm)
	onStart()
	start := time.Now()
	phase.Store(phaseMeasure)
	sleep(ctx, dur)
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	onEnd()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// A target that stopped answering: cut its connections so the workers return.
		for _, w := range workers {
			w.closeConn()
		}
		<-done
	}
	r := loadResult{elapsed: elapsed}
	for _, w := range workers {
		w.closeConn()
		r.ok += w.ok
		r.errors += w.errors
		if r.firstError == "" {
			r.firstError = w.firstError
		}
		r.hist.merge(&w.hist)
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

type worker struct {
	addr  string
	reqs  [][]byte
	next  int
	phase *atomic.Int32

	mu   sync.Mutex // guards conn against closeConn from runLoad; the request loop never takes it
	conn net.Conn

	ok, errors uint64
	firstError string
	hist       histogram
}

func (w *worker) run() {
	var conn net.Conn
	var br *bufio.Reader
	for {
		ph := w.phase.Load()
		if ph == phaseStop {
			return
		}
		if conn == nil {
			c, err := net.Dial("tcp", w.addr)
			if err != nil {
				w.fail(ph, err.Error())
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn, br = c, bufio.NewReaderSize(c, 32<<10)
			w.mu.Lock()
			w.conn = c
			w.mu.Unlock()
		}
		start := time.Now()
		req := w.reqs[w.next]
		w.next = (w.next + 1) % len(w.reqs)
		status, keep, err := roundTrip(conn, br, req)
		d := time.Since(start)
		ph = w.phase.Load()
		switch {
		case err != nil:
			w.fail(ph, err.Error())
			keep = false
		case status/100 != 2:
			w.fail(ph, "status "+strconv.Itoa(status))
		case ph == phaseMeasure:
			w.ok++
			w.hist.record(d)
		}
		if !keep {
			_ = conn.Close()
			conn = nil
		}
	}
}

func (w *worker) fail(ph int32, msg string) {
	if ph != phaseMeasure {
		return
	}
	w.errors++
	if w.firstError == "" {
		w.firstError = msg
	}
}

func (w *worker) closeConn() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		_ = w.conn.Close()
	}
}

func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) (status int, keep bool, err error) {
	if _, err := conn.Write(req); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, err == nil && !resp.Close, err
}

// histogram records every latency with at most 1/64 (1.6%) relative error: 64 linear sub-buckets per power of two.
type histogram struct {
	counts [64 * 58]uint64
	n      uint64
	max    time.Duration
}

const subBits = 6

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1
	return (e+1)<<subBits + int(v>>e) - 1<<subBits
}

// bucketMid is the middle of bucket i's range, in nanoseconds.
func bucketMid(i int) float64 {
	if i < 1<<subBits {
		return float64(i)
	}
	e := i>>subBits - 1
	low := uint64(i&(1<<subBits-1)+1<<subBits) << e
	return float64(low) + float64(uint64(1)<<e)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in microseconds.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return bucketMid(i) / 1e3
		}
	}
	return float64(h.max) / 1e3
}
