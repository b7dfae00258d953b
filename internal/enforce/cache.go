package enforce

import "github.com/vmgateway/vmgateway/internal/gencache"

// queries caches rewritten queries and selectors caches rewritten selector args (internal/gencache): the queries
// of busy dashboards and the selectors of their variables stay in, memory stays bounded.
var (
	queries   = gencache.New(cacheGenerationBytes, func(k cacheKey, out string) int { return len(k.q) + len(out) + 64 })
	selectors = gencache.New(cacheGenerationBytes, func(k cacheKey, out []string) int {
		n := len(k.q) + 64
		for _, s := range out {
			n += len(s) + 16
		}
		return n
	})
)

const (
	cacheGenerationBytes = 8 << 20
	// Longer queries are rare and would evict many others.
	cacheMaxQueryLen = 16 << 10
)

// cacheKey is an enforcer (one token's rules; nil for unrestricted ones), the partition of the request's isolation
// unit (Parsed.SetGate) and the client's query: one unit never finds what another unit's requests put in, so that
// whether a query is cached (which decides whether it waits for a parse slot) tells nothing of other teams.
type cacheKey struct {
	e       *Enforcer
	part    uint64
	q       string
	cluster bool
}
