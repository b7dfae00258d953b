package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// VictoriaMetrics admits every rollup of every query through one memory pool (a quarter of its allowed memory),
// reserving series × points × 16 bytes until the rollup ends, and refuses a query that does not fit with 422 "not
// enough memory for processing ...; total available memory for concurrent requests: X bytes; requested memory: Y
// bytes". So one team's query that reserves most of the pool made every other team's range queries fail for as long
// as it ran, again and again (an attacker's review: 53 of 53 refused in a minute, through one read slot). The
// gateway cannot see a query's series before VictoriaMetrics does; what it can do is what VictoriaMetrics' own queue
// would: a read refused for the pool being full, which would fit in an empty one, waits at the gateway (keeping its
// slot) until another query's answer begins at the backends (VictoriaMetrics frees a query's memory as its evaluation
// ends, before it writes the answer), and is sent again, within -read.maxQueueDuration. Waiters go again one per
// query answered, the longest waiting first, each to the backend whose memory was freed.
//
// Waking the waiter was not enough: its send raced the next query of the team that filled the pool, whose client
// sends it the moment it has its answer, and the fresh query won nearly every time (on v1.151, the other team's read
// spent its 16 sends in 2.3 s and got the 422: TestQueryMemoryPoolWaits, once in CI; TestMemHandOff lost every time).
// So the memory is handed over: while the woken read is sent, the other reads to that backend are held back (handOff)
// until its answer begins or it is refused again, and the next waiter, if any, gets the memory its query frees in
// turn. The reads held are those of the units in the contention for the memory, every API of theirs: a unit refused
// for the pool within a wait's length (contendsLocked), as the team that fills it is when its own queries do not fit
// beside one another (the gateway cannot tell which read would take memory before VictoriaMetrics does), for about
// what the woken read's refusal took to come, at most memHandOffMax. A unit never refused is never held: the refusal
// is known by its text, which a client can forge (maxMemWaits), and holding every read let one client whose forged
// refusal was woken at every query answered add up to a second to every other team's reads, again and again. A woken
// read refused again waits behind those already waiting (memTry.order), or a client's forged refusal, sent at once and
// refused at once, would take every wake while the others waited out their queue and got the 422 (a review of the
// first version: 2 of 4 runs; TestMemForgerBesideFillingLoops). The memory it was handed is not passed on: it was
// taken, and each waiter woken in turn for it was refused, their 16 sends spent in a second. Polls are sent whatever
// older waiters asked for: they skipped their turn for an older one that asked for no more, and the memory asked for
// is in the refusal's text, which that client forged as 1 byte. And a read's sends are spaced (memTry.gap), since any
// query answered wakes a waiter, whatever memory it freed.

// maxMemWaits bounds how often one read is sent again for the pool. The refusal is known by its text, and a 422
// of another kind can end with text a client wrote (a label value in "duplicate output timeseries"), so a client
// can have its failing query sent again: at most this many times, within its own slot, like as many requests of
// its own one after another. Every send counts, whatever woke it: each is VictoriaMetrics' work on the client's
// query, and a bound on some sends only would let a client that wakes its own query (with cheap queries of its own,
// each a query answered) have it sent without end. 16 is what a read refused for real may need in the default 10 s
// of -read.maxQueueDuration: its first send and its polls (100 ms doubling to a second), or as many wakes, spaced as
// its polls are (memTry.gap), which get it the memory unless what was freed is too little. It needs far fewer where
// queries are answered here: on TestQueryMemoryPoolWaits' three loops that fill the pool, at most 11 sends, 3 past its
// polls (seventeen runs).
const maxMemWaits = 16

// memHandOffFloor and memHandOffMax bound how long a hand-off holds the other reads to its backend: twice what the
// woken read's last refusal took to come (its send takes about that long to reach the pool again, through the same
// search of its series), at least the floor (a woken goroutine on a busy machine runs some milliseconds late), at most
// memHandOffMax. A read held by hand-offs that follow one another is held at most memHandOffMax in all, then sent.
const (
	memHandOffFloor = 50 * time.Millisecond
	memHandOffMax   = time.Second
)

// memRefusalPrefix bounds what is read of a 422 to tell the pool's refusal from others: VictoriaMetrics' message
// is a few hundred bytes.
const memRefusalPrefix = 4 << 10

