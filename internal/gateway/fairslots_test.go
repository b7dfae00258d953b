package gateway

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/proxyclient"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

var (
	unitA = unit{tenant: tenantA}
	unitB = unit{tenant: tenantB}
	unitC = unit{tenant: tenant.ID{AccountID: 3}}
)

// queueRead starts an acquire for u, which must wait, and returns a channel that yields its slot once it has one;
// it returns once the read is in u's queue, so reads wait in the order the test starts them.
func queueRead(t *testing.T, f *fairSlots, u unit) <-chan *hold {
	t.Helper()
	waiting := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		if q := f.units[u]; q != nil {
			return len(q.waiting)
		}
		return 0
	}
	before := waiting()
	got := make(chan *hold, 1)
	go func() {
		q, err := f.acquire(context.Background(), u)
		if err != nil {
			t.Errorf("acquire for %v: %s", u, err)
		}
		got <- q
	}()
	for deadline := time.Now().Add(5 * time.Second); waiting() == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the read of %v never queued", u)
		}
	}
	return got
}

func mustRead(t *testing.T, f *fairSlots, u unit) *hold {
	t.Helper()
	q, err := f.acquire(context.Background(), u)
	if err != nil {
		t.Fatalf("acquire for %v: %s", u, err)
	}
	return q
}

func granted(t *testing.T, c <-chan *hold) *hold {
	t.Helper()
	select {
	case q := <-c:
		return q
	case <-time.After(5 * time.Second):
		t.Fatal("a read waiting for a freed slot never got it")
		return nil
	}
}

func notGranted(t *testing.T, c <-chan *hold) {
	t.Helper()
	select {
	case <-c:
		t.Fatal("a read got a slot out of turn")
	case <-time.After(20 * time.Millisecond):
	}
}

// TestFairSlotsTakeTurns: with the slots busy, a freed slot goes to the waiting unit with the fewest reads in flight,
// not to the unit that queued first; equals take turns, each unit's reads in their order; and one unit never holds
// more than its share (3 of 4), so another unit finds a slot at once even after the first took all it could.
func TestFairSlotsTakeTurns(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.setLimit(4)
	a1, a2 := mustRead(t, f, unitA), mustRead(t, f, unitA)
	_ = mustRead(t, f, unitA)
	// A holds its share: its next read waits although a slot is free, and B takes that slot at once.
	aWait := []<-chan *hold{queueRead(t, f, unitA)}
	b := mustRead(t, f, unitB)
	for range 4 {
		aWait = append(aWait, queueRead(t, f, unitA))
	}
	cWait := queueRead(t, f, unitC)
	// A's reads queued first, but C has nothing in flight and A holds its share.
	f.release(b)
	c := granted(t, cWait)
	notGranted(t, aWait[0])
	// Back under its share, A's oldest read goes next.
	f.release(a1)
	a4 := granted(t, aWait[0])
	notGranted(t, aWait[1])
	// B (nothing in flight) comes before A (3), whichever queued first.
	bWait := queueRead(t, f, unitB)
	f.release(c)
	b = granted(t, bWait)
	notGranted(t, aWait[1])
	f.release(a2)
	a5 := granted(t, aWait[1])
	for _, q := range []*hold{a4, a5, b} {
		f.release(q)
	}
	for _, w := range aWait[2:] {
		f.release(granted(t, w))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used != 1 || len(f.turns) != 0 || readStats.queued.Load() != 0 || f.units[unitA].running() != 1 {
		t.Errorf("after every release but one of A's: %d in flight, %d units waiting, %d queued", f.used, len(f.turns), readStats.queued.Load())
	}
}

// TestFairSlotsShare: a unit's share is all but a quarter of the slots, at least one left to others.
func TestFairSlotsShare(t *testing.T) {
	for limit, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 3, 8: 6, 16: 12, 100: 75} {
		if got := share(limit); got != want {
			t.Errorf("share(%d) = %d; want %d", limit, got, want)
		}
	}
}

