package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// The preemption cases an attacker's review of the first version found (fairslots.go, preemptLocked).

// streamUpstream answers every read with a streamed body (no length) that goes on until the request's context ends,
// as VictoriaMetrics streaming to a client that reads slowly; ended gets the query of every request whose context
// ended.
type streamUpstream struct{ ended chan string }

func (s *streamUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	q := r.URL.Query().Get("query")
	go func() {
		_, _ = pw.Write([]byte(`{"status":"success","data":{"resultType":"matrix","result":[` + strings.Repeat(" ", 100<<10)))
		<-r.Context().Done()
		s.ended <- q
		pw.CloseWithError(r.Context().Err())
	}()
	return &http.Response{StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: pr, ContentLength: -1}, nil
}

// TestPreemptReachesTheUpstream: a cut read's upstream request ends at once, for a team under cost limits too (whose
// request has a context of its own, which at first ended only 10 s later: the backend ran five reads for four slots).
func TestPreemptReachesTheUpstream(t *testing.T) {
	for _, costed := range []bool{false, true} {
		t.Run(map[bool]string{false: "uncosted", true: "costed"}[costed], func(t *testing.T) {
			up := &streamUpstream{ended: make(chan string, 16)}
			u, _ := url.Parse("http://upstream")
			costs := &spendLog{costedAccount: 99}
			if costed {
				costs.costedAccount = 3
			}
			tokens := byToken{
				"3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull},
				"4": {Tenant: tenant.ID{AccountID: 4}, Mode: auth.ModeFull},
				"5": {Tenant: tenant.ID{AccountID: 5}, Mode: auth.ModeFull},
			}
			const queue = 400 * time.Millisecond
			g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: up, WriteTransport: up, Cluster: true, Auth: tokens,
				Costs: costs, AuthHeader: "X-Token", Limits: Limits{ReadQueueDuration: queue}})
			if err != nil {
				t.Fatal(err)
			}
			g.SetReadSlots(4)
			var wg sync.WaitGroup
			start := func(tok, q string) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { _ = recover() }() // a cut read's http.ErrAbortHandler
					req := httptest.NewRequest(http.MethodGet, "/select/"+tok+"/prometheus/api/v1/query?query="+q, nil)
					req.Header.Set("X-Token", tok)
					g.ServeHTTP(httptest.NewRecorder(), req)
				}()
			}
			for _, q := range []string{"a1", "a2", "a3"} {
				start("3", q)
				time.Sleep(20 * time.Millisecond)
			}
			start("5", "c1")
			time.Sleep(queue) // A's answers have streamed for long
			start("4", "b1")
			select {
			case q := <-up.ended:
				if q != "a1" {
					t.Errorf("the upstream request of %s ended; want A's oldest, a1", q)
				}
			case <-time.After(queue):
				t.Error("B's read was let in, but no upstream request ended: the backend runs five reads for four slots")
			}
			// Every read ends once cut, B's too, which may be granted only now (cutGrace after A's cut).
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			for {
				g.reads.mu.Lock()
				var hs []*hold
				for _, q := range g.reads.units {
					hs = append(hs, q.holds...)
				}
				g.reads.mu.Unlock()
				for _, h := range hs {
					h.cut()
				}
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
}

// TestPreemptCountsFromTheAnswer: what a read must have streamed before it may be cut counts from its answer's
// start, not from its grant: a query computed for long and only now answering is not cut at once.
func TestPreemptCountsFromTheAnswer(t *testing.T) {
	const queue = 400 * time.Millisecond
	f := newFairSlots(queue, true)
	f.setLimit(4)
	// Granted a while before B's read queues, as if computed for long.
	hs := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitC)}
	time.Sleep(queue)
	go func() {
		if h, err := f.acquire(context.Background(), unitB); err == nil {
			f.release(h)
		}
	}()
	time.Sleep(queue/2 - 20*time.Millisecond)
	hs[0].answering.Store(time.Now().UnixNano()) // its answer begins 20ms before B's half wait
	select {
	case <-hs[0].Done():
		t.Errorf("A's read was cut 20ms after its answer began; want it streamed %s first", queue/2)
	case <-time.After(queue):
	}
	for _, h := range hs {
		f.release(h)
	}
}

// TestPreemptWithOneSlot: with one slot (a replica's part of a small capacity), one unit's answer streamed for long
// does not keep another unit out: units more than the slots take turns.
func TestPreemptWithOneSlot(t *testing.T) {
	// B's slot comes at half the queue and cutGrace after: 400 ms left that 100 ms of margin, which a loaded machine
	// ate once.
	const queue = time.Second
	f := newFairSlots(queue, true)
	f.setLimit(1)
	a := mustRead(t, f, unitA)
	a.answering.Store(time.Now().Add(-time.Hour).UnixNano())
	b, err := f.acquire(context.Background(), unitB)
	if err != nil {
		t.Fatalf("B, with nothing in flight, against A's answer streamed for an hour on the only slot: %v", err)
	}
	if a.Err() == nil {
		t.Error("B got the only slot without A's read being cut")
	}
	f.release(a)
	f.release(b)
	if f.used != 0 {
		t.Errorf("%d slots used after both released", f.used)
	}
}

// TestPreemptSkipsAnsweredRead: a read whose whole answer is in (answered has taken it, and waits for the lock) is
// not cut; the next oldest is.
func TestPreemptSkipsAnsweredRead(t *testing.T) {
	f := newFairSlots(time.Second, true)
	f.setLimit(4)
	as := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
	c := mustRead(t, f, unitC)
	for _, h := range append(as, c) {
		h.answering.Store(time.Now().Add(-time.Minute).UnixNano())
	}
	as[0].released.Store(true)
	f.mu.Lock()
	f.units[unitB] = &fairQueue{waiting: []*hold{{}}}
	f.preemptLocked(f.units[unitB], time.Now())
	delete(f.units, unitB)
	f.mu.Unlock()
	if as[0].Err() != nil {
		t.Error("a read whose whole answer is in was cut")
	}
	if as[1].Err() == nil {
		t.Error("the next oldest read was not cut")
	}
	f.mu.Lock()
	f.releaseLocked(as[0])
	f.mu.Unlock()
	time.Sleep(2 * cutGrace) // the cut read's slot is given back after the grace
	for _, h := range append(as[1:], c) {
		f.release(h)
	}
	if f.used != 0 {
		t.Errorf("%d slots used after all released", f.used)
	}
}
