package gateway

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/proxyclient"
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
// the flood. One unit holds at most three quarters of the slots (all but one of two or three), so that a team whose
// reads hold their slots for long (exports, answers read slowly) cannot keep every other team out; and a unit holding
// more than its part while another waits loses its oldest answer streamed for long (preemptLocked). With no one
// waiting and a slot within its share free, a request takes it at once. A slot is held from the grant until the
// backend's whole answer is in (answered), not until the client has it all. A backend that goes on with an answer
// after its connection is closed (VictoriaMetrics before v1.110.0 exports to the end into nowhere) holds its own slot
// until it is done whatever the client does: its answer is then read to its end at the gateway, slot held, when its
// client goes away or it is cut (drainAnswer).
//
// The same slots bound the writes forwarded at once to the write backends' -maxConcurrentInserts, which they too run
// first come first served: one team's bulk imports held up every other team's writes there, and at a backend that
// holds a slot for a whole request body (VictoriaMetrics before v1.86.0), one team's bodies sent slowly held every
// slot. A backend that frees its slot while it waits on a body (v1.108.0 on) is paced: a write holds its turn only
// while its body comes, passes it on to a team waiting with fewer, and a team holding none takes one of a reserve
// past the limit (writeturns.go). A write is never cut (the rest of its body would be lost). Nor does its client's going away end its upstream request once
// the whole body is read (a client that leaves before breaks the body, which ends it): VictoriaMetrics goes on with
// what it got, in its slot, so the gateway's slot is held until the backend answers.
//
// Held to the backends' capacity, and one team to three quarters of it, a team alone on the backends left a quarter of
// their slots idle, and the rest idle between a query's end and the next one's arrival (two wake-ups of two processes
// on a busy machine: about a millisecond against a dashboard query's three): through the gateway a dashboard mix got
// 0.7-0.8 of VictoriaMetrics' own throughput, through haproxy 0.9. So the reserve is lent, and a quarter more sent to
// wait in VictoriaMetrics' own queue, to a unit alone in wanting more, while what it would cost the next unit to
// come is small: while every read in flight is younger than lendWithin and the unit's last lendAfter reads each took
// less (lendableLocked). The next unit then waits for a quick read or two to end, not for its turn behind a flood. Not
// so after a burst of slow reads sent at once after quick ones: those lent hold the reserve for as long as they run,
// and the next unit waits that long, 429 past its queue duration. A unit whose read granted on loan turns out slow is
// therefore lent nothing for a while (lendPenalty, doubling), so that such a burst gets past the reserve once in that
// while; still, the reserve is no longer a promise, and lending is the operator's choice (reads only;
// -read.slotLending, off by default).
type fairSlots struct {
	mu    sync.Mutex
	limit int // 0: no limit (the backends' capacity is not known)
	used  int
	// reads: the slots are the read backends' (readStats), and a read may be cut. Else the write backends'
	// (writeStats).
	reads bool
	stats *slotStats
	// units holds the units seen, idle ones until the next sweep (as in concurrency); turns those waiting, in turn
	// order, and next whose turn it is.
	units   map[unit]*fairQueue
	sweepAt int
	turns   []*fairQueue
	next    int
	// waiting is len(turns), read without the lock by a paced write's every read of its body (yield): most find
	// nobody waiting, and must not queue for the lock to see it.
	waiting atomic.Int32
	queue   time.Duration
	// lend: slots may be lent (reads, -read.slotLending). inflight are the holds granted, oldest first, where they may.
	lend     bool
	inflight []*hold
	// paced: the write backends free their slot while they wait on a body, and a write holds its turn only while its
	// body comes (pacedBody).
	paced atomic.Bool
}

// fairQueue is one unit's reads: those in flight, oldest first, and those waiting, oldest first.
type fairQueue struct {
	holds   []*hold
	waiting []*hold
	// paused counts the unit's writes that gave their slot up while their client is slow (pause), waiting to resume
	// or not: the unit is kept while they last.
	paused int
	// quick counts the unit's last reads that took less than lendWithin, up to lendAfter. A read granted on loan that
	// took longer made it wait until noLendUntil (monoNow) for the next, a penalty that doubles with each (offenses).
	quick       int
	noLendUntil int64
	offenses    int
}

// running is how many of the unit's reads are in flight.
func (q *fairQueue) running() int { return len(q.holds) }