// memPoolRefusal reads the start of a 422 answer and says whether it is the pool's refusal of a query that would fit
// in the empty pool. Either way resp keeps its whole body.
func memPoolRefusal(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnprocessableEntity {
		return false
	}
	msg, ok := answerStart(resp, memRefusalPrefix)
	if !ok {
		return false
	}
	// The counts are read where VictoriaMetrics writes them, after the query it echoes, whose text is the client's:
	// from the last "total available memory" on, ending with what VictoriaMetrics suggests.
	i := bytes.LastIndex(msg, []byte(poolLabel))
	if i < 0 || !bytes.Contains(msg[:i], []byte("not enough memory for processing")) {
		return false
	}
	pool, rest, ok1 := bytesAfter(msg[i:], poolLabel)
	asked, rest, ok2 := bytesAfter(rest, "; requested memory: ")
	return ok1 && ok2 && bytes.HasPrefix(rest, []byte("; possible solutions are: ")) && asked <= pool
}

const poolLabel = "total available memory for concurrent requests: "

// bytesAfter reads the count of bytes that msg starts with after label ("N bytes"), and what follows it.
func bytesAfter(msg []byte, label string) (int64, []byte, bool) {
	rest, ok := bytes.CutPrefix(msg, []byte(label))
	if !ok {
		return 0, nil, false
	}
	n := 0
	for n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	v, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	rest, ok = bytes.CutPrefix(rest[n:], []byte(" bytes"))
	return v, rest, err == nil && ok
}

type prefixedBody struct {
	io.Reader
	c io.Closer
}

func (b *prefixedBody) Close() error { return b.c.Close() }

// memQueue is the reads waiting for the backends' memory, and the memory handed over to those woken (offs): a
// query answered wakes the one that waited longest. waiting is len(q) and handing len(offs), kept apart so that every
// read, told of or held by them, looks at them without the lock. refused is when each unit in the contention for the
// memory last had a read refused for it (contendsLocked); those refused a wait's length ago or more are dropped when
// the map reaches sweepAt, so it holds at most twice the units refused within a wait, or minMemUnits. Its zero value is
// an empty queue that holds nothing.
type memQueue struct {
	waiting atomic.Int32
	handing atomic.Int32
	mu      sync.Mutex
	q       []*memWaiter
	offs    []*handOff
	refused map[unit]time.Time
	sweepAt int
	// missed: a query was answered while every waiter was within its gap (memTry.gap), at missedAt; the first
	// waiter whose gap ends within memHandOffMax of it polls then.
	missed   bool
	missedAt time.Time
	// lastRefused is when a read was last refused for the pool (UnixNano; 0: never), whatever its unit.
	lastRefused atomic.Int64
}

// contended says whether a read was refused for the pool within the last within, or one waits or is handed memory:
// a nil m never is.
func (m *memQueue) contended(within time.Duration) bool {
	if m == nil {
		return false
	}
	if m.waiting.Load() != 0 || m.handing.Load() != 0 {
		return true
	}
	at := m.lastRefused.Load()
	return at != 0 && time.Now().UnixNano()-at < int64(within)
}

// minMemUnits is the least number of units whose refusals are kept before those past the wait are dropped.
const minMemUnits = 64

type memWaiter struct {
	ch chan struct{}
	// order is its place in the queue (memTry.order); notBefore when its gap ends (memTry.gap).
	order, notBefore time.Time
	// took is how long its last refusal took to come, which sizes its hand-off.
	took time.Duration
	off  *handOff // under memQueue.mu: set when woken
}

// memTry is one read's waits for the backends' memory, from its first refusal (since) until end (since and
// -read.maxQueueDuration): order is its place in the queue (since, or when a send it was woken for was refused again),
// poll the next poll's interval, took what its last refusal took to come, sends how often it was sent again.
type memTry struct {
	since, end, order time.Time
	poll, took        time.Duration
	sends             int
}

// gap is how long after its last refusal a read is sent again at the earliest, woken or not: at once after its first,
// then memHandOffFloor doubling with each send refused up to memHandOffMax. A query answered wakes the longest waiting
// read whatever memory it freed, and each wake is a send, so without a gap another team's cheap queries, answered
// every few milliseconds while one query held the pool, had a waiter sent again at each and spend its maxMemWaits
// sends in a fraction of a second, and got it the 422 long before its wait ended (TestMemCheapQueriesSpendNoWait). With
// it, the sends of a read woken at every query answered add up to more than the default -read.maxQueueDuration of 10 s
// (0, 50, 100, 200, 400, 800 ms, then a second each), as its polls do.
func (tr *memTry) gap() time.Duration {
	if tr.sends <= 1 {
		return 0
	}
	return min(memHandOffFloor<<min(tr.sends-2, 10), memHandOffMax)
}

