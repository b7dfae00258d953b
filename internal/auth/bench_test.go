package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Run: go test -run '^$' -bench . -benchmem ./internal/auth/

func BenchmarkVerifyUncached(b *testing.B) {
	v, err := New(allKeysConfig(b)) // CacheSize 0: every Verify checks the signature
	if err != nil {
		b.Fatal(err)
	}
	defer v.Stop()
	c := benchClaims()
	for _, tc := range []struct {
		method jwt.SigningMethod
		priv   any
	}{
		{jwt.SigningMethodRS256, rsaKey()}, {jwt.SigningMethodPS256, rsaKey()}, {jwt.SigningMethodES256, p256Key()},
		{jwt.SigningMethodEdDSA, edKey()}, {jwt.SigningMethodHS256, hmacSecret()},
	} {
		token := sign(b, tc.method, tc.priv, "", c)
		b.Run(tc.method.Alg(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	v, token := cachedVerifier(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateCached is the gateway's hot path: header lookup, prefix, cache hit.
func BenchmarkAuthenticateCached(b *testing.B) {
	v, token := cachedVerifier(b)
	r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateCachedParallel(b *testing.B) {
	v, token := cachedVerifier(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		for pb.Next() {
			if _, err := v.Authenticate(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func cachedVerifier(b *testing.B) (*Verifier, string) {
	cfg := allKeysConfig(b)
	cfg.CacheSize = 10000
	v, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Stop)
	token := sign(b, jwt.SigningMethodRS256, rsaKey(), "", benchClaims())
	if _, err := v.Verify(token); err != nil {
		b.Fatal(err)
	}
	return v, token
}

// benchClaims is a realistic token: a tenant, two labels and a filter.
func benchClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": "https://issuer.example", "sub": "grafana", "aud": "vmgateway",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"vm_access": map[string]any{
			"tenant_id":     map[string]any{"account_id": 12, "project_id": 3},
			"extra_labels":  map[string]string{"team": "dev", "env": "prod"},
			"extra_filters": []string{`{job=~"api|web"}`},
			"mode":          1,
		},
	}
}

// BenchmarkRejectedToken is the cost of a flood of one bad token: verified in full every time (negative cache off)
// against answered from the negative cache. forged is RS256 signed with a key the gateway does not trust; expired
// has a valid RS256 signature and is refused by its claims.
//
//	go test -run '^$' -bench BenchmarkRejectedToken -benchmem ./internal/auth/
func BenchmarkRejectedToken(b *testing.B) {
	pub := pemOf(b, &rsaKey().PublicKey)
	expiredClaims := benchClaims()
	expiredClaims["exp"] = time.Now().Add(-time.Hour).Unix()
	tokens := []struct{ name, token string }{
		{"forged_RS256", sign(b, jwt.SigningMethodRS256, rsaKey2(), "", benchClaims())},
		{"expired_RS256", sign(b, jwt.SigningMethodRS256, rsaKey(), "", expiredClaims)},
	}
	for _, cache := range []struct {
		name string
		ttl  time.Duration
	}{{"uncached", 0}, {"negative_cached", time.Minute}} {
		v, err := New(Config{PublicKeys: []string{pub}, CacheSize: 10000, NegativeCacheTTL: cache.ttl})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(v.Stop)
		for _, tok := range tokens {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
			r.Header.Set("Authorization", "Bearer "+tok.token)
			b.Run(tok.name+"/"+cache.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.Authenticate(r); err == nil {
						b.Fatal("a bad token was accepted")
					}
				}
			})
		}
	}
}
