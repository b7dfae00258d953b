package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replicas sharing Redis shared their cost counts, but each held only its own queries in flight (Reserve): a replica
// saw the others' answers up to a second late, and their queries in flight not at all, so two replicas let a burst
// fetch 2.4 times a team's budget (15 of 30 queries of 150 series of a budget of 1,000). Holding a share of the budget
// per replica barely helped (13 of 30): the larger term was the view a second late. So a query's hold is taken in
// Redis too, by a call that takes it only while the shared count and every replica's holds leave room, and given back
// by the call that adds its cost: at every moment the shared count or the holds have every query of every replica.
// That is two calls per query, for callers with cost limits only.
//
// A hold lives holdLife past its last refresh, on Redis' clock: the replica that took it refreshes it while its query
// runs, however long (an export streams for hours), gives back what it holds when it stops, and a replica that died
// leaves holds that stop blocking the others within holdLife. A hold a replica could not give back while Redis did not
// answer is given back once it does, and the holds of its queries still running are taken again, since an outage past
// their life expired them there.

// holdVerdict is claimScript's answer on a hold.
type holdVerdict uint8

const (
	holdTaken  holdVerdict = iota
	holdNoRoom             // what is counted and every replica's holds leave no room: wait for an answer
	holdFull               // the limit is reached: refuse
)

const (
	// holdLife is how long a hold outlives its replica's last refresh, in seconds (redisStore.holdLife, which tests
	// shorten).
	holdLife = 10
	// holdRefresh is how often a replica refreshes the holds of its queries in flight (holds.every).
	holdRefresh = 3 * time.Second
	// holdRecheck is how long a replica takes Redis' word that the holds in flight leave no room in a series: its
	// queries waiting for room ask Redis once in that time between them, not each at its own pace (30 waiting made
	// a thousand calls a second).
	holdRecheck = 25 * time.Millisecond
)

// effectsReplication lets a script write after it read Redis' clock (TIME) on Redis before 7, which replicates a
// script as its text unless told otherwise; Redis 7 replicates only what a script does, and keeps the call as a no-op.
const effectsReplication = `if redis.replicate_commands then redis.replicate_commands() end`

// settleScript gives back a hold (ARGV[1]) and adds the cost counted with it (ARGV[2]) at second ARGV[3] in one
// call, as claimScript adds a cost without limits, and returns the windows' sums for the windows with a limit (0 for
// the others), as claimScript counts them.
// ARGV: 1 member, 2 cost, 3 now, 4 ring size, 5 minute bucket width, 6 hour bucket width, 7 minute limit, 8 hour
// limit, 9 clockSkew.
var settleScript = redis.NewScript(`
redis.call('ZREM', KEYS[1] .. ':holds', ARGV[1])
local n, now, ring, skew = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[9])
local sums = {}
for i, w in ipairs({{'m', tonumber(ARGV[5]), tonumber(ARGV[7])}, {'h', tonumber(ARGV[6]), tonumber(ARGV[8])}}) do
  local name, width, limit = w[1], w[2], w[3]
  local e = math.floor(now / width)
  if n > 0 then
    local k = KEYS[1] .. ':' .. name .. ':' .. e
    redis.call('INCRBY', k, n)
    redis.call('EXPIRE', k, width * (ring + 1))
  end
  sums[i] = 0
  if limit > 0 then
    local keys = {}
    for b = e - ring + 1, math.floor((now + skew) / width) do keys[#keys + 1] = KEYS[1] .. ':' .. name .. ':' .. b end
    for _, v in ipairs(redis.call('MGET', unpack(keys))) do sums[i] = sums[i] + (tonumber(v) or 0) end
  end
end
return sums
`)

// refreshScript moves the holds ARGV[3..] of KEYS[1] (the holds' key) ARGV[1] seconds past Redis' clock. With ARGV[2]
// XX a hold given back meanwhile stays given back; with ADD (after Redis did not answer, when the holds may have
// expired there) the holds are taken again.
var refreshScript = redis.NewScript(`
` + effectsReplication + `
local life = tonumber(ARGV[1])
local expires = tonumber(redis.call('TIME')[1]) + life
for i = 3, #ARGV do
  if ARGV[2] == 'XX' then redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i]) else redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
end
redis.call('EXPIRE', KEYS[1], 2 * life)
return 1
`)

