package auth

import (
	"fmt"
	"hash/maphash"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestCacheNeverServesPastExp(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, CacheSize: 100}, clk)
	c := claimsAt(clk.now())
	c["exp"] = clk.now().Add(time.Minute).Unix()
	token := sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)

	first, err := v.Verify(token)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(59 * time.Second)
	second, err := v.Verify(token)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatal("the second Verify did not come from the cache")
	}
	clk.advance(time.Second)
	if a := v.cache.get(token, clk.now().UnixNano()); a != nil {
		t.Fatal("the cache serves a token at its exp")
	}
	if _, err := v.Verify(token); reasonOf(t, err) != reasonExpired {
		t.Fatalf("at exp: %v, want expired", err)
	}
}

// TestCacheLeewayAndNotBefore: the cache gives exactly the answers verification would.
func TestCacheLeewayAndNotBefore(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, CacheSize: 100, Leeway: 10 * time.Second}, clk)
	c := claimsAt(clk.now())
	c["nbf"] = clk.now().Add(5 * time.Second).Unix() // within the leeway: valid now
	c["exp"] = clk.now().Add(time.Minute).Unix()
	token := sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)
	if _, err := v.Verify(token); err != nil {
		t.Fatal(err)
	}
	// The clock steps back (NTP): before nbf-leeway neither the cache nor verification accepts the token.
	clk.advance(-6 * time.Second)
	if _, err := v.Verify(token); reasonOf(t, err) != reasonNotYetValid {
		t.Fatalf("before nbf-leeway: %v, want not_yet_valid", err)
	}
	// Past exp, within the leeway: verification accepts the token, the cache does not hold it past exp.
	clk.advance(time.Minute + 6*time.Second + 5*time.Second)
	if _, err := v.Verify(token); err != nil {
		t.Fatalf("within the leeway after exp: %v", err)
	}
	if a := v.cache.get(token, clk.now().UnixNano()); a != nil {
		t.Fatal("the cache serves a token past its exp")
	}
	clk.advance(5 * time.Second)
	if _, err := v.Verify(token); reasonOf(t, err) != reasonExpired {
		t.Fatalf("at exp+leeway: %v, want expired", err)
	}
}

func TestCacheBounded(t *testing.T) {
	for _, size := range []int{1, 10, 100, 1000, 10000} {
		c := newCache[*Access](size)
		a := &Access{}
		for i := range 5 * size {
			c.put(fmt.Sprint("token-", i), a, minInt64, 1<<62)
			if n := c.len(); n > size {
				t.Fatalf("size %d: %d entries after %d puts", size, n, i+1)
			}
		}
		// The newest entry is always there.
		last := fmt.Sprint("token-", 5*size-1)
		if c.get(last, 0) != a {
			t.Fatalf("size %d: the newest entry is gone", size)
		}
		if size >= 100 && c.len() < size/2 {
			t.Fatalf("size %d: only %d entries kept", size, c.len())
		}
	}
	if newCache[*Access](0) != nil || newCache[*Access](-1) != nil {
		t.Fatal("a cache of size <= 0 must be nil (disabled)")
	}
	var off *cache[*Access]
	off.put("t", &Access{}, 0, 1)
	if off.get("t", 0) != nil {
		t.Fatal("a nil cache must not serve")
	}
}

// TestCacheKeepsHotEntries: an entry read in every generation survives any number of rotations.
func TestCacheKeepsHotEntries(t *testing.T) {
	c := newCache[*Access](64)
	hot := &Access{Subject: "hot"}
	c.put("hot", hot, minInt64, 1<<62)
	for i := range 10000 {
		c.put(fmt.Sprint("cold-", i), &Access{}, minInt64, 1<<62)
		if c.get("hot", 0) != hot {
			t.Fatalf("the hot entry was evicted after %d puts", i+1)
		}
	}
}

// TestCacheHashCollision: the map key is a hash; an entry stored under the hash of another token is never served.
func TestCacheHashCollision(t *testing.T) {
	c := newCache[*Access](10)
	a := &Access{Subject: "a"}
	c.put("token-a", a, minInt64, 1<<62)
	h := maphash.String(c.seed, "token-b")
	s := &c.shards[h&c.mask]
	s.cur[h] = &cacheEntry[*Access]{token: "token-a", val: a, notBefore: minInt64, notAfter: 1 << 62}
	if got := c.get("token-b", 0); got != nil {
		t.Fatal("an entry stored for another token was served")
	}
	if got := c.get("token-a", 0); got != a {
		t.Fatal("token-a lost")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := newCache[*Access](256)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				tok := fmt.Sprint("t-", (g*7+i)%500)
				if a := c.get(tok, 0); a != nil && a.Subject != tok {
					t.Errorf("token %s got the Access of %s", tok, a.Subject)
					return
				}
				c.put(tok, &Access{Subject: tok}, minInt64, 1<<62)
				if i%500 == 0 {
					c.clear()
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > 256 {
		t.Fatalf("%d entries, bound 256", n)
	}
}

func TestFailedTokensNotCached(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, CacheSize: 100}, clk)
	c := claimsAt(clk.now())
	c["vm_access"] = map[string]any{"mode": 7}
	for range 2 {
		if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)); reasonOf(t, err) != reasonBadVMAccess {
			t.Fatalf("got %v, want bad_vm_access", err)
		}
	}
	if n := v.cache.len(); n != 0 {
		t.Fatalf("%d cache entries after rejections", n)
	}
}