// TestFairSlotsGiveUp: a read that waits past the read queue duration gets 429 naming the backends' slots; one whose
// client goes away leaves the queue; neither holds or loses a slot.
func TestFairSlotsGiveUp(t *testing.T) {
	f := newFairSlots(30*time.Millisecond, true)
	f.setLimit(1)
	held := mustRead(t, f, unitA)
	before := readStats.rejected.Get()
	_, err := f.acquire(context.Background(), unitB)
	wantOverload(t, err, "backend")
	if readStats.rejected.Get() != before+1 {
		t.Errorf("vmgateway_concurrency_rejected_total{scope=\"backend\"} did not grow")
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	if _, err := f.acquire(ctx, unitB); !errors.Is(err, errGoneInQueue) {
		t.Errorf("a read whose client went away: %v", err)
	}
	f.release(held)
	if f.used != 0 || len(f.turns) != 0 {
		t.Errorf("%d in flight, %d units waiting", f.used, len(f.turns))
	}
	f.release(mustRead(t, f, unitB))
}

// TestFairSlotsLimitChanges: a higher limit lets waiting reads in at once; a lower one lets the reads in flight
// finish and lets no new one in until they are under it; no limit lets everything in.
func TestFairSlotsLimitChanges(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.setLimit(1)
	a := mustRead(t, f, unitA)
	bWait := queueRead(t, f, unitB)
	f.setLimit(2)
	b := granted(t, bWait)
	f.setLimit(1)
	cWait := queueRead(t, f, unitC)
	f.release(a)
	notGranted(t, cWait)
	f.release(b)
	c := granted(t, cWait)
	dWait := queueRead(t, f, unitA)
	f.setLimit(0)
	d := granted(t, dWait)
	e := mustRead(t, f, unitB)
	for _, q := range []*hold{c, d, e} {
		f.release(q)
	}
	if f.used != 0 {
		t.Errorf("%d in flight after every release", f.used)
	}
}

// TestFairSlotsChurn: many units reading at once, some giving up, the limit changing between 2 and 5; the reads
// in flight never pass the highest limit (a lowered one lets those in flight finish), and afterwards nothing is
// held. Run with -race.
func TestFairSlotsChurn(t *testing.T) {
	f := newFairSlots(20*time.Millisecond, true)
	f.setLimit(4)
	var wg sync.WaitGroup
	var over sync.Once
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				u := unit{tenant: tenant.ID{AccountID: uint32(rand.IntN(2000))}}
				if w%4 == 0 {
					u = unitA
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(15))*time.Millisecond)
				q, err := f.acquire(ctx, u)
				cancel()
				if err != nil {
					continue
				}
				f.mu.Lock()
				if f.used > 5 {
					over.Do(func() { t.Errorf("%d reads in flight for limits of 2 to 5", f.used) })
				}
				f.mu.Unlock()
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				f.release(q)
				if i%100 == 0 && w == 1 {
					f.setLimit(2 + rand.IntN(4))
				}
			}
		}()
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used != 0 || len(f.turns) != 0 {
		t.Errorf("%d in flight, %d units waiting after every read ended", f.used, len(f.turns))
	}
	for u, q := range f.units {
		if q.running() != 0 || len(q.waiting) != 0 {
			t.Errorf("unit %v holds %d and waits %d", u, q.running(), len(q.waiting))
		}
	}
}

// BenchmarkFairSlots: the cost a read pays for its slot at the backends when one is free, with no limit known and
// with one.
func BenchmarkFairSlots(b *testing.B) {
	for _, limit := range []int{0, 1 << 20} {
		f := newFairSlots(time.Second, true)
		f.setLimit(limit)
		name := "limit"
		if limit == 0 {
			name = "no_limit"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				q, err := f.acquire(context.Background(), unitA)
				if err != nil {
					b.Fatal(err)
				}
				f.release(q)
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				u := unit{tenant: tenant.ID{AccountID: rand.Uint32() % 4}}
				for pb.Next() {
					q, err := f.acquire(context.Background(), u)
					if err != nil {
						b.Fatal(err)
					}
					f.release(q)
				}
			})
		})
	}
}

