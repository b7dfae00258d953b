package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/proxyclient"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// exportUpstream streams answers of chunks×size bytes, a chunk every pace, as VictoriaMetrics streams an export, and
// tells how each ended: whole, or broken off by its connection's close.
type exportUpstream struct {
	chunks, size int
	pace         time.Duration
	whole        atomic.Int32
	broken       atomic.Int32
	ended        chan struct{}
}

func (e *exportUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() { e.ended <- struct{}{} }()
	chunk := []byte(strings.Repeat("x", e.size))
	rc := http.NewResponseController(w)
	for range e.chunks {
		if _, err := w.Write(chunk); err != nil || rc.Flush() != nil {
			e.broken.Add(1)
			return
		}
		time.Sleep(e.pace)
	}
	e.whole.Add(1)
}

// drainGateway is a cluster gateway of three teams (X-Token 3, 4, 5) in front of up, which has slots read slots and
// goes on with abandoned answers or not (runsOn), as learned from /metrics.
func drainGateway(t *testing.T, up http.Handler, slots int, runsOn bool, queue time.Duration) (*Gateway, string) {
	t.Helper()
	us := httptest.NewServer(up)
	t.Cleanup(us.Close)
	u, _ := url.Parse(us.URL)
	rt := proxyclient.New(nil, time.Minute, 10*time.Second)
	t.Cleanup(rt.CloseIdleConnections)
	tokens := byToken{}
	for _, a := range []uint32{3, 4, 5} {
		tokens[fmt.Sprint(a)] = &auth.Access{Tenant: tenant.ID{AccountID: a}, Mode: auth.ModeFull}
	}
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: rt, WriteTransport: rt, Cluster: true, Auth: tokens,
		AuthHeader: "X-Token", Limits: Limits{ReadQueueDuration: queue}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	g.SetReadCapacity(map[string]BackendCapacity{BackendAddr{URL: u}.Key(): {Slots: slots, RunsOn: runsOn}}, 1)
	gs := httptest.NewServer(g)
	t.Cleanup(gs.Close)
	return g, gs.Listener.Addr().String()
}

// openExport sends team tok's export on a connection of its own and reads its answer's head.
func openExport(t *testing.T, addr, tok string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /select/%s/prometheus/api/v1/export?match[]=x HTTP/1.1\r\nHost: gw\r\nX-Token: %s\r\nConnection: close\r\n\r\n", tok, tok)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("the export's answer: %q, %v", line, err)
	}
	return c
}

func (g *Gateway) readsInFlight() int {
	g.reads.mu.Lock()
	defer g.reads.mu.Unlock()
	return g.reads.used
}

// TestAbandonedAnswerIsDrained: a client leaves its export after the head. A backend learned to go on with it after
// its connection is closed (VictoriaMetrics before v1.110.0) is read to the end, and the slot is held until then: the
// backend still runs the export in its own slot. Any other backend's connection is closed, which stops its export,
// and the slot is free at once.
func TestAbandonedAnswerIsDrained(t *testing.T) {
	for _, runsOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("runsOn=%v", runsOn), func(t *testing.T) {
			up := &exportUpstream{chunks: 40, size: 64 << 10, pace: 25 * time.Millisecond, ended: make(chan struct{}, 1)}
			g, addr := drainGateway(t, up, 2, runsOn, time.Second)
			before := drained.Get()
			c := openExport(t, addr, "3")
			c.Close()
			time.Sleep(300 * time.Millisecond) // the gateway's next writes find the client gone
			if n := g.readsInFlight(); n != map[bool]int{true: 1, false: 0}[runsOn] {
				t.Errorf("reads in flight while the backend streams the abandoned export: %d", n)
			}
			select {
			case <-up.ended:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream's export did not end")
			}
			if runsOn {
				if up.whole.Load() != 1 || drained.Get() != before+1 {
					t.Errorf("the upstream's export: whole %d, broken %d; drained %d; want it read to its end", up.whole.Load(), up.broken.Load(), drained.Get()-before)
				}
				waitFor(t, func() bool { return g.readsInFlight() == 0 }, "the slot freed at the answer's end")
			} else if up.broken.Load() != 1 || drained.Get() != before {
				t.Errorf("the upstream's export: whole %d, broken %d; drained %d; want its connection closed", up.whole.Load(), up.broken.Load(), drained.Get()-before)
			}
		})
	}
}

