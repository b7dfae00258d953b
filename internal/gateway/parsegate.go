package gateway

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/procs"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// parseSlots is how many requests of one unit may parse new queries at once: a quarter of the CPUs, at least one.
// A query no cache holds costs up to tens of milliseconds of CPU to parse (enforce's budgets bound it, they cannot
// make it free), and it is parsed before the request takes a request slot, since -maxConcurrentPerTenantRequests
// (300 by default) bounds what VictoriaMetrics runs, not the gateway's CPU. Without this bound one team sending new
// queries on many connections would hold most of the gateway's CPU, and every other team's requests would queue
// behind its parses; with it, one team parses on at most a quarter of the CPUs, and its further new queries wait
// for its own slots. Queries the caches hold, which are most of a dashboard's, pass without a slot.
func parseSlots() int { return max(1, procs.Max()/4) }

// parseGate is the enforce.Gate of one request. The request takes a parse slot of its unit at its first parse and
// holds it until its args are checked and rewritten (release), waiting for it within -maxQueueDuration like for a
// request slot.
type parseGate struct {
	c       *concurrency
	ctx     context.Context
	unit    unit
	e       *enforce.Enforcer
	ts      *tenantSlots // the unit's slots while the request holds a parse slot
	q       queueTime
	refused error
	// queued is how long the request waited for its parse slot, which counts against -maxQueueDuration when it
	// waits for a request slot next.
	queued time.Duration
}

// init readies g for the request of ctx, whose unit is t and tokens restricted like e, and which has waited queued
// already (for its body's slot); nothing is taken yet.
func (g *parseGate) init(c *concurrency, ctx context.Context, t tenant.ID, e *enforce.Enforcer, queued time.Duration) {
	*g = parseGate{c: c, ctx: ctx, unit: unitOf(t, e), e: e, q: queueTime{before: queued}, queued: queued}
}

// Enter takes a parse slot of the unit unless the request holds one. A refused request gets its refusal again
// rather than waiting a second time.
func (g *parseGate) Enter() error {
	if g.ts != nil || g.refused != nil {
		return g.refused
	}
	ts := g.c.ref(g.unit)
	if err := g.c.wait(g.ctx, ts.parse, &g.q); err != nil {
		g.c.unref(ts)
		if err == errQueueFull {
			rejectedParse.Inc()
			err = &overloadError{scope: "parse", tenant: g.unit.tenant, restriction: g.e, limit: cap(ts.parse), queue: g.c.queue}
		}
		g.refused = err
		return err
	}
	g.ts = ts
	if g.q.timer != nil {
		g.queued = g.q.before + time.Since(g.q.start)
	}
	return nil
}

// partition names u to the caches of parsed queries (enforce.Parsed.SetGate), which keep each unit's apart: a unit
// whose request finds its query cached passes without a parse slot, and that must tell it nothing of what other
// units asked. Never 0, which a request without a unit has.
func (u unit) partition() uint64 {
	// 64 bits of the restriction's SHA-256: another unit's partition cannot be chosen either.
	h := binary.LittleEndian.Uint64(u.restriction[:8]) ^ (uint64(u.tenant.AccountID)<<32|uint64(u.tenant.ProjectID))*0x9E3779B97F4A7C15
	return h | 1<<63
}

// yield gives the slot back, if the request holds one, while the request waits on something else than its CPU (the
// count of its samples, samples.go); a parse after it takes one again.
func (g *parseGate) yield() {
	if g == nil || g.ts == nil {
		return
	}
	<-g.ts.parse
	g.c.unref(g.ts)
	g.ts = nil
	// A parse after it waits anew, what it waited before counted: the old timer may have fired meanwhile (a review).
	g.q.stop()
	g.q = queueTime{before: g.queued}
}

// release gives the slot back, if the request took one, and drops what g held of the request.
func (g *parseGate) release() {
	g.q.stop()
	if g.ts != nil {
		<-g.ts.parse
		g.c.unref(g.ts)
	}
	*g = parseGate{}
}
