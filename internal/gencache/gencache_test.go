package gencache

import (
	"fmt"
	"sync"
	"testing"
)

func TestCache(t *testing.T) {
	const budget = 256 << 10
	c := New[string, int](budget, func(k string, _ int) int { return len(k) + 64 })
	if _, ok := c.Get(1, "up"); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Put(1, "up", 1)
	if v, ok := c.Get(1, "up"); !ok || v != 1 {
		t.Fatalf("Get = %d, %v", v, ok)
	}
	if _, ok := c.Get(2, "up"); ok {
		t.Fatal("owner 2 finds owner 1's entry")
	}
	c.Put(1, "up", 2)
	if v, _ := c.Get(1, "up"); v != 1 {
		t.Fatalf("a second Put replaced the entry: %d", v)
	}
	// Rotation keeps the memory bounded and keeps entries in use.
	o := c.owners[1]
	for i := 0; o.prev == nil || len(o.prev) < 2; i++ {
		c.Put(1, fmt.Sprintf("metric_%d_%0500d", i, 0), i)
		if i > 1e6 {
			t.Fatal("the cache never rotates")
		}
		if i%10 == 0 {
			c.Get(1, "up")
		}
	}
	if o.curBytes > budget/ownerShare+2*600 {
		t.Errorf("the current generation holds %d bytes", o.curBytes)
	}
	if _, ok := c.Get(1, "up"); !ok {
		t.Errorf("an entry in use was dropped at rotation")
	}
	for i := 0; i < 2*budget/ownerShare/500; i++ {
		c.Put(1, fmt.Sprintf("other_%d_%0500d", i, 0), i)
	}
	if _, ok := c.Get(1, fmt.Sprintf("metric_0_%0500d", 0)); ok {
		t.Errorf("an entry unused for two generations is still in")
	}
}

// TestCacheMovedEntriesCount: an entry moved forward from the previous generation is paid for again, so a cache
// whose every entry stays in use still rotates within its budget.
func TestCacheMovedEntriesCount(t *testing.T) {
	c := New[int, int](4000, func(int, int) int { return 100 })
	for round := 0; round < 50; round++ {
		for k := 0; k < 30; k++ {
			if _, ok := c.Get(7, k); !ok {
				c.Put(7, k, k)
			}
		}
		o := c.owners[7]
		if n := len(o.cur) + len(o.prev); n > 2*(1000/100+1) {
			t.Fatalf("round %d: %d entries for a share of 10 per generation", round, n)
		}
	}
}

// TestCacheOwnersKeptApart: an owner putting new entries without end pushes out none of a small owner's, and the
// cache stays within its budget throughout, also with many owners of one entry each; there, the small owner is the
// largest, and loses its entries first.
func TestCacheOwnersKeptApart(t *testing.T) {
	const budget = 1 << 20
	c := New[string, int](budget, func(k string, _ int) int { return len(k) + 64 })
	keep := make([]string, 100)
	for i := range keep {
		keep[i] = fmt.Sprintf(`sum(rate(http_requests_total{job="api-%d"}[5m]))`, i)
		c.Put(1, keep[i], i)
	}
	check := func(when string) {
		t.Helper()
		for i, k := range keep {
			if v, ok := c.Get(1, k); !ok || v != i {
				t.Fatalf("%s: owner 1's entry %d is gone", when, i)
			}
		}
		if c.bytes > budget {
			t.Fatalf("%s: the cache holds %d bytes, over its budget of %d", when, c.bytes, budget)
		}
	}
	for i := 0; i < 20*budget/100; i++ {
		c.Put(2, fmt.Sprintf("flood_%d_%060d", i, 0), i)
		if c.bytes > budget {
			t.Fatalf("after %d entries of owner 2 the cache holds %d bytes, over its budget of %d", i, c.bytes, budget)
		}
	}
	check("owner 2 flooding")
	if o := c.owners[2]; o == nil || o.curBytes+o.prevBytes > budget/2+200 {
		t.Errorf("owner 2 holds more than half of the budget, or nothing: %+v", o)
	}
	trims := c.trims
	const owners = 20_000
	for i := range owners {
		c.Put(uint64(100+i), fmt.Sprintf("one_%d", i), i)
		if c.bytes > budget {
			t.Fatalf("after %d owners of one entry the cache holds %d bytes, over its budget of %d", i, c.bytes, budget)
		}
	}
	if c.owners[1] != nil {
		t.Errorf("owner 1, the largest among %d owners of one entry, kept its entries", owners)
	}
	// Each pass of trim walks every owner; it frees an eighth of the budget, so passes stay a few per budget put.
	put := owners * (ownerBytes + 80)
	if n := c.trims - trims; n > 2*put/(budget/trimSlack)+2 {
		t.Errorf("%d trims for %d bytes put in a budget of %d: each walks every owner", n, put, budget)
	}
}

// TestCacheTrimsLargestFirst: over budget, the largest owners lose their entries first, oldest generation first,
// down to the others' size; the smaller owners keep theirs.
func TestCacheTrimsLargestFirst(t *testing.T) {
	c := New[int, int](100_000, func(int, int) int { return 100 })
	fill := func(owner uint64, entries int) {
		for k := range entries {
			c.Put(owner, k, k)
		}
	}
	fill(1, 400) // 40,000 bytes: a full generation and 15,000 bytes in the next
	fill(2, 300) // 30,000
	fill(3, 50)
	fill(4, 50)
	if c.bytes > 100_000 {
		t.Fatalf("%d bytes", c.bytes)
	}
	before := c.trims
	fill(5, 200) // 20,000 more: over the budget after 175
	if c.trims != before+1 {
		t.Fatalf("%d trims, want 1", c.trims-before)
	}
	if o := c.owners[1]; o == nil || o.prev != nil || len(o.cur) != 150 {
		t.Errorf("owner 1, the largest, should have lost its previous generation alone: %+v", o)
	}
	for owner, n := range map[uint64]int{2: 300, 3: 50, 4: 50, 5: 200} {
		if o := c.owners[owner]; o == nil || len(o.cur)+len(o.prev) != n {
			t.Errorf("owner %d lost entries to a larger owner: %+v", owner, o)
		}
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := New[int, int](16<<10, func(int, int) int { return 64 })
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				k := (i * (g + 1)) % 300
				owner := uint64(i % 3)
				if v, ok := c.Get(owner, k); ok && v != k*7+int(owner) {
					t.Errorf("Get(%d, %d) = %d", owner, k, v)
					return
				}
				c.Put(owner, k, k*7+int(owner))
			}
		}(g)
	}
	wg.Wait()
	if c.bytes > 16<<10 {
		t.Errorf("%d bytes for a budget of %d", c.bytes, 16<<10)
	}
}
