package ratelimit

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

const costLimits = `
limits:
  - {type: queries, value: 1000}
  - {type: series_fetched, value: 100, key: claim:sub}
  - {type: query_time_ms, value: 5000, resolution: hour, account_id: 2}
`

// TestCostLimits: the costs of answers are counted after them, and the next request of a caller over its budget
// is refused with 429, per key, while other keys and tenants pass; headers and the status page show what is left.
func TestCostLimits(t *testing.T) {
	g, clk := clockGate(t, costLimits, Config{Headers: HeadersBoth})
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	bob := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "bob"}}
	if !g.Costed(alice) || !g.Costed(access(tid(2, 0))) {
		t.Fatal("callers with cost limits are not costed")
	}
	for i := 0; i < 2; i++ {
		if err := g.check(alice, rt(route.Read)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		g.Spend(alice, 60, 3)
	}
	// 120 series fetched of 100: the next request is refused, and nothing was counted for it.
	h := http.Header{}
	r := asRejection(t, second(g.Admit(alice, rt(route.Read), h)))
	if r.HTTPStatus() != http.StatusTooManyRequests || r.Limit.Type != limitfile.SeriesFetched || r.Usage != 120 || r.KeyValue != "alice" {
		t.Errorf("rejection %+v", r)
	}
	for _, want := range []string{"type=series_fetched resolution=minute value=100 key=claim:sub", `claim:sub="alice"`,
		"usage seen 120 in the last minute counted by this gateway from the seriesFetched stats"} {
		if !strings.Contains(r.Error(), want) {
			t.Errorf("message %q lacks %q", r.Error(), want)
		}
	}
	if got := h.Get("Ratelimit"); got != `"series_fetched-minute-claim:sub";r=0;t=61;pk=:YWxpY2U=:` {
		t.Errorf("RateLimit %q", got)
	}
	if got := h.Get("Ratelimit-Policy"); got != `"queries-minute";q=1000;w=60, "series_fetched-minute-claim:sub";q=100;w=60;pk=:YWxpY2U=:` {
		t.Errorf("RateLimit-Policy %q", got)
	}
	if got := g.metrics.rejected[meter{limitfile.SeriesFetched, limitfile.Minute}].Get(); got != 1 {
		t.Errorf("rejected series_fetched %d, want 1", got)
	}
	// Another key of the tenant has its own budget; the queries limit counted the requests that passed only.
	h = http.Header{}
	if _, err := g.Admit(bob, rt(route.Read), h); err != nil {
		t.Fatalf("bob: %v", err)
	}
	if got := h.Get("Ratelimit"); got != `"queries-minute";r=997;t=61` {
		t.Errorf("bob's RateLimit %q: want the queries limit, the cost one is far", got)
	}
	// The costs leave the window as requests do.
	clk.set(t0 + 61)
	if err := g.check(alice, rt(route.Read)); err != nil {
		t.Errorf("a minute later: %v", err)
	}

	// Execution time is counted in whole milliseconds, rounded up, per tenant without a key; reaching the value
	// refuses, as for every limit.
	two := access(tid(2, 0))
	g.Spend(two, 0, 4998.2)
	if err := g.check(two, rt(route.Read)); err != nil {
		t.Fatalf("4999 ms of 5000: %v", err)
	}
	g.Spend(two, 0, 0.4)
	r = asRejection(t, g.check(two, rt(route.Read)))
	if r.Limit.Type != limitfile.QueryTimeMs || r.Usage != 5000 || r.RetryAfter() < 59*time.Minute || r.RetryAfter() > 61*time.Minute {
		t.Errorf("rejection %+v, retry %s", r, r.RetryAfter())
	}
	// Writes are not gated by cost limits.
	if err := g.check(two, rt(route.Write)); err != nil {
		t.Errorf("write: %v", err)
	}

	_, p, body := getStatus(t, g, "?tenant=2:0")
	var found bool
	for _, e := range p.Usage {
		for _, l := range e.Limits {
			if l.Type == "query_time_ms" {
				found = true
				if l.Usage != 5000 || l.Remaining != 0 || l.Source != "local" || l.Datasource != nil || l.Local == nil || l.Local.Value != 5000 {
					t.Errorf("query_time_ms on the status page: %+v\n%s", l, body)
				}
			}
		}
	}
	if !found {
		t.Errorf("no query_time_ms limit on the status page:\n%s", body)
	}
}