// handOff is the memory a query freed at backend b, handed to the read woken for it: the other reads to b are held
// back until that read's send there is answered (done closes) or until passes. A zero until holds nothing.
type handOff struct {
	b     *backend
	until time.Time
	done  chan struct{}
}

// wakeLocked hands the memory freed at b to the longest waiting read, or with spaced to the longest waiting that may
// be sent again by now (memTry.gap), if any; when every waiter is within its gap, the first whose gap ends polls
// (missed).
func (m *memQueue) wakeLocked(b *backend, spaced bool) {
	now := time.Now()
	for i, w := range m.q {
		if !spaced || !w.notBefore.After(now) {
			m.missed = false
			m.handLocked(i, b, now)
			return
		}
	}
	if len(m.q) > 0 {
		m.missed, m.missedAt = true, now
	}
}

// handLocked takes the i-th waiter out of the queue and wakes it with the memory freed at b.
func (m *memQueue) handLocked(i int, b *backend, now time.Time) {
	w := m.q[i]
	m.q = slices.Delete(m.q, i, i+1)
	m.waiting.Add(-1)
	w.off = &handOff{b: b, until: now.Add(min(max(2*w.took, memHandOffFloor), memHandOffMax)), done: make(chan struct{})}
	m.offs = append(m.offs, w.off)
	m.handing.Add(1)
	close(w.ch)
}

// answered is told that a read sent with the hand-off h (nil: none) had its answer begin at b, or failed;
// evaluated: it was a query answered, and VictoriaMetrics freed the memory it held as its evaluation ended. h ends, and
// the freed memory goes to the read that waited longest with a hand-off of its own, so the reads held back stay held
// while waiters are served in turn.
func (m *memQueue) answered(h *handOff, b *backend, evaluated bool) {
	m.answeredBy(h, b, evaluated, unit{}, false, 0)
}

// answeredBy is answered for a read of unit by (known: told of it): the waiters' gaps (memTry.gap) hold off a wake by a
// unit outside the contention for the memory (contendsLocked; within is -read.maxQueueDuration), whose query may have
// freed too little, as a team's cheap queries do. One in it, as the team filling the pool whose queries do not fit
// beside one another, wakes at once, as does a read of a unit not known (sent before the contention began): waking on
// their answers only at each gap's end, with the memory taken by then, had another team's read refused until its wait
// ran out (TestQueryMemoryPoolWaits on 1.79.5, once in CI).
func (m *memQueue) answeredBy(h *handOff, b *backend, evaluated bool, by unit, known bool, within time.Duration) {
	if h == nil && (!evaluated || m.waiting.Load() == 0) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h != nil {
		if i := slices.Index(m.offs, h); i >= 0 {
			m.offs = slices.Delete(m.offs, i, i+1)
			m.handing.Add(-1)
			close(h.done)
		}
	}
	if evaluated {
		m.wakeLocked(b, known && !m.contendsLocked(by, time.Now(), within))
	}
}

// passOn gives the memory of h, whose read will not be sent (its client went, or the backend left the list), to the
// next waiter: otherwise the reads held back would be held for nothing, and the memory go to whoever comes first.
func (m *memQueue) passOn(h *handOff) { m.answered(h, h.b, true) }

// refusedBy notes that a read of unit u was refused for the pool at now; within is -read.maxQueueDuration.
func (m *memQueue) refusedBy(u unit, now time.Time, within time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.refused[u]; !ok && len(m.refused) >= m.sweepAt {
		for x, at := range m.refused {
			if now.Sub(at) >= within {
				delete(m.refused, x)
			}
		}
		m.sweepAt = max(minMemUnits, 2*len(m.refused))
	}
	if m.refused == nil {
		m.refused = make(map[unit]time.Time, minMemUnits)
	}
	m.refused[u] = now
}

// contendsLocked says whether unit u is in the contention for the memory: a read of its was refused for the pool
// within the last wait's length (within, -read.maxQueueDuration). A read waits at most that long from its first
// refusal and is refused again at each send, so this holds for every unit with a read waiting or woken; past it, a
// unit's refusal says nothing of the pool now. A unit never refused is not in it, whoever holds the memory.
func (m *memQueue) contendsLocked(u unit, now time.Time, within time.Duration) bool {
	at, ok := m.refused[u]
	return ok && now.Sub(at) < within
}

