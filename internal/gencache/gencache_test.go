package gencache

import (
	"fmt"
	"sync"
	"testing"
)

func TestCache(t *testing.T) {
	const genBytes = 64 << 10
	c := New[string, int](genBytes, func(k string, _ int) int { return len(k) + 64 })
	if _, ok := c.Get("up"); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Put("up", 1)
	if v, ok := c.Get("up"); !ok || v != 1 {
		t.Fatalf("Get = %d, %v", v, ok)
	}
	c.Put("up", 2)
	if v, _ := c.Get("up"); v != 1 {
		t.Fatalf("a second Put replaced the entry: %d", v)
	}
	// Rotation keeps the memory bounded and keeps entries in use.
	for i := 0; len(c.prev) < 2; i++ {
		c.Put(fmt.Sprintf("metric_%d_%0500d", i, 0), i)
		if i > 1e6 {
			t.Fatal("the cache never rotates")
		}
		if i%10 == 0 {
			c.Get("up")
		}
	}
	if c.curBytes > genBytes+2*600 {
		t.Errorf("the current generation holds %d bytes", c.curBytes)
	}
	if _, ok := c.Get("up"); !ok {
		t.Errorf("an entry in use was dropped at rotation")
	}
	for i := 0; i < 2*genBytes/500; i++ {
		c.Put(fmt.Sprintf("other_%d_%0500d", i, 0), i)
	}
	if _, ok := c.Get(fmt.Sprintf("metric_0_%0500d", 0)); ok {
		t.Errorf("an entry unused for two generations is still in")
	}
}

// TestCacheMovedEntriesCount: an entry moved forward from the previous generation is paid for again, so a cache
// whose every entry stays in use still rotates within its budget.
func TestCacheMovedEntriesCount(t *testing.T) {
	c := New[int, int](1000, func(int, int) int { return 100 })
	for round := 0; round < 50; round++ {
		for k := 0; k < 30; k++ {
			if _, ok := c.Get(k); !ok {
				c.Put(k, k)
			}
		}
		if n := len(c.cur) + len(c.prev); n > 2*(1000/100+1) {
			t.Fatalf("round %d: %d entries for a budget of 10 per generation", round, n)
		}
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := New[int, int](4096, func(int, int) int { return 64 })
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				k := (i * (g + 1)) % 300
				if v, ok := c.Get(k); ok && v != k*7 {
					t.Errorf("Get(%d) = %d", k, v)
					return
				}
				c.Put(k, k*7)
			}
		}(g)
	}
	wg.Wait()
}
