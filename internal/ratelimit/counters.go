package ratelimit

import (
	"hash/maphash"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// seriesKey names what one series counts: the requests of a tenant, or of one value of a key within a tenant, or
// one cost of their queries. The key is interned, so that hashing a seriesKey hashes one string, the value, empty
// for a tenant's own series.
type seriesKey struct {
	tenant tenant.ID
	key    keyID
	value  string
	// cost is the cost type the series sums (limitfile.SeriesFetched, QueryTimeMs); zero: it counts requests.
	cost limitfile.Type
}

// requests is k without its cost: the tenant or key value it is about, whatever it counts.
func (k seriesKey) requests() seriesKey {
	k.cost = 0
	return k
}

// keyID is an interned limitfile.Key; 0 is the zero Key. IDs live as long as the process: keys come from limits
// configs, and there are few.
type keyID uint32

var keyTable = struct {
	sync.Mutex
	ids  map[limitfile.Key]keyID
	keys []limitfile.Key
}{ids: map[limitfile.Key]keyID{{}: 0}, keys: []limitfile.Key{{}}}

func intern(k limitfile.Key) keyID {
	keyTable.Lock()
	defer keyTable.Unlock()
	id, ok := keyTable.ids[k]
	if !ok {
		id = keyID(len(keyTable.keys))
		keyTable.ids[k] = id
		keyTable.keys = append(keyTable.keys, k)
	}
	return id
}

func (id keyID) Key() limitfile.Key {
	keyTable.Lock()
	defer keyTable.Unlock()
	return keyTable.keys[id]
}

// series counts the requests the gate admitted for one seriesKey, in a minute and an hour window, and holds
// what it has taken from the shared counters in Redis.
type series struct {
	counts counts
	// lastUsed is the Unix second of the last count; -1 once the series is evicted, so that a check that still
	// holds it takes a fresh one instead of counting into a series nobody sees.
	lastUsed atomic.Int64
	lease    lease
	// For a cost series: what the queries forwarded and not yet answered are expected to cost, and what one is
	// expected to cost (reserve.go).
	reserved atomic.Int64
	expect   expectation
}

func newSeries(now int64) *series {
	s := &series{}
	s.lastUsed.Store(now)
	return s
}

// touch marks the series used at second now; false once it has been evicted.
func (s *series) touch(now int64) bool {
	for {
		v := s.lastUsed.Load()
		if v < 0 {
			return false
		}
		if v >= now || s.lastUsed.CompareAndSwap(v, now) {
			return true
		}
	}
}

// counterShards spreads the series over independently locked maps.
const counterShards = 64

// counters holds every series with counts, found by key. A lookup of a series that exists is an atomic load and
// a map read: each shard keeps a read-only map, and new series go to a dirty copy under the shard's mutex that
// replaces it once lookups have missed it as often as it has entries (sync.Map's amortisation, typed).
type counters struct {
	seed   maphash.Seed
	size   atomic.Int64
	shards [counterShards]counterShard
}

type counterShard struct {
	read   atomic.Pointer[map[seriesKey]*series]
	mu     sync.Mutex
	dirty  map[seriesKey]*series // nil, or read plus the series made since
	misses int
	_      [32]byte // keeps shards on separate cache lines
}

func newCounters() *counters {
	c := &counters{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].read.Store(&map[seriesKey]*series{})
	}
	return c
}

func (c *counters) shard(k seriesKey) *counterShard {
	h := uint64(k.tenant.AccountID)<<32 | uint64(k.tenant.ProjectID)
	h ^= (uint64(k.key) | uint64(k.cost)<<32) * 0x9e3779b97f4a7c15
	if k.value != "" {
		h ^= maphash.String(c.seed, k.value)
	}
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return &c.shards[h%counterShards]
}

// get returns the series of k, made on first use, marked used at second now.
func (c *counters) get(k seriesKey, now int64) *series {
	sh := c.shard(k)
	if s := (*sh.read.Load())[k]; s != nil && s.touch(now) {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.lookupLocked(k)
	if s != nil && s.touch(now) {
		return s
	}
	if s == nil {
		c.size.Add(1)
	}
	s = newSeries(now)
	if sh.dirty == nil {
		sh.dirty = maps.Clone(*sh.read.Load())
	}
	sh.dirty[k] = s
	return s
}

// lookupLocked finds k in the dirty map, if any, counting a miss of the read map.
func (sh *counterShard) lookupLocked(k seriesKey) *series {
	if sh.dirty == nil {
		return (*sh.read.Load())[k]
	}
	s := sh.dirty[k]
	if sh.misses++; sh.misses >= len(sh.dirty) {
		sh.promoteLocked()
	}
	return s
}

func (sh *counterShard) promoteLocked() {
	m := sh.dirty
	sh.read.Store(&m)
	sh.dirty, sh.misses = nil, 0
}

// lookup returns the series of k without making or touching it; nil when nothing has been counted for k.
func (c *counters) lookup(k seriesKey) *series {
	sh := c.shard(k)
	if s := (*sh.read.Load())[k]; s != nil {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.lookupLocked(k)
}

// keyedSeries is a series with its key, as pick lists them.
type keyedSeries struct {
	k   seriesKey
	ser *series
}

// pick lists the series want reports true for, so that the caller can work on them (ask Redis) once each has let
// go of the shards' locks.
func (c *counters) pick(want func(*series) bool) []keyedSeries {
	var out []keyedSeries
	c.each(func(k seriesKey, ser *series) {
		if want(ser) {
			out = append(out, keyedSeries{k, ser})
		}
	})
	return out
}

// each calls f for every series; f must not call back into c.
func (c *counters) each(f func(seriesKey, *series)) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		m := sh.dirty
		if m == nil {
			m = *sh.read.Load()
		}
		for k, s := range m {
			f(k, s)
		}
		sh.mu.Unlock()
	}
}

// idleAfter is how long a series must go unused before it is evicted: by then all it counted has left both
// windows, so evicting it loses nothing.
var idleAfter = int64((time.Hour + 2*time.Minute) / time.Second)

// evict drops the series unused since before now-idleAfter and returns how many remain.
func (c *counters) evict(now int64) int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		if sh.dirty == nil {
			sh.dirty = maps.Clone(*sh.read.Load())
		}
		for k, s := range sh.dirty {
			if v := s.lastUsed.Load(); v < now-idleAfter && s.lastUsed.CompareAndSwap(v, -1) {
				delete(sh.dirty, k)
				c.size.Add(-1)
				continue
			}
			n++
		}
		sh.promoteLocked()
		sh.mu.Unlock()
	}
	return n
}
