package ratelimit

import (
	"github.com/vmgateway/vmgateway/internal/auth"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// snapshot is everything a check needs, immutable once published: the limits in force, the usage the
// datasource reported, and, derived from both, a ready decision per tenant and gated kind.
type snapshot struct {
	limits *limitfile.Set
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

// gates says which kind of API a limit type gates: queries and query costs gate reads, the ingestion types gate
// writes.
func gates(t limitfile.Type) int {
	if t == limitfile.Queries || t.Cost() {
		return gatedRead
	}
	return gatedWrite
}

// tenantState is one tenant's view of a snapshot.
type tenantState struct {
	// applied are the limits for the tenant with the datasource's usage, by gated kind. The rejection is derived
	// from them when the snapshot is built: non-nil when the datasource's usage alone is over a limit.
	applied   [numGated][]applied
	rejection [numGated]*limitError
	// counted are the tenant's queries and cost limits grouped by type and key: the gate counts each key's
	// requests (or query costs) in one series and checks them against these at request time.
	counted []countedSet
	// costed: some of counted are cost limits, so the costs of the tenant's answers are counted.
	costed bool
	// series caches the series of the counted sets without a key, by index, so that a check need not look it up
	// among all series; nil in the fallback state, which serves many tenants.
	series []atomic.Pointer[series]
}

// countedSet is the limits of one type and key that the gate counts for a tenant: at most one per window.
type countedSet struct {
	typ    limitfile.Type
	key    limitfile.Key
	keyID  keyID
	limits [numWindows]applied // limit.Type is zero for a window without a limit
}

// seriesKey names the series the set counts in for tenant id and caller a.
func (c *countedSet) seriesKey(id tenant.ID, a *auth.Access) seriesKey {
	k := seriesKey{tenant: id, key: c.keyID}
	if !c.key.IsZero() {
		k.value = c.key.Value(a)
	}
	if c.typ.Cost() {
		k.cost = c.typ
	}
	return k
}

// values are the set's limit values by window, 0 where there is none.
func (c *countedSet) values() [numWindows]int64 {
	var v [numWindows]int64
	for w, a := range c.limits {
		if a.limit.Type != 0 {
			v[w] = int64(a.limit.Value)
		}
	}
	return v
}

type applied struct {
	limit limitfile.Limit
	usage float64
}

// rules are how the gate judges usage: what a snapshot's decisions and the gate's rejections are derived from.
type rules struct {
	refreshInterval time.Duration
	maxUsageAge     time.Duration
	failClosed      bool
	metrics         *gateMetrics
}

// index derives the per-tenant decisions of s. It runs off the hot path, once per refresh or reload.
func (p *rules) index(s *snapshot) {
	s.tenants, s.fallback = map[tenant.ID]*tenantState{}, tenantState{}
	usage := s.usage
	var staleErr *limitError
	switch {
	case s.stale && p.failClosed:
		staleErr = p.staleRejection(s)
	case s.stale:
		// Fail open: the datasource's usage no longer counts until fresh usage arrives; the gate's own counts,
		// which never go stale, still do.
		usage = nil
	}
	add := func(id tenant.ID) {
		if s.tenants[id] == nil {
			st := p.tenantState(usage, id, s.limits.ForTenant(id), staleErr)
			st.series = make([]atomic.Pointer[series], len(st.counted))
			s.tenants[id] = st
		}
	}
	for _, id := range s.limits.Tenants() {
		add(id)
	}
	for k := range usage {
		add(k.tenant)
	}
	// Usage is zero for every tenant not seen, and every limit value is positive: fallback never rejects on the
	// datasource's figures unless they are stale.
	s.fallback = *p.tenantState(nil, tenant.ID{}, s.limits.Defaults(), staleErr)
}

func (p *rules) tenantState(usage map[usageKey]float64, id tenant.ID, ls []limitfile.Limit, staleErr *limitError) *tenantState {
	st := &tenantState{}
	for _, l := range ls {
		a := applied{limit: l}
		if l.Key.IsZero() {
			a.usage = usage[usageKey{id, meterOf(l)}]
		}
		i := gates(l.Type)
		st.applied[i] = append(st.applied[i], a)
		if l.Type.Counted() {
			st.countedSet(l.Type, l.Key).limits[windowOf(l.Resolution)] = a
			st.costed = st.costed || l.Type.Cost()
		}
	}
	for i, as := range st.applied {
		st.rejection[i] = p.decide(id, as, staleErr)
	}
	return st
}

func (st *tenantState) countedSet(t limitfile.Type, k limitfile.Key) *countedSet {
	if i := slices.IndexFunc(st.counted, func(c countedSet) bool { return c.typ == t && c.key == k }); i >= 0 {
		return &st.counted[i]
	}
	st.counted = append(st.counted, countedSet{typ: t, key: k, keyID: intern(k)})
	return &st.counted[len(st.counted)-1]
}

// state is the view of tenant id.
func (s *snapshot) state(id tenant.ID) *tenantState {
	if st := s.tenants[id]; st != nil {
		return st
	}
	return &s.fallback
}

// decide is the rejection a snapshot makes ahead for a gated kind: stale usage under -ratelimit.failClosed, or the
// over-limit one that blocks longest; nil when the datasource's usage is under every limit. A tenant is over a
// limit once its usage reaches the value.
func (p *rules) decide(id tenant.ID, as []applied, staleErr *limitError) *limitError {
	if staleErr != nil && len(as) > 0 {
		return staleErr
	}
	var d decision
	for _, a := range as {
		if a.usage < float64(a.limit.Value) {
			continue
		}
		if retry := p.retryAfter(a); d.Limit.Type == 0 || retry > d.Reset {
			d = decision{Limit: a.limit, Usage: a.usage, Reset: retry}
		}
	}
	if d.Limit.Type == 0 {
		return nil
	}
	// Made once per snapshot, message included, so that rejecting allocates nothing.
	r := p.rejection(id, d, "", fromDatasource)
	r.msg = r.message()
	return r
}

// retryAfter estimates when a tenant over a limit gets back under it if it stops: the usage over the limit must
// leave the window. Assuming the usage was spread evenly over the window, that takes window*excess/usage;
// then the next refresh must see it. The count of active series falls when series go idle, which the gate cannot
// foresee: the next refresh is the earliest moment the answer can change.
func (p *rules) retryAfter(a applied) time.Duration {
	w := meterOf(a.limit).window()
	d := p.refreshInterval
	if w > 0 {
		excess := a.usage - float64(a.limit.Value) + 1
		d += time.Duration(float64(w) * math.Min(excess/a.usage, 1))
	}
	return roundUpSeconds(d)
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
