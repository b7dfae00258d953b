package labelguard

import (
	"fmt"
	"math"
	"net/http"
	"sync"

	"github.com/golang/snappy"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// Budget bounds the memory the guarded bodies of all requests hold at once (a line held until it is counted, a
// remote-write body read whole), and the share of it one isolation unit may hold, so that one team's writes cannot
// take the gateway's memory or leave the other teams none. A request that would go over is refused with 503, to be
// sent again.
type Budget struct {
	mu       sync.Mutex
	free     int64
	size     int64
	unitMost int64
	units    map[any]int64
}

// NewBudget is a budget of size bytes, of which one unit may hold a quarter, and at least what one request may
// need at once (a remote write of maxRemoteWrite decoded and encoded again), so that no request within the bounds
// is refused for ever.
func NewBudget(size int64) *Budget {
	oneRequest := int64(maxRemoteWrite + snappy.MaxEncodedLen(maxRemoteWrite))
	return newBudget(size, max(size/4, min(size, oneRequest)))
}

func newBudget(size, unitMost int64) *Budget {
	return &Budget{free: size, size: size, unitMost: unitMost, units: make(map[any]int64)}
}

// Free is what the budget has left.
func (b *Budget) Free() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.free
}

// hold is one request's share of a budget; a nil budget bounds nothing. Its count is kept under the budget's
// lock: the request's end may give it back while the upstream client still reads.
type hold struct {
	b    *Budget
	unit any
	n    int64
}

func (h *hold) grow(n int64) error {
	b := h.b
	if b == nil || n <= 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := b.free >= n && b.units[h.unit]+n <= b.unitMost
	if ok {
		b.free -= n
		b.units[h.unit] += n
		h.n += n
	}
	if !ok {
		return httperr.New(http.StatusServiceUnavailable, fmt.Sprintf("the write backend truncates series over its label limit, so the "+
			"gateway holds the bodies of writes through restricted tokens to count their labels, and it holds all it may now "+
			"(%d bytes for all writes, a quarter of that for one token's): send the request again later", b.size))
	}
	return nil
}

// shrink gives back n bytes of the hold.
func (h *hold) shrink(n int64) {
	b := h.b
	if b == nil || n <= 0 {
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

// release gives the whole hold back; twice is once.
func (h *hold) release() { h.shrink(math.MaxInt64) }
