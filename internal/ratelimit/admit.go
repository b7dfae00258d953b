package ratelimit

import (
	"log/slog"
	"math"
	"net/http"
	"time"

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
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	if r := st.decision[i].rejection; r != nil {
		if h != nil && g.headers != HeadersNone && i == gatedRead && r.status == http.StatusTooManyRequests {
			g.headers.set(h, g.figures(st, id, a, g.now(), nil), r)
		}
		return g.refuse(r)
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
		ser := g.seriesOf(st, j, k, now.Unix())
		var tookShared bool
		var r *limitError
		if cs.typ.Cost() {
			r = g.overBudget(ser, k, cs, now)
		} else {
			tookShared, r = g.count(ser, k, cs, now)
		}
		if r != nil {
			for _, p := range hs {
				g.uncount(p, now)
			}
			if h != nil && g.headers != HeadersNone {
				g.headers.set(h, g.figures(st, id, a, now, nil), r)
			}
			return g.refuse(r)
		}
		hs = append(hs, held{ser, !cs.typ.Cost(), tookShared})
	}
	if h != nil && g.headers != HeadersNone {
		g.headers.set(h, g.figures(st, id, a, now, hs), nil)
	}
	return nil
}

// seriesOf is the series of the j-th counted set of st for key k, from the state's cache when it has one.
func (g *Gate) seriesOf(st *tenantState, j int, k seriesKey, sec int64) *series {
	if k.key != 0 || st.series == nil {
		return g.counters.get(k, sec)
	}
	if s := st.series[j].Load(); s != nil && s.touch(sec) {
		return s
	}
	s := g.counters.get(k, sec)
	st.series[j].Store(s)
	return s
}

// held is a series a request has been checked against, whether it was counted there (a cost series counts
// answers, later), and whether it took a unit of the shared count.
type held struct {
	ser     *series
	counted bool
	shared  bool
}

// uncount takes back a count when another of the request's series refused it.
func (g *Gate) uncount(p held, now time.Time) {
	if !p.counted {
		return
	}
	p.ser.counts.add(now.Unix(), -1)
	if p.shared {
		g.store.giveBack(&p.ser.lease, now)
	}
}

// count counts a request in ser when the set's limits allow it, and else leaves ser as it was and says why not.
// Counting first and checking after makes concurrent requests see each other: of 16 racing for the last unit,
// exactly one finds the count below the limit.
func (g *Gate) count(ser *series, k seriesKey, cs *countedSet, now time.Time) (tookShared bool, _ *limitError) {
	sec := now.Unix()
	c := &ser.counts
	after := [numWindows]int64{winMinute: c.add(sec, 1)}
	after[winHour] = after[winMinute] + c.older()
	var worst decision
	for w := range cs.limits {
		l := &cs.limits[w]
		if l.limit.Type == 0 || after[w]-1 < int64(l.limit.Value) {
			continue
		}
		if retry := c.untilBelow(w, now, int64(l.limit.Value)+1); worst.Limit.Type == 0 || retry > worst.Reset {
			// +1: the count still holds this request until it is taken back below.
			worst = decision{Limit: l.limit, Usage: float64(after[w] - 1), Reset: retry}
		}
	}
	if worst.Limit.Type == 0 && g.store != nil {
		switch cl := g.store.take(&ser.lease, k, cs.values(), now); cl.verdict {
		case sharedOK:
			tookShared = true
		case sharedFull:
			worst = decision{Limit: cs.limits[cl.window].limit, Usage: float64(cl.usage), Reset: cl.freeAt.Sub(now)}
			c.add(sec, -1)
			return false, g.rules.rejection(k.tenant, worst, k.value, fromShared)
		}
	}
	if worst.Limit.Type == 0 {
		return tookShared, nil
	}
	c.add(sec, -1)
	return false, g.rules.rejection(k.tenant, worst, k.value, fromLocal)
}

// overBudget refuses a request when the costs already counted in ser (this replica's, or all replicas' with a
// store) have used up one of the set's cost limits. The request's own cost is known only from its answer: Spend
// counts it then.
func (g *Gate) overBudget(ser *series, k seriesKey, cs *countedSet, now time.Time) *limitError {
	if g.store != nil {
		g.store.sync(&ser.lease, k, cs.values(), now)
	}
	var worst decision
	source := fromLocal
	for w := range cs.limits {
		l := &cs.limits[w]
		if l.limit.Type == 0 {
			continue
		}
		value := int64(l.limit.Value)
		u := g.usageIn(ser, w, now)
		used, src := u.local, fromLocal
		if u.shared.fresh(now) && u.shared.n > used {
			used, src = u.shared.n, fromShared
		}
		if used < value {
			continue
		}
		retry := ser.counts.untilBelow(w, now, value)
		if src == fromShared && u.shared.freeAt.After(now) {
			retry = max(retry, u.shared.freeAt.Sub(now))
		}
		if worst.Limit.Type == 0 || retry > worst.Reset {
			worst, source = decision{Limit: l.limit, Usage: float64(used), Reset: retry}, src
		}
	}
	if worst.Limit.Type == 0 {
		return nil
	}
	return g.rules.rejection(k.tenant, worst, k.value, source)
}

