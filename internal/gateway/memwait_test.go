package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The two messages as VictoriaMetrics words them: 1.79.5 in plain text, the current release inside its JSON error.
const (
	refusal179 = `error when executing query="max_over_time(m{team=\"ops\"}[5m])" on the time range (start=1699996400000, end=1700000000000, step=5000): ` +
		`cannot execute query: cannot evaluate "max_over_time(m{team=\"ops\"}[5m])": not enough memory for processing 360500 data points across 500 ` +
		`time series with 721 points in each time series; total available memory for concurrent requests: 100000000 bytes; requested memory: ` +
		`5768000 bytes; possible solutions are: reducing the number of matching time series; switching to node with more RAM; increasing ` +
		"-memory.allowedPercent; increasing `step` query arg (5s)"
	refusalCurrent = `{"status":"error","errorType":"422","error":"not enough memory for processing max_over_time(m{team=\"ops\"}[5m]), ` +
		`which returns 360500 data points across 500 time series with 721 points in each time series; total available memory for concurrent ` +
		`requests: 100000000 bytes; requested memory: 6268000 bytes; possible solutions are: reducing the number of matching time series; ` +
		"increasing `step` query arg (step=5s); switching to node with more RAM; increasing -memory.allowedPercent\"}"
)

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

// TestMemPoolRefusal: only VictoriaMetrics' refusal for its full query memory, of a query that fits the empty
// pool, is waited on; the answer keeps its whole body either way.
func TestMemPoolRefusal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		encoding string
		body     []byte
		want     bool
	}{
		{"1.79.5, gzipped plain text", 422, "gzip", gzipped(refusal179), true},
		{"1.79.5, plain text", 422, "", []byte(refusal179), true},
		{"current, JSON", 422, "", []byte(refusalCurrent), true},
		{"bigger than the empty pool", 422, "", []byte(strings.Replace(refusal179, "requested memory: 5768000", "requested memory: 100000001", 1)), false},
		{"another 422", 422, "", []byte(`{"status":"error","errorType":"422","error":"cannot parse query"}`), false},
		{"the message under another status", 503, "", []byte(refusal179), false},
		{"an encoding not read", 422, "br", []byte(refusal179), false},
		{"a broken gzip", 422, "gzip", gzipped(refusal179)[:40], false},
		{"the counts past the part read", 422, "", []byte(strings.Repeat(" ", memRefusalPrefix) + refusal179), false},
		// The counts are read where VictoriaMetrics writes them, last and in its words: a query that names them
		// otherwise is not the refusal (one that copies the whole of it can be: TestMemWaitsBounded).
		{"a query that names the counts, echoed", 422, "", []byte(`cannot evaluate "up{a=\"not enough memory for processing; total available ` +
			`memory for concurrent requests: 9 bytes; requested memory: 1 bytes\"}": duplicate output timeseries`), false},
		{"a mimicking query in a real refusal", 422, "", []byte(strings.Replace(refusal179, `max_over_time(m{team=\"ops\"}[5m])`,
			`max_over_time(m{team=\"total available memory for concurrent requests: 1 bytes\"}[5m])`, 2)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(tc.body))}
			if tc.encoding != "" {
				resp.Header.Set("Content-Encoding", tc.encoding)
			}
			if got := memPoolRefusal(resp); got != tc.want {
				t.Errorf("memPoolRefusal = %v, want %v", got, tc.want)
			}
			if rest, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(rest, tc.body) {
				t.Errorf("the body after the check: %d bytes (%v), want the %d sent", len(rest), err, len(tc.body))
			}
		})
	}
}

