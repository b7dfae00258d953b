package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

var (
	tenantA = tenant.ID{AccountID: 1}
	tenantB = tenant.ID{AccountID: 2}
)

// mustAcquire takes a slot that must be free.
func mustAcquire(t *testing.T, c *concurrency, id tenant.ID) *tenantSlots {
	t.Helper()
	ts, err := c.acquire(context.Background(), id, nil, 0)
	if err != nil {
		t.Fatalf("acquire for %s: %s", id, err)
	}
	return ts
}

func wantOverload(t *testing.T, err error, scope string) {
	t.Helper()
	var oe *overloadError
	if !errors.As(err, &oe) || oe.scope != scope {
		t.Fatalf("got %v; want a %s overload error", err, scope)
	}
	if httperr.Status(err) != http.StatusTooManyRequests || oe.RetryAfter() <= 0 {
		t.Fatalf("status %d, Retry-After %s; want 429 with a Retry-After", httperr.Status(err), oe.RetryAfter())
	}
}

func TestConcurrencyGlobalLimit(t *testing.T) {
	c := newConcurrency(2, 0, 0)
	before := rejectedGlobal.Get()
	a, b := mustAcquire(t, c, tenantA), mustAcquire(t, c, tenantB)
	_, err := c.acquire(context.Background(), tenantA, nil, 0)
	wantOverload(t, err, "global")
	if got := rejectedGlobal.Get() - before; got != 1 {
		t.Errorf("vmgateway_concurrency_rejected_total{scope=\"global\"} grew by %d, want 1", got)
	}
	c.release(a)
	c.release(mustAcquire(t, c, tenantA))
	c.release(b)
	if len(c.global) != 0 {
		t.Fatalf("%d global slots still taken after every release", len(c.global))
	}
}

func TestConcurrencyUnlimited(t *testing.T) {
	c := newConcurrency(0, 0, 0)
	var held []*tenantSlots
	for i := 0; i < 10000; i++ {
		held = append(held, mustAcquire(t, c, tenantA))
	}
	for _, ts := range held {
		c.release(ts)
	}
}

// TestConcurrencyPerTenant: one tenant at its limit is refused while another still gets through, and a tenant's
// entry goes away with its last request.
func TestConcurrencyPerTenant(t *testing.T) {
	c := newConcurrency(10, 1, 0)
	before := rejectedTenant.Get()
	a := mustAcquire(t, c, tenantA)
	_, err := c.acquire(context.Background(), tenantA, nil, 0)
	wantOverload(t, err, "tenant")
	if msg := err.Error(); !strings.Contains(msg, "tenant 1:0") || !strings.Contains(msg, "-maxConcurrentPerTenantRequests=1") {
		t.Errorf("message %q should name the tenant and the flag", msg)
	}
	if got := rejectedTenant.Get() - before; got != 1 {
		t.Errorf("vmgateway_concurrency_rejected_total{scope=\"tenant\"} grew by %d, want 1", got)
	}
	b := mustAcquire(t, c, tenantB)
	c.release(a)
	c.release(b)
	if busyTenants(c) != 0 || len(c.global) != 0 {
		t.Fatalf("after every release: %d tenant entries, %d global slots taken; want none", busyTenants(c), len(c.global))
	}
}

// TestConcurrencyTenantsDoNotAccumulate: tenants come and go (in cluster mode without auth, clients name them),
// but idle entries are swept.
func TestConcurrencyTenantsDoNotAccumulate(t *testing.T) {
	c := newConcurrency(0, 2, 0)
	for i := 0; i < 10*minSweep; i++ {
		c.release(mustAcquire(t, c, tenant.ID{AccountID: uint32(i)}))
	}
	if n := len(c.tenants); n > minSweep {
		t.Fatalf("%d tenant entries kept after 10×%d distinct idle tenants; want at most %d", n, minSweep, minSweep)
	}
	// A tenant with a request in flight survives a sweep with its slot taken.
	held := mustAcquire(t, c, tenantA)
	for i := 0; i < 2*minSweep; i++ {
		c.release(mustAcquire(t, c, tenant.ID{AccountID: uint32(1000000 + i)}))
	}
	if c.tenants[unit{tenant: tenantA}] != held || len(held.sem) != 1 {
		t.Fatalf("the busy tenant's entry was swept")
	}
	c.release(held)
}

// TestConcurrencyQueue: a request that finds no free slot gets the next one that frees up within the queue time.
func TestConcurrencyQueue(t *testing.T) {
	c := newConcurrency(1, 0, time.Hour)
	a := mustAcquire(t, c, tenantA)
	got := make(chan error, 1)
	go func() {
		ts, err := c.acquire(context.Background(), tenantB, nil, 0)
		if err == nil {
			c.release(ts)
		}
		got <- err
	}()
	waitFor(t, func() bool { return queued.Load() > 0 }, "the second request to queue")
	c.release(a)
	if err := <-got; err != nil {
		t.Fatalf("queued request: %s", err)
	}
}