// holdBack holds a read of unit u about to be sent to b while memory freed there is handed to another (handOff), for
// at most memHandOffMax in all, or until ctx ends; only while u is in the contention for the memory (contendsLocked;
// within is -read.maxQueueDuration), as the reads that would race the woken one for it are: those of the team that
// fills the pool, whose queries do not fit beside its own, and of the other waiters' teams. Another team's read is
// not held for a refusal a client may have forged.
func (m *memQueue) holdBack(ctx context.Context, b *backend, u unit, within time.Duration) {
	if m.handing.Load() == 0 {
		return
	}
	var end time.Time
	var t *time.Timer
	for {
		now := time.Now()
		var h *handOff
		m.mu.Lock()
		if m.contendsLocked(u, now, within) {
			for _, x := range m.offs {
				if x.b == b && x.until.After(now) {
					h = x
					break
				}
			}
		}
		m.mu.Unlock()
		if h == nil {
			return
		}
		if end.IsZero() {
			end = now.Add(memHandOffMax)
		}
		d := h.until.Sub(now)
		if h.until.After(end) {
			d = end.Sub(now)
		}
		if d <= 0 {
			return
		}
		if t == nil {
			t = time.NewTimer(d)
			defer t.Stop()
		} else {
			t.Reset(d)
		}
		select {
		case <-h.done:
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// wait waits for a query to be answered, or for a poll (a backend's memory may free without a query answered here:
// another gateway's reads, a query of the backend's own), or until the context ends (the client's: a read waiting for
// memory runs nowhere), in the order of tr.order, not within tr's gap, and at most until tr.end. It says whether to
// send the request again, and with what hand-off (nil after a poll): the request then goes to its backend, and ends it
// (answered).
func (m *memQueue) wait(ctx context.Context, tr *memTry) (*handOff, bool) {
	now := time.Now()
	w := &memWaiter{ch: make(chan struct{}), order: tr.order, notBefore: now.Add(tr.gap()), took: tr.took}
	if w.notBefore.After(tr.end) {
		w.notBefore = tr.end
	}
	m.mu.Lock()
	i := len(m.q)
	for i > 0 && m.q[i-1].order.After(w.order) {
		i--
	}
	m.q = slices.Insert(m.q, i, w)
	m.waiting.Add(1)
	m.mu.Unlock()
	pollAt := now.Add(tr.poll)
	if pollAt.After(tr.end) {
		pollAt = tr.end
	}
	if pollAt.Before(w.notBefore) {
		pollAt = w.notBefore
	}
	tr.poll = min(2*tr.poll, time.Second)
	t := time.NewTimer(w.notBefore.Sub(now))
	defer t.Stop()
	missed, woken := false, false
	if w.notBefore.After(now) {
		// Within its gap only the answer of a unit in the contention wakes it. One of another that came meanwhile, when
		// no other waiter could take it, has it polled as its gap ends: the memory may still be free, but most likely
		// another query took it since, and holding the other reads back for it would hold them for nothing.
		select {
		case <-t.C:
			m.mu.Lock()
			if m.missed && w.off == nil && time.Since(m.missedAt) < memHandOffMax {
				m.missed, missed = false, true
			}
			m.mu.Unlock()
		case <-w.ch:
			woken = true
		case <-ctx.Done():
		}
	}
	if !missed && !woken && ctx.Err() == nil {
		t.Reset(time.Until(pollAt))
		select {
		case <-w.ch:
		case <-ctx.Done():
		case <-t.C:
		}
	}
	m.mu.Lock()
	off := w.off
	if off == nil {
		if i := slices.Index(m.q, w); i >= 0 {
			m.q = slices.Delete(m.q, i, i+1)
			m.waiting.Add(-1)
		}
	}
	m.mu.Unlock()
	if ctx.Err() != nil {
		if off != nil {
			// Woken as its client went: the memory goes on to the next waiter rather than to nobody.
			m.passOn(off)
		}
		return nil, false
	}
	return off, true
}

// memUnitKey is the context key of the isolation unit of a read that holds no read slot (withMemUnit).
type memUnitKey struct{}

// withMemUnit tells the balancer the isolation unit of a read sent with ctx, which holds no read slot: one that
// does is known by it (hold.u), at no cost to every read.
func withMemUnit(ctx context.Context, u unit) context.Context {
	return context.WithValue(ctx, memUnitKey{}, u)
}

// memUnitOf is the isolation unit of a read sent with ctx and holding the slot held (nil: none); false: not told (the
// read is then neither held back nor counted in the contention).
func memUnitOf(ctx context.Context, held *hold) (unit, bool) {
	if held != nil {
		return held.u, true
	}
	u, ok := ctx.Value(memUnitKey{}).(unit)
	return u, ok
}