// noRoom is a series' last refusal for the holds in flight, good until until (Unix ns).
type noRoom struct {
	until int64
	claim claim
}

// holds are the holds a replica has taken in Redis and not yet given back (live), and those it could not give back
// while Redis did not answer (orphans): the member of each, with its Redis key.
type holds struct {
	replica string // a random name, unique to this process
	mu      sync.Mutex
	seq     uint64
	live    map[string]string
	orphans map[string]string
	// refreshed is when the live holds were last refreshed (Unix ns), every every; lost: Redis did not answer since,
	// and the next refresh takes the holds again.
	refreshed int64
	every     time.Duration
	lost      bool
}

func newHolds() *holds {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &holds{replica: hex.EncodeToString(b[:]), live: map[string]string{}, orphans: map[string]string{}, every: holdRefresh}
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

// remove forgets a hold: given back, or never taken; orphaned, it is to be given back once Redis answers.
func (h *holds) remove(member string, orphaned bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if key, ok := h.live[member]; ok && orphaned {
		h.orphans[member] = key
	}
	delete(h.live, member)
}

// byKey groups holds by their key.
func byKey(holds map[string]string) map[string][]string {
	out := map[string][]string{}
	for m, k := range holds {
		out[k] = append(out[k], m)
	}
	return out
}

// due returns the live holds by key when a refresh is due at now, and whether they are to be taken again, and marks
// it done.
func (h *holds) due(now time.Time) (map[string][]string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lost && now.UnixNano()-h.refreshed < int64(h.every) {
		return nil, false
	}
	lost := h.lost
	h.refreshed, h.lost = now.UnixNano(), false
	return byKey(h.live), lost
}

// down marks the holds as possibly lost in Redis, which did not answer: an outage past their life expired them
// there while their queries ran on.
func (h *holds) down() {
	h.mu.Lock()
	h.lost = true
	h.mu.Unlock()
}

// takeOrphans returns the orphans by key, and forgets them; all, live ones too, when the replica stops.
func (h *holds) takeOrphans(all bool) map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if all {
		for m, k := range h.live {
			h.orphans[m] = k
		}
		clear(h.live)
	}
	out := byKey(h.orphans)
	clear(h.orphans)
	return out
}

// hold takes a hold of n for a query in cost series k, whose limits by window are limits: sharedOK with the member
// to give back through settle; sharedHeld when every replica's queries in flight hold the room left (inFlight);
// sharedFull when the limit is reached; sharedUnknown when Redis does not answer and this replica decides alone
// (with a member still, for a hold Redis may have taken before its answer was lost).
func (s *redisStore) hold(l *lease, k seriesKey, limits [numWindows]int64, n int64, now time.Time) (claim, string) {
	if !s.up.Load() {
		return claim{verdict: sharedUnknown}, ""
	}
	if l.noRoom.Load() != nil {
		if c, ok := s.heldBack(l, now); ok {
			return c, ""
		}
		// The series was full of holds of late: one call at a time, so that the queries waiting for room find the
		// refusal one of them was given. (While there is room, holds go at once, each its own call.)
		l.mu.Lock()
		defer l.mu.Unlock()
		if c, ok := s.heldBack(l, now); ok {
			return c, ""
		}
		if !s.up.Load() {
			return claim{verdict: sharedUnknown}, ""
		}
	}
	member := s.holds.add(s.redisKey(k), n)
	res, err := s.run(k, claimArgs{limits: limits, sec: now.Unix(), hold: member, holdN: n})
	if err != nil {
		return claim{verdict: sharedUnknown}, member
	}
	l.saw(res, now)
	if res.hold == holdTaken {
		// Room again: the holds that follow go at once, not one at a time.
		l.noRoom.Store(nil)
		return claim{verdict: sharedOK}, member
	}
	s.holds.remove(member, false)
	if res.hold == holdFull {
		return l.full(limits, time.Unix(res.freeAt, 0)), ""
	}
	c := claim{verdict: sharedHeld, window: winMinute, usage: res.sums[winMinute], inFlight: res.held}
	for w, v := range limits {
		if v != 0 && res.sums[w]+res.held >= v {
			c.window, c.usage = w, res.sums[w]
			break
		}
	}
	l.noRoom.Store(&noRoom{until: now.Add(holdRecheck).UnixNano(), claim: c})
	l.busyAt.Store(now.UnixNano())
	return c, ""
}

