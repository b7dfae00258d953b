package auth

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// provider is an identity provider in a test: an OIDC discovery document and a JWKS that tests change at will.
type provider struct {
	srv *httptest.Server

	mu     sync.Mutex
	jwks   string
	status int // non-zero: answer /keys with this status

	keyHits atomic.Int64
}

func newProvider(t testing.TB, keys ...map[string]any) *provider {
	p := &provider{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, p.srv.URL, p.srv.URL+"/keys")
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		p.keyHits.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.status != 0 {
			http.Error(w, "provider is down", p.status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(p.jwks))
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	p.setKeys(t, keys...)
	return p
}

func (p *provider) setKeys(t testing.TB, keys ...map[string]any) {
	p.setBody(mustJSON(t, map[string]any{"keys": keys}))
}

func (p *provider) setBody(body string) {
	p.mu.Lock()
	p.jwks, p.status = body, 0
	p.mu.Unlock()
}

func (p *provider) fail(status int) {
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
}

func TestParseJWKS(t *testing.T) {
	e := base64.RawURLEncoding
	notOnCurve := jwkOf(t, &p256Key().PublicKey, "bad", "")
	notOnCurve["y"] = notOnCurve["x"]
	shortX := jwkOf(t, &p256Key().PublicKey, "short", "")
	shortX["x"] = e.EncodeToString([]byte{1, 2, 3})
	weak := jwkOf(t, &mustRSA(1024).PublicKey, "weak", "")
	evenE := jwkOf(t, &rsaKey().PublicKey, "even", "")
	evenE["e"] = e.EncodeToString([]byte{1, 0, 0})
	padded := jwkOf(t, &rsaKey().PublicKey, "padded", "")
	padded["n"] = base64.URLEncoding.EncodeToString(rsaKey().N.Bytes())

	for _, tc := range []struct {
		name     string
		keys     []map[string]any
		wantKids string // kids of the usable keys with their algs
		skipped  string // substring of the skip reasons
	}{
		{"every type", []map[string]any{
			jwkOf(t, &rsaKey().PublicKey, "r", ""), jwkOf(t, &p256Key().PublicKey, "e256", ""),
			jwkOf(t, &p384Key().PublicKey, "e384", ""), jwkOf(t, &p521Key().PublicKey, "e521", ""),
			jwkOf(t, edKey().Public(), "ed", ""),
		}, "r:RS256,RS384,RS512,PS256,PS384,PS512 e256:ES256 e384:ES384 e521:ES512 ed:EdDSA", ""},
		{"alg narrows a key", []map[string]any{jwkOf(t, &rsaKey().PublicKey, "r", "PS256")}, "r:PS256", ""},
		{"padded base64 tolerated", []map[string]any{padded}, "padded:RS256,RS384,RS512,PS256,PS384,PS512", ""},
		{"alg that does not fit", []map[string]any{jwkOf(t, &rsaKey().PublicKey, "r", "ES256"), jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", `alg "ES256" does not fit the RSA-2048 key`},
		{"encryption key", []map[string]any{{"kty": "RSA", "kid": "enc", "use": "enc", "n": "x", "e": "AQAB"}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", `use "enc" is not "sig"`},
		{"key_ops without verify", []map[string]any{{"kty": "RSA", "kid": "x", "key_ops": []string{"encrypt"}}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "lacks \"verify\""},
		{"symmetric key", []map[string]any{{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "symmetric keys are not taken from a JWKS"},
		{"unknown kty", []map[string]any{{"kty": "XYZ"}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", `kty "XYZ" is not supported`},
		{"unsupported alg", []map[string]any{{"kty": "RSA", "alg": "RSA-OAEP"}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", `alg "RSA-OAEP" is not a supported`},
		{"point not on curve", []map[string]any{notOnCurve, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "invalid P-256 point"},
		{"short coordinate", []map[string]any{shortX, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "must have 32 bytes each"},
		{"weak RSA", []map[string]any{weak, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "1024 bits"},
		{"even RSA exponent", []map[string]any{evenE, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "e=65536 is invalid"},
		{"Ed448", []map[string]any{{"kty": "OKP", "crv": "Ed448", "x": "AA"}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", `crv "Ed448" is not supported`},
		{"missing parameter", []map[string]any{{"kty": "EC", "crv": "P-256", "x": "AA"}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", `parameter "y" is missing`},
		{"member of the wrong type", []map[string]any{{"kty": 7}, jwkOf(t, edKey().Public(), "ed", "")}, "ed:EdDSA", "key #0: json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, skipped, err := parseJWKS([]byte(mustJSON(t, map[string]any{"keys": tc.keys})), "test")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range keys {
				got = append(got, k.kid+":"+strings.Join(k.algs, ","))
			}
			if strings.Join(got, " ") != tc.wantKids {
				t.Fatalf("keys = %s, want %s", strings.Join(got, " "), tc.wantKids)
			}
			if tc.skipped == "" && len(skipped) > 0 || !strings.Contains(strings.Join(skipped, "; "), tc.skipped) {
				t.Fatalf("skipped = %q, want %q", skipped, tc.skipped)
			}
		})
	}

	for _, body := range []string{`{"keys":[]}`, `{}`, `not json`, `{"keys":[{"kty":"oct","k":"AA"}]}`, `[]`} {
		if keys, _, err := parseJWKS([]byte(body), "test"); err == nil {
			t.Fatalf("parseJWKS(%s) = %d keys, want an error", body, len(keys))
		}
	}
}

func TestJWKSKeySelection(t *testing.T) {
	clk := newClock()
	p := newProvider(t,
		jwkOf(t, &rsaKey().PublicKey, "r1", ""), jwkOf(t, &rsaKey2().PublicKey, "r2", "RS256"),
		jwkOf(t, &p256Key().PublicKey, "e1", ""), jwkOf(t, edKey().Public(), "o1", ""))
	v := newTestVerifier(t, Config{JWKSEndpoints: []string{p.srv.URL + "/keys"}}, clk)
	c := claimsAt(clk.now())
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"RSA by kid", sign(t, jwt.SigningMethodPS384, rsaKey(), "r1", c), ""},
		{"second RSA by kid", sign(t, jwt.SigningMethodRS256, rsaKey2(), "r2", c), ""},
		{"EC by kid", sign(t, jwt.SigningMethodES256, p256Key(), "e1", c), ""},
		{"Ed25519 by kid", sign(t, jwt.SigningMethodEdDSA, edKey(), "o1", c), ""},
		{"no kid tries every fitting key", sign(t, jwt.SigningMethodRS256, rsaKey2(), "", c), ""},
		{"kid of another key", sign(t, jwt.SigningMethodRS256, rsaKey2(), "r1", c), reasonBadSignature},
		{"alg outside the JWK's alg", sign(t, jwt.SigningMethodPS256, rsaKey2(), "r2", c), reasonNoKey},
		{"kid of a key of another type", sign(t, jwt.SigningMethodES256, p256Key(), "r1", c), reasonNoKey},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey(), "nope", c), reasonUnknownKid},
		{"HS256 keyed with a JWK's n", sign(t, jwt.SigningMethodHS256, rsaKey().N.Bytes(), "r1", c), reasonNoKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}

// TestKeyRotation: a token with a new kid is accepted once the rate-limited refetch has seen the new key, and
// made-up kids cannot make the gateway fetch more often than the limit.
func TestKeyRotation(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, &rsaKey().PublicKey, "old", ""))
	v := newTestVerifier(t, Config{JWKSEndpoints: []string{p.srv.URL + "/keys"}, KeysRefetchMinInterval: 30 * time.Second}, clk)
	if n := p.keyHits.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	p.setKeys(t, jwkOf(t, &rsaKey().PublicKey, "old", ""), jwkOf(t, &p384Key().PublicKey, "new", ""))
	rotated := sign(t, jwt.SigningMethodES384, p384Key(), "new", claimsAt(clk.now()))

	clk.advance(time.Second)
	if _, err := v.Verify(rotated); reasonOf(t, err) != reasonUnknownKid {
		t.Fatalf("within the refetch interval: %v, want unknown_kid", err)
	}
	if n := p.keyHits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1: the refetch must wait for -auth.keysRefetchMinInterval", n)
	}

	clk.advance(30 * time.Second)
	if _, err := v.Verify(rotated); err != nil {
		t.Fatalf("after the refetch interval: %v", err)
	}
	if n := p.keyHits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}

	// A burst of made-up kids, concurrently: at most one fetch per interval.
	clk.advance(31 * time.Second)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := v.Verify(sign(t, jwt.SigningMethodES384, p384Key(), fmt.Sprint("made-up-", i), claimsAt(clk.now())))
			if reasonOf(t, err) != reasonUnknownKid {
				t.Errorf("made-up kid: %v", err)
			}
		})
	}
	wg.Wait()
	if n := p.keyHits.Load(); n != 3 {
		t.Fatalf("%d fetches after a burst of unknown kids, want 3", n)
	}
}

// TestProviderDown: failed fetches keep the last good keys; a successful fetch that drops a key also drops the
// tokens cached with it.
func TestProviderDown(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, &rsaKey().PublicKey, "k1", ""), jwkOf(t, &p256Key().PublicKey, "k2", ""))
	url := p.srv.URL + "/keys"
	v := newTestVerifier(t, Config{JWKSEndpoints: []string{url}, CacheSize: 100}, clk)
	k1 := sign(t, jwt.SigningMethodRS256, rsaKey(), "k1", claimsAt(clk.now()))
	k1Fresh := sign(t, jwt.SigningMethodRS512, rsaKey(), "k1", claimsAt(clk.now()))
	k2 := sign(t, jwt.SigningMethodES256, p256Key(), "k2", claimsAt(clk.now()))
	if _, err := v.Verify(k1); err != nil {
		t.Fatal(err)
	}

	for _, outage := range []struct {
		name  string
		cause func()
	}{
		{"500", func() { p.fail(http.StatusInternalServerError) }},
		{"bad JSON", func() { p.setBody(`{"keys":[{"kty":`) }},
		{"no keys", func() { p.setBody(`{"keys":[]}`) }},
		{"only unusable keys", func() { p.setBody(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`) }},
		{"too large", func() { p.setBody(`{"keys":[],"pad":"` + strings.Repeat("x", maxKeysResponse) + `"}`) }},
	} {
		t.Run(outage.name, func(t *testing.T) {
			errs := keyFetchErrors(url).Get()
			outage.cause()
			v.keys.fetchAll()
			if got := keyFetchErrors(url).Get(); got != errs+1 {
				t.Fatalf("vmgateway_auth_key_fetch_errors_total = %d, want %d", got, errs+1)
			}
			// k1Fresh is not cached: it proves the keys themselves were kept.
			if _, err := v.Verify(k1Fresh); err != nil {
				t.Fatalf("after the failed fetch: %v", err)
			}
		})
	}

	p.setKeys(t, jwkOf(t, &p256Key().PublicKey, "k2", ""))
	v.keys.fetchAll()
	if _, err := v.Verify(k1); reasonOf(t, err) != reasonUnknownKid {
		t.Fatalf("token of a removed key: %v, want unknown_kid (also from the cache)", err)
	}
	if _, err := v.Verify(k2); err != nil {
		t.Fatal(err)
	}

	// The provider goes away altogether.
	p.srv.Close()
	v.keys.fetchAll()
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, p256Key(), "k2", claimsAt(clk.now()))); err != nil {
		t.Fatalf("with the provider gone: %v", err)
	}
}

func TestOIDCDiscovery(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, edKey().Public(), "ed", ""))
	v := newTestVerifier(t, Config{OIDCDiscoveryEndpoints: []string{p.srv.URL + "/.well-known/openid-configuration"}}, clk)
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, edKey(), "ed", claimsAt(clk.now()))); err != nil {
		t.Fatal(err)
	}

	// A discovery document without jwks_uri yields no keys: tokens are rejected, New still succeeds.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"issuer":"x"}`))
	}))
	defer bad.Close()
	url := bad.URL + "/.well-known/openid-configuration"
	errs := keyFetchErrors(url).Get()
	v2 := newTestVerifier(t, Config{OIDCDiscoveryEndpoints: []string{url}}, clk)
	if got := keyFetchErrors(url).Get(); got != errs+1 {
		t.Fatalf("vmgateway_auth_key_fetch_errors_total = %d, want %d", got, errs+1)
	}
	if _, err := v2.Verify(sign(t, jwt.SigningMethodEdDSA, edKey(), "ed", claimsAt(clk.now()))); reasonOf(t, err) != reasonUnknownKid {
		t.Fatalf("without keys: %v, want unknown_kid", err)
	}
	if _, err := v2.Verify(sign(t, jwt.SigningMethodEdDSA, edKey(), "", claimsAt(clk.now()))); reasonOf(t, err) != reasonNoKey {
		t.Fatalf("without keys, no kid: %v, want no_key", err)
	}
}

// TestBackgroundRefresh: the refresh loop retries a provider that was down at start, and picks up removed keys.
func TestBackgroundRefresh(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, &p256Key().PublicKey, "k1", ""))
	p.fail(http.StatusServiceUnavailable)
	v := newTestVerifier(t, Config{
		JWKSEndpoints:          []string{p.srv.URL + "/keys"},
		KeysRefreshInterval:    20 * time.Millisecond,
		KeysRefetchMinInterval: 20 * time.Millisecond,
		CacheSize:              10,
	}, clk)
	// The fake clock stands still, so a request never refetches: only the background loop can load keys.
	token := sign(t, jwt.SigningMethodES256, p256Key(), "k1", claimsAt(clk.now()))
	if _, err := v.Verify(token); reasonOf(t, err) != reasonUnknownKid {
		t.Fatalf("with the provider down at start: %v, want unknown_kid", err)
	}
	p.setKeys(t, jwkOf(t, &p256Key().PublicKey, "k1", ""))
	vmtest.Eventually(t, func() (bool, string) {
		_, err := v.Verify(token)
		return err == nil, fmt.Sprint("token still rejected: ", err)
	})
	p.setKeys(t, jwkOf(t, &rsaKey().PublicKey, "k2", ""))
	vmtest.Eventually(t, func() (bool, string) {
		_, err := v.Verify(token)
		return reasonOf(t, err) == reasonUnknownKid, fmt.Sprint("token of a removed key still accepted: ", err)
	})
}

func TestKeysTLSCAFile(t *testing.T) {
	clk := newClock()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(mustJSON(t, map[string]any{"keys": []any{jwkOf(t, &p256Key().PublicKey, "k", "")}})))
	}))
	defer srv.Close()
	ca := writeFile(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	token := sign(t, jwt.SigningMethodES256, p256Key(), "k", claimsAt(clk.now()))

	v := newTestVerifier(t, Config{JWKSEndpoints: []string{srv.URL}, KeysTLSCAFile: ca}, clk)
	if _, err := v.Verify(token); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	untrusted := newTestVerifier(t, Config{JWKSEndpoints: []string{srv.URL}}, clk)
	if _, err := untrusted.Verify(token); reasonOf(t, err) != reasonUnknownKid {
		t.Fatalf("without the CA the keys must not load: %v", err)
	}
	if _, err := New(Config{JWKSEndpoints: []string{srv.URL}, KeysTLSCAFile: writeFile(t, "empty.pem", []byte("x"))}); err == nil ||
		!strings.Contains(err.Error(), "-auth.keysTLSCAFile=") || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("CA file without certificates: %v", err)
	}
}