// hold is one request's slot. Its context is the request's upstream request's, which the client's going away does not
// cancel (VictoriaMetrics would run a query to its end anyway, and a write whose body it has) and preemption does.
type hold struct {
	context.Context
	cut context.CancelFunc
	// detached is the parent of Context, in the hold's own allocation.
	detached detachedCtx
	f        *fairSlots
	q        *fairQueue
	// grantedAt is when the slot was granted (clock), lent whether on loan; both under fairSlots.mu.
	grantedAt int64
	lent      bool
	// u is q's unit, which the balancer reads of a read it sends (memUnitOf).
	u unit
	// answering is when the backend's answer began (UnixNano; 0: not yet): the backend then holds its own slot only for
	// as long as the answer takes to stream, which a client reading slowly makes as long as it likes, and a cut frees.
	answering atomic.Int64
	cutDone   bool // under fairSlots.mu
	// paused: the write gave its slot up while its client is slow, and has none until resume grants it one (under
	// fairSlots.mu).
	paused   bool
	granted  chan struct{} // for a read that waits: sent its slot
	released atomic.Bool
	// runsOn: the backend goes on with the answer after its connection is closed, so an answer its client left or
	// that is cut is read to its end (drainAnswer) rather than closed, and the slot held until then; stop then
	// breaks the client's side at once, as stopped tells the forward step. Both are set before answering.
	runsOn  bool
	stop    func()
	stopped atomic.Bool
	// For such an answer, how long its writes to the client have taken (nanoseconds), and since when the one under
	// way has (UnixNano; 0: none): cutting it frees the backend's slot sooner only when its client, not the backend,
	// holds the answer up (clientBound).
	blocked      atomic.Int64
	writingSince atomic.Int64
	// drained is when the answer's drain last read something (UnixNano), from its cut on: a cut stands for a waiting
	// unit only while its drain goes on (preemptLocked).
	drained atomic.Int64
	// kept: the request's answer did not begin within -read.timeout, and the slot is held past its end (Keep).
	kept atomic.Bool
	// at is the backend the balancer sent the request to last, where a kept request stays in flight until it answers.
	at *backend
	// late holds what waits for a kept request's backend to answer (afterBackend); lateDone: it has.
	lateMu   sync.Mutex
	late     []func()
	lateDone bool
}

// Keep holds h's slot past the end of its request, whose answer did not begin within -read.timeout: VictoriaMetrics
// computes a query to its end in its own slot whether its client is there or not, and freeing the gateway's slot
// let a team's queries that outlast the timeout fill the backend's slots while the gateway counted them free, and
// the other teams' reads then got the backend's 503 (found by an attacker's review). The proxy client keeps the
// connection open and calls what Keep returns once the backend answers (or after ten timeouts). Until then the read
// counts as in flight at its backend too, so that least_loaded sends the next reads elsewhere and a backend that hangs
// does not draw every read into slots it never frees (found by another review).
func (h *hold) Keep() func() {
	h.kept.Store(true)
	keptReads.Inc()
	return func() {
		if h.at != nil {
			h.at.done()
		}
		h.f.answered(h)
		h.cut()
		h.lateMu.Lock()
		h.lateDone = true
		late := h.late
		h.late = nil
		h.lateMu.Unlock()
		for _, fn := range late {
			fn()
		}
	}
}

// afterBackend runs fn once the backend is done with h's request: at once, unless the request was kept past its
// timeout (Keep), then when the backend answers. A query's cost is charged then, and held until then: a query the
// gateway gave up on at -read.timeout was charged that much while VictoriaMetrics computed it for minutes (an
// attacker's review). A nil h runs fn at once.
func (h *hold) afterBackend(fn func()) {
	if h == nil || !h.kept.Load() {
		fn()
		return
	}
	h.lateMu.Lock()
	if h.lateDone {
		h.lateMu.Unlock()
		fn()
		return
	}
	h.late = append(h.late, fn)
	h.lateMu.Unlock()
}

// keepOnTimeout makes h the proxy client's Keeper of its request (proxyclient.WithKeeper, without its context):
// Keep is called if the answer does not begin within the header timeout. Called before the request is sent.
func (h *hold) keepOnTimeout() { h.detached.keeper = h }

// detachedCtx is a request's context as context.WithoutCancel makes it (its values, never done), kept in the hold
// rather than allocated apart; with keeper set it also answers the proxy client's Keeper lookup. Its Done is nil, so
// the context package looks no further up for a parent to cancel with, as it does not past WithoutCancel.
type detachedCtx struct {
	parent context.Context
	keeper proxyclient.Keeper
}

