package enforce

import "github.com/vmgateway/vmgateway/internal/gencache"

// queries caches rewritten queries and selectors caches rewritten selector args (internal/gencache), each isolation
// unit's apart (their owner is the unit's partition, Parsed.SetGate): the queries of busy dashboards and the
// selectors of their variables stay in, memory stays bounded, and one unit neither finds nor pushes out what another
// unit's requests put in. Whether a query is cached decides whether it waits for a parse slot, so that tells nothing
// of other teams, and another team's new queries cannot send a dashboard's back to the parse slots.
var (
	queries   = gencache.New(cacheBytes, func(k cacheKey, out string) int { return len(k.q) + len(out) + 64 })
	selectors = gencache.New(cacheBytes, func(k cacheKey, out []string) int {
		n := len(k.q) + 64
		for _, s := range out {
			n += len(s) + 16
		}
		return n
	})
)

const (
	cacheBytes = 16 << 20
	// Longer queries are rare and would evict many others.
	cacheMaxQueryLen = 16 << 10
)

// cacheKey is an enforcer (one token's rules; nil for unrestricted ones) and the client's query.
type cacheKey struct {
	e               *Enforcer
	q               string
	cluster, braces bool
}