// heldUpstream answers each request once release is closed, and tells through gone whether the request's context
// ended before that.
type heldUpstream struct {
	arrived chan string
	release chan struct{}
	gone    chan string
}

func (h *heldUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	h.arrived <- r.URL.Path
	select {
	case <-h.release:
	case <-r.Context().Done():
		h.gone <- r.URL.Path
		return nil, r.Context().Err()
	}
	return vectorUpstream{}.RoundTrip(r)
}

func newHeldGateway(t *testing.T, slots int) (*Gateway, *heldUpstream) {
	t.Helper()
	up := &heldUpstream{arrived: make(chan string, 16), release: make(chan struct{}), gone: make(chan string, 16)}
	u, _ := url.Parse("http://upstream")
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: up, WriteTransport: up, Auth: byToken{
		"full": {Mode: auth.ModeFull},
	}, AuthHeader: "X-Token", Limits: Limits{ReadQueueDuration: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	g.SetReadSlots(slots)
	return g, up
}

// TestHungUpReadHoldsItsSlot: VictoriaMetrics runs a query to its end whether its client stays or not, so a read
// whose client goes away keeps its slot, and its upstream request, until the backend answers; without a limit (the
// backends' capacity unknown) the client's going away still cancels the upstream request at once.
func TestHungUpReadHoldsItsSlot(t *testing.T) {
	for _, slots := range []int{1, 0} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			g, up := newHeldGateway(t, slots)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				req := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=slow", nil).WithContext(ctx)
				req.Header.Set("X-Token", "full")
				g.ServeHTTP(httptest.NewRecorder(), req)
			}()
			<-up.arrived
			cancel()
			if slots == 0 {
				select {
				case <-up.gone:
				case <-time.After(5 * time.Second):
					t.Fatal("without a limit, the client's going away did not reach the upstream")
				}
				<-done
				return
			}
			select {
			case <-up.gone:
				t.Fatal("the upstream request was cancelled with the client's, freeing a slot the backend still uses")
			case <-done:
				t.Fatal("the read ended before the backend answered")
			case <-time.After(100 * time.Millisecond):
			}
			// The slot is still held: another read waits its turn and is refused after -read.maxQueueDuration.
			if rec := serve(g, http.MethodGet, "/api/v1/query?query=quick", "X-Token", "full"); rec.Code != http.StatusTooManyRequests ||
				!strings.Contains(rec.Body.String(), "read backends are busy") {
				t.Fatalf("a read while the hung-up one holds the only slot: %d %s; want 429 for the backends' slots", rec.Code, rec.Body)
			}
			close(up.release)
			<-done
			g.reads.mu.Lock()
			used := g.reads.used
			g.reads.mu.Unlock()
			if used != 0 {
				t.Errorf("%d slots held after the backend answered", used)
			}
		})
	}
}

// TestEverythingToTheReadBackendTakesASlot: graphite tag registration (a write API VictoriaMetrics serves on its
// select side) and the admin APIs go to the read backends, which run them under their query limit: they take a
// slot there like reads; vmui's static files, and writes to the write backends, do not.
func TestEverythingToTheReadBackendTakesASlot(t *testing.T) {
	g, up := newHeldGateway(t, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(g, http.MethodGet, "/api/v1/query?query=slow", "X-Token", "full")
	}()
	<-up.arrived
	var pending []chan *httptest.ResponseRecorder
	for _, tc := range []struct {
		method, target string
		slot           bool
	}{
		{http.MethodPost, "/graphite/tags/tagSeries?path=a.b;c=d", true},
		{http.MethodPost, "/graphite/tags/tagMultiSeries?path=a.b;c=d", true},
		{http.MethodPost, "/api/v1/admin/tsdb/delete_series?match[]=up", true},
		{http.MethodGet, "/api/v1/labels", true},
		{http.MethodGet, "/vmui/", false},
		{http.MethodPost, "/api/v1/import/prometheus", false},
	} {
		answered := make(chan *httptest.ResponseRecorder, 1)
		go func() { answered <- serve(g, tc.method, tc.target, "X-Token", "full") }()
		select {
		case rec := <-answered:
			if !tc.slot || rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "read backends are busy") {
				t.Errorf("%s %s with the read backends' only slot busy: %d %s; want it to wait for a slot: %v", tc.method, tc.target, rec.Code, rec.Body, tc.slot)
			}
		case <-up.arrived:
			if tc.slot {
				t.Errorf("%s %s reached the upstream while the read backends' only slot was busy", tc.method, tc.target)
			}
			pending = append(pending, answered)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s: no answer, nothing upstream", tc.method, tc.target)
		}
	}
	close(up.release)
	<-done
	for _, p := range pending {
		<-p
	}
}