// heldBack is the store's last refusal of a hold in l's series for the holds in flight, while it stands.
func (s *redisStore) heldBack(l *lease, now time.Time) (claim, bool) {
	if nr := l.noRoom.Load(); nr != nil && now.UnixNano() < nr.until {
		return nr.claim, true
	}
	return claim{}, false
}

// settle gives back a query's hold (member) in cost series k and adds, in the same call, the cost its replica
// counted there and has not added yet (the query's answer among it: the gateway charges an answer before it lets
// go of its hold); what seen says is then what the call read of the windows with a limit. A hold Redis could not be
// told of is an orphan, given back once it answers; its cost waits for the next flush.
func (s *redisStore) settle(l *lease, k seriesKey, limits [numWindows]int64, member string, now time.Time) {
	// The room this hold leaves is for the queries waiting on this replica to find at once.
	l.noRoom.Store(nil)
	if s.closed.Load() {
		return
	}
	if !s.up.Load() {
		s.holds.remove(member, true)
		return
	}
	n := l.pending.Swap(0)
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	s.calls.Inc()
	sums, err := settleScript.Run(ctx, s.client, []string{s.redisKey(k)}, member, min(n, maxCount), now.Unix(), ringSize,
		bucketWidth[winMinute], bucketWidth[winHour], min(limits[winMinute], maxCount), min(limits[winHour], maxCount), clockSkew).Int64Slice()
	if err == nil && len(sums) != numWindows {
		err = fmt.Errorf("unexpected reply of %d values from the settle script", len(sums))
	}
	if err == nil {
		s.holds.remove(member, false)
		l.saw(claimResult{sums: [numWindows]int64(sums)}, now)
		return
	}
	s.holds.remove(member, true)
	if !refusedCall(err) {
		s.spend(l, n)
	}
	s.callFailed(err)
}

// refreshHolds moves the expiry of this replica's holds in flight holdLife ahead, every holdRefresh, and gives back
// the orphans.
func (s *redisStore) refreshHolds(now time.Time) {
	if !s.up.Load() {
		return
	}
	s.giveBackHolds(s.holds.takeOrphans(false))
	byKey, again := s.holds.due(now)
	if len(byKey) == 0 {
		return
	}
	mode := "XX"
	if again {
		mode = "ADD"
	}
	s.pipelined(func(ctx context.Context, pipe redis.Pipeliner) {
		for key, members := range byKey {
			args := make([]any, 0, len(members)+2)
			args = append(args, s.holdLife, mode)
			for _, m := range members {
				args = append(args, m)
			}
			refreshScript.Eval(ctx, pipe, []string{key + ":holds"}, args...)
		}
	})
}

// giveBackHolds removes holds from Redis; those it could not are orphans again.
func (s *redisStore) giveBackHolds(byKey map[string][]string) {
	if len(byKey) == 0 {
		return
	}
	err := s.pipelined(func(ctx context.Context, pipe redis.Pipeliner) {
		for key, members := range byKey {
			ms := make([]any, len(members))
			for i, m := range members {
				ms[i] = m
			}
			pipe.ZRem(ctx, key+":holds", ms...)
		}
	})
	if err != nil && !refusedCall(err) {
		s.holds.mu.Lock()
		for key, members := range byKey {
			for _, m := range members {
				s.holds.orphans[m] = key
			}
		}
		s.holds.mu.Unlock()
	}
}

// pipelined runs fill's commands in one round trip.
func (s *redisStore) pipelined(fill func(ctx context.Context, pipe redis.Pipeliner)) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	pipe := s.client.Pipeline()
	fill(ctx, pipe)
	s.calls.Inc()
	_, err := pipe.Exec(ctx)
	if err != nil && !refusedCall(err) {
		s.failed(err)
	}
	return err
}
