package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// fairSlots bounds the reads forwarded at once to what the read backends run at once (their
// -search.maxConcurrentRequests, which is 4 on two cores), so that when they are busy the excess waits here, where
// the isolation units take turns, and not in VictoriaMetrics' own queue, which is first come first served: there, one
// team's flood of slow queries holds up every other team's queries for as long as the flood lasts. -maxConcurrentPer
// TenantRequests (300 by default) cannot do this alone: it bounds a team's requests, not its share of a backend that
// runs a handful at once.
//
// A freed slot goes to the waiting unit with the fewest reads in flight, the units taking turns among equals, and
// within a unit to its oldest request: a team that waits behind another's flood waits for one slot to free, not for
// the flood. One unit holds at most three quarters of the slots (all but one of two or three): slots are not taken
// back, so a team whose reads hold their slots for long (exports, answers read slowly) would otherwise keep every
// other team out for as long as it likes. With no one waiting and a slot within its share free, a request takes it at
// once.
type fairSlots struct {
	mu    sync.Mutex
	limit int // 0: no limit (the backends' capacity is not known)
	used  int
	// units holds the units seen, idle ones until the next sweep (as in concurrency); turns those waiting, in turn
	// order, and next whose turn it is.
	units   map[unit]*fairQueue
	sweepAt int
	turns   []*fairQueue
	next    int
	queue   time.Duration
}

// fairQueue is one unit's reads: how many are in flight, and those waiting, oldest first.
type fairQueue struct {
	running int
	waiting []chan struct{}
}

var (
	readLimit    atomic.Int64
	readInFlight atomic.Int64
	readQueued   atomic.Int64
	rejectedRead = metrics.NewCounter(`vmgateway_concurrency_rejected_total{scope="backend"}`)
	_            = metrics.NewGauge(`vmgateway_read_backend_slots`, func() float64 { return float64(readLimit.Load()) })
	_            = metrics.NewGauge(`vmgateway_read_backend_requests`, func() float64 { return float64(readInFlight.Load()) })
	_            = metrics.NewGauge(`vmgateway_read_backend_requests_queued`, func() float64 { return float64(readQueued.Load()) })
)

func newFairSlots(queue time.Duration) *fairSlots {
	return &fairSlots{units: map[unit]*fairQueue{}, sweepAt: minSweep, queue: queue}
}

// share is the most slots one unit may hold at once under limit: all but a quarter of them, at least one left.
func share(limit int) int {
	if limit < 2 {
		return limit
	}
	return limit - max(1, limit/4)
}

// setLimit sets how many reads may be in flight at once (0: no limit); requests waiting take the room it adds.
func (f *fairSlots) setLimit(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limit = max(n, 0)
	readLimit.Store(int64(f.limit))
	f.fillLocked()
}

// acquire takes a slot for a read of unit u, waiting for its turn at most the read queue duration or until ctx ends.
// The caller must pass what it returns to release once the upstream request is done.
func (f *fairSlots) acquire(ctx context.Context, u unit) (*fairQueue, error) {
	f.mu.Lock()
	if f.limit == 0 {
		f.used++
		f.mu.Unlock()
		readInFlight.Add(1)
		return nil, nil
	}
	q := f.units[u]
	if q == nil {
		if len(f.units) >= f.sweepAt {
			f.sweepLocked()
		}
		q = &fairQueue{}
		f.units[u] = q
	}
	if f.used < f.limit && len(f.turns) == 0 && q.running < share(f.limit) {
		f.used++
		q.running++
		f.mu.Unlock()
		readInFlight.Add(1)
		return q, nil
	}
	granted := make(chan struct{}, 1)
	if len(q.waiting) == 0 {
		f.turns = append(f.turns, q)
	}
	q.waiting = append(q.waiting, granted)
	// Slots may be free that the units waiting before could not take (their share is held).
	f.fillLocked()
	wait := f.queue
	f.mu.Unlock()

	readQueued.Add(1)
	defer readQueued.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-granted:
		return q, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	f.mu.Lock()
	dropped, limit := f.dropLocked(q, granted), f.limit
	if !dropped && ctx.Err() != nil {
		// Granted as its client went away: the slot passes on.
		f.releaseLocked(q)
	}
	f.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return nil, errGoneInQueue
	case !dropped:
		return q, nil // granted as the wait ran out (a queue of 0 does both at once)
	}
	rejectedRead.Inc()
	return nil, &overloadError{scope: "backend", limit: limit, queue: wait}
}

// release gives back the slot acquire took for q's unit (nil: taken without a limit): to the waiting unit whose
// turn it is, else to the pool.
func (f *fairSlots) release(q *fairQueue) {
	f.mu.Lock()
	f.releaseLocked(q)
	f.mu.Unlock()
}

func (f *fairSlots) releaseLocked(q *fairQueue) {
	if q != nil {
		q.running--
	}
	f.used--
	readInFlight.Add(-1)
	f.fillLocked()
}

// fillLocked grants free slots to the waiting reads, each to the oldest read of the waiting unit with the fewest in
// flight that is within its share, the first in turn among equals; without a limit, to every waiting read.
func (f *fairSlots) fillLocked() {
	for len(f.turns) > 0 && (f.limit == 0 || f.used < f.limit) {
		at := -1
		for i := range f.turns {
			k := (f.next + i) % len(f.turns)
			if at < 0 || f.turns[k].running < f.turns[at].running {
				at = k
			}
		}
		q := f.turns[at]
		if f.limit > 0 && q.running >= share(f.limit) {
			return // every unit waiting holds its share
		}
		granted := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		q.running++
		f.used++
		readInFlight.Add(1)
		f.next = at + 1
		if len(q.waiting) == 0 {
			f.removeTurnLocked(at)
		}
		granted <- struct{}{}
	}
}

// dropLocked takes a read that gave up out of its unit's queue; false when it is not there, having been granted.
func (f *fairSlots) dropLocked(q *fairQueue, granted chan struct{}) bool {
	for i, c := range q.waiting {
		if c != granted {
			continue
		}
		q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
		if len(q.waiting) == 0 {
			for j, t := range f.turns {
				if t == q {
					f.removeTurnLocked(j)
					break
				}
			}
		}
		return true
	}
	return false
}

// removeTurnLocked takes the unit at turns[i], which has no read waiting, out of the turns.
func (f *fairSlots) removeTurnLocked(i int) {
	f.turns = append(f.turns[:i], f.turns[i+1:]...)
	if f.next > i {
		f.next--
	}
	if f.next >= len(f.turns) {
		f.next = 0
	}
}

// sweepLocked drops the idle units; the next sweep waits until the map has doubled, so sweeping costs O(1) a read.
func (f *fairSlots) sweepLocked() {
	for u, q := range f.units {
		if q.running == 0 && len(q.waiting) == 0 {
			delete(f.units, u)
		}
	}
	f.sweepAt = max(minSweep, 2*len(f.units))
}
