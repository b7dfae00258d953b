package gateway

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// concurrency bounds the requests in flight, globally and per isolation unit: a tenant and, within it, the tokens
// of one set of label restrictions (enforce.Enforcer.Fingerprint), so that in single-node mode, where every team is
// tenant 0:0, one team's requests never take another team's slots. A request that finds no free slot waits in
// a short queue (-maxQueueDuration) and is refused with 429 after it. Slots are buffered-channel semaphores: a
// free slot costs one non-blocking channel send, and a timer is made only for a request that has to wait.
type concurrency struct {
	global    chan struct{} // nil: no global limit
	perTenant int           // 0: no per-tenant limit
	parses    int           // the parse slots of a unit (parseGate)
	queue     time.Duration

	mu      sync.Mutex
	tenants map[unit]*tenantSlots
	// sweepAt is the map size at which idle tenants are dropped: they stay in between, so a steady tenant's
	// requests do not make and drop its entry each time, and tenants never accumulate.
	sweepAt int
}

// unit is an isolation unit: a tenant, and the fingerprint of the token's restrictions (0: unrestricted).
type unit struct {
	tenant      tenant.ID
	restriction enforce.Fingerprint
}

// unitOf is the isolation unit of a token of tenant t narrowed by e.
func unitOf(t tenant.ID, e *enforce.Enforcer) unit {
	return unit{tenant: t, restriction: e.Fingerprint()}
}

// tenantSlots is one unit's semaphores: its request slots and its read bodies' (nil without a per-tenant limit), and
// its parse slots (parseGate). refs counts the requests holding or waiting for any; at zero the entry is idle and may
// be swept.
type tenantSlots struct {
	sem chan struct{}
	// bodies are the unit's read bodies the gateway reads at once (acquireBody), as many as sem.
	bodies chan struct{}
	parse  chan struct{}
	// count is the unit's one count of a query's samples at a time (samples.go).
	count chan struct{}
	refs  int
}

var (
	inFlight atomic.Int64
	queued   atomic.Int64

	_ = metrics.NewGauge(`vmgateway_concurrent_requests`, func() float64 { return float64(inFlight.Load()) })
	_ = metrics.NewGauge(`vmgateway_concurrent_requests_queued`, func() float64 { return float64(queued.Load()) })

	rejectedGlobal = metrics.NewCounter(`vmgateway_concurrency_rejected_total{scope="global"}`)
	rejectedTenant = metrics.NewCounter(`vmgateway_concurrency_rejected_total{scope="tenant"}`)
	rejectedParse  = metrics.NewCounter(`vmgateway_concurrency_rejected_total{scope="parse"}`)
	rejectedBody   = metrics.NewCounter(`vmgateway_concurrency_rejected_total{scope="body"}`)
	rejectedCount  = metrics.NewCounter(`vmgateway_concurrency_rejected_total{scope="count"}`)
)

func newConcurrency(global, perTenant int, queue time.Duration) *concurrency {
	c := &concurrency{perTenant: perTenant, parses: parseSlots(), queue: queue, tenants: map[unit]*tenantSlots{}, sweepAt: minSweep}
	if global > 0 {
		c.global = make(chan struct{}, global)
	}
	return c
}

// acquire takes a slot of the tenant's unit for tokens restricted like e, then a global one, waiting at most what
// the request has left of the queue duration for both together: queued is what it already waited for a parse slot
// (parseGate.queued). The unit's slot comes first, so a busy unit's queued requests never hold global slots that
// others could use. The caller must pass the returned slots to release once the request is done.
func (c *concurrency) acquire(ctx context.Context, t tenant.ID, e *enforce.Enforcer, queued time.Duration) (*tenantSlots, error) {
	q := queueTime{before: queued}
	defer q.stop()
	var ts *tenantSlots
	if c.perTenant > 0 {
		ts = c.ref(unitOf(t, e))
		if err := c.wait(ctx, ts.sem, &q); err != nil {
			c.unref(ts)
			if err == errQueueFull {
				rejectedTenant.Inc()
				return nil, &overloadError{scope: "tenant", tenant: t, restriction: e, limit: c.perTenant, queue: c.queue}
			}
			return nil, err
		}
	}
	if c.global != nil {
		if err := c.wait(ctx, c.global, &q); err != nil {
			if ts != nil {
				<-ts.sem
				c.unref(ts)
			}
			if err == errQueueFull {
				rejectedGlobal.Inc()
				return nil, &overloadError{scope: "global", limit: cap(c.global), queue: c.queue}
			}
			return nil, err
		}
	}
	inFlight.Add(1)
	return ts, nil
}

