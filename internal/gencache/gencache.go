// Package gencache is a bounded cache for values computed from a query string: dashboards repeat the same queries,
// so the work is paid once.
//
// Entries belong to owners (the isolation units of the gateway: a tenant and its restriction), and one owner's new
// entries never push out another's while the cache holds its budget: a team sending new queries as fast as its parse
// slots allow would otherwise empty the cache of every other team's dashboards, whose queries would then wait for
// their own parse slots again at every refresh. Each owner keeps two generations: when its current one holds its
// share it becomes the previous one and the old previous one is dropped whole, so memory stays bounded without
// per-entry bookkeeping, and a hit in the previous generation moves the entry forward, so busy queries stay in. When
// all owners together hold more than the budget, the largest owners lose their oldest generations first.
package gencache

import (
	"container/heap"
	"sync"
)

// Cache maps K to V per owner within a byte budget. The zero value is not usable: call New.
type Cache[K comparable, V any] struct {
	mu     sync.RWMutex
	owners map[uint64]*owned[K, V]
	bytes  int // every owner's generations and ownerBytes each
	budget int
	size   func(K, V) int
	// trims counts the passes of trim, for the tests: each pass walks every owner, so passes must stay rare.
	trims int
}

// owned is one owner's two generations.
type owned[K comparable, V any] struct {
	cur, prev           map[K]V
	curBytes, prevBytes int
}

const (
	// ownerBytes is what an owner costs beside its entries (its maps and its place in owners), so that many owners
	// of one entry each stay within the budget too.
	ownerBytes = 512
	// An owner's generation rotates at a quarter of the budget, so one owner holds at most half of it.
	ownerShare = 4
	// trim leaves an eighth of the budget free, so its walk over the owners is paid once per that many bytes put.
	trimSlack = 8
)

// New returns a cache that holds about budget bytes; size says what an entry costs.
func New[K comparable, V any](budget int, size func(K, V) int) *Cache[K, V] {
	return &Cache[K, V]{owners: map[uint64]*owned[K, V]{}, budget: budget, size: size}
}

// Get returns the value owner stored for k.
func (c *Cache[K, V]) Get(owner uint64, k K) (V, bool) {
	c.mu.RLock()
	var v V
	o, ok := c.owners[owner]
	if ok {
		if v, ok = o.cur[k]; ok {
			c.mu.RUnlock()
			return v, true
		}
		v, ok = o.prev[k]
	}
	c.mu.RUnlock()
	if ok {
		// Still in use: keep it over the next rotation.
		c.Put(owner, k, v)
	}
	return v, ok
}

// Put stores v for k unless owner holds k in its current generation.
func (c *Cache[K, V]) Put(owner uint64, k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.owners[owner]
	if o == nil {
		o = &owned[K, V]{cur: map[K]V{}}
		c.owners[owner] = o
		c.bytes += ownerBytes
	}
	if _, ok := o.cur[k]; ok {
		return
	}
	if o.curBytes >= c.budget/ownerShare {
		c.bytes -= o.prevBytes
		o.prev, o.prevBytes = o.cur, o.curBytes
		o.cur, o.curBytes = make(map[K]V, len(o.cur)), 0
	}
	n := c.size(k, v)
	o.cur[k] = v
	o.curBytes += n
	c.bytes += n
	if c.bytes > c.budget {
		c.trim()
	}
}

// trim drops generations, the oldest of the largest owner first, until the cache holds at most its budget less the
// slack: an owner whose entries take no more than the others' never loses them to a larger owner's. Each owner is
// dropped from at most twice, so a pass costs O(n log n) for n owners.
func (c *Cache[K, V]) trim() {
	c.trims++
	h := make(bySize[K, V], 0, len(c.owners))
	for id, o := range c.owners {
		h = append(h, sized[K, V]{id, o})
	}
	heap.Init(&h)
	for target := c.budget - c.budget/trimSlack; c.bytes > target && len(h) > 0; {
		o := h[0].o
		if o.prev != nil {
			c.bytes -= o.prevBytes
			o.prev, o.prevBytes = nil, 0
			heap.Fix(&h, 0)
			continue
		}
		c.bytes -= o.curBytes + ownerBytes
		delete(c.owners, h[0].id)
		heap.Pop(&h)
	}
}

type sized[K comparable, V any] struct {
	id uint64
	o  *owned[K, V]
}

// bySize is a heap of owners, the largest first.
type bySize[K comparable, V any] []sized[K, V]

func (h bySize[K, V]) Len() int { return len(h) }
func (h bySize[K, V]) Less(i, j int) bool {
	return h[i].o.curBytes+h[i].o.prevBytes > h[j].o.curBytes+h[j].o.prevBytes
}
func (h bySize[K, V]) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *bySize[K, V]) Push(x any)   { *h = append(*h, x.(sized[K, V])) }
func (h *bySize[K, V]) Pop() any {
	x := (*h)[len(*h)-1]
	*h = (*h)[:len(*h)-1]
	return x
}
