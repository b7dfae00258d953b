package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestCostHoldsShared: replicas sharing Redis hold their queries in flight there, so two let go what one would (eight
// queries of a caller whose cost is not known, an eighth of the 100 left each), not eight each; a query's cost reaches
// the others in the call that gives back its hold; a dead replica's holds stop counting holdLife after their last
// refresh, and a live replica's are refreshed however long its queries run.
func TestCostHoldsShared(t *testing.T) {
	r := vmtest.StartRedis(t)
	clk := &clock{}
	clk.set(time.Now().Unix())
	a := sharedGate(t, costLimits, RedisConfig{URL: "redis://" + r.Addr}, clk.now)
	b := sharedGate(t, costLimits, RedisConfig{URL: "redis://" + r.Addr}, clk.now)
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	take := func(g *Gate, n int, name string) []func() {
		t.Helper()
		var held []func()
		for i := range n {
			release, err := g.Reserve(context.Background(), alice, 0)
			if err != nil {
				t.Fatalf("%s: query %d: %v", name, i+1, err)
			}
			held = append(held, release)
		}
		return held
	}
	refused := func(g *Gate, name, want string) {
		t.Helper()
		_, err := g.Reserve(context.Background(), alice, 0)
		if r := asRejection(t, err); !strings.Contains(r.Error(), want) {
			t.Errorf("%s: %s; want %q", name, r.Error(), want)
		}
	}

	onA := take(a, 4, "a")
	onB := take(b, 4, "b")
	refused(b, "b's fifth", "usage seen 0 in the last minute counted by all gateways sharing Redis from the seriesFetched stats of the tenant's query answers (the series of one without them), and 104 expected of its queries in flight on all gateways sharing Redis")
	refused(a, "a's fifth", "and 104 expected of its queries in flight on all gateways sharing Redis")

	// a's answers cost 100: given back with its holds, they are b's to see at once, not at a's next flush (once b's
	// last refusal for the holds, good for holdRecheck, is past).
	a.Spend(alice, 100, 1)
	for _, release := range onA {
		release()
	}
	clk.set(clk.now().Unix() + 1)
	refused(b, "b after a's answers", "usage seen 100 in the last minute counted by all gateways sharing Redis")
	for _, release := range onB {
		release()
	}
	if n := countHolds(t, a); n != 0 {
		t.Errorf("holds left in Redis after every query ended: %d", n)
	}

	// Bob's queries on a run long: a refreshes their holds, and b waits past holdLife. Then a dies with them in flight:
	// b waits until holdLife after their last refresh, and no longer.
	bob := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "bob"}}
	for i := range 8 {
		if _, err := a.Reserve(context.Background(), bob, 0); err != nil {
			t.Fatalf("bob's query %d on a: %v", i+1, err)
		}
	}
	if _, err := b.Reserve(context.Background(), bob, 0); err == nil {
		t.Fatal("b let bob's ninth query go beside eight in flight on a")
	}
	start := clk.now().Unix()
	clk.set(start + 25)
	vmtest.Eventually(t, func() (bool, string) {
		e := holdsExpire(t, a)
		return e >= start+25+holdLife, fmt.Sprintf("a's holds expire at %d, not refreshed at %d", e, start+25)
	})
	clk.set(start + 45)
	if _, err := b.Reserve(context.Background(), bob, 0); err == nil {
		t.Fatal("b let bob's query go 20 s after a refreshed the holds of its eight in flight")
	}
	a.Stop()
	expires := holdsExpire(t, b)
	clk.set(expires)
	if _, err := b.Reserve(context.Background(), bob, 0); err == nil {
		t.Fatal("b let bob's query go in the last second of a dead replica's holds")
	}
	clk.set(expires + 1)
	release, err := b.Reserve(context.Background(), bob, 0)
	if err != nil {
		t.Fatalf("b, once a dead replica's holds expired: %v", err)
	}
	release()
}

// TestCostHoldsWaitersShareTheirChecks: queries waiting on a replica for room that other replicas' holds fill ask
// Redis about once per holdRecheck between them, not each at its own pace: a team's queued queries must not make
// every replica hammer the Redis all tenants share.
func TestCostHoldsWaitersShareTheirChecks(t *testing.T) {
	r := vmtest.StartRedis(t)
	a := sharedGate(t, costLimits, RedisConfig{URL: "redis://" + r.Addr})
	b := sharedGate(t, costLimits, RedisConfig{URL: "redis://" + r.Addr})
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	for i := range 8 {
		if _, err := a.Reserve(context.Background(), alice, 0); err != nil {
			t.Fatalf("query %d on a: %v", i+1, err)
		}
	}
	before := redisOf(b).calls.Get()
	const waiters, wait = 30, 500 * time.Millisecond
	var wg sync.WaitGroup
	var passed atomic.Int32
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Reserve(context.Background(), alice, wait); err == nil {
				passed.Add(1)
			}
		}()
	}
	wg.Wait()
	calls := redisOf(b).calls.Get() - before
	t.Logf("%d queries waiting %s on b for a's holds: %d Redis calls", waiters, wait, calls)
	// One per holdRecheck, and the background loop's few (a flush, a refresh, a sync per second).
	if passed.Load() != 0 || calls > uint64(wait/holdRecheck)+15 {
		t.Errorf("%d queries waiting %s: %d passed, %d Redis calls; want none passed and about %d calls", waiters, wait, passed.Load(), calls, wait/holdRecheck)
	}
}

// TestCostHoldsRedisDown: a replica that cannot reach Redis holds its queries alone, as without Redis, and gives back
// a hold Redis may have taken before its answer was lost once Redis is back.
func TestCostHoldsRedisDown(t *testing.T) {
	r := vmtest.StartRedis(t)
	g := sharedGate(t, costLimits, RedisConfig{URL: "redis://" + r.Addr, Timeout: 200 * time.Millisecond})
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	r.Stop()
	var held []func()
	for i := range 8 {
		release, err := g.Reserve(context.Background(), alice, 0)
		if err != nil {
			t.Fatalf("query %d with Redis down: %v", i+1, err)
		}
		held = append(held, release)
	}
	if _, err := g.Reserve(context.Background(), alice, 0); err == nil || !strings.Contains(err.Error(), "on this gateway") {
		t.Errorf("the ninth query with Redis down: %v; want refused for the eight in flight on this gateway", err)
	}
	for _, release := range held {
		release()
	}
	if n := len(redisOf(g).holds.live); n != 0 {
		t.Errorf("%d holds still listed after their queries ended", n)
	}
}

// holdsExpire is the latest second a hold in g's Redis expires at, of any series.
func holdsExpire(t *testing.T, g *Gate) int64 {
	t.Helper()
	s := redisOf(g)
	keys, err := s.client.Keys(context.Background(), s.prefix+":*:holds").Result()
	if err != nil {
		t.Fatal(err)
	}
	var last float64
	for _, k := range keys {
		zs, err := s.client.ZRangeWithScores(context.Background(), k, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, z := range zs {
			last = max(last, z.Score)
		}
	}
	return int64(last)
}

// countHolds is how many holds g's Redis has, of any series.
func countHolds(t *testing.T, g *Gate) int64 {
	t.Helper()
	s := redisOf(g)
	keys, err := s.client.Keys(context.Background(), s.prefix+":*:holds").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, k := range keys {
		c, err := s.client.ZCard(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += c
	}
	return n
}
