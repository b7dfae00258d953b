package ratelimit

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/vmgateway/vmgateway/internal/redact"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// RedisConfig makes replicas share their counts through Redis. Each replica takes units of a limit from Redis in
// batches (a lease) and admits requests against them without asking Redis again; see lease.
type RedisConfig struct {
	// URL is redis://[user:password@]host:port[/db] or rediss:// for TLS; empty means no shared counters.
	URL string
	// Password, when set, replaces the URL's password, so it can come from a secret flag or file.
	Password string
	// Timeout bounds one Redis call; a request waits at most this long before falling back to local counts.
	// Zero means 500ms.
	Timeout time.Duration
	// BatchSize is the most units a replica takes from Redis at once. Zero means 100.
	BatchSize int
	// KeyPrefix starts every Redis key the gate writes. Empty means "vmgateway:ratelimit".
	KeyPrefix string
	// TLS is the client side of a rediss:// connection (the -ratelimit.redis.tls* flags).
	TLS tlsclient.Options
}

// leaseMaxShare: a replica takes at most this fraction of what a limit has left, so that near the limit the
// replicas take one unit at a time and none holds what another could use.
const leaseMaxShare = 4

// clockSkew is how far ahead of a replica's clock another replica's may be, in seconds: a claim sums the buckets
// up to this far after its own second too. Clocks differ (NTP, the coarse clock a loaded machine ticks late, a claim
// delayed on its way to Redis), so a claim can reach Redis stamped a second before counts another replica already
// made there; those are in the window all the same, and a claim that missed them would let each replica admit a
// limit's worth at every second boundary. A bucket ahead is empty unless a clock is ahead, so summing it costs
// nothing else.
const clockSkew = 5

// claimScript gives back units a replica did not use and takes new ones, atomically. The counts of a series live
// in one key per window bucket, KEYS[1]..":m:"..epoch and ..":h:"..epoch, summed over the window as the local
// rings are, and over the buckets up to clockSkew ahead. It returns the units granted, the windows' sums including
// them, and, when nothing could be granted, the Unix second at which the blocking window has a unit free again.
//
// A cost series also holds what its queries in flight on every replica expect to cost (holds.go), in the sorted set
// KEYS[1]..":holds" of members replica:seq:amount scored by the second they expire at, on Redis' clock. A query's
// hold is taken only while the windows' sums and every replica's holds leave room. It returns the hold's verdict (0
// taken, 1 the holds in flight leave no room, 2 the limit is reached) and the sum of the others' holds. A call that
// takes a hold reads only the windows that have a limit.
//
// ARGV: 1 units wanted, 2 minute limit (0: none), 3 hour limit, 4 now (Unix seconds), 5 units given back,
// 6 the second they were taken at, 7 ring size, 8 minute bucket width, 9 hour bucket width, 10 clockSkew,
// 11 the amount of a hold to take (0: none), 12 its member, 13 its life in seconds.
var claimScript = redis.NewScript(`
` + effectsReplication + `
local want, now, back, backAt, n = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local skew = tonumber(ARGV[10])
local hold, verdict, held = tonumber(ARGV[11]), 0, 0
local wins = {{'m', tonumber(ARGV[8]), tonumber(ARGV[2])}, {'h', tonumber(ARGV[9]), tonumber(ARGV[3])}}
local sums, avail, freeAt = {}, nil, 0
for i, w in ipairs(wins) do
  local name, width, limit = w[1], w[2], w[3]
  local e = math.floor(now / width)
  if back > 0 then
    local k = KEYS[1] .. ':' .. name .. ':' .. math.floor(backAt / width)
    if redis.call('EXISTS', k) == 1 then redis.call('DECRBY', k, back) end
  end
  -- Oldest bucket first: epochs e-n+1 .. the one clockSkew ahead.
  local first, last = e - n + 1, math.floor((now + skew) / width)
  local vals = {}
  if hold == 0 or limit > 0 then
    local keys = {}
    for b = first, last do keys[#keys + 1] = KEYS[1] .. ':' .. name .. ':' .. b end
    vals = redis.call('MGET', unpack(keys))
  end
  local s = 0
  for j = 1, #vals do s = s + (tonumber(vals[j]) or 0) end
  sums[i] = s
  if limit > 0 then
    local a = limit - s
    if avail == nil or a < avail then avail = a end
    if a <= 0 then
      local freed = 0
      for j = 1, #vals do
        freed = freed + (tonumber(vals[j]) or 0)
        if freed > -a then
          local at = (first + j - 1 + n) * width
          if at > freeAt then freeAt = at end
          break
        end
      end
    end
  end
end
local grant = want
if avail ~= nil then
  if avail <= 0 then grant = 0 else grant = math.min(want, math.max(1, math.floor(avail / ` + strconv.Itoa(leaseMaxShare) + `))) end
end
if grant > 0 then
  for i, w in ipairs(wins) do
    local k = KEYS[1] .. ':' .. w[1] .. ':' .. math.floor(now / w[2])
    redis.call('INCRBY', k, grant)
    redis.call('EXPIRE', k, w[2] * (n + 1))
    sums[i] = sums[i] + grant
  end
end
if hold > 0 then
  -- Redis' clock, not the replicas': one whose clock is ahead would drop the others' holds early.
  local hk, life = KEYS[1] .. ':holds', tonumber(ARGV[13])
  local t = tonumber(redis.call('TIME')[1])
  redis.call('ZREMRANGEBYSCORE', hk, '-inf', '(' .. t)
  for _, m in ipairs(redis.call('ZRANGE', hk, 0, -1)) do held = held + (tonumber(string.match(m, '(%d+)$')) or 0) end
  if avail ~= nil and avail <= 0 then
    verdict = 2
  elseif avail ~= nil and avail <= held then
    verdict = 1
  else
    redis.call('ZADD', hk, t + life, ARGV[12])
    redis.call('EXPIRE', hk, 2 * life)
  end
end
return {grant, sums[1], sums[2], freeAt, verdict, held}
`)

