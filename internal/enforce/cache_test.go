package enforce

import (
	"fmt"
	"net/http"
	"testing"
)

func TestQueryCache(t *testing.T) {
	c := &queryCache{cur: map[cacheKey]string{}}
	e := devOnly(t)
	k := cacheKey{e: e, q: "up"}
	if _, ok := c.get(k); ok {
		t.Fatal("hit in an empty cache")
	}
	c.put(k, `up{team="dev"}`)
	if out, ok := c.get(k); !ok || out != `up{team="dev"}` {
		t.Fatalf("get = %q, %v", out, ok)
	}
	for _, other := range []cacheKey{{e: devOnly(t), q: "up"}, {e: e, q: "up", cluster: true}, {q: "up"}} {
		if _, ok := c.get(other); ok {
			t.Errorf("%+v hits the entry of another enforcer or mode", other)
		}
	}
	// Rotation keeps the memory bounded and keeps entries in use.
	for i := 0; c.prev == nil || len(c.prev) < 2; i++ {
		c.put(cacheKey{e: e, q: fmt.Sprintf("metric_%d_%0500d", i, 0)}, "x")
		if i > 1e6 {
			t.Fatal("the cache never rotates")
		}
		if i%1000 == 0 {
			c.get(k)
		}
	}
	if c.curBytes > cacheGenerationBytes+cacheMaxQueryLen*2+128 {
		t.Errorf("the current generation holds %d bytes", c.curBytes)
	}
	if _, ok := c.get(k); !ok {
		t.Errorf("an entry in use was dropped at rotation")
	}
	long := cacheKey{e: e, q: string(make([]byte, cacheMaxQueryLen+1))}
	c.put(long, "x")
	if _, ok := c.get(long); ok {
		t.Errorf("an overlong query was cached")
	}
}

func TestQueryCacheKeepsClusterCheck(t *testing.T) {
	e := devOnly(t)
	q := `up{vm_account_id="1"}`
	if _, err := e.Query(q); err != nil {
		t.Fatalf("single-node Query: %s", err)
	}
	for i := 0; i < 2; i++ {
		r := newRequest(t, "GET", "/api/v1/query?query="+q, "", "")
		if err := enforceHTTP(e, r, rtQuery, true); statusOf(err) != http.StatusForbidden {
			t.Fatalf("cluster Request after a cached single-node rewrite: %v; want 403", err)
		}
	}
}
