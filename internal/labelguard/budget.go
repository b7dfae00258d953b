package labelguard

import (
	"fmt"
	"net/http"

	"github.com/golang/snappy"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/membudget"
)

// Budget bounds the memory the guarded bodies of all requests hold at once (a line held until it is counted, a
// remote-write body read whole), and the share of it one isolation unit may hold. A request that would go over is
// refused with 503, to be sent again.
type Budget = membudget.Budget

// hold is one request's share of the budget.
type hold = membudget.Hold

// NewBudget is a budget of size bytes, of which one unit may hold a quarter, and at least what one request may
// need at once (a remote write of maxRemoteWrite decoded and encoded again), so that no request within the bounds
// is refused for ever.
func NewBudget(size int64) *Budget {
	oneRequest := int64(maxRemoteWrite + snappy.MaxEncodedLen(maxRemoteWrite))
	return newBudget(size, max(size/4, min(size, oneRequest)))
}

func newBudget(size, unitMost int64) *Budget {
	return membudget.New(size, unitMost, func(size int64) error {
		return httperr.New(http.StatusServiceUnavailable, fmt.Sprintf("the write backend truncates series over its label limit, so the "+
			"gateway holds the bodies of writes through restricted tokens to count their labels, and it holds all it may now "+
			"(%d bytes for all writes, a quarter of that for one token's): send the request again later", size))
	})
}