func (d *detachedCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d *detachedCtx) Done() <-chan struct{}       { return nil }
func (d *detachedCtx) Err() error                  { return nil }

func (d *detachedCtx) Value(key any) any {
	if d.keeper != nil && proxyclient.IsKeeperKey(key) {
		return d.keeper
	}
	return d.parent.Value(key)
}

// clientBound says whether h's client took at least half the time its answer has streamed, to now, to take it.
func (h *hold) clientBound(now int64) bool {
	blocked := h.blocked.Load()
	if since := h.writingSince.Load(); since != 0 && since < now {
		blocked += now - since
	}
	return 2*blocked >= now-h.answering.Load()
}

// waitingLocked says whether h still waits for its slot.
func (h *hold) waitingLocked() bool { return slices.Index(h.q.waiting, h) >= 0 }

// slotStats are the figures of one kind of backend slots, shared by every gateway of the process.
type slotStats struct {
	scope                   string // of the overload error and vmgateway_concurrency_rejected_total
	limit, inFlight, queued atomic.Int64
	rejected                *metrics.Counter
}

// newSlotStats registers the figures under the names given in full, which the docs' test finds in the code.
func newSlotStats(scope, rejected, slots, requests, queued string) *slotStats {
	s := &slotStats{scope: scope, rejected: metrics.NewCounter(rejected)}
	metrics.NewGauge(slots, func() float64 { return float64(s.limit.Load()) })
	metrics.NewGauge(requests, func() float64 { return float64(s.inFlight.Load()) })
	metrics.NewGauge(queued, func() float64 { return float64(s.queued.Load()) })
	return s
}

var (
	preempted = metrics.NewCounter(`vmgateway_read_backend_preempted_total`)
	lentReads = metrics.NewCounter(`vmgateway_read_backend_lent_total`)
	slowLoans = metrics.NewCounter(`vmgateway_read_backend_slow_loans_total`)
	keptReads = metrics.NewCounter(`vmgateway_read_backend_timeouts_kept_total`)
	readStats = newSlotStats("backend", `vmgateway_concurrency_rejected_total{scope="backend"}`,
		`vmgateway_read_backend_slots`, `vmgateway_read_backend_requests`, `vmgateway_read_backend_requests_queued`)
	writeStats = newSlotStats("write_backend", `vmgateway_concurrency_rejected_total{scope="write_backend"}`,
		`vmgateway_write_backend_slots`, `vmgateway_write_backend_requests`, `vmgateway_write_backend_requests_queued`)
)

// newFairSlots returns the read backends' slots (reads), or the write backends'.
func newFairSlots(queue time.Duration, reads bool) *fairSlots {
	stats := writeStats
	if reads {
		stats = readStats
	}
	return &fairSlots{units: map[unit]*fairQueue{}, sweepAt: minSweep, queue: queue, reads: reads, stats: stats}
}

// share is the most slots one unit may hold at once under limit: all but a quarter of them, at least one left.
func share(limit int) int {
	if limit < 2 {
		return limit
	}
	return limit - max(1, limit/4)
}

// Lending (lendableLocked). lendWithin bounds what a loan may cost the next unit to come: it waits for reads that
// have all taken less so far, and that its unit's reads took less before. A dashboard's queries take milliseconds,
// where the wake-ups lending saves take one. The penalty starts at lendPenalty and doubles to lendPenaltyMax.
const (
	lendWithin     = 100 * time.Millisecond
	lendAfter      = 16
	lendPenalty    = time.Minute
	lendPenaltyMax = time.Hour
)

// spare is how many reads past limit are sent to wait in the backends' own queue on loan: enough that one is there
// as a slot frees, for queries a few times longer than the wake-ups between one's end and the next one's arrival. None
// below 4: a replica's part of the capacity (-read.replicas) would otherwise add one each, a half or more of it.
func spare(limit int) int { return limit / 4 }

// monoBase makes monoNow a reading of the monotonic clock, which a step of the wall clock does not move: loans are
// judged by durations.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// clock is monoNow where slots may be lent or a write's turn passes on (paced), and 0 elsewhere, which then reads no
// clock for a read.
func (f *fairSlots) clock() int64 {
	if !f.lend && !f.paced.Load() {
		return 0
	}
	return monoNow()
}

