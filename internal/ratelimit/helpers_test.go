package ratelimit

import (
	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/route"
)

// check is Admit without response headers.
func (g *Gate) check(a *auth.Access, rt route.Route) error { return g.Admit(a, rt, nil) }

// peek is what Admit would answer now (for the tests' assertions on usage), without counting anything: the limit that matters (the rejecting one
// that blocks longest, or else the one nearest to its value) and the caller's usage against it.
func (g *Gate) peek(a *auth.Access, rt route.Route) decision {
	i := gatedIndex(rt.Kind)
	if i < 0 {
		return decision{}
	}
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	d := st.decision[i]
	if d.rejection != nil || i != gatedRead || len(st.counted) == 0 {
		return d
	}
	var best figure
	over, nearest := false, -1.0
	for _, f := range g.tally.figures(st, id, a, g.now(), nil) {
		value := float64(f.limit.Value)
		if f.over() {
			if !over || f.reset > best.reset {
				over, best = true, f
			}
			continue
		}
		if ratio := f.usage / value; !over && ratio > nearest {
			nearest, best = ratio, f
		}
	}
	d = decision{Limit: best.limit, Usage: best.usage, Reset: best.reset}
	if over {
		d.rejection = g.rules.rejection(id, d, best.keyValue, best.source)
	}
	return d
}

// redisOf is the gate's Redis store, for the tests of its health and calls.
func redisOf(g *Gate) *redisStore { return g.tally.store.(*redisStore) }