// lease is what a replica holds of one series' shared counts: units taken from Redis in the current second,
// which it may admit without asking Redis. v packs the second (high 32 bits) and the units left (low 32 bits), so
// one compare-and-swap takes a unit and only within the second the units were taken in; what is left when the
// second ends goes back to Redis with the next claim, or from the background loop.
type lease struct {
	v  atomic.Uint64
	mu sync.Mutex // one claim at a time per series
	// exhaustedUntil (Unix ns): Redis said the limit is reached; no claim before then. freeAt (Unix ns) is when
	// Redis said a unit frees up as counts leave the window.
	exhaustedUntil atomic.Int64
	freeAt         atomic.Int64
	// seen are the windows' shared counts at the last claim, at seenAt (Unix ns), for headers and the status page.
	seen   [numWindows]atomic.Int64
	seenAt atomic.Int64
	// pending is the cost counted by this replica and not yet added in the store (cost series only).
	pending atomic.Int64
	// noRoom is the store's last refusal of a hold for the holds in flight, while it stands (holds.go).
	noRoom atomic.Pointer[noRoom]
	// busyAt (Unix ns) is when the store last refused a hold here for the holds in flight: the series goes first
	// among a query's holds for a second after, past its cached refusal (holds.go).
	busyAt atomic.Int64
}

const (
	unitsMask = 1<<32 - 1
	maxBatch  = 1 << 24
)

