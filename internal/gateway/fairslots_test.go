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

// quickReads gives unit u n reads that each end at once, as a dashboard's quick queries do.
func quickReads(t *testing.T, f *fairSlots, u unit, n int) {
	t.Helper()
	for range n {
		f.release(mustRead(t, f, u))
	}
}

// lent reports which of hs were granted on loan.
func lent(f *fairSlots, hs ...*hold) []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]bool, len(hs))
	for i, h := range hs {
		out[i] = h.lent
	}
	return out
}

// age makes hs granted d ago, as if they had been in flight that long.
func age(f *fairSlots, d time.Duration, hs ...*hold) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range hs {
		h.grantedAt -= int64(d)
	}
}

// TestFairSlotsLend: a unit alone in wanting more, whose reads are quick, is lent the reserve and a quarter more (5
// of 4 slots); one more waits. Another unit that comes then waits for two of those quick reads to end, not for its
// turn behind all of them, and nothing is lent while it waits.
func TestFairSlotsLend(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.lend = true
	f.setLimit(4)
	quickReads(t, f, unitA, lendAfter)
	before := lentReads.Get()
	var as []*hold
	for range 5 {
		as = append(as, mustRead(t, f, unitA))
	}
	if got, want := fmt.Sprint(lent(f, as...)), "[false false false true true]"; got != want {
		t.Fatalf("A's five reads lent %s; want %s (three within its share, the reserve and the spare on loan)", got, want)
	}
	if got := lentReads.Get() - before; got != 2 {
		t.Errorf("vmgateway_read_backend_lent_total grew by %d; want 2", got)
	}
	aWait := queueRead(t, f, unitA)
	bWait := queueRead(t, f, unitB)
	f.release(as[0])
	// 4 in flight: the limit. B waits for one more to end; A, with B waiting, is lent nothing.
	notGranted(t, bWait)
	notGranted(t, aWait)
	f.release(as[1])
	b := granted(t, bWait)
	// B no longer waits, and A is lent the spare again: B's next read would wait for a quick one of A's to end.
	a := granted(t, aWait)
	if got := fmt.Sprint(lent(f, a, b)); got != "[true false]" {
		t.Errorf("A's and B's reads lent %s; want A's on loan", got)
	}
	for _, h := range append(as[2:], a, b) {
		f.release(h)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used != 0 || len(f.inflight) != 0 {
		t.Errorf("after every release: %d in flight, %d holds listed", f.used, len(f.inflight))
	}
}

// TestFairSlotsLendOnlyWhenSafe: nothing is lent to a unit without lendAfter quick reads behind it (a flood's first
// burst), nor while any read in flight is older than lendWithin (it may be a slow one that the next unit would wait
// for), nor with lending off.
func TestFairSlotsLendOnlyWhenSafe(t *testing.T) {
	fourthWaits := func(t *testing.T, f *fairSlots) {
		t.Helper()
		as := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
		w := queueRead(t, f, unitA)
		notGranted(t, w)
		f.release(as[0])
		f.release(granted(t, w))
		f.release(as[1])
		f.release(as[2])
	}
	t.Run("no history", func(t *testing.T) {
		f := newFairSlots(time.Minute, true)
		f.lend = true
		f.setLimit(4)
		quickReads(t, f, unitA, lendAfter-1)
		fourthWaits(t, f)
	})
	t.Run("old read in flight", func(t *testing.T) {
		f := newFairSlots(time.Minute, true)
		f.lend = true
		f.setLimit(4)
		quickReads(t, f, unitA, lendAfter)
		// B's read has run for longer than a quick one: A's fourth read waits although A is quick.
		b := mustRead(t, f, unitB)
		age(f, 2*lendWithin, b)
		as := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
		w := queueRead(t, f, unitA)
		notGranted(t, w)
		// Once B's read is done, A's are all young: the fourth goes on loan.
		f.release(b)
		a := granted(t, w)
		if got := fmt.Sprint(lent(f, a)); got != "[true]" {
			t.Errorf("A's fourth read lent %s; want it on loan", got)
		}
		for _, h := range append(as, a) {
			f.release(h)
		}
	})
	t.Run("off", func(t *testing.T) {
		f := newFairSlots(time.Minute, true)
		f.setLimit(4)
		quickReads(t, f, unitA, lendAfter)
		fourthWaits(t, f)
	})
	t.Run("writes", func(t *testing.T) {
		f := newFairSlots(time.Minute, false)
		f.setLimit(4)
		quickReads(t, f, unitA, lendAfter)
		fourthWaits(t, f)
	})
}

// TestFairSlotsSlowLoan: a read granted on loan that turns out slow stops the unit's loans for lendPenalty, doubling
// with each: a burst of slow reads after quick ones gets past the reserve once in that while. A slow read within the
// share only starts the unit's count of quick reads again. A unit serving its penalty is not swept.
func TestFairSlotsSlowLoan(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.lend = true
	f.setLimit(4)
	penalty := func() (time.Duration, int, int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		q := f.units[unitA]
		if q.noLendUntil == 0 {
			return 0, q.offenses, q.quick
		}
		return time.Duration(q.noLendUntil - monoNow()), q.offenses, q.quick
	}
	quickReads(t, f, unitA, lendAfter)
	as := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
	if got := fmt.Sprint(lent(f, as...)); got != "[false false false true true]" {
		t.Fatalf("A's reads lent %s", got)
	}
	last := as[4]
	as = as[:4]
	before := slowLoans.Get()
	age(f, 2*lendWithin, append(as, last)...)
	f.release(as[0]) // slow, within the share
	if d, n, quick := penalty(); d != 0 || n != 0 || quick != 0 {
		t.Fatalf("after a slow read within the share: penalty %s, %d offenses, %d quick; want none, 0 quick", d, n, quick)
	}
	f.release(as[3]) // slow, on loan
	if d, n, _ := penalty(); d < lendPenalty-time.Second || d > lendPenalty || n != 1 {
		t.Fatalf("after a slow loan: penalty %s, %d offenses; want %s, 1", d, n, lendPenalty)
	}
	// The burst's second loan turns out slow too: counted, but the same offense.
	f.release(last)
	if d, n, _ := penalty(); d > lendPenalty || n != 1 {
		t.Fatalf("after the burst's second slow loan: penalty %s, %d offenses; want %s, 1", d, n, lendPenalty)
	}
	if got := slowLoans.Get() - before; got != 2 {
		t.Errorf("vmgateway_read_backend_slow_loans_total grew by %d; want 2", got)
	}
	f.release(as[1])
	f.release(as[2])
	// Quick again, but serving its penalty: A holds its share and no more.
	quickReads(t, f, unitA, lendAfter)
	as = []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
	w := queueRead(t, f, unitA)
	notGranted(t, w)
	f.mu.Lock()
	f.sweepLocked()
	_, kept := f.units[unitA]
	f.mu.Unlock()
	if !kept {
		t.Error("the sweep dropped a unit holding reads")
	}
	f.release(as[0])
	as[0] = granted(t, w)
	for _, h := range as {
		f.release(h)
	}
	f.mu.Lock()
	f.sweepLocked()
	_, kept = f.units[unitA]
	// Its penalty over, a second slow loan doubles it.
	if kept {
		f.units[unitA].noLendUntil = 0
	}
	f.mu.Unlock()
	if !kept {
		t.Fatal("the sweep dropped a unit serving its penalty: it would come back quick with its next read")
	}
	quickReads(t, f, unitA, lendAfter)
	as = []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)}
	age(f, 2*lendWithin, as[3])
	f.release(as[3])
	if d, n, _ := penalty(); d < 2*lendPenalty-time.Second || d > 2*lendPenalty || n != 2 {
		t.Fatalf("after a second slow loan: penalty %s, %d offenses; want %s, 2", d, n, 2*lendPenalty)
	}
	for _, h := range as[:3] {
		f.release(h)
	}
}