// TestFairSlotsGrantedAsWaitEnds: a read granted a slot as its wait runs out takes it (with -read.maxQueueDuration=0
// every read that queues is granted or refused at once), rather than being refused with a slot free.
func TestFairSlotsGrantedAsWaitEnds(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.setLimit(4)
	held := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
	aWait := queueRead(t, f, unitA) // over A's share: B's reads queue behind it and are granted at once
	f.mu.Lock()
	f.queue = 0
	f.mu.Unlock()
	for i := range 50 {
		q, err := f.acquire(context.Background(), unitB)
		if err != nil {
			t.Fatalf("B's read %d, with a slot free and a wait of 0: %s", i, err)
		}
		f.release(q)
	}
	f.release(held[0])
	f.release(granted(t, aWait))
	f.release(held[1])
	f.release(held[2])
	if f.used != 0 {
		t.Errorf("%d slots held after every release", f.used)
	}
}

// TestFairSlotsPreempt: a read that has waited half its queue duration cuts the oldest streaming answer of a unit
// holding more than its part of the slots and more than one more than the waiting unit, once it has streamed that
// long; never a read still computed (cutting it would not free the backend's slot), nor a unit within its part.
func TestFairSlotsPreempt(t *testing.T) {
	const queue = 400 * time.Millisecond
	for _, tc := range []struct {
		name      string
		answering bool
		held      time.Duration // how long the answers have streamed when B's read queues
		aReads    int           // of the 4 slots; C holds the rest
		wantCut   bool
	}{
		{"A's old answers streaming", true, time.Second, 3, true},
		{"A's answers still computed", false, time.Second, 3, false},
		{"A's answers streaming, but young", true, -2 * queue, 3, false},
		{"A within its part", true, time.Second, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFairSlots(queue, true)
			f.setLimit(4)
			inFlight := readStats.inFlight.Load()
			var as, cs []*hold
			for range tc.aReads {
				as = append(as, mustRead(t, f, unitA))
			}
			for range 4 - tc.aReads {
				cs = append(cs, mustRead(t, f, unitC))
			}
			f.mu.Lock()
			for _, h := range append(as, cs...) {
				if tc.answering {
					h.answering.Store(time.Now().Add(-tc.held).UnixNano())
				}
			}
			f.mu.Unlock()
			start := time.Now()
			bDone := make(chan error, 1)
			go func() {
				h, err := f.acquire(context.Background(), unitB)
				if err == nil {
					f.release(h)
				}
				bDone <- err
			}()
			var err error
			select {
			case <-as[0].Done():
				if !tc.wantCut {
					t.Fatal("A's oldest read was cut")
				}
				// The forward step ends a cut read, whose upstream request's context is done.
				f.release(as[0])
				if err = <-bDone; err != nil {
					t.Fatalf("B's read after the cut: %v", err)
				}
				if waited := time.Since(start); waited < queue/2 || waited > queue {
					t.Errorf("B's read waited %s; want about half the queue duration, %s", waited, queue/2)
				}
			case err = <-bDone:
				if tc.wantCut {
					t.Fatalf("B's read ended (%v) with no read cut", err)
				}
				var oe *overloadError
				if !errors.As(err, &oe) || oe.scope != "backend" {
					t.Fatalf("B's read, with nothing to cut: %v; want a refusal after the queue duration", err)
				}
			}
			for _, h := range append(as[1:], cs...) {
				if h.Context.Err() != nil {
					t.Error("a read was cut that should not be")
				}
			}
			for _, h := range append(as, cs...) {
				f.release(h)
			}
			if f.used != 0 || readStats.inFlight.Load() != inFlight {
				t.Errorf("%d slots held (gauge %d more) after every release", f.used, readStats.inFlight.Load()-inFlight)
			}
		})
	}
}