// TestMixedSources: PEM keys and HMAC secrets have no kid and are tried for any token whose alg fits, next to the
// JWKS keys chosen by kid.
func TestMixedSources(t *testing.T) {
	clk := newClock()
	p := newProvider(t, jwkOf(t, &p256Key().PublicKey, "e1", ""))
	v := newTestVerifier(t, Config{
		PublicKeys:      []string{pemOf(t, &rsaKey().PublicKey)},
		HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())},
		JWKSEndpoints:   []string{p.srv.URL + "/keys"},
	}, clk)
	c := claimsAt(clk.now())
	for _, tc := range []struct {
		name, token, reason, msg string
	}{
		{"JWKS key by kid", sign(t, jwt.SigningMethodES256, p256Key(), "e1", c), "", ""},
		{"PEM key, token without kid", sign(t, jwt.SigningMethodRS256, rsaKey(), "", c), "", ""},
		{"PEM key, token with a kid the JWKS lacks", sign(t, jwt.SigningMethodRS256, rsaKey(), "issuer-kid", c), "", ""},
		{"HMAC secret, token with the kid of a JWKS key", sign(t, jwt.SigningMethodHS256, hmacSecret(), "e1", c), "", ""},
		{"unknown kid, wrong key", sign(t, jwt.SigningMethodRS256, rsaKey2(), "issuer-kid", c), reasonUnknownKid,
			`unknown key id "issuer-kid", and the signature does not verify with any of the 1 keys without an id`},
		{"no key for EdDSA", sign(t, jwt.SigningMethodEdDSA, edKey(), "", c), reasonNoKey,
			"no configured key can verify alg EdDSA (keys: 1 RSA-2048, 1 64-byte HMAC secret, 1 EC P-256)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			if got := reasonOf(t, err); got != tc.reason || err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %q (%v), want %q with %q", got, err, tc.reason, tc.msg)
			}
		})
	}
}