// TestFairSlotsOffensesDecay: a unit's offenses decay one per lendPenaltyMax without one after its penalty; until then
// the sweep keeps it, so that its next slow loan is judged with them.
func TestFairSlotsOffensesDecay(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.lend = true
	f.setLimit(4)
	quickReads(t, f, unitA, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.units[unitA]
	now := monoNow()
	q.offenses, q.noLendUntil = 2, now-int64(lendPenaltyMax)-int64(time.Minute)
	if f.sweepLocked(); f.units[unitA] == nil {
		t.Fatal("the sweep dropped a unit with an offense not yet decayed")
	}
	if q.offenses != 1 {
		t.Errorf("%d offenses after an hour without one; want 1", q.offenses)
	}
	q.noLendUntil -= int64(lendPenaltyMax)
	if f.sweepLocked(); f.units[unitA] != nil {
		t.Errorf("the sweep kept a unit whose offenses have decayed (%d left)", q.offenses)
	}
}

// TestFairSlotsNoSpareUnderFour: a replica's part of the capacity under 4 slots gets no spare past it, so that two
// replicas of a 4-slot backend lend no more than the backend runs.
func TestFairSlotsNoSpareUnderFour(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.lend = true
	f.setLimit(2)
	quickReads(t, f, unitA, lendAfter)
	as := []*hold{mustRead(t, f, unitA), mustRead(t, f, unitA)}
	if got := fmt.Sprint(lent(f, as...)); got != "[false true]" {
		t.Fatalf("A's reads lent %s; want the reserve on loan", got)
	}
	w := queueRead(t, f, unitA)
	notGranted(t, w)
	f.release(as[0])
	f.release(granted(t, w))
	f.release(as[1])
}

// TestFairSlotsPreemptLoans: a unit on loan past the limit with answers streamed for long, while another waits: one
// cut would free no slot, so as many more are cut as the loans past the limit, those on loan first, and the waiting
// unit gets its slot within its queue duration.
func TestFairSlotsPreemptLoans(t *testing.T) {
	const queue = 400 * time.Millisecond
	f := newFairSlots(queue, true)
	f.lend = true
	f.setLimit(4)
	quickReads(t, f, unitA, lendAfter)
	var as []*hold
	for range 5 {
		h := mustRead(t, f, unitA)
		h.answering.Store(time.Now().Add(-time.Hour).UnixNano())
		as = append(as, h)
	}
	b, err := f.acquire(context.Background(), unitB)
	if err != nil {
		t.Fatalf("B against A's five answers streamed for an hour, one past the limit on loan: %v", err)
	}
	var cut []bool
	for _, h := range as {
		cut = append(cut, h.Err() != nil)
	}
	if got := fmt.Sprint(cut); got != "[false false false true true]" {
		t.Errorf("A's answers cut: %s; want the two on loan", got)
	}
	for _, h := range append(as, b) {
		f.release(h)
	}
}
