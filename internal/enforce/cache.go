package enforce

import (
	"strings"
	"sync"
)

// queries caches rewritten queries. It keeps two generations: when the current one holds cacheGenerationBytes of
// queries it becomes the previous one and the old previous one is dropped, so the memory stays bounded and
// the queries of busy dashboards stay in.
var queries = &queryCache{cur: map[cacheKey]string{}}

const (
	cacheGenerationBytes = 8 << 20
	// Longer queries are rare and would evict many others.
	cacheMaxQueryLen = 16 << 10
)

// cacheKey is an enforcer (one token's rules; nil for unrestricted ones) and the client's query.
type cacheKey struct {
	e       *Enforcer
	q       string
	cluster bool
}

type queryCache struct {
	mu        sync.RWMutex
	cur, prev map[cacheKey]string
	curBytes  int
}

func (c *queryCache) get(k cacheKey) (string, bool) {
	c.mu.RLock()
	out, ok := c.cur[k]
	if ok {
		c.mu.RUnlock()
		return out, true
	}
	out, ok = c.prev[k]
	c.mu.RUnlock()
	if ok {
		// Still in use: keep it over the next rotation.
		c.put(k, out)
	}
	return out, ok
}

func (c *queryCache) put(k cacheKey, out string) {
	if len(k.q) > cacheMaxQueryLen {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[k]; ok {
		return
	}
	if c.curBytes >= cacheGenerationBytes {
		c.prev, c.cur, c.curBytes = c.cur, make(map[cacheKey]string, len(c.cur)), 0
	}
	// A query read from a form may be a part of the whole body: the cache keeps a copy of its own.
	q := strings.Clone(k.q)
	if out == k.q {
		out = q
	}
	k.q = q
	c.cur[k] = out
	c.curBytes += len(k.q) + len(out) + 64
}