// A read's body is read whole before the request takes its slot, so that a client slow to send it does not hold
// one of its team's request slots. But a connection whose body is read is active, and is never evicted to make room
// under -http.maxConnections: one team's 15,500 connections, each sending a form a byte short and its last byte
// before -http.readBodyTimeout, then another, kept every other client out (an attacker's review). So a unit reads
// at most -maxConcurrentPerTenantRequests bodies at once, as it sends at most as many write bodies, and the others
// wait for one within the queue duration, then get 429, as a request waits for its slot.

// acquireBody takes one of the unit's slots for reading a read's body, waiting at most the queue duration, and says
// how long it waited, which counts against the request's later waits. Nil without a per-tenant limit; the caller
// must pass the returned slots to releaseBody once the body is read.
func (c *concurrency) acquireBody(ctx context.Context, t tenant.ID, e *enforce.Enforcer) (*tenantSlots, time.Duration, error) {
	if c.perTenant <= 0 {
		return nil, 0, nil
	}
	q := queueTime{}
	defer q.stop()
	ts := c.ref(unitOf(t, e))
	if err := c.wait(ctx, ts.bodies, &q); err != nil {
		c.unref(ts)
		if err == errQueueFull {
			rejectedBody.Inc()
			return nil, 0, &overloadError{scope: "body", tenant: t, restriction: e, limit: c.perTenant, queue: c.queue}
		}
		return nil, 0, err
	}
	if q.timer == nil {
		return ts, 0, nil
	}
	return ts, time.Since(q.start), nil
}

func (c *concurrency) releaseBody(ts *tenantSlots) {
	if ts != nil {
		<-ts.bodies
		c.unref(ts)
	}
}

// release gives back the slots acquire took.
func (c *concurrency) release(ts *tenantSlots) {
	inFlight.Add(-1)
	if c.global != nil {
		<-c.global
	}
	if ts != nil {
		<-ts.sem
		c.unref(ts)
	}
}

var (
	errQueueFull   = httperr.New(http.StatusTooManyRequests, "queue full")
	errGoneInQueue = httperr.New(499, "the client went away while its request was queued")
)

// queueTime is one request's time in the queue, shared by its waits for a tenant and a global slot, and counted
// from what it waited before for a parse slot, so that -maxQueueDuration bounds a request's whole wait. The timer is
// made only when a request has to wait.
type queueTime struct {
	timer *time.Timer
	spent bool
	// before is the time the request waited in an earlier queue; start is when the timer was made.
	before time.Duration
	start  time.Time
}

func (q *queueTime) stop() {
	if q.timer != nil {
		q.timer.Stop()
	}
}

// wait takes a slot of sem: at once if one is free, else within what is left of the queue duration.
func (c *concurrency) wait(ctx context.Context, sem chan struct{}, q *queueTime) error {
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	if c.queue <= q.before || q.spent {
		return errQueueFull
	}
	if q.timer == nil {
		q.start, q.timer = time.Now(), time.NewTimer(c.queue-q.before)
	}
	queued.Add(1)
	defer queued.Add(-1)
	select {
	case sem <- struct{}{}:
		return nil
	case <-q.timer.C:
		q.spent = true
		return errQueueFull
	case <-ctx.Done():
		return errGoneInQueue
	}
}

