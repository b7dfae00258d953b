package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

var (
	unitA = unit{tenant: tenantA}
	unitB = unit{tenant: tenantB}
	unitC = unit{tenant: tenant.ID{AccountID: 3}}
)

// queueRead starts an acquire for u, which must wait, and returns a channel that yields its slot once it has one;
// it returns once the read is in u's queue, so reads wait in the order the test starts them.
func queueRead(t *testing.T, f *fairSlots, u unit) <-chan *fairQueue {
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
	got := make(chan *fairQueue, 1)
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

func mustRead(t *testing.T, f *fairSlots, u unit) *fairQueue {
	t.Helper()
	q, err := f.acquire(context.Background(), u)
	if err != nil {
		t.Fatalf("acquire for %v: %s", u, err)
	}
	return q
}

func granted(t *testing.T, c <-chan *fairQueue) *fairQueue {
	t.Helper()
	select {
	case q := <-c:
		return q
	case <-time.After(5 * time.Second):
		t.Fatal("a read waiting for a freed slot never got it")
		return nil
	}
}

func notGranted(t *testing.T, c <-chan *fairQueue) {
	t.Helper()
	select {
	case <-c:
		t.Fatal("a read got a slot out of turn")
	case <-time.After(20 * time.Millisecond):
	}
}

// TestFairSlotsTakeTurns: with the slots busy, a freed slot goes to the waiting unit with the fewest reads in flight,
// not to the unit that queued first; equals take turns, each unit's reads in their order.
func TestFairSlotsTakeTurns(t *testing.T) {
	f := newFairSlots(time.Minute)
	f.setLimit(2)
	a1, a2 := mustRead(t, f, unitA), mustRead(t, f, unitA)
	var aWait []<-chan *fairQueue
	for range 5 {
		aWait = append(aWait, queueRead(t, f, unitA))
	}
	bWait := queueRead(t, f, unitB)
	cWait := queueRead(t, f, unitC)
	// A's flood queued first, but B and C have nothing in flight.
	f.release(a1)
	b := granted(t, bWait)
	notGranted(t, aWait[0])
	f.release(a2)
	c := granted(t, cWait)
	notGranted(t, aWait[0])
	// A, B and C now have 0, 1 and 1 in flight: A's oldest read goes next, then A again (the only one waiting).
	f.release(b)
	a3 := granted(t, aWait[0])
	notGranted(t, aWait[1])
	f.release(c)
	a4 := granted(t, aWait[1])
	for _, q := range []*fairQueue{a3, a4} {
		f.release(q)
	}
	for _, w := range aWait[2:] {
		f.release(granted(t, w))
	}
	if f.used != 0 || len(f.turns) != 0 || readQueued.Load() != 0 {
		t.Errorf("after every release: %d in flight, %d units waiting, %d queued", f.used, len(f.turns), readQueued.Load())
	}
}

// TestFairSlotsGiveUp: a read that waits past the read queue duration gets 429 naming the backends' slots; one whose
// client goes away leaves the queue; neither holds or loses a slot.
func TestFairSlotsGiveUp(t *testing.T) {
	f := newFairSlots(30 * time.Millisecond)
	f.setLimit(1)
	held := mustRead(t, f, unitA)
	before := rejectedRead.Get()
	_, err := f.acquire(context.Background(), unitB)
	wantOverload(t, err, "backend")
	if rejectedRead.Get() != before+1 {
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
	f := newFairSlots(time.Minute)
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
	for _, q := range []*fairQueue{c, d, e} {
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
	f := newFairSlots(20 * time.Millisecond)
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
		if q.running != 0 || len(q.waiting) != 0 {
			t.Errorf("unit %v holds %d and waits %d", u, q.running, len(q.waiting))
		}
	}
}

// BenchmarkFairSlots: the cost a read pays for its slot at the backends when one is free, with no limit known and
// with one.
func BenchmarkFairSlots(b *testing.B) {
	for _, limit := range []int{0, 1 << 20} {
		f := newFairSlots(time.Second)
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
