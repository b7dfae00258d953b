package ratelimit

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Admit judges a request to API rt by the caller a and, when it passes, counts it: nil, or a *Rejection. With
// Config.Headers it sets the rate-limit headers on h for passing and rejected requests alike (h may be nil).
// A nil Access is judged as tenant 0:0. Under Config.DryRun it rejects nothing, but counts what it would have.
//
// Queries limits are enforced on the largest of the datasource's usage, the gate's own count of the requests it
// admitted and, with Redis, the count all replicas share; a burst is cut at the limit before the datasource has
// seen it. The other limit types count rows and series, which a gateway streaming write bodies never sees: the
// datasource's figures alone decide them.
func (g *Gate) Admit(a *auth.Access, rt route.Route, h http.Header) error {
	i := gatedIndex(rt.Kind)
	if i < 0 {
		return nil
	}
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	if r := st.decision[i].rejection; r != nil {
		if h != nil && g.headers != HeadersNone && i == gatedRead && r.status == http.StatusTooManyRequests {
			g.setHeaders(h, g.figures(st, id, a, g.now(), nil), r)
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
		k := seriesKey{tenant: id, key: cs.keyID}
		if !cs.key.IsZero() {
			k.value = cs.key.Value(a)
		}
		ser := g.seriesOf(st, j, k, now.Unix())
		tookShared, r := g.count(ser, k, cs, now)
		if r != nil {
			for _, p := range hs {
				p.uncount(now)
			}
			if h != nil && g.headers != HeadersNone {
				g.setHeaders(h, g.figures(st, id, a, now, nil), r)
			}
			return g.refuse(r)
		}
		hs = append(hs, held{ser, tookShared})
	}
	if h != nil && g.headers != HeadersNone {
		g.setHeaders(h, g.figures(st, id, a, now, hs), nil)
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

// held is a series a request has been counted in, and whether it took a unit of the shared count.
type held struct {
	ser    *series
	shared bool
}

// uncount takes back a count when another of the request's series refused it.
func (p held) uncount(now time.Time) {
	sec := now.Unix()
	p.ser.counts.add(sec, -1)
	if p.shared {
		p.ser.lease.giveBack(sec)
	}
}

// count counts a request in ser when the set's limits allow it, and else leaves ser as it was and says why not.
// Counting first and checking after makes concurrent requests see each other: of 16 racing for the last unit,
// exactly one finds the count below the limit.
func (g *Gate) count(ser *series, k seriesKey, cs *countedSet, now time.Time) (tookShared bool, _ *Rejection) {
	sec := now.Unix()
	c := &ser.counts
	after := [numWindows]int64{winMinute: c.add(sec, 1)}
	after[winHour] = after[winMinute] + c.older()
	var worst Decision
	for w := range cs.limits {
		l := &cs.limits[w]
		if l.limit.Type == 0 || after[w]-1 < int64(l.limit.Value) {
			continue
		}
		if retry := c.untilBelow(w, now, int64(l.limit.Value)+1); worst.Limit.Type == 0 || retry > worst.Reset {
			// +1: the count still holds this request until it is taken back below.
			worst = Decision{Limit: l.limit, Usage: float64(after[w] - 1), Reset: retry}
		}
	}
	if worst.Limit.Type == 0 && g.shared != nil {
		switch v, free := g.shared.take(ser, k, cs.values(), now); v {
		case sharedOK:
			tookShared = true
		case sharedFull:
			w := ser.lease.fullWindow(cs)
			worst = Decision{Limit: cs.limits[w].limit, Usage: float64(ser.lease.seen[w].Load()), Reset: free.Sub(now)}
			c.add(sec, -1)
			return false, g.rejection(k.tenant, worst, k.value, fromShared)
		}
	}
	if worst.Limit.Type == 0 {
		return tookShared, nil
	}
	c.add(sec, -1)
	return false, g.rejection(k.tenant, worst, k.value, fromLocal)
}

// fullWindow is the window whose shared count reached its limit at the last claim.
func (l *lease) fullWindow(cs *countedSet) int {
	for w := range cs.limits {
		if v := cs.limits[w].limit.Value; v != 0 && cs.limits[w].limit.Type != 0 && l.seen[w].Load() >= int64(v) {
			return w
		}
	}
	for w := range cs.limits {
		if cs.limits[w].limit.Type != 0 {
			return w
		}
	}
	return winMinute
}

// refuse answers a rejection: the error, counted; under dry run nil, counted and logged as what would have been.
func (g *Gate) refuse(r *Rejection) error {
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

// Decide is what Admit would answer now, without counting anything: the limit that matters (the rejecting one
// that blocks longest, or else the one nearest to its value) and the caller's usage against it.
func (g *Gate) Decide(a *auth.Access, rt route.Route) Decision {
	i := gatedIndex(rt.Kind)
	if i < 0 {
		return Decision{}
	}
	id := tenantOf(a)
	st := g.snap.Load().state(id)
	d := st.decision[i]
	if d.rejection != nil || i != gatedRead || len(st.counted) == 0 {
		return d
	}
	var best figure
	over, nearest := false, -1.0
	for _, f := range g.figures(st, id, a, g.now(), nil) {
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
	d = Decision{Limit: best.limit, Usage: best.usage, Reset: best.reset}
	if over {
		d.rejection = g.rejection(id, d, best.keyValue, best.source)
	}
	return d
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
	limit    Limit
	keyValue string
	usage    float64
	source   string
	// reset is, under the limit, how long until the oldest count leaves the window (the window's length when the
	// datasource's figure decides: it does not say when its usage happened); over it, until a request can pass.
	reset time.Duration
}

func (f figure) over() bool { return f.usage >= float64(f.limit.Value) }

// figures evaluates the caller's counted limits at now. hs are the series the request was just counted in;
// without them the series are looked up, and none is made.
func (g *Gate) figures(st *tenantState, id tenant.ID, a *auth.Access, now time.Time, hs []held) []figure {
	sec := now.Unix()
	var out []figure
	for j := range st.counted {
		cs := &st.counted[j]
		k := seriesKey{tenant: id, key: cs.keyID}
		if !cs.key.IsZero() {
			k.value = cs.key.Value(a)
		}
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
			var local, shared float64
			var sharedOK bool
			if ser != nil {
				local = float64(ser.counts.count(w, sec))
				if g.shared != nil && g.shared.up.Load() {
					n, at, ok := ser.lease.usage(w, sec)
					shared, sharedOK = float64(n), ok && now.Sub(at) <= sharedFresh
				}
			}
			if local > f.usage {
				f.usage, f.source = local, fromLocal
			}
			if sharedOK && shared > f.usage {
				f.usage, f.source = shared, fromShared
			}
			f.reset = g.figureReset(f, ser, w, now, l)
			out = append(out, f)
		}
	}
	return out
}

func (g *Gate) figureReset(f figure, ser *series, w int, now time.Time, l *applied) time.Duration {
	value := int64(l.limit.Value)
	if !f.over() {
		if ser != nil && f.source != fromDatasource {
			if d := ser.counts.untilOldestLeaves(w, now); d > 0 {
				return roundUpSeconds(d)
			}
		}
		return l.limit.meter().window()
	}
	var d time.Duration
	if l.usage >= float64(value) {
		d = g.retryAfter(*l)
	}
	if ser != nil {
		d = max(d, ser.counts.untilBelow(w, now, value))
		if f.source == fromShared {
			if free := ser.lease.freeAt.Load(); free > now.UnixNano() {
				d = max(d, time.Duration(free-now.UnixNano()))
			}
		}
	}
	return roundUpSeconds(d)
}