func (c *concurrency) ref(u unit) *tenantSlots {
	c.mu.Lock()
	ts := c.tenants[u]
	if ts == nil {
		if len(c.tenants) >= c.sweepAt {
			c.sweep()
		}
		ts = &tenantSlots{parse: make(chan struct{}, c.parses), count: make(chan struct{}, 1)}
		if c.perTenant > 0 {
			ts.sem, ts.bodies = make(chan struct{}, c.perTenant), make(chan struct{}, c.perTenant)
		}
		c.tenants[u] = ts
	}
	ts.refs++
	c.mu.Unlock()
	return ts
}

func (c *concurrency) unref(ts *tenantSlots) {
	c.mu.Lock()
	ts.refs--
	c.mu.Unlock()
}

// minSweep is the least number of tenant entries kept before idle ones are dropped.
const minSweep = 1024

// sweep drops idle tenants; the next sweep waits until the map has doubled, so sweeping costs O(1) a request.
func (c *concurrency) sweep() {
	for id, ts := range c.tenants {
		if ts.refs == 0 {
			delete(c.tenants, id)
		}
	}
	c.sweepAt = max(minSweep, 2*len(c.tenants))
}

// overloadError is a request refused because its unit or the whole gateway has all its slots busy.
type overloadError struct {
	scope       string
	tenant      tenant.ID
	restriction *enforce.Enforcer
	limit       int
	queue       time.Duration
}

func (e *overloadError) Error() string {
	who := e.tenant.String()
	if e.restriction.Restricted() {
		who += " (tokens restricted to " + e.restriction.String() + ")"
	}
	switch e.scope {
	case "tenant":
		return fmt.Sprintf("too many concurrent requests for tenant %s: all -maxConcurrentPerTenantRequests=%d are in flight "+
			"and none finished within -maxQueueDuration=%s; retry later or send fewer requests at once", who, e.limit, e.queue)
	case "body":
		return fmt.Sprintf("too many request bodies at once for tenant %s: it sends -maxConcurrentPerTenantRequests=%d "+
			"whose bodies are still coming, and none came whole within -maxQueueDuration=%s; send each body at once, or "+
			"fewer requests at once", who, e.limit, e.queue)
	case "parse":
		return fmt.Sprintf("too many new queries at once for tenant %s: its %d parse slots (a quarter of the gateway's CPUs, "+
			"at least one) were busy for -maxQueueDuration=%s; queries the gateway has seen recently need no slot: "+
			"retry later, or send fewer new queries at once", who, e.limit, e.queue)
	case "count":
		return fmt.Sprintf("too many queries at once for tenant %s whose samples the gateway counts (-search.measureSamples): "+
			"it counts one query's at a time for a team, and the one under way took past -read.maxQueueDuration=%s; retry later, "+
			"or send those queries one after another", who, e.queue)
	case "backend":
		return fmt.Sprintf("the read backends are busy: all %d reads they run at once (-read.maxConcurrentRequests, by default "+
			"their -search.maxConcurrentRequests) were in flight for -read.maxQueueDuration=%s while the teams waiting took "+
			"turns; retry later", e.limit, e.queue)
	case "write_backend":
		return fmt.Sprintf("the write backends are busy: all %d writes they take at once (-write.maxConcurrentRequests, by default "+
			"their -maxConcurrentInserts) were in flight for -write.maxQueueDuration=%s while the teams waiting took turns; "+
			"retry later", e.limit, e.queue)
	}
	return fmt.Sprintf("too many concurrent requests: all -maxConcurrentRequests=%d are in flight and none finished "+
		"within -maxQueueDuration=%s; retry later", e.limit, e.queue)
}

// HTTPStatus is 429: the client may retry after Retry-After.
func (e *overloadError) HTTPStatus() int { return http.StatusTooManyRequests }

// RetryAfter is short: slots free up as soon as the requests in flight finish.
func (e *overloadError) RetryAfter() time.Duration { return time.Second }