// Spend counts what an answered query cost against the caller's cost limits: seriesFetched and execMsec are the
// stats VictoriaMetrics ends the answer with. A nil Access is tenant 0:0. Callers without cost limits cost nothing.
func (g *Gate) Spend(a *auth.Access, seriesFetched int64, execMsec float64) {
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	if !st.costed {
		return
	}
	now := g.now()
	sec := now.Unix()
	for j := range st.counted {
		cs := &st.counted[j]
		var n int64
		switch cs.typ {
		case limitfile.SeriesFetched:
			n = seriesFetched
		case limitfile.QueryTimeMs:
			n = int64(math.Ceil(execMsec))
		default:
			continue
		}
		if n <= 0 {
			continue
		}
		ser := g.seriesOf(st, j, cs.seriesKey(id, a), sec)
		ser.counts.add(sec, n)
		if g.store != nil {
			g.store.spend(&ser.lease, n)
		}
	}
}

// Costed reports whether the caller has cost limits: the gateway then reads the stats of its query answers (and
// asks the upstream for them uncompressed) and passes them to Spend.
func (g *Gate) Costed(a *auth.Access) bool { return g.snap.Load().state(tenantOf(a)).costed }

// refuse answers a rejection: the error, counted; under dry run nil, counted and logged as what would have been.
func (g *Gate) refuse(r *limitError) error {
	if !g.dryRun {
		r.count.Inc()
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

// sharedFresh is how long the shared count seen at a claim describes the present: a series in use claims at least
// once a second, so an older figure is from a series this replica no longer uses.
const sharedFresh = 2 * time.Second

// figure is the caller's usage against one counted limit, from wherever it is largest.
type figure struct {
	limit    limitfile.Limit
	keyValue string
	usage    float64
	source   string
	// reset is, under the limit, how long until the oldest count leaves the window (the window's length when the
	// datasource's figure decides: it does not say when its usage happened); over it, until a request can pass.
	reset time.Duration
}

func (f figure) over() bool { return f.usage >= float64(f.limit.Value) }

// windowUsage is what one series has counted in one window, read at one instant: the value the figures of
// headers and of the status page are made from, so that neither reads counters or leases.
type windowUsage struct {
	local  int64
	shared sharedFigure
}

// usageIn reads ser's counts of window w at now; nil ser has counted nothing.
func (g *Gate) usageIn(ser *series, w int, now time.Time) windowUsage {
	if ser == nil {
		return windowUsage{}
	}
	u := windowUsage{local: ser.counts.count(w, now.Unix())}
	if g.store != nil {
		u.shared = g.store.seen(&ser.lease, w, now)
	}
	return u
}

// fresh reports whether the shared count describes the present.
func (f sharedFigure) fresh(now time.Time) bool { return f.ok && now.Sub(f.at) <= sharedFresh }

// figures evaluates the caller's counted limits at now. hs are the series the request was just counted in;
// without them the series are looked up, and none is made.
func (g *Gate) figures(st *tenantState, id tenant.ID, a *auth.Access, now time.Time, hs []held) []figure {
	var out []figure
	for j := range st.counted {
		cs := &st.counted[j]
		k := cs.seriesKey(id, a)
		var ser *series
		if j < len(hs) {
			ser = hs[j].ser
		} else {
			ser = g.counters.lookup(k)
		}
		for w := range cs.limits {
			l := &cs.limits[w]
			if l.limit.Type == 0 {
				continue
			}
			f := figure{limit: l.limit, keyValue: k.value, usage: l.usage, source: fromDatasource}
			u := g.usageIn(ser, w, now)
			if local := float64(u.local); local > f.usage {
				f.usage, f.source = local, fromLocal
			}
			if shared := float64(u.shared.n); u.shared.fresh(now) && shared > f.usage {
				f.usage, f.source = shared, fromShared
			}
			f.reset = g.figureReset(f, ser, u, w, now, l)
			out = append(out, f)
		}
	}
	return out
}

func (g *Gate) figureReset(f figure, ser *series, u windowUsage, w int, now time.Time, l *applied) time.Duration {
	value := int64(l.limit.Value)
	if !f.over() {
		if ser != nil && f.source != fromDatasource {
			if d := ser.counts.untilOldestLeaves(w, now); d > 0 {
				return roundUpSeconds(d)
			}
		}
		return meterOf(l.limit).window()
	}
	var d time.Duration
	if l.usage >= float64(value) {
		d = g.rules.retryAfter(*l)
	}
	if ser != nil {
		d = max(d, ser.counts.untilBelow(w, now, value))
		if f.source == fromShared && u.shared.freeAt.After(now) {
			d = max(d, u.shared.freeAt.Sub(now))
		}
	}
	return roundUpSeconds(d)
}
