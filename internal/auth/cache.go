package auth

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// cache remembers what verification said about a token so that repeated requests skip the signature check: the
// Verifier keeps one of *Access for verified tokens and one of *rejection for refused ones. It is bounded: every
// shard keeps two generations of at most genSize entries; when the current one fills up, the previous one is dropped
// whole (O(1) eviction without per-entry bookkeeping) and a hit in the previous generation moves forward.
// Entries are used only inside [notBefore, notAfter), so a token is never served past its exp.
type cache[V any] struct {
	seed    maphash.Seed
	shards  []cacheShard[V]
	mask    uint64
	genSize int
	// epoch counts clears. A value computed before a clear (a token verified with a key the clear is for) must not
	// be stored after it: putSince takes the epoch read before the work and drops the value when it changed.
	epoch atomic.Uint64
}

type cacheShard[V any] struct {
	mu        sync.RWMutex
	cur, prev map[uint64]*cacheEntry[V]
	_         [24]byte // one shard per cache line: readers of different shards do not slow each other down
}

type cacheEntry[V any] struct {
	token string // compared on every hit: the map key is only a hash of it
	val   V
	// Unix nanoseconds: for a verified token its nbf/iat (minus leeway, as verification allows) and its exp.
	notBefore, notAfter int64
}

// minGenSize keeps small caches in few shards so that their bound stays meaningful.
const minGenSize = 32

// newCache returns a cache of at most size entries, or nil (no caching) when size <= 0.
func newCache[V any](size int) *cache[V] {
	if size <= 0 {
		return nil
	}
	n := 1
	for n < 64 && size/(n*4) >= minGenSize {
		n *= 2
	}
	c := &cache[V]{seed: maphash.MakeSeed(), shards: make([]cacheShard[V], n), mask: uint64(n - 1), genSize: max(1, size/(2*n))}
	for i := range c.shards {
		c.shards[i].cur = make(map[uint64]*cacheEntry[V], c.genSize)
	}
	return c
}

// get returns the value stored for token and valid at now (Unix nanoseconds), or the zero V.
func (c *cache[V]) get(token string, now int64) V {
	var none V
	if c == nil {
		return none
	}
	h := maphash.String(c.seed, token)
	s := &c.shards[h&c.mask]
	s.mu.RLock()
	e, inCur := s.cur[h]
	if !inCur {
		e = s.prev[h]
	}
	s.mu.RUnlock()
	if e == nil || e.token != token || now < e.notBefore || now >= e.notAfter {
		return none
	}
	if !inCur {
		s.mu.Lock()
		s.add(h, e, c.genSize)
		s.mu.Unlock()
	}
	return e.val
}

// currentEpoch is the epoch to pass to putSince for a value computed from here on.
func (c *cache[V]) currentEpoch() uint64 {
	if c == nil {
		return 0
	}
	return c.epoch.Load()
}

func (c *cache[V]) put(token string, val V, notBefore, notAfter int64) {
	c.putSince(token, val, notBefore, notAfter, c.currentEpoch())
}

// putSince is put unless the cache was cleared since epoch (from currentEpoch) was read.
func (c *cache[V]) putSince(token string, val V, notBefore, notAfter int64, epoch uint64) {
	if c == nil {
		return
	}
	h := maphash.String(c.seed, token)
	s := &c.shards[h&c.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	// Compared under the shard lock: clear bumps the epoch before it takes the locks, so a put that saw the old
	// epoch here adds its entry before clear empties the shard.
	if c.epoch.Load() != epoch {
		return
	}
	s.add(h, &cacheEntry[V]{token: token, val: val, notBefore: notBefore, notAfter: notAfter}, c.genSize)
}

func (s *cacheShard[V]) add(h uint64, e *cacheEntry[V], genSize int) {
	s.cur[h] = e
	if len(s.cur) >= genSize {
		s.prev, s.cur = s.cur, make(map[uint64]*cacheEntry[V], genSize)
	}
}

// clear forgets every token, e.g. when a key is removed from the key set.
func (c *cache[V]) clear() {
	if c == nil {
		return
	}
	c.epoch.Add(1)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.cur, s.prev = make(map[uint64]*cacheEntry[V], c.genSize), nil
		s.mu.Unlock()
	}
}

// len counts the entries; for tests.
func (c *cache[V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.cur) + len(s.prev)
		s.mu.RUnlock()
	}
	return n
}