// lendableLocked says whether unit q may take a slot past its share, or past the limit by up to spare, at now
// (monoNow): no other unit waits, every read in flight is younger than lendWithin, and q's last lendAfter reads
// each took less, with no penalty running.
func (f *fairSlots) lendableLocked(q *fairQueue, now int64) bool {
	if !f.lend || f.limit == 0 || f.used >= f.limit+spare(f.limit) || q.quick < lendAfter || now < q.noLendUntil {
		return false
	}
	for _, w := range f.turns {
		if w != q {
			return false
		}
	}
	return len(f.inflight) == 0 || now-f.inflight[0].grantedAt < int64(lendWithin)
}

// setLimit sets how many reads may be in flight at once (0: no limit); requests waiting take the room it adds.
func (f *fairSlots) setLimit(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limit = max(n, 0)
	f.stats.limit.Store(int64(f.limit))
	f.fillLocked()
}

// acquire takes a slot for a request of unit u, waiting for its turn at most the queue duration or until ctx ends.
// The caller must pass what it returns to release once the upstream request is done, and send the upstream request
// with the hold as its context (nil, without a limit: the request's own).
func (f *fairSlots) acquire(ctx context.Context, u unit) (*hold, error) {
	f.mu.Lock()
	if f.limit == 0 {
		f.used++
		f.mu.Unlock()
		f.stats.inFlight.Add(1)
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
	h := &hold{q: q, f: f, u: u}
	h.detached.parent = ctx
	h.Context, h.cut = context.WithCancel(&h.detached)
	if len(f.turns) == 0 {
		now := f.clock()
		within := f.used < f.limit && q.running() < share(f.limit)
		reserve := !within && f.reserveLocked(q)
		if within || reserve || f.lendableLocked(q, now) {
			f.grantLocked(h, now, !within && !reserve)
			f.mu.Unlock()
			return h, nil
		}
	}
	h.granted = make(chan struct{}, 1)
	if len(q.waiting) == 0 {
		f.joinTurnsLocked(q)
	}
	q.waiting = append(q.waiting, h)
	// Slots may be free that the units waiting before could not take (their share is held).
	f.fillLocked()
	wait := f.queue
	f.mu.Unlock()

	f.stats.queued.Add(1)
	defer f.stats.queued.Add(-1)
	// Halfway through a read's wait, a unit holding more than its part of the slots with answers its clients read
	// slowly loses the oldest of them (preemptLocked).
	start, first := time.Now(), wait
	if f.reads {
		first = wait / 2
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for half := f.reads; ; half = false {
		select {
		case <-h.granted:
			return h, nil
		case <-timer.C:
			if half {
				f.mu.Lock()
				if h.waitingLocked() {
					// Past the limit on loan, one cut frees no slot: one more is cut for each loan past it.
					for range 1 + max(0, f.used-f.limit) {
						f.preemptLocked(q, time.Now())
					}
				}
				f.mu.Unlock()
				timer.Reset(wait - time.Since(start))
				continue
			}
		case <-ctx.Done():
		}
		break
	}
	f.mu.Lock()
	dropped, limit := f.dropLocked(h), f.limit
	if !dropped && ctx.Err() != nil {
		// Granted as its client went away: the slot passes on.
		f.releaseLocked(h)
	}
	f.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		h.cut()
		return nil, errGoneInQueue
	case !dropped:
		return h, nil // granted as the wait ran out (a queue of 0 does both at once)
	}
	h.cut()
	f.stats.rejected.Inc()
	return nil, &overloadError{scope: f.stats.scope, limit: limit, queue: wait}
}

// grantLocked gives h its slot at now (monoNow), lent on loan.
func (f *fairSlots) grantLocked(h *hold, now int64, lent bool) {
	if h.paused {
		h.paused = false
		h.q.paused--
	}
	h.q.holds = append(h.q.holds, h)
	h.grantedAt, h.lent = now, lent
	if f.lend {
		f.inflight = append(f.inflight, h)
	}
	f.used++
	f.stats.inFlight.Add(1)
	if lent {
		lentReads.Inc()
	}
}

// release gives back the slot acquire took (nil: taken without a limit): to the waiting unit whose turn it is, else
// to the pool. The backend's answer read to its end frees the slot early (answered); the request's end, which must
// come, frees it otherwise and ends the hold's context.
func (f *fairSlots) release(h *hold) {
	if h != nil && h.kept.Load() {
		return // the proxy client releases it (Keep)
	}
	f.answered(h)
	if h != nil {
		h.cut()
	}
}

// answered frees h's slot once the backend's whole answer is in: VictoriaMetrics has freed its own, and the client,
// however slowly it reads the rest, holds none. Only the first call does anything.
func (f *fairSlots) answered(h *hold) {
	if h != nil && !h.released.CompareAndSwap(false, true) {
		return
	}
	f.mu.Lock()
	f.releaseLocked(h)
	f.mu.Unlock()
}

func (f *fairSlots) releaseLocked(h *hold) {
	if h != nil && h.paused {
		// Its slot went back as it paused; it may still wait to resume.
		f.dropLocked(h)
		h.paused = false
		h.q.paused--
		return
	}
	if h != nil {
		if i := slices.Index(h.q.holds, h); i >= 0 {
			h.q.holds = slices.Delete(h.q.holds, i, i+1)
		}
		if i := slices.Index(f.inflight, h); i >= 0 {
			f.inflight = slices.Delete(f.inflight, i, i+1)
			f.judgeLocked(h, monoNow())
		}
	}
	f.used--
	f.stats.inFlight.Add(-1)
	f.fillLocked()
}

// judgeLocked counts how long h's read took, granted to its end at now, towards its unit's loans.
func (f *fairSlots) judgeLocked(h *hold, now int64) {
	q := h.q
	if now-h.grantedAt < int64(lendWithin) {
		q.quick = min(q.quick+1, lendAfter)
		return
	}
	q.quick = 0
	if !h.lent {
		return
	}
	slowLoans.Inc()
	// The loans of one burst are one offense: a second ending while the first's penalty runs does not double it.
	if q.decay(now); now >= q.noLendUntil {
		q.noLendUntil = now + int64(min(lendPenalty<<min(q.offenses, 6), lendPenaltyMax))
		q.offenses++
	}
}

// decay forgets one of q's offenses for each lendPenaltyMax gone by without one since its penalty ended, and says how
// many are left: a team whose quick reads turn slow now and then is not kept from loans for an hour at a time for
// good.
func (q *fairQueue) decay(now int64) int {
	for q.offenses > 0 && now >= q.noLendUntil+int64(lendPenaltyMax) {
		q.offenses--
		q.noLendUntil += int64(lendPenaltyMax)
	}
	return q.offenses
}

// cutGrace is how long a cut read keeps its slot for the backend to notice the cut and free its own.
const cutGrace = 100 * time.Millisecond

// preemptLocked is called for unit w, whose read has waited half its queue duration. Of the other units with an
// answer that may be cut (cuttable: streamed for as long), the one holding most loses its oldest such answer when it
// holds more than its part of the slots (the limit shared by the units holding or waiting, rounded up) and more than
// one more than w holds, or when w holds none and the units are more than the slots. VictoriaMetrics holds its own slot for as long as it streams an answer
// (an export read slowly holds it for hours), and slots are not otherwise taken back: without this, one team with a
// few exports read slowly would keep three quarters of the backends, and two such teams all of them. A read still being
// computed is never cut: VictoriaMetrics would run it to its end anyway, and its slot would not be freed.
func (f *fairSlots) preemptLocked(w *fairQueue, now time.Time) {
	streamedSince, at := now.Add(-f.queue/2).UnixNano(), now.UnixNano()
	active, waiting, pending := 0, 0, 0
	var top *fairQueue
	var victim *hold
	for _, q := range f.units {
		if q.running() == 0 && len(q.waiting) == 0 {
			continue
		}
		active++
		if len(q.waiting) > 0 {
			waiting++
		}
		var oldest *hold
		for _, h := range q.holds {
			if h.cutDone && !h.released.Load() && (!h.runsOn || at-h.drained.Load() < int64(f.queue/2)) {
				pending++
			}
			// An answer on loan goes first: it holds what the others would have had.
			if q != w && (oldest == nil || h.lent && !oldest.lent) && h.cuttable(streamedSince, at) {
				oldest = h
			}
		}
		if oldest != nil && (top == nil || q.running() > top.running()) {
			top, victim = q, oldest
		}
	}
	// A cut whose slot is not free yet (within its grace, or a run-on answer being read to its end) frees one for a
	// unit waiting: no more are cut than the units waiting, and the loans past the limit, for which a cut frees none.
	// A drain that has read nothing for half the queue duration no longer counts (a backend that stalls, or an export
	// that goes on for hours), or it would shield the other answers of its team (found by an attacker's review).
	if top == nil || pending >= waiting+max(0, f.used-f.limit) {
		return
	}
	over := top.running() > (f.limit+active-1)/active && top.running() > w.running()+1
	// With more units than slots (one slot for a replica's part), some unit holds none whatever the parts; long
	// answers then take turns.
	starved := w.running() == 0 && active > f.limit
	if !over && !starved {
		return
	}
	h := victim
	h.cutDone = true
	preempted.Inc()
	if h.runsOn {
		h.drained.Store(at)
		// Closing would not free VictoriaMetrics' slot (it exports on into nowhere): the client's side is broken
		// instead, and the answer read to its end as fast as the backend sends it, which frees the slot when the
		// backend's is free.
		h.stopped.Store(true)
		h.stop()
		return
	}
	// The cut closes the upstream connection, and VictoriaMetrics frees its slot as its next write fails, which takes
	// it a moment: the slot here is freed cutGrace later, not when the forward step notices (it may be blocked writing
	// to the client that does not read, for up to the answer's write timeout).
	h.cut()
	time.AfterFunc(cutGrace, func() { f.answered(h) })
}

// cuttable says whether h may be cut at now (UnixNano): its answer has streamed since streamedSince or before, is not
// whole and not cut already, and, from a backend that goes on with a cut answer, is held up by its client
// (clientBound): one the backend itself sends slowly would be read no faster, and its client would lose it for
// nothing.
func (h *hold) cuttable(streamedSince, now int64) bool {
	at := h.answering.Load()
	return !h.cutDone && !h.released.Load() && at != 0 && at <= streamedSince && (!h.runsOn || h.clientBound(now))
}

// fillLocked grants free slots to the waiting reads, each to the oldest read of the waiting unit with the fewest in
// flight that is within its share, the first in turn among equals, or lent one; without a limit, to every waiting
// read.
func (f *fairSlots) fillLocked() {
	if len(f.turns) == 0 {
		return
	}
	now := f.clock()
	for len(f.turns) > 0 {
		at := -1
		for i := range f.turns {
			k := (f.next + i) % len(f.turns)
			if at < 0 || f.turns[k].running() < f.turns[at].running() {
				at = k
			}
		}
		q := f.turns[at]
		// Past the limit, or with every unit waiting at its share, only a loan is left.
		lent := f.limit > 0 && (f.used >= f.limit || q.running() >= share(f.limit))
		if lent && f.reserveLocked(q) {
			lent = false
		} else if lent && !f.lendableLocked(q, now) {
			return
		}
		h := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		f.grantLocked(h, now, lent)
		f.next = at + 1
		if len(q.waiting) == 0 {
			f.removeTurnLocked(at)
		}
		h.granted <- struct{}{}
	}
}

// dropLocked takes a read that gave up out of its unit's queue; false when it is not there, having been granted.
func (f *fairSlots) dropLocked(h *hold) bool {
	q := h.q
	i := slices.Index(q.waiting, h)
	if i < 0 {
		return false
	}
	q.waiting = slices.Delete(q.waiting, i, i+1)
	if len(q.waiting) == 0 {
		if j := slices.Index(f.turns, q); j >= 0 {
			f.removeTurnLocked(j)
		}
	}
	return true
}

// joinTurnsLocked puts q, which begins to wait, last in the turns' cycle: just before the unit whose turn is next.
// Appended at the end, a unit that came and went past next was served again and again ahead of a unit waiting below
// it, whose reads, or writes, tied with it (an attacker's review: a team's four writers got 2 writes in 3 s beside
// eight teams passing their turns on, 241 with this; a team's four parallel queries 5 reads against 652).
func (f *fairSlots) joinTurnsLocked(q *fairQueue) {
	f.turns = slices.Insert(f.turns, f.next, q)
	f.waiting.Store(int32(len(f.turns)))
	if f.next++; f.next >= len(f.turns) {
		f.next = 0
	}
}

// removeTurnLocked takes the unit at turns[i], which has no read waiting, out of the turns.
func (f *fairSlots) removeTurnLocked(i int) {
	f.turns = append(f.turns[:i], f.turns[i+1:]...)
	f.waiting.Store(int32(len(f.turns)))
	if f.next > i {
		f.next--
	}
	if f.next >= len(f.turns) {
		f.next = 0
	}
}

// sweepLocked drops the idle units; the next sweep waits until the map has doubled, so sweeping costs O(1) a read.
func (f *fairSlots) sweepLocked() {
	now := monoNow()
	for u, q := range f.units {
		// A unit with offenses stays until they have decayed, or it would come back quick, its penalty forgotten.
		if q.running() == 0 && len(q.waiting) == 0 && q.paused == 0 && q.decay(now) == 0 {
			delete(f.units, u)
		}
	}
	f.sweepAt = max(minSweep, 2*len(f.units))
}
