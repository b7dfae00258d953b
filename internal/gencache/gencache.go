// Package gencache is a bounded cache for values computed from a query string: dashboards repeat the same queries,
// so the work is paid once. It keeps two generations: when the current one holds its byte budget it becomes the
// previous one and the old previous one is dropped whole, so memory stays bounded without per-entry bookkeeping,
// and a hit in the previous generation moves the entry forward, so busy queries stay in.
package gencache

import "sync"

// Cache maps K to V within a byte budget per generation. The zero value is not usable: call New.
type Cache[K comparable, V any] struct {
	mu        sync.RWMutex
	cur, prev map[K]V
	curBytes  int
	genBytes  int
	size      func(K, V) int
}

// New returns a cache whose current generation rotates once it holds genBytes; size says what an entry costs.
func New[K comparable, V any](genBytes int, size func(K, V) int) *Cache[K, V] {
	return &Cache[K, V]{cur: map[K]V{}, genBytes: genBytes, size: size}
}

// Get returns the value stored for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.RLock()
	v, ok := c.cur[k]
	if ok {
		c.mu.RUnlock()
		return v, true
	}
	v, ok = c.prev[k]
	c.mu.RUnlock()
	if ok {
		// Still in use: keep it over the next rotation.
		c.Put(k, v)
	}
	return v, ok
}

// Put stores v for k unless k is already in the current generation.
func (c *Cache[K, V]) Put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[k]; ok {
		return
	}
	if c.curBytes >= c.genBytes {
		c.prev, c.cur, c.curBytes = c.cur, make(map[K]V, len(c.cur)), 0
	}
	c.cur[k] = v
	c.curBytes += c.size(k, v)
}
