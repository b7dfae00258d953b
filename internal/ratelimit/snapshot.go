package ratelimit

import (
	"math"
	"strconv"
	"time"

	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// snapshot is everything a check needs, immutable once published: the limits in force, the usage the
// datasource reported, and, derived from both, a ready Decision per tenant and gated kind.
type snapshot struct {
	limits *limits
	usage  map[usageKey]float64
	// fetchedAt is when usage was measured; before the first successful refresh, when the gate was made.
	fetchedAt time.Time
	fetched   bool
	// stale is set once usage is older than Config.MaxUsageAge.
	stale bool

	// tenants holds the tenants with usage or limits of their own.
	tenants map[tenant.ID]*tenantState
	// fallback serves every other tenant: the default limits at zero usage.
	fallback tenantState
}

type usageKey struct {
	tenant tenant.ID
	meter  meter
}

// gated kinds: the index of a route kind in tenantState.
const (
	gatedRead = iota
	gatedWrite
	numGated
)

// gatedIndex says which limits gate an API kind. Admin APIs (delete_series and the like) are not gated: they
// are rare operator actions, and deleting series is how a tenant gets back under an active_series limit.
func gatedIndex(k route.Kind) int {
	switch k {
	case route.Read:
		return gatedRead
	case route.Write:
		return gatedWrite
	}
	return -1
}

// gates says which kind of API a limit type gates: queries gate reads, the ingestion types gate writes.
func gates(t Type) int {
	if t == Queries {
		return gatedRead
	}
	return gatedWrite
}

// tenantState is one tenant's view of a snapshot.
type tenantState struct {
	// applied are the limits for the tenant with its usage, by gated kind. The Decision is derived from them
	// when the snapshot is built; local accounting would combine them with its own counts at check time.
	applied  [numGated][]applied
	decision [numGated]Decision
}

type applied struct {
	limit Limit
	usage float64
}

func (m meter) window() time.Duration {
	switch m.res {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	}
	return 0
}

// index derives the per-tenant decisions of s. It runs off the hot path, once per refresh or reload.
func (g *Gate) index(s *snapshot) {
	s.tenants, s.fallback = map[tenant.ID]*tenantState{}, tenantState{}
	if s.stale && !g.failClosed {
		// Fail open: no limit applies until fresh usage arrives.
		return
	}
	var staleErr *Rejection
	if s.stale {
		staleErr = g.staleRejection(s)
	}
	add := func(id tenant.ID) {
		if s.tenants[id] == nil {
			s.tenants[id] = g.tenantState(s, id, s.limits.forTenant(id), staleErr)
		}
	}
	for id := range s.limits.own {
		add(id)
	}
	for k := range s.usage {
		add(k.tenant)
	}
	// Usage is zero for every tenant not seen, and every limit value is positive: fallback never rejects
	// unless the usage is stale.
	s.fallback = *g.tenantState(&snapshot{}, tenant.ID{}, s.limits.defaults, staleErr)
}

func (g *Gate) tenantState(s *snapshot, id tenant.ID, ls []Limit, staleErr *Rejection) *tenantState {
	st := &tenantState{}
	for _, l := range ls {
		i := gates(l.Type)
		st.applied[i] = append(st.applied[i], applied{limit: l, usage: s.usage[usageKey{id, l.meter()}]})
	}
	for i, as := range st.applied {
		st.decision[i] = g.decide(id, as, staleErr)
	}
	return st
}

// decide picks the limit that matters for a request: the over-limit one that blocks longest, or else the one
// nearest to its value. A tenant is over a limit once its usage reaches the value.
func (g *Gate) decide(id tenant.ID, as []applied, staleErr *Rejection) Decision {
	var d Decision
	over, nearest := false, -1.0
	for _, a := range as {
		value := float64(a.limit.Value)
		if a.usage >= value {
			retry := g.retryAfter(a)
			if !over || retry > d.Reset {
				over = true
				d = Decision{Limit: a.limit, Usage: a.usage, Reset: retry}
			}
			continue
		}
		if ratio := a.usage / value; !over && ratio > nearest {
			nearest = ratio
			d = Decision{Limit: a.limit, Usage: a.usage, Reset: g.resetAfter(a)}
		}
	}
	switch {
	case staleErr != nil && len(as) > 0:
		d.rejection = staleErr
	case over:
		d.rejection = g.rejection(id, d)
	}
	return d
}

// retryAfter estimates when a tenant over a limit gets back under it if it stops: the usage over the limit must
// leave the window. Assuming the usage was spread evenly over the window, that takes window*excess/usage;
// then the next refresh must see it. The count of active series falls when series go idle, which the gate cannot
// foresee: the next refresh is the earliest moment the answer can change.
func (g *Gate) retryAfter(a applied) time.Duration {
	w := a.limit.meter().window()
	d := g.refreshInterval
	if w > 0 {
		excess := a.usage - float64(a.limit.Value) + 1
		d += time.Duration(float64(w) * math.Min(excess/a.usage, 1))
	}
	return roundUpSeconds(d)
}

// resetAfter is when the usage counted against an unexceeded limit has left the window: the window length.
func (g *Gate) resetAfter(a applied) time.Duration {
	if w := a.limit.meter().window(); w > 0 {
		return w
	}
	return roundUpSeconds(g.refreshInterval)
}

func roundUpSeconds(d time.Duration) time.Duration {
	if r := d % time.Second; r != 0 {
		d += time.Second - r
	}
	return max(d, time.Second)
}

func formatUsage(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}
