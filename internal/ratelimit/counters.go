package ratelimit

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// seriesKey names what one series counts: the requests of a tenant, or of one value of a key within a tenant.
type seriesKey struct {
	tenant tenant.ID
	key    Key
	value  string
}

// series counts the requests the gate admitted for one seriesKey, in a minute and an hour window, and holds
// what it has taken from the shared counters in Redis.
type series struct {
	win [numWindows]window
	// lastUsed is the Unix second of the last count; -1 once the series is evicted, so that a check that still
	// holds it takes a fresh one instead of counting into a series nobody sees.
	lastUsed atomic.Int64
	lease    lease
}

func newSeries(now int64) *series {
	s := &series{}
	for i := range s.win {
		s.win[i].width = bucketWidth[i]
	}
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

// counters holds every series with counts, found by key. Lookups take a shard's read lock only.
type counters struct {
	seed   maphash.Seed
	size   atomic.Int64
	shards [counterShards]counterShard
}

type counterShard struct {
	mu sync.RWMutex
	m  map[seriesKey]*series
	_  [32]byte // keeps shards on separate cache lines
}

func newCounters() *counters {
	c := &counters{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = map[seriesKey]*series{}
	}
	return c
}

func (c *counters) shard(k seriesKey) *counterShard {
	return &c.shards[maphash.Comparable(c.seed, k)%counterShards]
}

// get returns the series of k, made on first use, marked used at second now.
func (c *counters) get(k seriesKey, now int64) *series {
	sh := c.shard(k)
	sh.mu.RLock()
	s := sh.m[k]
	sh.mu.RUnlock()
	if s != nil && s.touch(now) {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s = sh.m[k]; s != nil && s.touch(now) {
		return s
	}
	if s == nil {
		c.size.Add(1)
	}
	s = newSeries(now)
	sh.m[k] = s
	return s
}

// lookup returns the series of k without making or touching it; nil when nothing has been counted for k.
func (c *counters) lookup(k seriesKey) *series {
	sh := c.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[k]
}

// each calls f for every series; f must not call back into c.
func (c *counters) each(f func(seriesKey, *series)) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		for k, s := range sh.m {
			f(k, s)
		}
		sh.mu.RUnlock()
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
		for k, s := range sh.m {
			if v := s.lastUsed.Load(); v < now-idleAfter && s.lastUsed.CompareAndSwap(v, -1) {
				delete(sh.m, k)
				c.size.Add(-1)
				continue
			}
			n++
		}
		sh.mu.Unlock()
	}
	return n
}