// stalledClient is a ResponseWriter whose client takes nothing of the answer's body until unblocked.
type stalledClient struct {
	*httptest.ResponseRecorder
	writing chan struct{}
	unblock chan struct{}
}

func (s *stalledClient) Write(p []byte) (int, error) {
	select {
	case s.writing <- struct{}{}:
	default:
	}
	<-s.unblock
	return s.ResponseRecorder.Write(p)
}

// TestAnsweredReadFreesItsSlot: once the backend's whole answer is in, the read's slot is free, however slowly its
// client takes the answer: VictoriaMetrics is done with it, and another read goes on at once.
func TestAnsweredReadFreesItsSlot(t *testing.T) {
	g, up := newHeldGateway(t, 1)
	close(up.release)
	w := &stalledClient{ResponseRecorder: httptest.NewRecorder(), writing: make(chan struct{}, 1), unblock: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=slow", nil)
		req.Header.Set("X-Token", "full")
		g.ServeHTTP(w, req)
	}()
	<-w.writing
	if rec := serve(g, http.MethodGet, "/api/v1/query?query=quick", "X-Token", "full"); rec.Code != http.StatusOK {
		t.Errorf("a read while the only slot's answer waits for its client: %d %s; want 200, the backend being done with it", rec.Code, rec.Body)
	}
	close(w.unblock)
	<-done
	if w.Code != http.StatusOK || w.Body.Len() == 0 {
		t.Errorf("the stalled client's answer: %d, %d bytes", w.Code, w.Body.Len())
	}
	g.reads.mu.Lock()
	defer g.reads.mu.Unlock()
	if g.reads.used != 0 {
		t.Errorf("%d slots held after both reads", g.reads.used)
	}
}

// TestHoldContext: a hold's context has the request's values but not its end, ends when the slot is cut, and
// carries the hold as the proxy client's Keeper only once asked to (a count's read does not keep its slot).
func TestHoldContext(t *testing.T) {
	type key struct{}
	f := newFairSlots(time.Second, true)
	f.setLimit(2)
	client, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	h, err := f.acquire(client, unitA)
	if err != nil || h == nil {
		t.Fatalf("acquire: %v, %v", h, err)
	}
	defer f.release(h)
	child, stop := context.WithCancel(h)
	defer stop()
	if _, ok := proxyclient.KeeperFrom(child); ok {
		t.Error("a hold not asked to keep its slot is the request's Keeper")
	}
	h.keepOnTimeout()
	if k, ok := proxyclient.KeeperFrom(child); !ok || k != proxyclient.Keeper(h) {
		t.Errorf("KeeperFrom = %v, %v; want the hold", k, ok)
	}
	if got := child.Value(key{}); got != "v" {
		t.Errorf("the request's value through the hold = %v", got)
	}
	if _, ok := h.Deadline(); ok {
		t.Error("the hold's context has a deadline")
	}
	cancel()
	select {
	case <-child.Done():
		t.Fatal("the client's going away ended the hold's context")
	case <-time.After(20 * time.Millisecond):
	}
	h.cut()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the cut did not end the hold's context")
	}
	if !errors.Is(context.Cause(child), context.Canceled) || context.Cause(h) != context.Canceled {
		t.Errorf("causes after the cut: %v, %v", context.Cause(child), context.Cause(h))
	}
}
