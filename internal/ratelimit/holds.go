package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replicas sharing Redis shared their cost counts, but each held only its own queries in flight (Reserve): a replica
// saw the others' answers through Redis up to a second late, and their queries in flight not at all, so two replicas
// let a burst fetch 2.4 times a team's budget (15 of 30 queries of 150 series of a budget of 1,000). Holding a share
// of the budget per replica barely helped (13 of 30): the larger term was the view a second late. So a query's hold is
// taken in Redis too, by a call that takes it only while the shared count and every replica's holds leave room, and
// given back by the call that adds its cost: at every moment the shared count or the holds have every query of
// every replica. That is two calls per query, for callers with cost limits only.
//
// A hold lives holdLife past its last refresh: the replica that took it refreshes it while its query runs, however
// long (an export streams for hours), and a replica that died leaves holds that stop blocking the others within that.

// holdVerdict is claimScript's answer on a hold.
type holdVerdict uint8

const (
	holdTaken  holdVerdict = iota
	holdNoRoom             // what is counted and every replica's holds leave no room: wait for an answer
	holdFull               // the limit is reached: refuse
)

const (
	// holdLife is how long a hold outlives its replica's last refresh, in seconds.
	holdLife = 30
	// holdRefresh is how often a replica refreshes the holds of its queries in flight.
	holdRefresh = 10 * time.Second
	// holdRecheck is how long a replica takes Redis' word that the holds in flight leave no room in a series: its
	// queries waiting for room ask Redis once in that time between them, not each at its own pace (30 waiting made
	// a thousand calls a second).
	holdRecheck = 25 * time.Millisecond
)

// noRoom is a series' last refusal for the holds in flight, good until until (Unix ns).
type noRoom struct {
	until int64
	claim claim
}

// holds are the holds a replica has taken in Redis and not yet given back: the member of each, with its Redis key.
type holds struct {
	replica string // a random name, unique to this process
	mu      sync.Mutex
	seq     uint64
	live    map[string]string
	// refreshed is when the holds were last refreshed (Unix ns).
	refreshed int64
}

func newHolds() *holds {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &holds{replica: hex.EncodeToString(b[:]), live: map[string]string{}}
}

// add names a new hold of n in key: replica:seq:n, the amount last, where claimScript reads it.
func (h *holds) add(key string, n int64) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	m := h.replica + ":" + strconv.FormatUint(h.seq, 10) + ":" + strconv.FormatInt(n, 10)
	h.live[m] = key
	return m
}

func (h *holds) remove(member string) {
	h.mu.Lock()
	delete(h.live, member)
	h.mu.Unlock()
}

// due returns the live holds by key when a refresh is due at now, and marks it done.
func (h *holds) due(now time.Time) map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.UnixNano()-h.refreshed < int64(holdRefresh) {
		return nil
	}
	h.refreshed = now.UnixNano()
	byKey := map[string][]string{}
	for m, k := range h.live {
		byKey[k] = append(byKey[k], m)
	}
	return byKey
}

// hold takes a hold of n for a query in cost series k, whose limits by window are limits: sharedOK with the member
// to give back through settle; sharedHeld when every replica's queries in flight hold the room left (inFlight);
// sharedFull when the limit is reached; sharedUnknown when Redis does not answer and this replica decides alone
// (with a member still, for a hold Redis may have taken before its answer was lost).
func (s *redisStore) hold(l *lease, k seriesKey, limits [numWindows]int64, n int64, now time.Time) (claim, string) {
	if !s.up.Load() {
		return claim{verdict: sharedUnknown}, ""
	}
	if nr := l.noRoom.Load(); nr != nil && now.UnixNano() < nr.until {
		return nr.claim, ""
	}
	// One call at a time per series, so that the queries waiting for room find the refusal one of them was given.
	l.mu.Lock()
	defer l.mu.Unlock()
	if nr := l.noRoom.Load(); nr != nil && now.UnixNano() < nr.until {
		return nr.claim, ""
	}
	sec := now.Unix()
	key := s.redisKey(k)
	member := s.holds.add(key, n)
	res, err := s.run(k, claimArgs{limits: limits, sec: sec, hold: member, holdN: n, holdExpires: sec + holdLife})
	if err != nil {
		return claim{verdict: sharedUnknown}, member
	}
	l.saw(res, now)
	if res.hold == holdTaken {
		return claim{verdict: sharedOK}, member
	}
	s.holds.remove(member)
	free := time.Unix(res.freeAt, 0)
	if res.hold == holdFull {
		return l.full(limits, free), ""
	}
	c := claim{verdict: sharedHeld, window: winMinute, usage: res.sums[winMinute], inFlight: res.held}
	for w, v := range limits {
		if v != 0 && res.sums[w]+res.held >= v {
			c.window, c.usage = w, res.sums[w]
			break
		}
	}
	l.noRoom.Store(&noRoom{until: now.Add(holdRecheck).UnixNano(), claim: c})
	return c, ""
}

// settle gives back a query's hold (member) in cost series k and adds, in the same call, the cost its replica
// counted there and has not added yet (the query's answer among it: the gateway charges an answer before it lets
// go of its hold). A call that fails keeps the cost for the next flush; the hold then lives out its holdLife.
func (s *redisStore) settle(l *lease, k seriesKey, member string, now time.Time) {
	s.holds.remove(member)
	if !s.up.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The room this hold leaves is for the queries waiting on this replica to find at once.
	l.noRoom.Store(nil)
	n := l.pending.Swap(0)
	res, err := s.run(k, claimArgs{want: n, sec: now.Unix(), drop: member})
	if err != nil {
		if n != 0 && !refusedCall(err) {
			s.spend(l, n)
		}
		return
	}
	l.saw(res, now)
}

// refreshHolds moves the expiry of this replica's holds in flight holdLife ahead, every holdRefresh.
func (s *redisStore) refreshHolds(now time.Time) {
	byKey := s.holds.due(now)
	if len(byKey) == 0 || !s.up.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	expires := float64(now.Unix() + holdLife)
	pipe := s.client.Pipeline()
	for key, members := range byKey {
		zs := make([]redis.Z, len(members))
		for i, m := range members {
			zs[i] = redis.Z{Score: expires, Member: m}
		}
		// XX: a hold given back meanwhile stays given back.
		pipe.ZAddXX(ctx, key+":holds", zs...)
		pipe.Expire(ctx, key+":holds", 2*holdLife*time.Second)
	}
	s.calls.Inc()
	if _, err := pipe.Exec(ctx); err != nil && !refusedCall(err) {
		s.failed(err)
	}
}