// TestConcurrencyQueueExpires: once the queue time is over, 429.
func TestConcurrencyQueueExpires(t *testing.T) {
	c := newConcurrency(1, 0, 20*time.Millisecond)
	a := mustAcquire(t, c, tenantA)
	defer c.release(a)
	_, err := c.acquire(context.Background(), tenantB, nil, 0)
	wantOverload(t, err, "global")
}

// TestConcurrencyQueueTimeIsShared: waiting for the tenant slot uses up the queue time, so the global wait that
// follows does not get a second round.
func TestConcurrencyQueueTimeIsShared(t *testing.T) {
	c := newConcurrency(1, 1, 30*time.Millisecond)
	ts := c.ref(unit{tenant: tenantA})
	ts.sem <- struct{}{}
	c.global <- struct{}{}
	q := queueTime{}
	defer q.stop()
	if err := c.wait(context.Background(), ts.sem, &q); err != errQueueFull {
		t.Fatalf("tenant wait: %v", err)
	}
	if err := c.wait(context.Background(), c.global, &q); err != errQueueFull {
		t.Fatalf("global wait after the queue time was spent: %v", err)
	}
}

// TestConcurrencyQueuedTenantHoldsNoGlobalSlot: requests queued behind their own tenant's limit do not take global
// slots, so other tenants still get through.
func TestConcurrencyQueuedTenantHoldsNoGlobalSlot(t *testing.T) {
	c := newConcurrency(2, 1, time.Hour)
	a := mustAcquire(t, c, tenantA)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.acquire(ctx, tenantA, nil, 0)
		done <- err
	}()
	waitFor(t, func() bool { return queued.Load() > 0 }, "tenant A's second request to queue")
	b := mustAcquire(t, c, tenantB)
	cancel()
	if err := <-done; err != errGoneInQueue {
		t.Fatalf("canceled while queued: %v", err)
	}
	c.release(a)
	c.release(b)
	if busyTenants(c) != 0 || len(c.global) != 0 {
		t.Fatalf("after every release: %d tenant entries, %d global slots taken", busyTenants(c), len(c.global))
	}
}

// TestConcurrencyNeverExceedsLimits hammers one limiter from many goroutines and checks the in-flight counts.
func TestConcurrencyNeverExceedsLimits(t *testing.T) {
	const global, perTenant = 8, 3
	c := newConcurrency(global, perTenant, time.Millisecond)
	var total atomic.Int64
	perT := []*atomic.Int64{{}, {}, {}, {}}
	var wg sync.WaitGroup
	var violations atomic.Int64
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			id := tenant.ID{AccountID: uint32(g % len(perT))}
			for i := 0; i < 300; i++ {
				ts, err := c.acquire(context.Background(), id, nil, 0)
				if err != nil {
					continue
				}
				if total.Add(1) > global || perT[id.AccountID].Add(1) > perTenant {
					violations.Add(1)
				}
				total.Add(-1)
				perT[id.AccountID].Add(-1)
				c.release(ts)
			}
		}(g)
	}
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d times more requests were in flight than the limits allow", v)
	}
	if busyTenants(c) != 0 || len(c.global) != 0 {
		t.Fatalf("after the storm: %d tenant entries, %d global slots taken", busyTenants(c), len(c.global))
	}
}

// BenchmarkConcurrency: go test -run '^$' -bench Concurrency -benchmem ./internal/gateway/
// The cost a request pays for the limits when a slot is free.
func BenchmarkConcurrency(b *testing.B) {
	for _, bc := range []struct {
		name              string
		global, perTenant int
	}{{"unlimited", 0, 0}, {"global", 1 << 20, 0}, {"global+tenant", 1 << 20, 1 << 20}} {
		c := newConcurrency(bc.global, bc.perTenant, time.Second)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ts, err := c.acquire(context.Background(), tenantA, nil, 0)
				if err != nil {
					b.Fatal(err)
				}
				c.release(ts)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			var n atomic.Uint32
			b.RunParallel(func(pb *testing.PB) {
				id := tenant.ID{AccountID: n.Add(1) % 4}
				for pb.Next() {
					ts, err := c.acquire(context.Background(), id, nil, 0)
					if err != nil {
						b.Fatal(err)
					}
					c.release(ts)
				}
			})
		})
	}
}

func busyTenants(c *concurrency) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ts := range c.tenants {
		if ts.refs > 0 || len(ts.sem) > 0 || len(ts.parse) > 0 {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQueueCountsEarlierWait: what a request already waited for a parse slot counts against -maxQueueDuration, so
// its wait for a request slot is what is left; with nothing left it is refused at once.
func TestQueueCountsEarlierWait(t *testing.T) {
	const queue = 10 * time.Second
	c := newConcurrency(0, 1, queue)
	held := mustAcquire(t, c, tenantA)
	defer c.release(held)
	for _, queued := range []time.Duration{queue, queue + time.Second, queue - 50*time.Millisecond} {
		start := time.Now()
		_, err := c.acquire(context.Background(), tenantA, nil, queued)
		wantOverload(t, err, "tenant")
		// Refused after what was left (at most 50ms), where a fresh queue would have waited 10s.
		if d := time.Since(start); d > queue/2 {
			t.Errorf("having queued %s already, the request waited %s more for a request slot; the queue is %s", queued, d, queue)
		}
	}
}
