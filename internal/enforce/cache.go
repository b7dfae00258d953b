package enforce

import "github.com/vmgateway/vmgateway/internal/gencache"

// queries caches rewritten queries (internal/gencache): the queries of busy dashboards stay in, memory stays
// bounded.
var queries = gencache.New(cacheGenerationBytes, func(k cacheKey, out string) int { return len(k.q) + len(out) + 64 })

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
