package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tenant"
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

// memTryOf is the waits of a read first refused at since, that polls every poll and may wait a minute.
func memTryOf(since time.Time, poll time.Duration) *memTry {
	return &memTry{since: since, order: since, end: time.Now().Add(time.Minute), poll: poll}
}

// TestMemQueueOrder: a query answered wakes the waiter refused first, one per query, with the memory handed to it at
// that query's backend until it is answered; a waiter that gives up leaves the queue, and one whose context ends is
// told not to send again.
func TestMemQueueOrder(t *testing.T) {
	var m memQueue
	t0 := time.Now()
	type woken struct {
		i   int
		off *handOff
	}
	woke := make(chan woken, 3)
	for i, since := range []time.Time{t0.Add(2 * time.Second), t0, t0.Add(time.Second)} {
		go func() {
			if off, ok := m.wait(context.Background(), memTryOf(since, time.Minute)); ok {
				woke <- woken{i, off}
			}
		}()
	}
	for m.waiting.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	be := &backend{}
	for _, want := range []int{1, 2, 0} {
		m.answered(nil, be, true)
		select {
		case got := <-woke:
			if got.i != want || got.off == nil || got.off.b != be {
				t.Fatalf("woke waiter %d with %+v; want %d, the one refused first, with the memory of the query's backend", got.i, got.off, want)
			}
			if n := m.handing.Load(); n != 1 {
				t.Fatalf("%d hand-offs under way; want the woken one's", n)
			}
			m.answered(got.off, be, false)
		case <-time.After(5 * time.Second):
			t.Fatalf("no waiter woke; want %d", want)
		}
	}
	if n, h := m.waiting.Load(), m.handing.Load(); n != 0 || h != 0 {
		t.Fatalf("%d still waiting, %d hand-offs; want none", n, h)
	}
	// A poll that runs out leaves the queue: the next query's memory is not handed to it.
	if off, ok := m.wait(context.Background(), memTryOf(t0, 10*time.Millisecond)); !ok || off != nil {
		t.Fatalf("a wait whose poll ran out: %v, %+v; want to send again, with no memory handed over", ok, off)
	}
	if n := m.waiting.Load(); n != 0 || len(m.q) != 0 {
		t.Fatalf("after a poll ran out: %d waiting, %d queued; want none", n, len(m.q))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := m.wait(ctx, memTryOf(t0, time.Minute)); ok {
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
	set := oneReadBackend()
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

// memPool is a backend with VictoriaMetrics' query memory pool: a query (path /api/v1/query_range) asks for
// need=N bytes; one that does not fit beside those running is refused at once with the pool's 422, one that fits
// holds its bytes for compute and frees them before its answer begins, as VictoriaMetrics frees a rollup's memory
// when its evaluation ends, before it writes the answer. It counts the sends of each team.
type memPool struct {
	total   int64
	compute time.Duration
	mu      sync.Mutex
	used    int64
	sends   map[string]int
	// hang, when set, is called for each send, told whether its query fits, and may block it.
	hang func(r *http.Request, fits bool)
}

func (p *memPool) RoundTrip(r *http.Request) (*http.Response, error) {
	q := r.URL.Query()
	need, _ := strconv.ParseInt(q.Get("need"), 10, 64)
	p.mu.Lock()
	if p.sends == nil {
		p.sends = map[string]int{}
	}
	p.sends[q.Get("team")]++
	hang := p.hang
	fits := p.used+need <= p.total
	if fits {
		p.used += need
	}
	p.mu.Unlock()
	if hang != nil {
		hang(r, fits)
	}
	if !fits {
		msg := fmt.Sprintf(`{"status":"error","errorType":"422","error":"not enough memory for processing %s, which returns 1 data points `+
			`across 1 time series with 1 points in each time series; total available memory for concurrent requests: %d bytes; requested `+
			"memory: %d bytes; possible solutions are: reducing the number of matching time series; increasing `step` query arg (step=5s)\"}",
			q.Get("query"), p.total, need)
		return &http.Response{StatusCode: 422, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(msg))}, nil
	}
	select {
	case <-time.After(p.compute):
	case <-r.Context().Done():
	}
	p.mu.Lock()
	p.used -= need
	p.mu.Unlock()
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{"status":"success"}`))}, nil
}

func (p *memPool) sent(team string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sends[team]
}

// poolRead is a query of team's that asks for need bytes of the pool, sent by team's isolation unit (teamUnit).
func poolRead(team string, need int) *http.Request {
	return poolReadIn(context.Background(), team, need)
}

// poolReadIn is poolRead with the context ctx.
func poolReadIn(ctx context.Context, team string, need int) *http.Request {
	req := httptest.NewRequestWithContext(withMemUnit(ctx, teamUnit(team)), http.MethodGet,
		fmt.Sprintf("http://gateway/api/v1/query_range?query=q&team=%s&need=%d", team, need), nil)
	req.Body = nil
	return req
}

// teamUnit is the isolation unit of the tests' team.
func teamUnit(team string) unit {
	var f enforce.Fingerprint
	copy(f[:], team)
	return unit{restriction: f}
}

// TestMemHandOff: team dev's three loops each send a query that takes almost the whole pool, sending the next as
// soon as one is answered, while team ops' small query waits for the pool. The memory a dev query frees goes to the
// read that waited longest: ops gets in within its wait, in a few sends. Before, the read woken when a dev query ended
// was sent again in a race with that dev loop's next query, sent fresh, which won nearly every time: ops spent its
// sends and got the 422 (TestQueryMemoryPoolWaits on v1.151, once in CI).
func TestMemHandOff(t *testing.T) {
	set := oneReadBackend()
	pool := &memPool{total: 50 << 20, compute: 5 * time.Millisecond}
	b := newBalancer(set, pool, nil)
	b.memWait = 10 * time.Second
	devRuns, stop := readLoops(t, b, 3, "dev", 49<<20)
	defer stop()
	for devRuns.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	var slowest time.Duration
	most := 0
	for i := range 10 {
		before := pool.sent("ops")
		began := time.Now()
		resp, err := b.RoundTrip(poolRead("ops", 6<<20))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		took, sends := time.Since(began), pool.sent("ops")-before
		if resp.StatusCode != 200 {
			t.Fatalf("ops' query %d: %d after %s and %d sends (%.80s); want it answered within its wait", i, resp.StatusCode, took, sends, body)
		}
		slowest, most = max(slowest, took), max(most, sends)
	}
	t.Logf("ops' 10 queries answered, the slowest after %s, at most %d sends; dev's answered %d times", slowest, most, devRuns.Load())
}

// TestMemWaitsBoundedWoken: a read whose 422 only looks like the pool's refusal is woken and handed the memory of
// every query answered meanwhile (another team's, every few milliseconds), and is still sent at most maxMemWaits+1
// times, each send at least its gap (memTry.gap) after the last; the other team's reads, held back while it is sent,
// go on.
func TestMemWaitsBoundedWoken(t *testing.T) {
	set := oneReadBackend()
	var mu sync.Mutex
	var mimicSends []time.Time
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Query().Get("team") == "mimic" {
			mu.Lock()
			mimicSends = append(mimicSends, time.Now())
			mu.Unlock()
			return &http.Response{StatusCode: 422, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(refusal179))}, nil
		}
		time.Sleep(2 * time.Millisecond)
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}"))}, nil
	})
	b := newBalancer(set, rt, nil)
	b.memWait = 3 * time.Second
	others, stop := readLoops(t, b, 2, "qa", 1)
	defer stop()
	began := time.Now()
	resp, err := b.RoundTrip(poolRead("mimic", 1))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	took := time.Since(began)
	mu.Lock()
	sends := slices.Clone(mimicSends)
	mu.Unlock()
	if resp.StatusCode != 422 || len(sends) > maxMemWaits+1 {
		t.Errorf("the mimicking query: %d after %d sends; want its 422 after at most %d", resp.StatusCode, len(sends), maxMemWaits+1)
	}
	// Woken at every query answered, it is sent as soon as each gap ends: its sends fill its wait, not a fraction of it.
	if took < b.memWait || len(sends) < 6 {
		t.Errorf("the mimicking query: its 422 after %s and %d sends; want it sent again as each gap ended, for its whole wait of %s", took, len(sends), b.memWait)
	}
	tr := memTry{}
	for i := 1; i < len(sends); i++ {
		tr.sends = i
		// The last is sent as its wait ends, which may come before its gap does.
		want := min(tr.gap(), sends[0].Add(b.memWait).Sub(sends[i-1]))
		if d := sends[i].Sub(sends[i-1]); d < want {
			t.Errorf("send %d came %s after the one before; want at least its gap, %s", i+1, d, want)
		}
	}
	before := others.Load()
	time.Sleep(100 * time.Millisecond)
	if others.Load() == before {
		t.Error("the other team's reads stopped")
	}
	if n, h := b.mem.waiting.Load(), b.mem.handing.Load(); n != 0 || h != 0 {
		t.Errorf("%d waiting, %d hand-offs left; want none", n, h)
	}
	t.Logf("the mimicking query: %d sends in %s; the other team's reads: %d", len(sends), took, others.Load())
}

// TestMemCheapQueriesSpendNoWait: while team dev's one query holds the pool for 1.5 s, team qa's cheap queries are
// answered every few milliseconds, and each used to wake ops' waiting query, which was sent again and refused at
// once: its 16 sends were spent in some tens of milliseconds and ops got the 422 while dev's query still ran. With the
// gaps between a read's sends, ops waits for dev's query to end and is answered.
func TestMemCheapQueriesSpendNoWait(t *testing.T) {
	set := oneReadBackend()
	pool := &memPool{total: 50 << 20, compute: time.Millisecond}
	pool.hang = func(r *http.Request, fits bool) {
		if fits && r.URL.Query().Get("team") == "dev" {
			time.Sleep(1500 * time.Millisecond)
		}
	}
	b := newBalancer(set, pool, nil)
	b.memWait = 10 * time.Second
	devDone := make(chan struct{})
	go func() {
		defer close(devDone)
		resp, err := b.RoundTrip(poolRead("dev", 49<<20))
		if err != nil {
			t.Error(err)
			return
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("dev's query: %d; want it answered", resp.StatusCode)
		}
	}()
	for pool.sent("dev") == 0 {
		time.Sleep(time.Millisecond)
	}
	cheap, stop := readLoops(t, b, 2, "qa", 1)
	defer stop()
	began := time.Now()
	resp, err := b.RoundTrip(poolRead("ops", 6<<20))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	took, sends := time.Since(began), pool.sent("ops")
	if resp.StatusCode != 200 {
		t.Fatalf("ops' query: %d after %s and %d sends (%.80s); want it answered once dev's query ended", resp.StatusCode, took, sends, body)
	}
	<-devDone
	t.Logf("ops' query answered after %s and %d sends; qa's cheap queries answered meanwhile: %d", took, sends, cheap.Load())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestMemHandOffClientGone: a woken read whose client goes while it is sent ends its hand-off, and a read held back by
// it (another of its unit's) goes at once, not at the hand-off's end; woken as its client goes, it passes the memory
// to the next waiter.
func TestMemHandOffClientGone(t *testing.T) {
	set := oneReadBackend()
	release := make(chan struct{})
	pool := &memPool{total: 50 << 20, compute: time.Millisecond, hang: func(r *http.Request, fits bool) {
		switch team := r.URL.Query().Get("team"); {
		case team == "dev" && fits:
			<-release
		case team == "ops" && !fits:
			// Its refusals come slowly, so its hand-off lasts memHandOffMax.
			time.Sleep(memHandOffMax / 2)
		case team == "ops":
			<-r.Context().Done()
		}
	}}
	b := newBalancer(set, pool, nil)
	b.memWait = time.Minute
	devDone := fillPool(t, b, pool)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opsErr := make(chan error, 1)
	go func() {
		resp, err := b.RoundTrip(poolReadIn(ctx, "ops", 6<<20))
		if err == nil {
			_ = resp.Body.Close()
		}
		opsErr <- err
	}()
	for b.mem.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// dev's query is answered and its memory handed to ops, whose send hangs at the backend.
	close(release)
	<-devDone
	if n := b.mem.handing.Load(); n != 1 {
		t.Fatalf("%d hand-offs after dev's query was answered; want ops'", n)
	}
	held := make(chan time.Duration, 1)
	go func() {
		began := time.Now()
		// Another read of ops' unit, which is in the contention (its read waited): a team's that was never refused is
		// not held (TestMemHandOffHoldsContendersOnly).
		req := poolRead("qa", 1)
		resp, err := b.RoundTrip(req.WithContext(withMemUnit(req.Context(), teamUnit("ops"))))
		if err != nil {
			t.Error(err)
		} else {
			_ = resp.Body.Close()
		}
		held <- time.Since(began)
	}()
	time.Sleep(100 * time.Millisecond)
	if pool.sent("qa") != 0 {
		t.Fatal("another read of ops' unit was sent while the memory was handed to ops")
	}
	cancel()
	if err := <-opsErr; !errors.Is(err, context.Canceled) {
		t.Errorf("ops' read after its client went: %v; want it canceled", err)
	}
	if took := <-held; took > memHandOffMax*6/10 {
		t.Errorf("qa's read was held %s, past ops' client going (after 100ms); want it sent then", took)
	}
	if n := b.mem.handing.Load(); n != 0 {
		t.Errorf("%d hand-offs left; want none", n)
	}

	// Woken as its client goes, a waiter passes the memory on: the next waiter gets it, whichever of the two came first.
	var m memQueue
	be := &backend{}
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		t0 := time.Now()
		gone := make(chan bool, 1)
		go func() {
			_, ok := m.wait(ctx, memTryOf(t0, time.Minute))
			gone <- ok
		}()
		for m.waiting.Load() < 1 {
			time.Sleep(time.Millisecond)
		}
		next := make(chan *handOff, 1)
		go func() {
			off, _ := m.wait(context.Background(), memTryOf(t0.Add(time.Second), time.Minute))
			next <- off
		}()
		for m.waiting.Load() < 2 {
			time.Sleep(time.Millisecond)
		}
		cancel()
		m.answered(nil, be, true)
		if <-gone {
			t.Fatal("a waiter whose client went was told to send again")
		}
		select {
		case off := <-next:
			if off == nil || off.b != be {
				t.Fatalf("the next waiter got %+v; want the memory freed", off)
			}
			m.answered(off, be, false)
		case <-time.After(5 * time.Second):
			t.Fatal("the next waiter was not woken: the memory went with the waiter whose client went")
		}
		if n, h := m.waiting.Load(), m.handing.Load(); n != 0 || h != 0 {
			t.Fatalf("%d waiting, %d hand-offs left; want none", n, h)
		}
	}
	// The zero value holds nothing back and hands nothing over.
	var zero memQueue
	began := time.Now()
	zero.holdBack(context.Background(), be, unit{}, time.Minute)
	zero.answered(nil, be, true)
	if d := time.Since(began); d > 100*time.Millisecond || zero.handing.Load() != 0 {
		t.Errorf("the zero queue held a read %s, made %d hand-offs", d, zero.handing.Load())
	}
}

// TestMemHandOffHoldsContendersOnly: while the memory a query freed is handed to ops' woken read, only the reads of
// the units in the memory contention are held back: qa's, refused for the pool a moment ago (its client then went),
// and ops' own others. ci's read, of a unit never refused, goes at once. Holding back every read let a client whose
// forged refusal (TestMemWaitsBoundedWoken) was woken at every query answered add up to a second to every other
// team's reads, 16 times a query, again and again.
func TestMemHandOffHoldsContendersOnly(t *testing.T) {
	set := oneReadBackend()
	release := make(chan struct{})
	pool := &memPool{total: 50 << 20, compute: time.Millisecond, hang: func(r *http.Request, fits bool) {
		switch team := r.URL.Query().Get("team"); {
		case team == "dev" && fits:
			<-release
		case team == "ops" && !fits:
			// Its refusals come slowly, so its hand-off lasts memHandOffMax.
			time.Sleep(memHandOffMax / 2)
		case team == "ops" || team == "qa" && fits:
			<-r.Context().Done()
		}
	}}
	b := newBalancer(set, pool, nil)
	b.memWait = time.Minute
	devDone := fillPool(t, b, pool)
	// qa's read is refused and waits; its client goes.
	qaCtx, qaGone := context.WithCancel(context.Background())
	qaDone := make(chan struct{})
	go func() {
		defer close(qaDone)
		if resp, err := b.RoundTrip(poolReadIn(qaCtx, "qa", 6<<20)); err == nil {
			_ = resp.Body.Close()
		}
	}()
	for b.mem.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	qaGone()
	<-qaDone
	opsCtx, opsGone := context.WithCancel(context.Background())
	defer opsGone()
	opsDone := make(chan struct{})
	go func() {
		defer close(opsDone)
		if resp, err := b.RoundTrip(poolReadIn(opsCtx, "ops", 6<<20)); err == nil {
			_ = resp.Body.Close()
		}
	}()
	for b.mem.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// dev's query is answered and its memory handed to ops, whose send hangs at the backend.
	close(release)
	<-devDone
	if n := b.mem.handing.Load(); n != 1 {
		t.Fatalf("%d hand-offs after dev's query was answered; want ops'", n)
	}
	began := time.Now()
	later, stopLater := context.WithCancel(context.Background())
	defer stopLater()
	var wg sync.WaitGroup
	for _, team := range []string{"qa", "ops"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := b.RoundTrip(poolReadIn(later, team, 1)); err == nil {
				_ = resp.Body.Close()
			}
		}()
	}
	resp, err := b.RoundTrip(poolRead("ci", 1))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if took := time.Since(began); resp.StatusCode != 200 || took > memHandOffFloor {
		t.Errorf("ci's read, of a unit never refused: %d after %s; want it answered at once, not held back", resp.StatusCode, took)
	}
	time.Sleep(100 * time.Millisecond)
	if qa, ops := pool.sent("qa"), pool.sent("ops"); qa != 1 || ops != 2 {
		t.Errorf("sent %d of qa's reads and %d of ops'; want only their first (qa's refused, ops' refused and its woken "+
			"send) while the memory is handed to ops", qa, ops)
	}
	opsGone()
	<-opsDone
	stopLater()
	wg.Wait()
	if n, h := b.mem.waiting.Load(), b.mem.handing.Load(); n != 0 || h != 0 {
		t.Errorf("%d waiting, %d hand-offs left; want none", n, h)
	}
}

// TestMemRefusalKnowsItsUnit: a read refused for the pool marks its own isolation unit in the contention, whether it
// holds a read slot (the balancer reads the unit off it) or not (the backends' capacity unknown: off its context, which
// a read is given only while a refusal is recent, so the second refusal is the first known to be ops').
func TestMemRefusalKnowsItsUnit(t *testing.T) {
	for _, slots := range []int{1, 0} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			u, _ := url.Parse("http://upstream")
			ops, err := enforce.New([]enforce.Label{{Name: "team", Value: "ops"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			a := &auth.Access{Mode: auth.ModeRead, Enforcer: ops}
			refuser := &memRefuser{refusals: 1}
			g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: refuser, WriteTransport: &memRefuser{},
				Auth: byToken{"ops": a}, AuthHeader: "X-Token", Limits: Limits{ReadQueueDuration: time.Minute}})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			g.SetReadSlots(slots)
			if rec := serve(g, http.MethodGet, "/api/v1/query?query=up", "X-Token", "ops"); rec.Code != http.StatusOK {
				t.Fatalf("answered %d %.200s; want 200 after a wait", rec.Code, rec.Body.String())
			}
			if slots == 0 {
				refuser.n.Store(0)
				if rec := serve(g, http.MethodGet, "/api/v1/query?query=up", "X-Token", "ops"); rec.Code != http.StatusOK {
					t.Fatalf("the second read answered %d %.200s; want 200 after a wait", rec.Code, rec.Body.String())
				}
			}
			m := &g.read.rt.(*balancer).mem
			m.mu.Lock()
			defer m.mu.Unlock()
			want := unitOf(tenant.ID{}, a.Enforcer)
			if _, ok := m.refused[want]; !ok || len(m.refused) != 1 {
				t.Errorf("units in the contention: %v; want ops' alone", m.refused)
			}
		})
	}
}

// TestMemRefusalsBounded: the units refused for the pool are kept while within the wait, and no more than twice as
// many as those (or minMemUnits): one refused a wait ago is dropped, and a unit is in the contention only within it.
func TestMemRefusalsBounded(t *testing.T) {
	var m memQueue
	const within, n = time.Second, 100 * minMemUnits
	unitN := func(i int) unit {
		var f enforce.Fingerprint
		f[0], f[1] = byte(i), byte(i>>8)
		return unit{restriction: f}
	}
	t0 := time.Now()
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	for i := range n {
		m.refusedBy(unitN(i), at(i), within)
		// A refusal a millisecond: 1,000 within the wait.
		if got := len(m.refused); got > 2*1000 {
			t.Fatalf("%d units kept after %d refusals a millisecond apart; want at most twice the 1000 within the wait", got, i+1)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.contendsLocked(unitN(0), at(n-1), within) {
		t.Error("a unit refused only a wait ago is in the contention")
	}
	if !m.contendsLocked(unitN(n-1), at(n-1).Add(within-time.Millisecond), within) {
		t.Error("a unit refused within the wait is not in the contention")
	}
	if m.contendsLocked(unitN(n-1), at(n-1).Add(within), within) {
		t.Error("a unit refused a wait ago is in the contention")
	}
}

// TestMemPollsNotSkipped: a waiter's poll is sent whatever an older waiter's refusal said it asked for: the figure is
// in the refusal's text, which a client can forge (1 byte), and the waiters that gave way to it at every poll waited
// out their queue.
func TestMemPollsNotSkipped(t *testing.T) {
	var m memQueue
	t0 := time.Now()
	older := make(chan *handOff, 1)
	go func() {
		off, _ := m.wait(context.Background(), memTryOf(t0, time.Minute))
		older <- off
	}()
	for m.waiting.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	began := time.Now()
	off, ok := m.wait(context.Background(), memTryOf(t0.Add(time.Second), 10*time.Millisecond))
	if took := time.Since(began); !ok || off != nil || took > 200*time.Millisecond {
		t.Errorf("a younger waiter's poll: after %s (%v, %v); want its 10ms poll sent", took, ok, off)
	}
	be := &backend{}
	m.answered(nil, be, true)
	off = <-older
	if off == nil || off.b != be {
		t.Fatalf("the older waiter got %+v; want the memory freed", off)
	}
	m.answered(off, be, false)
	if n, h := m.waiting.Load(), m.handing.Load(); n != 0 || h != 0 {
		t.Errorf("%d waiting, %d hand-offs left; want none", n, h)
	}
}

// forger answers team evil's reads at once with a forged pool refusal that asks for 1 byte; the others go to the pool.
type forger struct{ pool *memPool }

func (f forger) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("team") == "evil" {
		msg := `{"status":"error","errorType":"422","error":"not enough memory for processing x, which returns 1 data points across 1 time series with 1 points in each time series; total available memory for concurrent requests: 52428800 bytes; requested memory: 1 bytes; possible solutions are: x"}`
		return &http.Response{StatusCode: 422, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(msg))}, nil
	}
	return f.pool.RoundTrip(r)
}

// TestMemForgedWaiterTakesNoTurns: a client whose query is refused at once with a forged refusal, first in the queue,
// took every wake (refused again, it went back to the front, and the memory handed to it went to nobody) while ops
// gave way at its polls: ops waited out its 2 s and got the 422 in 2 of 4 runs (a review). Now ops is answered soon
// after the pool empties (170 ms in), as without the forger.
func TestMemForgedWaiterTakesNoTurns(t *testing.T) {
	set := oneReadBackend()
	release := make(chan struct{})
	pool := &memPool{total: 50 << 20, compute: time.Millisecond, hang: func(r *http.Request, fits bool) {
		if r.URL.Query().Get("team") == "dev" && fits {
			<-release
		}
	}}
	b := newBalancer(set, forger{pool}, nil)
	b.memWait = 2 * time.Second
	devDone := fillPool(t, b, pool)
	evilDone := make(chan struct{})
	go func() {
		defer close(evilDone)
		if resp, err := b.RoundTrip(poolRead("evil", 1)); err == nil {
			_ = resp.Body.Close()
		}
	}()
	for b.mem.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	began := time.Now()
	opsRes := make(chan int, 1)
	go func() {
		resp, err := b.RoundTrip(poolRead("ops", 6<<20))
		if err != nil {
			opsRes <- -1
			return
		}
		_ = resp.Body.Close()
		opsRes <- resp.StatusCode
	}()
	time.Sleep(150 * time.Millisecond)
	close(release) // dev's query ends: the pool is empty from now on
	<-devDone
	code := <-opsRes
	if took := time.Since(began); code != http.StatusOK || took > time.Second {
		t.Errorf("ops answered %d after %s beside the forger (the pool empty from 150 ms); want 200 within a second (%d sends of ops, %d of evil)",
			code, took, pool.sent("ops"), pool.sent("evil"))
	}
	<-evilDone
}

// TestMemWaitEndsWithTheClient: a read holding a slot is sent under the slot's context, which its client's going does
// not end; its waits for the memory do end then (nothing of it runs at the backends), where it went on for the whole
// -read.maxQueueDuration, sent again and again for nobody (a review).
func TestMemWaitEndsWithTheClient(t *testing.T) {
	u, _ := url.Parse("http://upstream")
	a := &auth.Access{Mode: auth.ModeRead}
	refuser := &memRefuser{}
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: refuser, WriteTransport: &memRefuser{},
		Auth: byToken{"ops": a}, AuthHeader: "X-Token", Limits: Limits{ReadQueueDuration: 3 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.SetReadSlots(4)
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/v1/query?query=up", nil)
	req.Header.Set("X-Token", "ops")
	done := make(chan struct{})
	began := time.Now()
	go func() { g.ServeHTTP(httptest.NewRecorder(), req); close(done) }()
	time.Sleep(150 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatalf("the read went on %s after its client left 150 ms in (%d sends); want it ended with the client", time.Since(began), refuser.n.Load())
	}
	if n := refuser.n.Load(); n > 3 {
		t.Errorf("%d sends of a read whose client left 150 ms in; want the wait ended with it", n)
	}
}

// TestMemUnitOnlyWhileContended: a read without a slot is given its unit (a context and a request more) only while a
// read was refused for the memory lately, not on every read.
func TestMemUnitOnlyWhileContended(t *testing.T) {
	var m *memQueue
	if m.contended(time.Minute) {
		t.Error("a gateway without memory waits counts as contended")
	}
	m = &memQueue{}
	if m.contended(time.Minute) {
		t.Error("a queue that never saw a refusal counts as contended")
	}
	m.lastRefused.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	if m.contended(time.Minute) {
		t.Error("a refusal two minutes ago counts as contention within a minute")
	}
	m.lastRefused.Store(time.Now().UnixNano())
	if !m.contended(time.Minute) {
		t.Error("a refusal just now does not count as contention")
	}
}

// fillPool starts team dev's read of 49 MB of the pool's 50, which the pool's hang holds as long as it likes, and
// returns once it is sent; the channel closes when it ends.
func fillPool(t *testing.T, b *balancer, pool *memPool) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := b.RoundTrip(poolRead("dev", 49<<20))
		if err != nil {
			t.Error(err)
			return
		}
		_ = resp.Body.Close()
	}()
	for pool.sent("dev") == 0 {
		time.Sleep(time.Millisecond)
	}
	return done
}

// TestMemForgerBesideFillingLoops: three loops of dev's query keep the pool full (each reserves 49 MB of 50), and a
// client sends a query refused at once with a forged refusal every 30 ms, alone or with the loops under its own token.
// The woken forger, refused again, took the memory handed to it to nobody and went back to the front: ops waited its
// 2 s and got the 422 (a review). Now the memory goes on, the forger behind the waiting, and ops is answered in its
// turn, as without the forger.
func TestMemForgerBesideFillingLoops(t *testing.T) {
	for _, tc := range []struct{ forge, oneToken bool }{{false, false}, {true, false}, {true, true}} {
		forge := tc.forge
		t.Run(fmt.Sprintf("forge=%v,fillerIsEvil=%v", forge, tc.oneToken), func(t *testing.T) {
			set := oneReadBackend()
			pool := &memPool{total: 50 << 20, compute: 20 * time.Millisecond}
			b := newBalancer(set, forger{pool}, nil)
			b.memWait = 2 * time.Second
			stop := make(chan struct{})
			loopDone := make(chan struct{})
			var loops sync.WaitGroup
			for range 3 {
				loops.Add(1)
				go func() {
					defer loops.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						req := poolRead("dev", 49<<20)
						if tc.oneToken {
							req = req.WithContext(withMemUnit(context.Background(), teamUnit("evil")))
						}
						resp, err := b.RoundTrip(req)
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							_ = resp.Body.Close()
						}
					}
				}()
			}
			go func() { loops.Wait(); close(loopDone) }()
			for pool.sent("dev") == 0 {
				time.Sleep(time.Millisecond)
			}
			evilDone := make(chan struct{})
			go func() {
				defer close(evilDone)
				if !forge {
					return
				}
				var wg sync.WaitGroup
				defer wg.Wait()
				for {
					select {
					case <-stop:
						return
					case <-time.After(30 * time.Millisecond):
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, err := b.RoundTrip(poolRead("evil", 1))
						if err == nil {
							_ = resp.Body.Close()
						}
					}()
				}
			}()
			time.Sleep(500 * time.Millisecond)
			began := time.Now()
			resp, err := b.RoundTrip(poolRead("ops", 6<<20))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if took := time.Since(began); resp.StatusCode != http.StatusOK || took > time.Second {
				t.Errorf("ops answered %d after %s, %d sends (dev sent %d); want 200 within a second of its 2 s wait",
					resp.StatusCode, took, pool.sent("ops"), pool.sent("dev"))
			}
			close(stop)
			<-loopDone
			<-evilDone
		})
	}
}

// TestMemGapYieldsToTheContention: a waiter within its gap (memTry.gap) is not woken by the answer of a unit outside
// the contention for the memory, which then has it poll as the gap ends, with no memory handed over; the answer of a
// unit in the contention (the team filling the pool, refused itself) wakes it at once with the memory.
func TestMemGapYieldsToTheContention(t *testing.T) {
	var m memQueue
	be := &backend{}
	dev, qa := teamUnit("dev"), teamUnit("qa")
	m.refusedBy(dev, time.Now(), time.Minute)
	wait := func() (chan *handOff, time.Time) {
		tr := memTryOf(time.Now(), time.Minute)
		tr.sends = 4 // a gap of 200 ms
		got := make(chan *handOff, 1)
		began := time.Now()
		go func() {
			off, ok := m.wait(context.Background(), tr)
			if !ok {
				t.Error("the wait said not to send again")
			}
			got <- off
		}()
		for m.waiting.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		return got, began
	}

	got, began := wait()
	m.answeredBy(nil, be, true, qa, true, time.Minute)
	off := <-got
	if took := time.Since(began); off != nil || took < 200*time.Millisecond {
		t.Errorf("woken by qa's answer within its gap: after %s with %+v; want a poll as the gap ended, no memory handed", took, off)
	}

	got, began = wait()
	m.answeredBy(nil, be, true, dev, true, time.Minute)
	select {
	case off := <-got:
		if took := time.Since(began); off == nil || off.b != be || took >= 200*time.Millisecond {
			t.Errorf("woken by dev's answer: after %s with %+v; want the memory handed over at once", took, off)
		}
		m.answered(off, be, false)
	case <-time.After(5 * time.Second):
		t.Fatal("dev's answer did not wake the waiter")
	}
	if n, h := m.waiting.Load(), m.handing.Load(); n != 0 || h != 0 {
		t.Errorf("%d waiting, %d hand-offs left; want none", n, h)
	}
}

// readLoops runs n loops of team's queries of need bytes of the pool through b until the returned stop; the count is
// of those answered 200.
func readLoops(t *testing.T, b *balancer, n int, team string, need int) (*atomic.Int64, func()) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := b.RoundTrip(poolRead(team, need))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					answered.Add(1)
				}
			}
		}()
	}
	return &answered, func() { close(stop); wg.Wait() }
}

// oneReadBackend is the read backends of the memory tests: one, whose address the tests' round trippers never dial.
func oneReadBackend() *backendSet {
	u, _ := url.Parse("http://vm.invalid:8428")
	return newBackendSet("read", LeastLoaded, 0, []*backend{newBackend("read", u, "")})
}