// TestCostNotCostedWithoutCostLimits: callers without cost limits are not costed, and Spend counts nothing for them.
func TestCostNotCostedWithoutCostLimits(t *testing.T) {
	g2, _ := clockGate(t, "limits:\n  - {type: queries, value: 10}\n", Config{})
	if g2.Costed(access(tid(1, 0))) {
		t.Error("costed without cost limits")
	}
	g2.Spend(access(tid(1, 0)), 1000, 1000)
	if n := g2.tally.counters.size.Load(); n != 0 {
		t.Errorf("Spend without cost limits made %d series", n)
	}
}

// TestCostSpendAll: an answer of unknown cost uses up the largest budget of each cost limit of the caller (the hour
// one too), and nothing of its queries limit or of other keys and tenants.
func TestCostSpendAll(t *testing.T) {
	const limits = `
limits:
  - {type: queries, value: 1000}
  - {type: series_fetched, value: 100, key: claim:sub}
  - {type: series_fetched, value: 3000, resolution: hour, key: claim:sub}
  - {type: query_time_ms, value: 5000, resolution: hour}
`
	g, clk := clockGate(t, limits, Config{})
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	bob := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "bob"}}
	g.SpendAll(alice)
	r := asRejection(t, g.check(alice, rt(route.Read)))
	if r.Limit.Type != limitfile.SeriesFetched || r.Usage != 3000 {
		t.Errorf("after SpendAll: %+v, want series_fetched used 3000", r)
	}
	// The hour's budget is gone too: a minute later alice is still refused.
	clk.set(t0 + 61)
	if r := asRejection(t, g.check(alice, rt(route.Read))); r.Limit.Resolution != limitfile.Hour {
		t.Errorf("a minute later: %+v, want the hour limit", r)
	}
	// query_time_ms is per tenant: bob shares it with alice and is refused by it, not by his own series_fetched.
	if r := asRejection(t, g.check(bob, rt(route.Read))); r.Limit.Type != limitfile.QueryTimeMs || r.Usage != 5000 {
		t.Errorf("bob: %+v, want query_time_ms used 5000", r)
	}
	if err := g.check(access(tid(2, 0)), rt(route.Read)); err != nil {
		t.Errorf("another tenant: %v", err)
	}
	g2, _ := clockGate(t, "limits:\n  - {type: queries, value: 10}\n", Config{})
	g2.SpendAll(access(tid(1, 0)))
	if n := g2.tally.counters.size.Load(); n != 0 {
		t.Errorf("SpendAll without cost limits made %d series", n)
	}
}

// TestCostShared: with Redis, a replica refuses a tenant whose answers another replica counted.
func TestCostShared(t *testing.T) {
	r := vmtest.StartRedis(t)
	const limits = "limits:\n  - {type: series_fetched, value: 100}\n"
	a := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr})
	b := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr})
	if err := b.check(access(tid(0, 0)), rt(route.Read)); err != nil {
		t.Fatal(err)
	}
	a.Spend(access(tid(0, 0)), 150, 1)
	// a's flush reaches Redis within a quarter second; b reads the shared sum at most a second old.
	vmtest.Eventually(t, func() (bool, string) {
		err := b.check(access(tid(0, 0)), rt(route.Read))
		return err != nil, "b still admits a tenant that fetched 150 series of 100 on a"
	})
	err := b.check(access(tid(0, 0)), rt(route.Read))
	rj := asRejection(t, err)
	if rj.Usage != 150 || !strings.Contains(rj.Error(), "counted by all gateways sharing Redis") {
		t.Errorf("rejection on b: %v (usage %v)", rj, rj.Usage)
	}
	// b counted nothing itself.
	if ser := b.tally.counters.lookup(seriesKey{tenant: tid(0, 0), cost: limitfile.SeriesFetched}); ser == nil || ser.counts.count(winMinute, time.Now().Unix()) != 0 {
		t.Errorf("b's own count of series fetched: %+v", ser)
	}
}

// TestRedisKeys: a cost series has a Redis key of its own beside the requests' series of the same tenant and key
// value, in the same Redis Cluster hash slot; the requests' keys are those of the gateways before cost limits, so
// replicas of both versions share their counts during a rolling upgrade.
func TestRedisKeys(t *testing.T) {
	s := &redisStore{prefix: "vmgateway:ratelimit"}
	sub := intern(limitfile.Key{Claim: "sub"})
	for _, tc := range []struct {
		k    seriesKey
		want string
	}{
		{seriesKey{tenant: tid(1, 2)}, "vmgateway:ratelimit:{1:2||}"},
		{seriesKey{tenant: tid(1, 2), key: sub, value: "alice"}, "vmgateway:ratelimit:{1:2|claim:sub|YWxpY2U}"},
		{seriesKey{tenant: tid(1, 2), cost: limitfile.SeriesFetched}, "vmgateway:ratelimit:{1:2||}:series_fetched"},
		{seriesKey{tenant: tid(1, 2), key: sub, value: "alice", cost: limitfile.QueryTimeMs}, "vmgateway:ratelimit:{1:2|claim:sub|YWxpY2U}:query_time_ms"},
	} {
		if got := s.redisKey(tc.k); got != tc.want {
			t.Errorf("redisKey(%+v) = %q, want %q", tc.k, got, tc.want)
		}
	}
}

