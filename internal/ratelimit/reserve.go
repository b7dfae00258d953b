package ratelimit

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// A query's cost is known only from its answer, so without more every query a caller sent before its first answers
// were counted overshot its cost limits: 30 at once spent 4.6 times a budget (an attacker's review). Reserve makes a
// query about to be forwarded hold what it is expected to cost until it ends, and lets it go only while what is used
// and what the caller's queries in flight hold leave room; the others wait for those answers, briefly, and are
// refused past that. Reviews found the designs' holes: an expectation that the caller lowered with free queries,
// none at all before the first answer, reservations taken before a request's body was read, which a slow body held
// for nothing, and an expectation made small on purpose, by one cheap query before a costly burst. So a query holds
// the costliest answer of the recent past that cost anything, and at least an eighth of what is left, and the
// gateway reserves once the body is read and checked, before the request takes any slot.

// expectation is what one query of a series is expected to cost: the costliest answer counted in the current period
// or the one before, a period being the longest window of the series' limits. It falls only as costly answers grow
// old, never by cheap ones a caller sends on purpose; answers whose cost was not learned do not set it.
type expectation struct {
	mu    sync.Mutex
	start int64 // the current period's first second; 0 before the first answer
	// cur and prev are the costliest answers of the current period and the one before; 0: none.
	cur, prev int64
}

func (e *expectation) rotate(sec, period int64) {
	if e.start == 0 || sec < e.start+period {
		return
	}
	n := (sec - e.start) / period
	e.prev = 0
	if n == 1 {
		e.prev = e.cur
	}
	e.cur = 0
	e.start += n * period
}

// add counts an answer that cost n at second sec. An answer that cost nothing tells nothing: a caller could send free
// queries to make a costly burst look free (a review).
func (e *expectation) add(n, sec, period int64) {
	if n <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.start == 0 {
		e.start = sec
	}
	e.rotate(sec, period)
	e.cur = max(e.cur, n)
}

// get is the expectation at second sec: 0 when no answer that cost anything was counted in the two periods.
func (e *expectation) get(sec, period int64) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rotate(sec, period)
	return max(e.cur, e.prev)
}

// period is the longest window of the set's limits, in seconds.
func (c *countedSet) period() int64 {
	if c.limits[winHour].limit.Type != 0 {
		return 3600
	}
	return 60
}

// reservation is what one query holds: what it reserved in each of its caller's cost series, on this replica and,
// with a store, in the store (shared, the hold's member there).
type reservation struct {
	store    counterStore
	held     []reserved
	released atomic.Bool
}

type reserved struct {
	ser    *series
	cs     *countedSet
	n      int64
	k      seriesKey
	shared string
}

func (r *reservation) release(now time.Time) {
	if r.released.CompareAndSwap(false, true) {
		for _, p := range r.held {
			p.ser.reserved.Add(-p.n)
			if p.shared != "" {
				r.store.settle(&p.ser.lease, p.k, p.cs.values(), p.shared, now)
			}
		}
	}
}

// maxReservePause is the longest pause between two looks at a budget held by queries in flight.
const maxReservePause = 32 * time.Millisecond

// Reserve holds, for a query of caller a about to be forwarded (one whose answer Spend charges), what it is expected
// to cost against each of the caller's cost limits, until what it returns (never nil) is called once the query has
// ended. The query goes only while what is used and what the caller's queries in flight hold leave room in the
// budget (on this gateway, and with Redis on every gateway sharing it: holds.go), so that they overshoot it by at
// most one query's cost above the expectation. While they hold the rest of it, Reserve waits for their answers, at
// most wait and while ctx lasts, and then refuses (429, asking to retry in a second); a budget used up is refused at
// once, as by Admit. Callers without cost limits hold nothing.
func (g *Gate) Reserve(ctx context.Context, a *auth.Access, wait time.Duration) (func(), error) {
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	if !st.costed {
		return nothingHeld, nil
	}
	deadline := time.Now().Add(wait)
	pause := time.Millisecond
	for {
		res, r, full := g.tally.reserve(st, id, a, g.now())
		if r == nil {
			return func() { res.release(g.now()) }, nil
		}
		if full || time.Now().Add(pause).After(deadline) {
			return nothingHeld, g.refuse(a, r)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nothingHeld, ctx.Err()
		}
		pause = min(2*pause, maxReservePause)
	}
}

// nothingHeld is what Reserve returns for a query that holds nothing.
func nothingHeld() {}

