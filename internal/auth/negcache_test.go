package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestNegativeCacheAnswersRepeats: a refused token sent again gets the same 401 without a signature check, is
// counted as a rejection every time, and is verified again once -auth.negativeCacheTTL has passed.
func TestNegativeCacheAnswersRepeats(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{PublicKeys: []string{pemOf(t, &rsaKey().PublicKey)}, CacheSize: 100, NegativeCacheTTL: time.Minute}, clk)
	forged := sign(t, jwt.SigningMethodRS256, rsaKey2(), "", claimsAt(clk.now()))

	rejected, hits, misses := rejects[reasonBadSignature].Get(), negativeCacheHits.Get(), cacheMisses.Get()
	_, first := v.Verify(forged)
	for range 3 {
		_, err := v.Verify(forged)
		if reasonOf(t, err) != reasonBadSignature || err.Error() != first.Error() {
			t.Fatalf("repeat: %v, want the first answer %v", err, first)
		}
	}
	if got := rejects[reasonBadSignature].Get() - rejected; got != 4 {
		t.Fatalf("%d rejections counted for 4 requests", got)
	}
	if got := negativeCacheHits.Get() - hits; got != 3 {
		t.Fatalf("%d negative cache hits, want 3", got)
	}
	if got := cacheMisses.Get() - misses; got != 1 {
		t.Fatalf("%d tokens verified, want 1", got)
	}
	clk.advance(time.Minute)
	if _, err := v.Verify(forged); reasonOf(t, err) != reasonBadSignature {
		t.Fatal(err)
	}
	if got := cacheMisses.Get() - misses; got != 2 {
		t.Fatalf("after the TTL the token must be verified again: %d verifications, want 2", got)
	}

	// Another token is never answered by the refusal of the first.
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey(), "", claimsAt(clk.now()))); err != nil {
		t.Fatal(err)
	}
}

// TestNegativeCacheNotYetValid: a token refused as not yet valid is accepted from the moment it is valid, however
// long the TTL.
func TestNegativeCacheNotYetValid(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, CacheSize: 100,
		NegativeCacheTTL: time.Hour, Leeway: 10 * time.Second}, clk)
	c := claimsAt(clk.now())
	c["nbf"] = clk.now().Add(2 * time.Minute).Unix()
	token := sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)
	hits := negativeCacheHits.Get()
	for range 2 {
		if _, err := v.Verify(token); reasonOf(t, err) != reasonNotYetValid {
			t.Fatalf("%v, want not_yet_valid", err)
		}
	}
	if negativeCacheHits.Get() != hits+1 {
		t.Fatal("the repeat of a not-yet-valid token was verified again; want it answered from the negative cache")
	}
	clk.advance(2*time.Minute - 10*time.Second) // nbf - leeway: valid from now on
	if _, err := v.Verify(token); err != nil {
		t.Fatalf("at nbf-leeway: %v; the negative cache must not outlive the reason", err)
	}

	// The same for iat in the future.
	c = claimsAt(clk.now())
	c["iat"] = clk.now().Add(time.Minute).Unix()
	token = sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)
	if _, err := v.Verify(token); reasonOf(t, err) != reasonNotYetValid {
		t.Fatalf("%v, want not_yet_valid", err)
	}
	clk.advance(time.Minute - 10*time.Second)
	if _, err := v.Verify(token); err != nil {
		t.Fatalf("at iat-leeway: %v", err)
	}
}

// TestNegativeCacheKeyChanges: a signature no key verifies is refused from the cache only while the key set is the
// one it was judged by; the provider publishing the signing key makes the token valid at the next refresh.
func TestNegativeCacheKeyChanges(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, &p384Key().PublicKey, "k1", ""))
	v := newTestVerifier(t, Config{JWKSEndpoints: []string{p.srv.URL + "/keys"}, CacheSize: 100, NegativeCacheTTL: time.Hour}, clk)
	other := mustEC(p384Key().Curve)
	token := sign(t, jwt.SigningMethodES384, other, "", claimsAt(clk.now())) // no kid: every ES384 key is tried
	hits := negativeCacheHits.Get()
	for range 2 {
		if _, err := v.Verify(token); reasonOf(t, err) != reasonBadSignature {
			t.Fatalf("%v, want bad_signature", err)
		}
	}
	if negativeCacheHits.Get() != hits+1 {
		t.Fatal("the repeat was not answered from the negative cache")
	}
	p.setKeys(t, jwkOf(t, &p384Key().PublicKey, "k1", ""), jwkOf(t, &other.PublicKey, "k2", ""))
	v.keys.fetchAll() // the periodic refresh
	if _, err := v.Verify(token); err != nil {
		t.Fatalf("after the key was published: %v", err)
	}
}

// TestNegativeCacheUnknownKidRefetch: with JWKS sources an unknown kid is never answered from the negative cache,
// so that a token signed with a freshly rotated key still triggers the refetch that brings the key.
func TestNegativeCacheUnknownKidRefetch(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, &rsaKey().PublicKey, "old", ""))
	v := newTestVerifier(t, Config{JWKSEndpoints: []string{p.srv.URL + "/keys"}, KeysRefetchMinInterval: 30 * time.Second,
		CacheSize: 100, NegativeCacheTTL: time.Hour}, clk)
	rotated := sign(t, jwt.SigningMethodES384, p384Key(), "new", claimsAt(clk.now()))
	p.setKeys(t, jwkOf(t, &rsaKey().PublicKey, "old", ""), jwkOf(t, &p384Key().PublicKey, "new", ""))
	clk.advance(time.Second)
	hits := negativeCacheHits.Get()
	if _, err := v.Verify(rotated); reasonOf(t, err) != reasonUnknownKid {
		t.Fatalf("within the refetch interval: %v, want unknown_kid", err)
	}
	clk.advance(30 * time.Second)
	if _, err := v.Verify(rotated); err != nil {
		t.Fatalf("after the refetch interval: %v; an unknown kid must not be answered from the negative cache", err)
	}
	if negativeCacheHits.Get() != hits {
		t.Fatal("an unknown kid was answered from the negative cache")
	}
	if n := p.keyHits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

// TestNegativeCacheBounded: floods of distinct bad tokens keep at most -auth.cacheSize entries, and a disabled
// negative cache remembers nothing.
func TestNegativeCacheBounded(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, CacheSize: 100, NegativeCacheTTL: time.Minute}, clk)
	for i := range 1000 {
		c := claimsAt(clk.now())
		c["exp"] = clk.now().Add(-time.Hour).Unix()
		c["sub"] = fmt.Sprint("flood-", i)
		if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)); reasonOf(t, err) != reasonExpired {
			t.Fatal(err)
		}
		if n := v.rejected.len(); n > 100 {
			t.Fatalf("%d negative cache entries after %d bad tokens; bound 100", n, i+1)
		}
	}
	if v.rejected.len() == 0 {
		t.Fatal("nothing remembered")
	}
	off := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, CacheSize: 100}, clk)
	if off.rejected != nil {
		t.Fatal("NegativeCacheTTL 0 must disable the negative cache")
	}
	if _, err := newVerifier(Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}, NegativeCacheTTL: -time.Second}, clk.now); err == nil {
		t.Fatal("a negative -auth.negativeCacheTTL was accepted")
	}
}