// TestCostReservedInFlight: a query admitted under a cost limit holds what its caller's queries are expected to cost
// (the costliest recent answer's, forgotten by an eighth per cheaper one) until it ends, so that the queries in flight
// cannot together overshoot the budget by more than one query's misjudged cost; a refusal for the queries in flight
// says so and asks to retry in a second, and what is given back passes the next.
func TestCostReservedInFlight(t *testing.T) {
	g, _ := clockGate(t, costLimits, Config{})
	query := route.Route{API: "query", Kind: route.Read}
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	admit := func() (func(), error) { return g.Admit(alice, query, nil) }

	// Nothing answered yet: nothing is expected, and the first queries pass.
	first, err := admit()
	if err != nil {
		t.Fatal(err)
	}
	g.Spend(alice, 30, 1)
	first()
	// 30 of 100 used, 30 expected of each query: a query passes while what is used and expected leaves room, so
	// three may be in flight (30, 60, 90 before each), not a fourth: the overshoot is one query's at most.
	var held []func()
	for i := 0; i < 3; i++ {
		release, err := admit()
		if err != nil {
			t.Fatalf("query %d in flight: %v", i+1, err)
		}
		held = append(held, release)
	}
	release, err := admit()
	r := asRejection(t, err)
	release() // a refusal holds nothing; calling it is still allowed
	if r.Usage != 30 || r.RetryAfter() != time.Second || !strings.Contains(r.Error(), "and 90 expected of its queries in flight on this gateway") {
		t.Errorf("refusal for the queries in flight: usage %v, retry %s: %s", r.Usage, r.RetryAfter(), r.Error())
	}
	// A request of another API (not charged) reserves nothing and passes while the budget is not used up.
	if _, err := g.Admit(alice, route.Route{API: "series", Kind: route.Read}, nil); err != nil {
		t.Errorf("series beside the queries in flight: %v", err)
	}
	// One answers cheaply: its reservation goes, its cost comes, and the expected cost falls by an eighth only.
	g.Spend(alice, 2, 1)
	held[0]()
	held[0]() // twice is once
	ser := g.tally.counters.lookup(seriesKey{tenant: tid(1, 0), key: intern(limitfile.Key{Claim: "sub"}), value: "alice", cost: limitfile.SeriesFetched})
	if ser == nil {
		t.Fatal("no series_fetched series for alice")
	}
	release, err = admit() // 32 used, 60 in flight
	if err != nil {
		t.Fatalf("after one answered: %v", err)
	}
	if ser.perQuery.Load() != 27 || ser.reserved.Load() != 87 {
		t.Errorf("after one cheap answer: %d expected per query, %d reserved; want 27 and 87", ser.perQuery.Load(), ser.reserved.Load())
	}
	release()
	held[1]()
	held[2]()
	if got := ser.reserved.Load(); got != 0 {
		t.Errorf("%d reserved with nothing in flight", got)
	}
	// A costlier answer raises the expectation at once: with 82 used, one query of 50 may go, not two.
	g.Spend(alice, 50, 1)
	if _, err := admit(); err != nil {
		t.Errorf("82 used, nothing in flight: %v", err)
	}
	if _, err := admit(); err == nil {
		t.Errorf("82 used and 50 in flight of 100: admitted")
	}
	// Bob's budget is his own.
	if _, err := g.Admit(&auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "bob"}}, query, nil); err != nil {
		t.Errorf("bob: %v", err)
	}
}

// TestCostReservationsRace: of many queries racing under one budget, no more pass than it has room for.
func TestCostReservationsRace(t *testing.T) {
	g, _ := clockGate(t, costLimits, Config{})
	query := route.Route{API: "query", Kind: route.Read}
	alice := &auth.Access{Tenant: tid(1, 0), Claims: map[string]any{"sub": "alice"}}
	g.Spend(alice, 10, 1) // 10 used, 10 expected: nine may be in flight (10 + 9*10 = 100)
	var passed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Admit(alice, query, nil); err == nil {
				passed.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := passed.Load(); got != 9 {
		t.Errorf("%d of 64 racing queries passed; want 9", got)
	}
}