// TestCutAnswerIsDrained: on a backend that goes on with an abandoned answer, the cut of an export its client does
// not read breaks the client's side and reads the backend's answer to its end, fast; the team waiting gets the slot
// then, not while the backend still runs the export (where its read would queue in the backend).
func TestCutAnswerIsDrained(t *testing.T) {
	const queue = 2 * time.Second
	// Far more than the sockets hold: the gateway blocks writing to the clients that do not read.
	up := &exportUpstream{chunks: 256, size: 256 << 10, ended: make(chan struct{}, 4)}
	_, addr := drainGateway(t, up, 2, true, queue)
	before, cuts := drained.Get(), preempted.Get()
	stalled := []net.Conn{openExport(t, addr, "3"), openExport(t, addr, "5")}
	start := time.Now()
	b := openExport(t, addr, "4") // waits for a slot; half its queue in, one of the others is cut
	waited := time.Since(start)
	if waited < queue/2 || waited > queue {
		t.Errorf("team 4's export began after %s; want after half its queue, %s", waited, queue/2)
	}
	select {
	case <-up.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("no upstream export ended")
	}
	if up.whole.Load() != 1 || up.broken.Load() != 0 || preempted.Get() != cuts+1 || drained.Get() != before+1 {
		t.Errorf("upstream exports whole %d, broken %d; cut %d, drained %d; want the one cut read to its end",
			up.whole.Load(), up.broken.Load(), preempted.Get()-cuts, drained.Get()-before)
	}
	// The cut export's client sees its answer broken off; the other two read theirs whole.
	whole := 0
	for _, c := range append(stalled, b) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading an export: %v", err)
		}
		if strings.HasSuffix(string(rest), "\r\n0\r\n\r\n") {
			whole++
		}
	}
	if whole != 2 {
		t.Errorf("%d of the clients' exports whole; want 2, the cut one broken off", whole)
	}
}

// TestCutOnlyWhatTheClientHoldsUp: on a backend that goes on with a cut answer, a cut frees the slot sooner only
// when the answer's client, not the backend, holds it up; an answer its client takes as fast as the backend sends
// it is not cut (its client would lose it for nothing), and a cut whose slot is not free yet stands for one waiting
// unit, so that a unit's second wait does not cut another (found by an attacker's review: two teams' exports read at
// full speed were cut, and the waiting team still got 429).
func TestCutOnlyWhatTheClientHoldsUp(t *testing.T) {
	now := time.Now()
	answer := func(h *hold, blocked time.Duration) *atomic.Int32 {
		var stops atomic.Int32
		h.runsOn = true
		h.stop = func() { stops.Add(1) }
		h.blocked.Store(int64(blocked))
		h.answering.Store(now.Add(-time.Minute).UnixNano())
		return &stops
	}
	preemptAt := func(f *fairSlots, at time.Time) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.units[unitB] = &fairQueue{waiting: []*hold{{}}}
		f.preemptLocked(f.units[unitB], at)
		delete(f.units, unitB)
	}
	preempt := func(f *fairSlots) { preemptAt(f, now) }
	t.Run("over its part, held up by the backend", func(t *testing.T) {
		f := newFairSlots(time.Second, true)
		f.setLimit(3)
		a1, a2, c := mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitC)
		// Their clients took 1 s of the minute: the backend held the answers up.
		stops := []*atomic.Int32{answer(a1, time.Second), answer(a2, time.Second), answer(c, 50*time.Second)}
		preempt(f)
		for i, s := range stops {
			if s.Load() != 0 {
				t.Errorf("answer %d was cut; want none (A's are held up by the backend, C holds no more than its part)", i)
			}
		}
		for _, h := range []*hold{a1, a2, c} {
			f.release(h)
		}
	})
	t.Run("starved", func(t *testing.T) {
		f := newFairSlots(time.Second, true)
		f.setLimit(2)
		a, c := mustRead(t, f, unitA), mustRead(t, f, unitC)
		aStops, cStops := answer(a, time.Second), answer(c, 50*time.Second)
		preempt(f)
		if aStops.Load() != 0 || cStops.Load() != 1 || !c.stopped.Load() {
			t.Fatalf("cuts: A's answer (held up by the backend) %d, C's (by its client) %d; want only C's", aStops.Load(), cStops.Load())
		}
		// C's answer is being read to its end; B waits again, and A's answer is held up by its client now: nothing
		// more is cut for the one unit waiting.
		a.blocked.Store(int64(50 * time.Second))
		preempt(f)
		if aStops.Load() != 0 {
			t.Error("a second answer was cut while the first cut's slot was not free yet, for the same waiting unit")
		}
		// C's drain reads nothing for half the queue duration (the backend stalls): it no longer stands for B, and A's
		// answer is cut (an attacker's second review: a stalled drain shielded the rest of its team's answers).
		preemptAt(f, now.Add(600*time.Millisecond))
		if aStops.Load() != 1 {
			t.Error("A's answer was not cut while C's drain had read nothing for half the queue duration")
		}
		f.release(a)
		f.release(c)
		if f.used != 0 {
			t.Errorf("%d slots used after all released", f.used)
		}
	})
}
