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
