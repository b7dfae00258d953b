// Package membudget bounds the memory that requests hold at once, all together and per isolation unit, so that one
// team's requests cannot take the gateway's memory or leave the other teams none. The label guard's bodies and the
// read bodies each have a budget of their own.
package membudget

import (
	"math"
	"sync"
)

// Budget is a number of bytes requests may hold at once, a part of which one unit may hold.
type Budget struct {
	mu       sync.Mutex
	free     int64
	size     int64
	unitMost int64
	units    map[any]int64
	refusal  func(size int64) error
}

// New is a budget of size bytes, of which one unit may hold unitMost; a request that would go over gets the error
// refusal returns for the budget's size.
func New(size, unitMost int64, refusal func(size int64) error) *Budget {
	return &Budget{free: size, size: size, unitMost: unitMost, units: make(map[any]int64), refusal: refusal}
}

// Free is what the budget has left.
func (b *Budget) Free() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.free
}

// UnitMost is what one unit may hold.
func (b *Budget) UnitMost() int64 { return b.unitMost }

// Hold starts a request's share of b for unit (a comparable key); a nil b bounds nothing.
func (b *Budget) Hold(unit any) Hold { return Hold{b: b, unit: unit} }

// Hold is one request's share of a budget; the zero Hold bounds nothing. Its count is kept under the budget's lock:
// the request's end may give it back while another goroutine still reads for it.
type Hold struct {
	b    *Budget
	unit any
	n    int64
}

// Grow takes n more bytes, or refuses them with the budget's error when the budget, or the unit's part, has not
// that much left.
func (h *Hold) Grow(n int64) error {
	b := h.b
	if b == nil || n <= 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.free < n || b.units[h.unit]+n > b.unitMost {
		return b.refusal(b.size)
	}
	b.free -= n
	b.units[h.unit] += n
	h.n += n
	return nil
}

// Shrink gives back n bytes of the hold.
func (h *Hold) Shrink(n int64) {
	b := h.b
	if b == nil || n <= 0 || h.n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n = min(n, h.n)
	b.free += n
	if left := b.units[h.unit] - n; left > 0 {
		b.units[h.unit] = left
	} else {
		delete(b.units, h.unit)
	}
	h.n -= n
}

// Release gives the whole hold back; twice is once.
func (h *Hold) Release() { h.Shrink(math.MaxInt64) }
