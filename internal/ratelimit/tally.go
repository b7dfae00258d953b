package ratelimit

import (
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// tally is the gate's own counting: the series of every tenant and key value it counts requests and query costs
// in, the store that shares them between replicas (nil without Redis), and the figures read from them.
type tally struct {
	counters *counters
	store    counterStore
	rules    *rules
}

// seriesOf is the series of the j-th counted set of st for key k, from the state's cache when it has one.
func (t *tally) seriesOf(st *tenantState, j int, k seriesKey, sec int64) *series {
	if k.key != 0 || st.series == nil {
		return t.counters.get(k, sec)
	}
	if s := st.series[j].Load(); s != nil && s.touch(sec) {
		return s
	}
	s := t.counters.get(k, sec)
	st.series[j].Store(s)
	return s
}

// spend counts n of a cost in the j-th counted set of st for key k, and in the shared count with a store. The cost
// of an answer that told it (answered) sets what the caller's next queries are expected to cost (Reserve).
func (t *tally) spend(st *tenantState, j int, k seriesKey, sec, n int64, answered bool) {
	ser := t.seriesOf(st, j, k, sec)
	ser.counts.add(sec, n)
	if t.store != nil {
		t.store.spend(&ser.lease, n)
	}
	if answered {
		ser.expect.add(n, sec, st.counted[j].period())
	}
}

// held is a series a request has been checked against, whether it was counted there (a cost series counts
// answers, later), and whether it took a unit of the shared count.
type held struct {
	ser     *series
	counted bool
	shared  bool
}

// uncount takes back a count when another of the request's series refused it.
func (t *tally) uncount(p held, now time.Time) {
	if !p.counted {
		return
	}
	p.ser.counts.add(now.Unix(), -1)
	if p.shared {
		t.store.giveBack(&p.ser.lease, now)
	}
}

// count counts a request in ser when the set's limits allow it, and else leaves ser as it was and says why not.
// Counting first and checking after makes concurrent requests see each other: of 16 racing for the last unit,
// exactly one finds the count below the limit.
func (t *tally) count(ser *series, k seriesKey, cs *countedSet, now time.Time) (tookShared bool, _ *limitError) {
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
	if worst.Limit.Type == 0 && t.store != nil {
		switch cl := t.store.take(&ser.lease, k, cs.values(), now); cl.verdict {
		case sharedOK:
			tookShared = true
		case sharedFull:
			worst = decision{Limit: cs.limits[cl.window].limit, Usage: float64(cl.usage), Reset: cl.freeAt.Sub(now)}
			c.add(sec, -1)
			return false, t.rules.rejection(k.tenant, worst, k.value, fromShared)
		}
	}
	if worst.Limit.Type == 0 {
		return tookShared, nil
	}
	c.add(sec, -1)
	return false, t.rules.rejection(k.tenant, worst, k.value, fromLocal)
}

// overBudget refuses a request when the costs already counted in ser (this replica's, or all replicas' with a
// store) have used up one of the set's cost limits. The request's own cost is known only from its answer: Spend
// counts it then.
func (t *tally) overBudget(ser *series, k seriesKey, cs *countedSet, now time.Time) *limitError {
	if t.store != nil {
		t.store.sync(&ser.lease, k, cs.values(), now)
	}
	var worst decision
	source := fromLocal
	for w := range cs.limits {
		l := &cs.limits[w]
		if l.limit.Type == 0 {
			continue
		}
		value := int64(l.limit.Value)
		used, src, retry := t.enforced(ser, w, now, value)
		if used < value {
			continue
		}
		if worst.Limit.Type == 0 || retry > worst.Reset {
			worst, source = decision{Limit: l.limit, Usage: float64(used), Reset: retry}, src
		}
	}
	if worst.Limit.Type == 0 {
		return nil
	}
	return t.rules.rejection(k.tenant, worst, k.value, source)
}

// enforced is what ser has used in window w by the figure the gate enforces (this replica's count, or all replicas'
// while a fresh shared one is larger) and where it came from; once used is at value, also when a request can pass.
func (t *tally) enforced(ser *series, w int, now time.Time, value int64) (used int64, src string, retry time.Duration) {
	u := t.usageIn(ser, w, now)
	used, src = u.local, fromLocal
	if u.shared.fresh(now) && u.shared.n > used {
		used, src = u.shared.n, fromShared
	}
	if used >= value {
		retry = ser.counts.untilBelow(w, now, value)
		if src == fromShared && u.shared.freeAt.After(now) {
			retry = max(retry, u.shared.freeAt.Sub(now))
		}
	}
	return used, src, retry
}

// windowUsage is what one series has counted in one window, read at one instant: the value the figures of
// headers and of the status page are made from, so that neither reads counters or leases.
type windowUsage struct {
	local  int64
	shared sharedFigure
}

// usageIn reads ser's counts of window w at now; nil ser has counted nothing.
func (t *tally) usageIn(ser *series, w int, now time.Time) windowUsage {
	if ser == nil {
		return windowUsage{}
	}
	u := windowUsage{local: ser.counts.count(w, now.Unix())}
	if t.store != nil {
		u.shared = t.store.seen(&ser.lease, w, now)
	}
	return u
}

// fresh reports whether the shared count describes the present.
func (f sharedFigure) fresh(now time.Time) bool { return f.ok && now.Sub(f.at) <= sharedFresh }

// figures evaluates the caller's counted limits at now. hs are the series the request was just counted in;
// without them the series are looked up, and none is made.
func (t *tally) figures(st *tenantState, id tenant.ID, a *auth.Access, now time.Time, hs []held) []figure {
	var out []figure
	narrowed := a != nil && a.Enforcer.Restricted()
	for j := range st.counted {
		cs := &st.counted[j]
		k := cs.seriesKey(id, a)
		if narrowed && (cs.key.IsZero() || k.value == "") {
			// A caller narrowed within its tenant (extra_labels, extra_filters) is one team of several there: a
			// tenant-wide count, or the one count of the callers without the key's claim or label, sums the other
			// teams' requests too, which the headers would show it request by request. Only a refusal by such a
			// limit still tells it the limit is used up (the 429 and its Retry-After).
			continue
		}
		var ser *series
		if j < len(hs) {
			ser = hs[j].ser
		} else {
			ser = t.counters.lookup(k)
		}
		for w := range cs.limits {
			l := &cs.limits[w]
			if l.limit.Type == 0 {
				continue
			}
			f := figure{limit: l.limit, keyValue: k.value, usage: l.usage, source: fromDatasource}
			u := t.usageIn(ser, w, now)
			if local := float64(u.local); local > f.usage {
				f.usage, f.source = local, fromLocal
			}
			if shared := float64(u.shared.n); u.shared.fresh(now) && shared > f.usage {
				f.usage, f.source = shared, fromShared
			}
			f.reset = t.figureReset(f, ser, u, w, now, l)
			out = append(out, f)
		}
	}
	return out
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

func (t *tally) figureReset(f figure, ser *series, u windowUsage, w int, now time.Time, l *applied) time.Duration {
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
		d = t.rules.retryAfter(*l)
	}
	if ser != nil {
		d = max(d, ser.counts.untilBelow(w, now, value))
		if f.source == fromShared && u.shared.freeAt.After(now) {
			d = max(d, u.shared.freeAt.Sub(now))
		}
	}
	return roundUpSeconds(d)
}