func (l *lease) take(sec int64) bool {
	for {
		v := l.v.Load()
		if int64(v>>32) != sec || v&unitsMask == 0 {
			return false
		}
		if l.v.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// giveBack returns a unit taken in second sec that was not used after all.
func (l *lease) giveBack(sec int64) {
	for {
		v := l.v.Load()
		if int64(v>>32) != sec {
			return // the lease has moved on; the unit stays counted in Redis, as if used
		}
		if l.v.CompareAndSwap(v, v+1) {
			return
		}
	}
}

// usage estimates the shared count of window w: what Redis counted at the last claim, less the units this
// replica took but has not used. ok is false before any claim.
func (l *lease) usage(w int, sec int64) (n int64, at time.Time, ok bool) {
	ns := l.seenAt.Load()
	if ns == 0 {
		return 0, time.Time{}, false
	}
	n = l.seen[w].Load()
	if v := l.v.Load(); int64(v>>32) == sec {
		n -= int64(v & unitsMask)
	}
	return max(n, 0), time.Unix(0, ns), true
}

// counterStore shares the gate's counts between replicas. A series holds a lease of the store's units; the gate
// asks the store only when the lease has run out, never for every request, and reads what the store last saw
// for headers and the status page. Without -ratelimit.redis.url the gate has none and counts alone.
type counterStore interface {
	// shareNames adds names to a set all replicas share under key, and returns the set (writerLabels).
	shareNames(ctx context.Context, key string, names []string) ([]string, error)
	// take takes one unit of series k for a request at now, from its lease or else from the store. limits are
	// the series' limit values by window, 0 for none.
	take(l *lease, k seriesKey, limits [numWindows]int64, now time.Time) claim
	// giveBack returns a unit take took at now that the request did not use after all.
	giveBack(l *lease, now time.Time)
	// spend adds n to a cost series' shared count; maintain takes it to the store.
	spend(l *lease, n int64)
	// sync refreshes what seen says of a cost series when it is more than a second old: a cost series takes no
	// units, it only reads all replicas' sum. limits are as for take.
	sync(l *lease, k seriesKey, limits [numWindows]int64, now time.Time)
	// hold takes a hold of n for a query in flight in cost series k, shared by every replica, and names it for
	// settle, which gives it back once the query has been charged (holds.go).
	hold(l *lease, k seriesKey, limits [numWindows]int64, n int64, now time.Time) (claim, string)
	settle(l *lease, k seriesKey, limits [numWindows]int64, member string, now time.Time)
	// heldBack is the store's refusal of a hold in the series for the holds in flight, for a short while after it
	// was given: no call is made for it meanwhile.
	heldBack(l *lease, now time.Time) (claim, bool)
	// seen is the shared count of window w at the series' last claim; zero while the store is down, since then
	// the shared counts decide nothing.
	seen(l *lease, w int, now time.Time) sharedFigure
	// maintain runs in the background a few times a second: it finds the store again after a failure, gives
	// back the units of leases whose second has ended, so other replicas can use them, and keeps the holds of
	// queries in flight alive.
	maintain(c *counters, now time.Time)
	// space admits an event named key when none was admitted within interval by any replica, else returns the time
	// left; an error leaves the decision to the caller (Gate.Space).
	space(ctx context.Context, key string, interval time.Duration) (time.Duration, error)
	// status is the store's address without secrets, its key prefix, and whether it answers.
	status() statusRedis
	// close gives back what the replica holds in the store, and closes it.
	close(c *counters, now time.Time)
}

// claim is the store's answer to take.
type claim struct {
	verdict sharedVerdict
	// For sharedFull: the window whose limit is reached across replicas, the count there, and when a unit
	// frees up. For sharedHeld: the window the holds fill, its count, and the holds (inFlight).
	window   int
	usage    int64
	freeAt   time.Time
	inFlight int64
}

// sharedFigure is the count all replicas share in one window, as last seen.
type sharedFigure struct {
	n  int64
	at time.Time
	// ok is false before the series' first claim and while the store is down.
	ok bool
	// freeAt is when the store last said a unit frees up, if it did.
	freeAt time.Time
}

// redisStore is the counterStore in Redis: the connection and its health. Calls happen only when a lease runs
// out, never per request; when Redis fails the gate counts locally until a probe finds it back.
type redisStore struct {
	client  *redis.Client
	shown   string
	prefix  string
	timeout time.Duration
	batch   int64

	up        atomic.Bool
	lastProbe atomic.Int64
	errLog    rareLog
	holds     *holds
	holdLife  int64
	closed    atomic.Bool

	calls  *metrics.Counter
	errors *metrics.Counter
}

// newRedisStore connects to cfg.URL, which is set.
func newRedisStore(cfg RedisConfig, set *metrics.Set) (*redisStore, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, fmt.Errorf("-ratelimit.redis.url=%q: want redis://[user:password@]host:port[/db] or rediss://... for TLS", redact.String(cfg.URL))
	}
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("-ratelimit.redis.url=%q: %s", redact.String(cfg.URL), err)
	}
	if cfg.Password != "" {
		opts.Password = cfg.Password
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.BatchSize > maxBatch {
		return nil, fmt.Errorf("-ratelimit.redis.batchSize=%d is too large: at most %d units", cfg.BatchSize, maxBatch)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "vmgateway:ratelimit"
	}
	if u.Scheme == "rediss" {
		if opts.TLSConfig, err = redisTLS(cfg, opts.TLSConfig); err != nil {
			return nil, err
		}
	} else if cfg.TLS != (tlsclient.Options{}) {
		return nil, fmt.Errorf("-ratelimit.redis.tls* flags are set but -ratelimit.redis.url=%q is not rediss://", redact.String(cfg.URL))
	}
	// The gate has its own fallback: a failed call must fail fast, not retry while a request waits.
	opts.MaxRetries, opts.DialerRetries = -1, 1
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = cfg.Timeout, cfg.Timeout, cfg.Timeout
	opts.ContextTimeoutEnabled = true
	opts.DisableIdentity = true
	opts.Protocol = 2
	quietRedis.Do(func() { redis.SetLogger(debugLogger{}) })
	s := &redisStore{
		client:   redis.NewClient(opts),
		shown:    redact.String(cfg.URL),
		prefix:   cfg.KeyPrefix,
		timeout:  cfg.Timeout,
		batch:    int64(cfg.BatchSize),
		errLog:   rareLog{every: 10 * time.Second},
		holds:    newHolds(),
		holdLife: holdLife,
		calls:    set.NewCounter("vmgateway_ratelimit_redis_calls_total"),
		errors:   set.NewCounter("vmgateway_ratelimit_redis_errors_total"),
	}
	set.NewGauge("vmgateway_ratelimit_redis_up", func() float64 {
		if s.up.Load() {
			return 1
		}
		return 0
	})
	return s, nil
}

func redisTLS(cfg RedisConfig, fromURL *tls.Config) (*tls.Config, error) {
	c, err := tlsclient.Config("ratelimit.redis", cfg.TLS)
	if err != nil {
		return nil, err
	}
	// The URL may ask for skip_verify=true.
	c.InsecureSkipVerify = c.InsecureSkipVerify || fromURL != nil && fromURL.InsecureSkipVerify
	return c, nil
}

// redisKey names a series in Redis. The braces make it a Redis Cluster hash tag, so that all buckets of a series
// live on one node; the key value is base64url-encoded, so no claim value can end the tag or forge another series.
func (s *redisStore) redisKey(k seriesKey) string {
	key := s.prefix + ":{" + k.tenant.String() + "|" + k.key.Key().String() + "|" + base64.RawURLEncoding.EncodeToString([]byte(k.value)) + "}"
	if k.cost != 0 {
		key += ":" + k.cost.String()
	}
	return key
}

// claimArgs are what one call of claimScript does: want units (or a cost to add, without limits) at second sec,
// back units given back from second backAt, and a hold (member) of holdN to take.
type claimArgs struct {
	want   int64
	limits [numWindows]int64
	sec    int64
	back   int64
	backAt int64
	hold   string
	holdN  int64
}

// claimResult is the answer of claimScript.
type claimResult struct {
	grant  int64
	sums   [numWindows]int64
	freeAt int64 // Unix second
	// hold is the verdict on a hold asked (holdTaken, holdNoRoom, holdFull), held the others' holds then.
	hold holdVerdict
	held int64
}

func (s *redisStore) run(k seriesKey, a claimArgs) (claimResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	s.calls.Inc()
	// The script reads its args as Lua numbers: past 10^17 Redis prints them with an exponent, which INCRBY refuses.
	res, err := claimScript.Run(ctx, s.client, []string{s.redisKey(k)}, min(a.want, maxCount), min(a.limits[winMinute], maxCount),
		min(a.limits[winHour], maxCount), a.sec, min(a.back, maxCount), a.backAt, ringSize, bucketWidth[winMinute], bucketWidth[winHour],
		clockSkew, min(a.holdN, maxCount), a.hold, s.holdLife).Int64Slice()
	if err == nil && len(res) != 6 {
		err = fmt.Errorf("unexpected reply of %d values from the claim script", len(res))
	}
	if err != nil {
		s.callFailed(err)
		return claimResult{}, err
	}
	return claimResult{grant: res[0], sums: [numWindows]int64{res[1], res[2]}, freeAt: res[3], hold: holdVerdict(res[4]), held: res[5]}, nil
}

// maxCount bounds what one call adds to a count in Redis, and the limits a call sends: 2^40 (1.1×10^12) requests,
// series or milliseconds in a window is no limit. A team whose cost limits were lifted with a value of 10^17 or more
// had one unreadable answer charge it that much, which Redis refused as a number out of range at every flush; each
// refusal took the replica's sharing down for every tenant, until a restart (an attacker's review).
const maxCount = 1 << 40

// refusedCall says whether Redis answered err to a call it refused ("ERR ..."), as opposed to a Redis that is not
// there, not ready or full (a connection error, a timeout, LOADING, READONLY, OOM, NOAUTH ...), which the replica
// outlives by counting alone.
func refusedCall(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) || !strings.HasPrefix(re.Error(), "ERR ") {
		return false
	}
	// Redis 6 and earlier wrap a script's failures in ERR: one of a Redis not there for anyone is no refusal (a review).
	msg := re.Error()
	for _, down := range []string{"-OOM ", "-READONLY ", "-LOADING ", "-MASTERDOWN ", "-BUSY ", "-NOREPLICAS ", "-CLUSTERDOWN ",
		"max number of clients reached"} {
		if strings.Contains(msg, down) {
			return false
		}
	}
	return true
}