// reserve reserves a query's expected cost in each of the caller's cost series, or none: then the refusal, and
// whether the budget is used up (full) rather than held by the queries in flight. Reserving before checking makes
// concurrent queries see each other, as count does. With a store, the holds are taken there once every series' own
// view leaves room, and not at all while one of them was refused for the holds in flight a moment ago: a query
// waiting on its second series would otherwise take and give back a hold in its first at every look (a review
// counted 2,650 calls a second).
func (t *tally) reserve(st *tenantState, id tenant.ID, a *auth.Access, now time.Time) (*reservation, *limitError, bool) {
	sec := now.Unix()
	res := &reservation{store: t.store}
	refuse := func(k seriesKey, d decision, source string, full bool) (*reservation, *limitError, bool) {
		res.release(now)
		return nil, t.rules.rejection(k.tenant, d, k.value, source), full
	}
	for j := range st.counted {
		cs := &st.counted[j]
		if !cs.typ.Cost() {
			continue
		}
		k := cs.seriesKey(id, a)
		ser := t.seriesOf(st, j, k, sec)
		if t.store != nil {
			t.store.sync(&ser.lease, k, cs.values(), now)
		}
		// What the query holds is worked out on what is left now; whether it goes, on what is used once it holds
		// it. Read before, what was used could miss an answer charged after the read whose query let go of its
		// share before the add: its cost was in neither figure, and one query more went (a full run under -race).
		mine := min(max(ser.expect.get(sec, cs.period()), t.least(cs, ser, now)/inFlightShares+1, 1), maxCount)
		inFlight := ser.reserved.Add(mine) - mine
		res.held = append(res.held, reserved{ser: ser, n: mine, k: k, cs: cs})
		var used [numWindows]int64
		var src [numWindows]string
		var retry [numWindows]time.Duration
		for w := range cs.limits {
			if cs.limits[w].limit.Type != 0 {
				used[w], src[w], retry[w] = t.enforced(ser, w, now, int64(cs.limits[w].limit.Value))
			}
		}
		var worst decision
		source, full := fromLocal, false
		for w := range cs.limits {
			l := &cs.limits[w]
			if l.limit.Type == 0 || used[w]+inFlight < int64(l.limit.Value) {
				continue
			}
			d := decision{Limit: l.limit, Usage: float64(used[w]), Reset: inFlightRetry, InFlight: inFlight}
			if used[w] >= int64(l.limit.Value) {
				d.Reset, d.InFlight = retry[w], 0
				full = true
			}
			if worst.Limit.Type == 0 || d.Reset > worst.Reset {
				worst, source = d, src[w]
			}
		}
		if worst.Limit.Type != 0 {
			return refuse(k, worst, source, full)
		}
	}
	if t.store == nil {
		return res, nil, false
	}
	for _, p := range res.held {
		if cl, ok := t.store.heldBack(&p.ser.lease, now); ok {
			d, full := sharedDecision(p.cs, cl, now)
			return refuse(p.k, d, fromShared, full)
		}
	}
	// The series refused for the holds in flight of late go first, the latest refused first: the queries waiting for
	// one of them then take turns at its one call, and the one refused takes no hold in the others. (For a second,
	// not just while the refusal stands: a settle clears it before its hold has left Redis.)
	order := make([]int, len(res.held))
	last := make([]int64, len(res.held))
	for i := range res.held {
		order[i] = i
		if at := res.held[i].ser.lease.busyAt.Load(); now.UnixNano()-at < int64(time.Second) {
			last[i] = at
		}
	}
	slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(last[y], last[x]) })
	for _, i := range order {
		p := &res.held[i]
		var cl claim
		cl, p.shared = t.store.hold(&p.ser.lease, p.k, p.cs.values(), p.n, now)
		if cl.verdict == sharedFull || cl.verdict == sharedHeld {
			d, full := sharedDecision(p.cs, cl, now)
			return refuse(p.k, d, fromShared, full)
		}
	}
	return res, nil, false
}

// sharedDecision is the refusal of a hold the store refused in cs: full, or held by every replica's queries in flight.
func sharedDecision(cs *countedSet, cl claim, now time.Time) (decision, bool) {
	if cl.verdict == sharedFull {
		return decision{Limit: cs.limits[cl.window].limit, Usage: float64(cl.usage), Reset: max(cl.freeAt.Sub(now), inFlightRetry)}, true
	}
	return decision{Limit: cs.limits[cl.window].limit, Usage: float64(cl.usage), Reset: inFlightRetry, InFlight: cl.inFlight}, false
}

// least is the least any of cs's windows has left in ser's budget at now. The costliest recent answer, and at
// least an eighth of that, is what a query holds: a burst overshoots by at most eight queries' cost beyond what they
// hold, and a dashboard's panels are not sent one at a time. Without the floor, one cheap answer (a query of one
// series) made the next burst's queries hold one each, and 280 sent at once fetched 116 times a budget (a review);
// an expectation known to be small must not let more queries go than one not known at all.
func (t *tally) least(cs *countedSet, ser *series, now time.Time) int64 {
	left := int64(math.MaxInt64)
	for w := range cs.limits {
		if cs.limits[w].limit.Type != 0 {
			// As the store counts: a limit past maxCount is lifted, and must not make one query hold it all there.
			value := min(int64(cs.limits[w].limit.Value), maxCount)
			used, _, _ := t.enforced(ser, w, now, value)
			left = min(left, value-used)
		}
	}
	return left
}

// inFlightShares is how many of a caller's queries may be in flight at most, on what is left of its budget.
const inFlightShares = 8

// inFlightRetry is the Retry-After of a query refused for what the caller's queries in flight hold.
const inFlightRetry = time.Second
