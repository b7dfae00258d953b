package enforce

import (
	"net/http"
	"strings"
	"testing"
)

// TestQueryCache: the rewrite is cached per enforcer and mode; the cache's rotation is internal/gencache's test.
func TestQueryCache(t *testing.T) {
	e := devOnly(t)
	k := cacheKey{e: e, q: "up"}
	if _, ok := queries.Get(0, k); ok {
		t.Fatal("hit before the first rewrite")
	}
	if out, err := e.Query("up"); err != nil || out != `up{team="dev"}` {
		t.Fatalf("Query = %q, %v", out, err)
	}
	if out, ok := queries.Get(0, k); !ok || out != `up{team="dev"}` {
		t.Fatalf("get = %q, %v", out, ok)
	}
	for _, other := range []cacheKey{{e: devOnly(t), q: "up"}, {e: e, q: "up", cluster: true}, {q: "up"}} {
		if _, ok := queries.Get(0, other); ok {
			t.Errorf("%+v hits the entry of another enforcer or mode", other)
		}
	}
	long := `up{a="` + strings.Repeat("x", cacheMaxQueryLen) + `"}`
	if _, err := e.Query(long); err != nil {
		t.Fatalf("Query(long): %s", err)
	}
	if _, ok := queries.Get(0, cacheKey{e: e, q: long}); ok {
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
