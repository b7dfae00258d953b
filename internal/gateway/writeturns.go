package gateway

import (
	"context"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// VictoriaMetrics v1.108.0 and later free their insert slot while they wait on a request's body, and run only
// -maxConcurrentInserts parse-and-insert steps at once, queueing the rest first come first served: one team's bulk
// imports, sent fast, filled that queue, and another team's one-line writes waited in it behind them (65-180 times
// slower on v1.151, an attacker's review; BenchmarkWriteTurns). So writes to such backends take turns at the gateway
// too, at the capacity it learns, but hold their turn only while their body comes: a write whose client is slow
// gives its turn up while it waits on it (stallGrace), as the backend gives its slot up, and takes a turn again when
// more of its body comes, before it passes it on. A team's bodies sent a trickle at a time hold no turn, and do not
// keep the backends idle while other teams' writes wait, as turns held for a whole body would. Nor does a body sent
// fast keep its turn for as long as it lasts while another team waits: the backend works on its blocks and the other
// team's in turn, first come first served, and a turn held for a whole import of a gigabyte made a team's one-line
// write wait for its end. A write whose turn has lasted turnQuantum passes it on, at its next read, to a team that
// waits holding fewer, and waits for its next turn, first among its team's writes.

// stallGrace is how long a read of a write's body from its client may wait before the write gives its turn up. A
// client that sends a little more within every stallGrace keeps it, at most its team's share of the turns, as a
// write held for a whole body does; a shorter grace would make every write over a busy network pause and resume.
const stallGrace = 5 * time.Millisecond

// A team's one-line write still waited for one of the turns other teams held (four teams' imports, a turn each, on
// v1.151 of four insert slots: 396 ms at the median, where without turns it waited 88 ms in the backend's queue), and
// a body the backend's socket buffers take whole has no more reads to pass its turn on at. So a write of a unit that
// holds no turn may take one past the limit, up to spare(limit) of them (one of four), at write backends that free
// their slot while they wait on a body: it waits in the backend's queue behind the blocks of the writes in turn, not
// for them to end.

// reserveLocked says a write of unit q may take one of the turns reserved past the limit for units holding none.
func (f *fairSlots) reserveLocked(q *fairQueue) bool {
	return !f.reads && f.paced.Load() && q.running() == 0 && f.used < f.limit+max(1, spare(f.limit))
}

// turnQuantum is how long a write's turn lasts while another team waits: some blocks of the backend's work (a block
// of 64 KiB takes v1.151 a few milliseconds), so that a team's one-line write waits about that long, not for another
// team's import to end.
const turnQuantum = 20 * time.Millisecond

var (
	pausedWrites  = metrics.NewCounter(`vmgateway_write_backend_paused_total`)
	yieldedWrites = metrics.NewCounter(`vmgateway_write_backend_yielded_total`)
)

// pause gives h's slot up while its write waits on its client for more of the body: to the unit whose turn it is.
// Nothing happens to a hold released or paused already.
func (f *fairSlots) pause(h *hold) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pauseLocked(h, pausedWrites)
}

// yield gives h's slot up, and says so, when its turn has lasted turnQuantum and a unit waits that holds fewer than
// h's and fewer than its share: the slot then goes to such a unit (fillLocked), not back to h's own.
func (f *fairSlots) yield(h *hold) bool {
	if f.waiting.Load() == 0 {
		return false // a unit that begins to wait now is seen at the next read
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.turns) == 0 || f.clock()-h.grantedAt < int64(turnQuantum) {
		return false
	}
	for _, w := range f.turns {
		if w != h.q && w.running() < h.q.running() && w.running() < share(f.limit) {
			return f.pauseLocked(h, yieldedWrites)
		}
	}
	return false
}

// pauseLocked frees h's slot as its release would, marks h paused, and counts it in why. The count and the unit's
// paused come before the slot goes on: whoever it goes to sees the count, and the unit is not taken for idle.
func (f *fairSlots) pauseLocked(h *hold, why *metrics.Counter) bool {
	if h.paused || h.released.Load() || !slices.Contains(h.q.holds, h) {
		return false
	}
	why.Inc()
	h.q.paused++
	f.releaseLocked(h)
	h.paused = true
	return true
}

// resume takes a slot again for h's write, which paused, and whose client sent more. It goes first among its unit's
// writes waiting, and waits for its turn as long as it takes, not the queue duration: part of its body is at the
// backend, and a write is never cut. It ends early only when ctx does, and then the write must end.
func (f *fairSlots) resume(ctx context.Context, h *hold) error {
	f.mu.Lock()
	if !h.paused {
		f.mu.Unlock()
		return nil
	}
	q := h.q
	if f.limit == 0 || len(f.turns) == 0 && f.used < f.limit && q.running() < share(f.limit) {
		f.grantLocked(h, f.clock(), false)
		f.mu.Unlock()
		return nil
	}
	if h.granted == nil {
		h.granted = make(chan struct{}, 1)
	}
	// A grant its first wait did not take (granted as that wait ran out) must not pass for this one.
	select {
	case <-h.granted:
	default:
	}
	if len(q.waiting) == 0 {
		f.joinTurnsLocked(q)
	}
	q.waiting = slices.Insert(q.waiting, 0, h)
	f.fillLocked()
	f.mu.Unlock()

	f.stats.queued.Add(1)
	defer f.stats.queued.Add(-1)
	select {
	case <-h.granted:
		return nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	if !f.dropLocked(h) {
		// Granted as ctx ended: the slot is held until the release, which must come.
		select {
		case <-h.granted:
		default:
		}
	}
	f.mu.Unlock()
	return ctx.Err()
}

// pacedBody is a write's body from its client, which gives the write's turn at the write backends up while a read of
// it waits longer than stallGrace, and takes a turn again before it returns what came; and which passes the turn on
// before a read once it has lasted turnQuantum while another unit waits.
type pacedBody struct {
	io.ReadCloser
	h     *hold
	grace time.Duration // stallGrace
	timer *time.Timer

	mu      sync.Mutex
	reading bool // a Read waits on the client
	paused  bool // ... and gave the turn up
}

// pacedBodyOf wraps body, read for the write that holds h.
func pacedBodyOf(body io.ReadCloser, h *hold) *pacedBody {
	return &pacedBody{ReadCloser: body, h: h, grace: stallGrace}
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.h.f.yield(b.h) {
		if err := b.h.f.resume(b.h, b.h); err != nil {
			return 0, err
		}
	}
	b.mu.Lock()
	b.reading = true
	b.mu.Unlock()
	if b.timer == nil {
		b.timer = time.AfterFunc(b.grace, b.stalled)
	} else {
		b.timer.Reset(b.grace)
	}
	n, err := b.ReadCloser.Read(p)
	b.timer.Stop()
	b.mu.Lock()
	b.reading = false
	paused := b.paused
	b.paused = false
	b.mu.Unlock()
	// The rest of a body that ended, and its answer, are the backend's work too: the turn is taken again for them.
	if paused && (err == nil || err == io.EOF) {
		if rerr := b.h.f.resume(b.h, b.h); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

// stalled runs stallGrace into a read: a timer that fires as the read returns may still find it waiting, and the
// turn is then given up and taken again at once, or after the next unit's.
func (b *pacedBody) stalled() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reading && !b.paused {
		b.paused = true
		b.h.f.pause(b.h)
	}
}
