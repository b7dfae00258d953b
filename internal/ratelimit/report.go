package ratelimit

import (
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// seriesReport is one tenant, or one value of a key within a tenant, with its usage against each of its limits:
// a value read from a snapshot and the counts at one instant, which the status page renders.
type seriesReport struct {
	id     seriesKey
	limits []limitUsage
}

// limitUsage is the usage against one limit from each source that has a figure for it.
type limitUsage struct {
	limit limitfile.Limit
	// datasource is nil for a limit with a key (the datasource knows tenants only) and while stale usage does not
	// count (fail open).
	datasource *float64
	// counted: the gate counts this limit itself, and has a series for it: local (and shared, with a store) hold.
	counted bool
	local   int64
	shared  sharedFigure
	// held is, for a cost limit, what the caller's queries in flight on this gateway hold (Reserve).
	held int64
}

// report is the usage of every tenant s knows and of every series the gate counts (only the tenant only, when
// set), in no particular order.
func (g *Gate) report(s *snapshot, now time.Time, only *tenant.ID) []seriesReport {
	dsCounts := !s.stale || g.rules.failClosed
	var out []seriesReport
	add := func(r seriesReport) {
		if len(r.limits) > 0 {
			out = append(out, r)
		}
	}
	// Tenants the snapshot knows: every limit, counted or not.
	for id, st := range s.tenants {
		if only != nil && id != *only {
			continue
		}
		k := seriesKey{tenant: id}
		r := seriesReport{id: k, limits: g.tally.countedUsage(k, st, dsCounts, now)}
		for i := range st.applied {
			for _, a := range st.applied[i] {
				if a.limit.Type.Counted() {
					continue
				}
				u := limitUsage{limit: a.limit}
				if dsCounts {
					u.datasource = &a.usage
				}
				r.limits = append(r.limits, u)
			}
		}
		add(r)
	}
	// Series the gate counts for keys, and for tenants the snapshot does not know: one entry for each, whatever
	// its series count (requests, costs).
	seen := map[seriesKey]bool{}
	var keys []seriesKey
	g.tally.counters.each(func(k seriesKey, _ *series) {
		k = k.requests()
		if only != nil && k.tenant != *only || seen[k] {
			return
		}
		seen[k] = true
		if _, known := s.tenants[k.tenant]; known && k.key == 0 {
			return
		}
		keys = append(keys, k)
	})
	// After each, which holds the shards' locks: countedUsage looks the series up.
	for _, k := range keys {
		add(seriesReport{id: k, limits: g.tally.countedUsage(k, s.state(k.tenant), dsCounts, now)})
	}
	return out
}

// countedUsage is the usage of k (a tenant, or a key value within it) against the limits the gate counts for it,
// each from the series of its type.
func (t *tally) countedUsage(k seriesKey, st *tenantState, dsCounts bool, now time.Time) []limitUsage {
	var out []limitUsage
	for j := range st.counted {
		cs := &st.counted[j]
		if cs.keyID != k.key {
			continue
		}
		sk := k
		if cs.typ.Cost() {
			sk.cost = cs.typ
		}
		ser := t.counters.lookup(sk)
		for w := range cs.limits {
			a := cs.limits[w]
			if a.limit.Type == 0 {
				continue
			}
			u := limitUsage{limit: a.limit}
			if k.key == 0 && dsCounts && !a.limit.Type.Cost() {
				u.datasource = &a.usage
			}
			if ser != nil {
				wu := t.usageIn(ser, w, now)
				u.counted, u.local, u.shared = true, wu.local, wu.shared
				if cs.typ.Cost() {
					u.held = ser.reserved.Load()
				}
			} else if cs.typ.Cost() {
				// No answer counted yet: the gate's count is the only figure a cost limit has, and it is zero.
				u.counted = true
			}
			out = append(out, u)
		}
	}
	return out
}