// TestMemQueueOrder: a read that ends wakes the waiter refused first, one per read; a waiter that gives up leaves
// the queue, and one whose context ends is told not to send again.
func TestMemQueueOrder(t *testing.T) {
	var m memQueue
	t0 := time.Now()
	woke := make(chan int, 3)
	for i, since := range []time.Time{t0.Add(2 * time.Second), t0, t0.Add(time.Second)} {
		go func() {
			if m.wait(context.Background(), time.Minute, since) {
				woke <- i
			}
		}()
	}
	for m.waiting.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	for _, want := range []int{1, 2, 0} {
		m.freed()
		select {
		case got := <-woke:
			if got != want {
				t.Fatalf("woke waiter %d; want %d, the one refused first", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no waiter woke; want %d", want)
		}
	}
	if n := m.waiting.Load(); n != 0 {
		t.Fatalf("%d still waiting", n)
	}
	// A poll that runs out leaves the queue: the next read's end is not spent on it.
	if !m.wait(context.Background(), 10*time.Millisecond, t0) {
		t.Fatal("a wait whose poll ran out said not to send again")
	}
	if n := m.waiting.Load(); n != 0 || len(m.q) != 0 {
		t.Fatalf("after a poll ran out: %d waiting, %d queued; want none", n, len(m.q))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if m.wait(ctx, time.Minute, t0) {
		t.Fatal("a wait whose client left said to send again")
	}
}

// memRefuser answers every request with the pool's refusal.
// memRefuser answers the pool's refusal to its first refusals requests (all of them at 0), then 200, and keeps the
// URLs it was sent.
type memRefuser struct {
	n        atomic.Int32
	refusals int32
	mu       sync.Mutex
	urls     []string
}

func (m *memRefuser) RoundTrip(r *http.Request) (*http.Response, error) {
	m.mu.Lock()
	m.urls = append(m.urls, r.URL.String())
	m.mu.Unlock()
	if n := m.n.Add(1); m.refusals > 0 && n > m.refusals {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}"))}, nil
	}
	return &http.Response{StatusCode: 422, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(refusal179))}, nil
}

// TestMemWaitAimsOnce: a read sent again after a memory wait to a lone backend whose URL has a path prefix and args (a
// vmauth or an ingress in front of vmselect) goes to the same URL each time; the backend's prefix and args were
// joined again at every wait (an attacker's review).
func TestMemWaitAimsOnce(t *testing.T) {
	u, _ := url.Parse("http://vm.invalid:8481/pfx?a=1")
	set := newBackendSet("read", LeastLoaded, 0, []*backend{newBackend("read", u, "")})
	rt := &memRefuser{refusals: 2}
	b := newBalancer(set, rt, nil)
	b.memWait = time.Minute
	req := httptest.NewRequest(http.MethodGet, "http://gateway/select/1:0/prometheus/api/v1/query?query=up", nil)
	req.Body = nil
	resp, err := b.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	want := "http://vm.invalid:8481/pfx/select/1:0/prometheus/api/v1/query?a=1&query=up"
	if resp.StatusCode != 200 || len(rt.urls) != 3 || rt.urls[0] != want || rt.urls[1] != want || rt.urls[2] != want {
		t.Errorf("answered %d after sending to %q; want 200 after 3 sends to %s", resp.StatusCode, rt.urls, want)
	}
}

// TestMemWaitsBounded: a read refused for the pool goes again at most maxMemWaits times, then its client gets the
// refusal: a client whose own text ends a 422 (which the gateway cannot tell from the pool's) gets its query sent
// again no more often than that.
func TestMemWaitsBounded(t *testing.T) {
	u, _ := url.Parse("http://vm.invalid:8428")
	set := newBackendSet("read", LeastLoaded, 0, []*backend{newBackend("read", u, "")})
	rt := &memRefuser{}
	b := newBalancer(set, rt, nil)
	b.memWait = time.Minute
	req := httptest.NewRequest(http.MethodGet, "http://gateway/api/v1/query?query=up", nil)
	req.Body = nil
	began := time.Now()
	resp, err := b.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 422 || string(body) != refusal179 {
		t.Errorf("after the waits: %d %.100s; want the refusal as VictoriaMetrics sent it", resp.StatusCode, body)
	}
	if n := rt.n.Load(); n != maxMemWaits+1 {
		t.Errorf("%d attempts; want %d", n, maxMemWaits+1)
	}
	t.Logf("%d attempts in %s", rt.n.Load(), time.Since(began))

	// An API that changes data (an admin API, which goes to the read backends) is never sent again for it.
	rt.n.Store(0)
	del := httptest.NewRequest(http.MethodPost, "http://gateway/api/v1/admin/tsdb/delete_series?match[]=up", nil)
	del.Body = nil
	del = del.WithContext(context.WithValue(del.Context(), changesDataKey{}, set.backends()))
	resp, err = b.RoundTrip(del)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if n := rt.n.Load(); n != 1 || resp.StatusCode != 422 {
		t.Errorf("an admin request: %d attempts, answered %d; want 1 and the refusal", n, resp.StatusCode)
	}
}