// callFailed counts a script call that failed. One Redis refused (an overflow of one series' count) leaves the store
// sound, and every other series sharing; only that call is decided locally. Any other failure takes the store down.
func (s *redisStore) callFailed(err error) {
	if refusedCall(err) {
		s.errors.Inc()
		s.errLog.log(slog.LevelError, "Redis refused a call of rate limiting; its count is kept locally", "redis", s.shown, "err", err)
		return
	}
	s.failed(err)
}

// failed switches to local counting until a probe finds Redis back.
func (s *redisStore) failed(err error) {
	s.errors.Inc()
	s.holds.down()
	if s.up.Swap(false) {
		slog.Error("rate limiting lost its shared counters in Redis; counting locally until Redis answers again",
			"redis", s.shown, "err", err)
		return
	}
	s.errLog.log(slog.LevelError, "rate limiting cannot reach its shared counters in Redis; counting locally", "redis", s.shown, "err", err)
}

// probe pings Redis when it is down, at most once a second.
func (s *redisStore) probe(now time.Time) {
	if s.up.Load() || now.UnixNano()-s.lastProbe.Load() < int64(time.Second) {
		return
	}
	s.lastProbe.Store(now.UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	s.calls.Inc()
	if err := s.client.Ping(ctx).Err(); err != nil {
		s.errors.Inc()
		s.errLog.log(slog.LevelError, "rate limiting cannot reach its shared counters in Redis; counting locally", "redis", s.shown, "err", err)
		return
	}
	s.up.Store(true)
	slog.Info("rate limiting reached its shared counters in Redis", "redis", s.shown)
}

// verdict of a shared check.
type sharedVerdict uint8

const (
	sharedOK      sharedVerdict = iota // a unit was taken
	sharedFull                         // the limit is reached across replicas
	sharedUnknown                      // Redis is down: local counts decide
	sharedHeld                         // the queries in flight on every replica hold the room left (hold)
)

func (s *redisStore) take(l *lease, k seriesKey, limits [numWindows]int64, now time.Time) claim {
	sec := now.Unix()
	if l.take(sec) {
		return claim{verdict: sharedOK}
	}
	if !s.up.Load() {
		return claim{verdict: sharedUnknown}
	}
	if now.UnixNano() < l.exhaustedUntil.Load() {
		return l.full(limits, time.Unix(0, l.freeAt.Load()))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Another request may have claimed while this one waited.
	if l.take(sec) {
		return claim{verdict: sharedOK}
	}
	if now.UnixNano() < l.exhaustedUntil.Load() {
		return l.full(limits, time.Unix(0, l.freeAt.Load()))
	}
	if !s.up.Load() {
		return claim{verdict: sharedUnknown}
	}
	old := l.v.Swap(0)
	back, backAt := int64(old&unitsMask), int64(old>>32)
	res, err := s.run(k, claimArgs{want: s.batch, limits: limits, sec: sec, back: back, backAt: backAt})
	if err != nil {
		return claim{verdict: sharedUnknown}
	}
	l.saw(res, now)
	if res.grant <= 0 {
		free := time.Unix(res.freeAt, 0)
		l.freeAt.Store(free.UnixNano())
		// Units given back by other replicas free up earlier than the window: ask again within a second.
		l.exhaustedUntil.Store(min(free.UnixNano(), now.Add(time.Second).UnixNano()))
		return l.full(limits, free)
	}
	l.v.Store(uint64(sec)<<32 | uint64(res.grant-1))
	return claim{verdict: sharedOK}
}

// full is the answer for a series whose limit is reached across replicas: the window whose shared count reached
// its limit at the last claim.
func (l *lease) full(limits [numWindows]int64, free time.Time) claim {
	w := -1
	for i, v := range limits {
		if v != 0 && l.seen[i].Load() >= v {
			w = i
			break
		}
	}
	if w < 0 {
		w = max(slices.IndexFunc(limits[:], func(v int64) bool { return v != 0 }), winMinute)
	}
	return claim{verdict: sharedFull, window: w, usage: l.seen[w].Load(), freeAt: free}
}

func (s *redisStore) giveBack(l *lease, now time.Time) { l.giveBack(now.Unix()) }

func (s *redisStore) spend(l *lease, n int64) {
	for {
		old := l.pending.Load()
		if l.pending.CompareAndSwap(old, min(old+min(n, maxCount), maxCount)) {
			return
		}
	}
}

func (s *redisStore) sync(l *lease, k seriesKey, limits [numWindows]int64, now time.Time) {
	if !s.up.Load() || now.UnixNano()-l.seenAt.Load() < int64(time.Second) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Those that waited for the lock find what the call before them found: a Redis that answers or one that does not
	// (each would otherwise wait its own timeout).
	if !s.up.Load() || now.UnixNano()-l.seenAt.Load() < int64(time.Second) {
		return
	}
	// want 0: the script adds nothing, and with the limits it says when a unit frees up in a full window.
	res, err := s.run(k, claimArgs{limits: limits, sec: now.Unix()})
	if err != nil {
		return
	}
	l.saw(res, now)
	l.freeAt.Store(0)
	if res.freeAt > 0 {
		l.freeAt.Store(time.Unix(res.freeAt, 0).UnixNano())
	}
}

// flush adds the cost pending in l to the store: with no limits the script grants all it is asked.
func (s *redisStore) flush(l *lease, k seriesKey, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.pending.Swap(0)
	if n == 0 {
		return
	}
	res, err := s.run(k, claimArgs{want: n, sec: now.Unix()})
	if err != nil {
		if !refusedCall(err) {
			// Kept for the next flush: the local count has it meanwhile. One Redis refused is dropped, not sent again
			// every second.
			s.spend(l, n)
		}
		return
	}
	l.saw(res, now)
}

// saw records the windows' shared counts a claim returned.
func (l *lease) saw(res claimResult, now time.Time) {
	for w := range res.sums {
		l.seen[w].Store(res.sums[w])
	}
	l.seenAt.Store(now.UnixNano())
}

func (s *redisStore) seen(l *lease, w int, now time.Time) sharedFigure {
	if !s.up.Load() {
		return sharedFigure{}
	}
	n, at, ok := l.usage(w, now.Unix())
	f := sharedFigure{n: n, at: at, ok: ok}
	if free := l.freeAt.Load(); free != 0 {
		f.freeAt = time.Unix(0, free)
	}
	return f
}

func (s *redisStore) maintain(c *counters, now time.Time) {
	s.probe(now)
	s.giveBackStale(c, now)
	s.flushCosts(c, now)
	s.refreshHolds(now)
}

// flushCosts takes the costs counted since the last flush to the store, so other replicas see them within a
// quarter second.
func (s *redisStore) flushCosts(c *counters, now time.Time) {
	if !s.up.Load() {
		return
	}
	for _, t := range c.pick(func(ser *series) bool { return ser.lease.pending.Load() != 0 }) {
		s.flush(&t.ser.lease, t.k, now)
		if !s.up.Load() {
			return
		}
	}
}

func (s *redisStore) status() statusRedis {
	return statusRedis{URL: s.shown, KeyPrefix: s.prefix, Up: s.up.Load()}
}

// giveBackStale returns to Redis the units of leases from past seconds, so other replicas can use them.
func (s *redisStore) giveBackStale(c *counters, now time.Time) {
	if !s.up.Load() {
		return
	}
	sec := now.Unix()
	for _, t := range c.pick(func(ser *series) bool {
		v := ser.lease.v.Load()
		return int64(v>>32) < sec && v&unitsMask != 0
	}) {
		l := &t.ser.lease
		l.mu.Lock()
		v := l.v.Load()
		if int64(v>>32) < sec && v&unitsMask != 0 && l.v.CompareAndSwap(v, 0) {
			_, _ = s.run(t.k, claimArgs{sec: sec, back: int64(v & unitsMask), backAt: int64(v >> 32)})
		}
		l.mu.Unlock()
		if !s.up.Load() {
			return
		}
	}
}

// close gives back the holds of this replica's queries still in flight and adds the costs not added yet, so that a
// replica that stops leaves the others no holds to wait out, then closes the connection.
func (s *redisStore) close(c *counters, now time.Time) {
	if s.up.Load() {
		s.flushCosts(c, now)
		s.giveBackHolds(s.holds.takeOrphans(true))
	}
	// A query still running past the shutdown's grace gives back nothing more: its hold is gone already.
	s.closed.Store(true)
	_ = s.client.Close()
}

// quietRedis routes go-redis's own log lines (every failed dial) to debug: the gate logs Redis failures itself,
// at most once per interval.
var quietRedis sync.Once

type debugLogger struct{}

func (debugLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Debug("redis client: " + fmt.Sprintf(format, v...))
}

// rareLog logs at most once per interval and reports how many lines it held back.
type rareLog struct {
	every   time.Duration
	next    atomic.Int64
	dropped atomic.Int64
}

func (r *rareLog) log(level slog.Level, msg string, args ...any) {
	if ok, dropped := r.allow(); ok {
		if dropped > 0 {
			args = append(args, "suppressed", dropped)
		}
		slog.Log(context.Background(), level, msg, args...)
	}
}

// allow reports whether a line may be logged now, and how many were held back since the last one.
func (r *rareLog) allow() (bool, int64) {
	now := time.Now().UnixNano()
	n := r.next.Load()
	if now < n || !r.next.CompareAndSwap(n, now+int64(r.every)) {
		r.dropped.Add(1)
		return false, 0
	}
	return true, r.dropped.Swap(0)
}

// shareNames adds names to the set key of the replicas, kept a day past the last replica that added to it, and
// returns the set.
func (s *redisStore) shareNames(ctx context.Context, key string, names []string) ([]string, error) {
	if !s.up.Load() {
		return nil, errors.New("redis is down")
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key = s.prefix + ":" + key
	pipe := s.client.Pipeline()
	if len(names) > 0 {
		args := make([]any, len(names))
		for i, n := range names {
			args[i] = n
		}
		pipe.SAdd(ctx, key, args...)
		pipe.Expire(ctx, key, 24*time.Hour)
	}
	members := pipe.SMembers(ctx, key)
	s.calls.Inc()
	if _, err := pipe.Exec(ctx); err != nil {
		s.errors.Inc()
		return nil, err
	}
	return members.Val(), nil
}
