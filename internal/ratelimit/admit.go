package ratelimit

import (
	"log/slog"
	"math"
	"net/http"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Admit judges a request to API rt by the caller a and, when it passes, counts it: nil, or a *limitError. With
// Config.Headers it sets the rate-limit headers on h for passing and rejected requests alike (h may be nil).
// A nil Access is judged as tenant 0:0. Under Config.DryRun it rejects nothing, but counts what it would have.
//
// Queries limits are enforced on the largest of the datasource's usage, the gate's own count of the requests it
// admitted and, with Redis, the count all replicas share; a burst is cut at the limit before the datasource has
// seen it. Cost limits (series_fetched, query_time_ms) are enforced on the costs of the answers already counted
// (Spend): a request is refused once the budget is used up. The other limit types count rows and series, which a
// gateway streaming write bodies never sees: the datasource's figures alone decide them.
func (g *Gate) Admit(a *auth.Access, rt route.Route, h http.Header) error {
	i := gatedIndex(rt.Kind)
	if i < 0 {
		return nil
	}
	if rt.Kind == route.Write && a != nil {
		g.writers.seen(a)
	}
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	if r := st.rejection[i]; r != nil {
		if h != nil && g.headers != HeadersNone && i == gatedRead && r.status == http.StatusTooManyRequests {
			g.headers.set(h, g.tally.figures(st, id, a, g.now(), nil), r)
		}
		return g.refuse(a, r)
	}
	if i != gatedRead || len(st.counted) == 0 {
		return nil
	}
	now := g.now()
	var buf [4]held
	hs := buf[:0]
	for j := range st.counted {
		cs := &st.counted[j]
		k := cs.seriesKey(id, a)
		ser := g.tally.seriesOf(st, j, k, now.Unix())
		var tookShared bool
		var r *limitError
		if cs.typ.Cost() {
			r = g.tally.overBudget(ser, k, cs, now)
		} else {
			tookShared, r = g.tally.count(ser, k, cs, now)
		}
		if r != nil {
			for _, p := range hs {
				g.tally.uncount(p, now)
			}
			if h != nil && g.headers != HeadersNone {
				g.headers.set(h, g.tally.figures(st, id, a, now, nil), r)
			}
			return g.refuse(a, r)
		}
		hs = append(hs, held{ser, !cs.typ.Cost(), tookShared})
	}
	if h != nil && g.headers != HeadersNone {
		g.headers.set(h, g.tally.figures(st, id, a, now, hs), nil)
	}
	return nil
}

// Spend counts what an answered query cost against the caller's cost limits, which also sets what the caller's
// queries are expected to cost (Reserve): the stats VictoriaMetrics ends the answer with, or for a query without
// them (an error, a timeout, a client gone first, a VictoriaMetrics too old to give any, v1.151's `cpu[5m]`) the
// milliseconds the gateway measured and the series its answer held, if any. A nil Access is tenant 0:0. Callers
// without cost limits cost nothing.
func (g *Gate) Spend(a *auth.Access, seriesFetched int64, execMsec float64) {
	g.charge(a, true, func(cs *countedSet) int64 {
		if cs.typ == limitfile.SeriesFetched {
			return seriesFetched
		}
		return int64(math.Ceil(execMsec))
	})
}

// SpendAll counts an answered query whose cost could not be learned (the client left and its answer could not be
// finished within bounds, or the upstream compressed it in a way the gateway cannot read) as using up the whole
// budget of each of the caller's cost limits: the largest value among its windows. Charging nothing would let a
// caller escape its limits by leaving early; charging less than the budget would be a guess.
func (g *Gate) SpendAll(a *auth.Access) {
	g.charge(a, false, func(cs *countedSet) int64 {
		var n int64
		for w := range cs.limits {
			if l := cs.limits[w].limit; l.Type != 0 {
				n = max(n, int64(min(l.Value, maxCount)))
			}
		}
		return n
	})
}

// charge adds amount(cs) to each of the caller's cost limits (series_fetched, query_time_ms); the cost of an answer
// that told it (answered) also sets what the caller's queries are expected to cost.
func (g *Gate) charge(a *auth.Access, answered bool, amount func(cs *countedSet) int64) {
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	if !st.costed {
		return
	}
	sec := g.now().Unix()
	for j := range st.counted {
		cs := &st.counted[j]
		if !cs.typ.Cost() {
			continue
		}
		if n := min(amount(cs), maxCount); n > 0 {
			g.tally.spend(st, j, cs.seriesKey(id, a), sec, n, answered)
		}
	}
}

// Costed reports whether the caller has cost limits: the gateway then reads the stats of its query answers (and
// asks the upstream for them uncompressed) and passes them to Spend.
func (g *Gate) Costed(a *auth.Access) bool { return g.snap.Load().state(tenantOf(a)).costed }

// refuse answers a rejection: the error, counted; under dry run nil, counted and logged as what would have been.
func (g *Gate) refuse(a *auth.Access, r *limitError) error {
	if !g.dryRun {
		r.count.Inc()
		if r.status == http.StatusTooManyRequests && a != nil && a.Enforcer.Restricted() && (r.Limit.Key.IsZero() || r.KeyValue == "") {
			return sharedRefusal{r}
		}
		return r
	}
	r.dryCount.Inc()
	if ok, dropped := g.dryRunLog.allow(); ok {
		slog.Warn("dry run (-ratelimit.dryRun): the rate limiter would have rejected a request",
			"tenant", r.Tenant.String(), "status", r.status, "reason", r.Error(), "suppressed", dropped)
	}
	return nil
}

func tenantOf(a *auth.Access) tenant.ID {
	if a == nil {
		return tenant.ID{}
	}
	return a.Tenant
}
