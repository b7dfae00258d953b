package auth

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// allKeysConfig trusts one key of every type: RSA, the three EC curves and Ed25519 as PEM, and one HMAC secret.
func allKeysConfig(t testing.TB) Config {
	return Config{
		PublicKeys: []string{
			pemOf(t, &rsaKey().PublicKey) + pemOf(t, &p256Key().PublicKey),
			pemOf(t, &p384Key().PublicKey),
		},
		PublicKeyFiles: []string{
			writeFile(t, "p521.pem", []byte(pemOf(t, &p521Key().PublicKey))),
			writeFile(t, "ed.pem", []byte(pemOf(t, edKey().Public()))),
		},
		HMACSecretFiles: []string{writeFile(t, "hmac", append(hmacSecret(), '\n'))},
	}
}

func TestVerifyEveryAlgorithm(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, allKeysConfig(t), clk)
	for _, tc := range []struct {
		method jwt.SigningMethod
		priv   any
	}{
		{jwt.SigningMethodRS256, rsaKey()}, {jwt.SigningMethodRS384, rsaKey()}, {jwt.SigningMethodRS512, rsaKey()},
		{jwt.SigningMethodPS256, rsaKey()}, {jwt.SigningMethodPS384, rsaKey()}, {jwt.SigningMethodPS512, rsaKey()},
		{jwt.SigningMethodES256, p256Key()}, {jwt.SigningMethodES384, p384Key()}, {jwt.SigningMethodES512, p521Key()},
		{jwt.SigningMethodEdDSA, edKey()},
		{jwt.SigningMethodHS256, hmacSecret()}, {jwt.SigningMethodHS384, hmacSecret()}, {jwt.SigningMethodHS512, hmacSecret()},
	} {
		t.Run(tc.method.Alg(), func(t *testing.T) {
			token := sign(t, tc.method, tc.priv, "", claimsAt(clk.now()))
			a, err := v.Verify(token)
			if err != nil {
				t.Fatalf("Verify: %s", err)
			}
			if a.Tenant != (tenant.ID{AccountID: 1, ProjectID: 2}) || a.Mode != ModeRead || a.Subject != "alice" || a.Enforcer != nil {
				t.Fatalf("Access = %+v; want tenant 1:2, mode read, subject alice, no enforcer", a)
			}
			if want := clk.now().Add(time.Hour); !a.ExpiresAt.Equal(want) {
				t.Fatalf("ExpiresAt = %s, want %s", a.ExpiresAt, want)
			}
			if a.Claims["sub"] != "alice" {
				t.Fatalf("Claims = %v; want sub alice", a.Claims)
			}
		})
	}
}

func TestRejectReasons(t *testing.T) {
	clk := newClock()
	now := clk.now()
	cfg := allKeysConfig(t)
	cfg.Issuer, cfg.Audience = "https://issuer.example", "vmgateway"
	cfg.Leeway = 30 * time.Second
	v := newTestVerifier(t, cfg, clk)

	// good claims pass the issuer and audience checks; each case breaks one thing.
	good := func() jwt.MapClaims {
		c := claimsAt(now)
		c["iss"], c["aud"] = "https://issuer.example", []string{"other", "vmgateway"}
		return c
	}
	with := func(k string, val any) jwt.MapClaims {
		c := good()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, rsaKey(), "", c) }
	es := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodES256, p256Key(), "", c) }
	goodPayload := mustJSON(t, good())
	otherRSA := sign(t, jwt.SigningMethodRS256, rsaKey2(), "", good())
	parts := strings.Split(rs(good()), ".")
	tampered := parts[0] + "." + strings.Split(rs(with("sub", "mallory")), ".")[1] + "." + parts[2]

	for _, tc := range []struct {
		name, token, reason, msg string
	}{
		{"ok", rs(good()), "", ""},
		{"ok at exp+leeway-1s", rs(with("exp", now.Add(-29*time.Second).Unix())), "", ""},
		{"ok with float exp", rs(with("exp", float64(now.Unix())+3600.5)), "", ""},
		{"ok with single audience string", rs(with("aud", "vmgateway")), "", ""},

		{"not a JWT", "abc", reasonMalformed, "not a JWT"},
		{"two parts", "a.b", reasonMalformed, "got 2 parts"},
		{"JWE", "a.b.c.d.e", reasonMalformed, "encrypted (JWE)"},
		{"header not base64", "%%%." + parts[1] + "." + parts[2], reasonMalformed, "header is not base64url"},
		{"header not JSON", rawToken("alg", goodPayload, nil), reasonMalformed, "header is not a JSON object"},
		{"kid not a string", rawToken(`{"alg":"RS256","kid":7}`, goodPayload, nil), reasonMalformed, "header is not a JSON object"},
		{"crit header", rawToken(`{"alg":"RS256","crit":["b64"],"b64":false}`, goodPayload, []byte("x")), reasonMalformed, "crit"},
		{"signature not base64", parts[0] + "." + parts[1] + ".!!", reasonMalformed, "signature is not base64url"},
		{"token too long", strings.Repeat("a", maxTokenLen+1), reasonMalformed, "bytes long"},

		{"alg none", rawToken(`{"alg":"none"}`, goodPayload, nil), reasonUnsupportedAlg, `alg "none"`},
		{"alg missing", rawToken(`{"typ":"JWT"}`, goodPayload, nil), reasonUnsupportedAlg, "not supported"},
		{"alg unknown", rawToken(`{"alg":"HS1"}`, goodPayload, nil), reasonUnsupportedAlg, `alg "HS1" is not supported`},

		{"bad signature: other RSA key", otherRSA, reasonBadSignature, "does not verify with any of the 1 keys for alg RS256"},
		{"bad signature: tampered payload", tampered, reasonBadSignature, "does not verify"},
		{"bad signature: ES256 with a P-256 key of another", sign(t, jwt.SigningMethodES256, mustEC(p256Key().Curve), "", good()), reasonBadSignature, "alg ES256"},

		{"payload not JSON", hsRaw(t, `{"exp":`), reasonMalformed, "payload is not JSON"},
		{"payload an array", hsRaw(t, `[1,2]`), reasonMalformed, "must be a JSON object, got an array"},
		{"payload with trailing data", hsRaw(t, goodPayload+`{}`), reasonMalformed, "after the JSON value"},
		{"exp a string", rs(with("exp", "tomorrow")), reasonMalformed, "exp claim must be a number"},
		{"exp out of range", rs(with("exp", 1e300)), reasonMalformed, "out of range"},
		{"iss a number", rs(with("iss", 7)), reasonMalformed, "iss claim must be a string"},
		{"aud a number", rs(with("aud", 7)), reasonMalformed, "aud claim must be a string or an array"},
		{"sub an object", rs(with("sub", map[string]any{})), reasonMalformed, "sub claim must be a string"},

		{"missing exp", rs(with("exp", nil)), reasonMissingExp, "no exp claim"},
		{"expired", rs(with("exp", now.Add(-31*time.Second).Unix())), reasonExpired, "the token expired at 2026-03-01T11:59:29Z"},
		{"expired exactly at exp+leeway", rs(with("exp", now.Add(-30*time.Second).Unix())), reasonExpired, "expired"},
		{"nbf in the future", rs(with("nbf", now.Add(time.Minute).Unix())), reasonNotYetValid, "not valid before 2026-03-01T12:01:00Z"},
		{"iat in the future", rs(with("iat", now.Add(time.Minute).Unix())), reasonNotYetValid, "issued in the future"},
		{"nbf within leeway", rs(with("nbf", now.Add(20*time.Second).Unix())), "", ""},
		{"issuer wrong", rs(with("iss", "https://evil.example")), reasonIssuer, `issuer "https://evil.example" is not the expected "https://issuer.example"`},
		{"issuer missing", rs(with("iss", nil)), reasonIssuer, `issuer ""`},
		{"audience wrong", rs(with("aud", "grafana")), reasonAudience, `does not include "vmgateway"`},
		{"audience missing", rs(with("aud", nil)), reasonAudience, "audience"},
		{"vm_access missing", rs(with("vm_access", nil)), reasonMissingVMAccess, "vm_access claim missing"},
		{"vm_access null", es(with("vm_access", json.RawMessage("null"))), reasonMissingVMAccess, "vm_access claim missing"},
		{"mode 3", rs(with("vm_access", map[string]any{"mode": 3})), reasonBadVMAccess, "vm_access.mode: must be 0 (full), 1 (read) or 2 (write), got 3"},
		{"tenant too big", rs(with("vm_access", map[string]any{"tenant_id": map[string]any{"account_id": int64(4294967296)}})), reasonBadVMAccess, "account_id: must be an integer in [0, 4294967295], got 4294967296"},
		{"invalid extra filter", rs(with("vm_access", map[string]any{"extra_filters": []string{"rate(x[5m])"}})), reasonBadVMAccess, "invalid extra filter"},
		{"invalid extra label name", rs(with("vm_access", map[string]any{"extra_labels": map[string]string{"bad-name": "x"}})), reasonBadVMAccess, "invalid extra label"},
		{"unknown vm_access field", rs(with("vm_access", map[string]any{"extra_label": map[string]string{"team": "x"}})), reasonBadVMAccess, "vm_access.extra_label: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rejects[orDefault(tc.reason, reasonMalformed)].Get()
			a, err := v.Verify(tc.token)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.reason)
			}
			if strings.HasPrefix(tc.name, "two tokens") && !strings.Contains(err.Error(), "holds more than one token") {
				t.Fatalf("error %q, want it to say the header holds more than one token", err)
			}
			if tc.reason == "" {
				if a == nil {
					t.Fatal("nil Access without an error")
				}
				return
			}
			if a != nil {
				t.Fatalf("Access %+v returned with an error", a)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("message %q does not contain %q", err, tc.msg)
			}
			if got := rejects[tc.reason].Get(); got != before+1 {
				t.Fatalf("vmgateway_auth_rejects_total{reason=%q} = %d, want %d", tc.reason, got, before+1)
			}
			var e *Error
			errors.As(err, &e)
			if e.HTTPStatus() != http.StatusUnauthorized {
				t.Fatalf("HTTPStatus = %d", e.HTTPStatus())
			}
			if !strings.HasPrefix(e.WWWAuthenticate(), `Bearer error="invalid_token", error_description="`) {
				t.Fatalf("WWWAuthenticate = %s", e.WWWAuthenticate())
			}
		})
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// hsRaw signs an arbitrary payload text with the test HMAC secret.
func hsRaw(t testing.TB, payload string) string {
	t.Helper()
	signingInput := rawToken(`{"alg":"HS256"}`, payload, nil)
	signingInput = signingInput[:len(signingInput)-1]
	sig, err := jwt.SigningMethodHS256.Sign(signingInput, hmacSecret())
	if err != nil {
		t.Fatal(err)
	}
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestAlgorithmConfusion checks that a token never passes with a key its alg does not fit, whatever the attacker
// puts in the header.
func TestAlgorithmConfusion(t *testing.T) {
	clk := newClock()
	rsaPEM := pemOf(t, &rsaKey().PublicKey)
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	onlyRSA := newTestVerifier(t, Config{PublicKeys: []string{rsaPEM}}, clk)
	// With an HMAC secret configured too, HS256 tokens reach the HMAC check, and still must not pass.
	rsaAndHMAC := newTestVerifier(t, Config{PublicKeys: []string{rsaPEM}, HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}}, clk)
	onlyEC := newTestVerifier(t, Config{PublicKeys: []string{pemOf(t, &p256Key().PublicKey)}}, clk)
	claims := claimsAt(clk.now())
	payload := mustJSON(t, claims)

	for _, tc := range []struct {
		name   string
		v      *Verifier
		token  string
		reason string
	}{
		{"none", onlyRSA, rawToken(`{"alg":"none","typ":"JWT"}`, payload, nil), reasonUnsupportedAlg},
		{"None", onlyRSA, rawToken(`{"alg":"None"}`, payload, nil), reasonUnsupportedAlg},
		{"none with a signature", onlyRSA, rawToken(`{"alg":"none"}`, payload, []byte("sig")), reasonUnsupportedAlg},
		{"HS256 keyed with the RSA PEM", onlyRSA, sign(t, jwt.SigningMethodHS256, []byte(rsaPEM), "", claims), reasonNoKey},
		{"HS256 keyed with the RSA DER", onlyRSA, sign(t, jwt.SigningMethodHS256, der, "", claims), reasonNoKey},
		{"HS256 keyed with the RSA PEM, HMAC configured", rsaAndHMAC, sign(t, jwt.SigningMethodHS256, []byte(rsaPEM), "", claims), reasonBadSignature},
		{"HS512 keyed with the RSA PEM, HMAC configured", rsaAndHMAC, sign(t, jwt.SigningMethodHS512, []byte(rsaPEM), "", claims), reasonBadSignature},
		{"RS256 against an EC key", onlyEC, sign(t, jwt.SigningMethodRS256, rsaKey(), "", claims), reasonNoKey},
		{"ES384 against a P-256 key", onlyEC, sign(t, jwt.SigningMethodES384, p384Key(), "", claims), reasonNoKey},
		{"EdDSA against an RSA key", onlyRSA, sign(t, jwt.SigningMethodEdDSA, edKey(), "", claims), reasonNoKey},
		{"ES256 signature relabelled RS256", onlyRSA, relabel(t, sign(t, jwt.SigningMethodES256, p256Key(), "", claims), "RS256"), reasonBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.v.Verify(tc.token)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}

// relabel replaces the alg of a signed token's header, keeping its payload and signature.
func relabel(t testing.TB, token, alg string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	return base64.RawURLEncoding.EncodeToString([]byte(mustJSON(t, map[string]string{"alg": alg}))) + "." + parts[1] + "." + parts[2]
}

func TestAuthenticateHeader(t *testing.T) {
	clk := newClock()
	secret := writeFile(t, "s", hmacSecret())
	token := sign(t, jwt.SigningMethodHS256, hmacSecret(), "", claimsAt(clk.now()))
	strict := newTestVerifier(t, Config{HMACSecretFiles: []string{secret}}, clk)
	bare := newTestVerifier(t, Config{HMACSecretFiles: []string{secret}, AllowWithoutPrefix: true}, clk)
	custom := newTestVerifier(t, Config{HMACSecretFiles: []string{secret}, HTTPHeader: "x-vm-token"}, clk)

	for _, tc := range []struct {
		name   string
		v      *Verifier
		header string
		values []string
		reason string
	}{
		{"Bearer", strict, "Authorization", []string{"Bearer " + token}, ""},
		{"bearer", strict, "Authorization", []string{"bearer " + token}, ""},
		{"BEARER", strict, "Authorization", []string{"BEARER " + token}, ""},
		{"extra spaces", strict, "Authorization", []string{"Bearer   " + token + " "}, ""},
		{"no header", strict, "Authorization", nil, reasonMissingToken},
		{"empty header", strict, "Authorization", []string{""}, reasonMissingToken},
		{"empty token", strict, "Authorization", []string{"Bearer   "}, reasonMissingToken},
		{"bare token refused", strict, "Authorization", []string{token}, reasonMissingToken},
		{"Basic refused", strict, "Authorization", []string{"Basic dXNlcjpwYXNz"}, reasonMissingToken},
		{"Bearer without space", strict, "Authorization", []string{"Bearer" + token}, reasonMissingToken},
		{"two headers", strict, "Authorization", []string{"Bearer " + token, "Bearer " + token}, reasonMalformed},
		{"two tokens in one header", strict, "Authorization", []string{"Bearer " + token + ", Bearer " + token}, reasonMalformed},
		{"two tokens by a space", strict, "Authorization", []string{"Bearer " + token + " " + token}, reasonMalformed},
		{"bare token allowed", bare, "Authorization", []string{token}, ""},
		{"Bearer with bare allowed", bare, "Authorization", []string{"Bearer " + token}, ""},
		{"Basic with bare allowed", bare, "Authorization", []string{"Basic dXNlcjpwYXNz"}, reasonMalformed},
		{"custom header", custom, "X-Vm-Token", []string{"Bearer " + token}, ""},
		{"custom header ignores Authorization", custom, "Authorization", []string{"Bearer " + token}, reasonMissingToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
			if tc.values != nil {
				r.Header[tc.header] = tc.values
			}
			before := r.Header.Clone()
			a, err := tc.v.Authenticate(r)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.reason)
			}
			if tc.reason == "" && (a == nil || a.Subject != "alice") {
				t.Fatalf("Access = %+v", a)
			}
			if fmt.Sprint(r.Header) != fmt.Sprint(before) {
				t.Fatalf("Authenticate changed the request headers: %v, was %v", r.Header, before)
			}
		})
	}
}

func TestSkipVerify(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{SkipVerify: true}, clk)
	if got := verificationDisabled.Get(); got != 1 {
		t.Fatalf("vmgateway_auth_signature_verification_disabled = %v, want 1", got)
	}
	claims := claimsAt(clk.now())
	for _, token := range []string{
		rawToken(`{"alg":"none"}`, mustJSON(t, claims), nil),
		sign(t, jwt.SigningMethodRS256, rsaKey2(), "unknown", claims),
	} {
		if a, err := v.Verify(token); err != nil || a.Tenant.AccountID != 1 {
			t.Fatalf("Verify(%s) = %+v, %v; want the claims accepted unverified", token, a, err)
		}
	}
	// The claims are still checked.
	claims["exp"] = clk.now().Add(-time.Hour).Unix()
	if _, err := v.Verify(rawToken(`{"alg":"none"}`, mustJSON(t, claims), nil)); reasonOf(t, err) != reasonExpired {
		t.Fatalf("expired token: %v, want expired", err)
	}
	// A verifying Verifier resets the gauge.
	newTestVerifier(t, Config{PublicKeys: []string{pemOf(t, &p256Key().PublicKey)}}, clk)
	if got := verificationDisabled.Get(); got != 0 {
		t.Fatalf("vmgateway_auth_signature_verification_disabled = %v, want 0", got)
	}
}

func TestNewErrors(t *testing.T) {
	weakRSA := mustRSA(1024)
	privDER, _ := x509.MarshalPKCS8PrivateKey(p256Key())
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	goodPEM := pemOf(t, &p256Key().PublicKey)
	for _, tc := range []struct {
		name string
		cfg  Config
		msg  string
	}{
		{"no key source", Config{}, "pass -auth.publicKeys, -auth.publicKeyFiles, -auth.hmacSecretFiles, -auth.jwksEndpoints or -auth.oidcDiscoveryEndpoints; or pass -auth.skipVerify"},
		{"skipVerify with keys", Config{SkipVerify: true, PublicKeys: []string{goodPEM}}, "-auth.skipVerify cannot be combined"},
		{"not PEM", Config{PublicKeys: []string{"MIIBIjANBgkq"}}, "-auth.publicKeys #1: no PEM block found"},
		{"private key", Config{PublicKeys: []string{privPEM}}, "this is a private key"},
		{"weak RSA", Config{PublicKeys: []string{pemOf(t, &weakRSA.PublicKey)}}, "the RSA key has 1024 bits; at least 2048 are required"},
		{"text after PEM", Config{PublicKeys: []string{goodPEM + "garbage"}}, "unexpected text after the last PEM block"},
		{"missing key file", Config{PublicKeyFiles: []string{"/nonexistent/key.pem"}}, "-auth.publicKeyFiles: open /nonexistent/key.pem"},
		{"missing secret file", Config{HMACSecretFiles: []string{"/nonexistent/secret"}}, "-auth.hmacSecretFiles: cannot read the HMAC secret"},
		{"short secret", Config{HMACSecretFiles: []string{writeFile(t, "s", []byte("password\n"))}}, "the HMAC secret has 8 bytes; at least 32"},
		{"bad JWKS URL", Config{JWKSEndpoints: []string{"keys.json"}}, "-auth.jwksEndpoints: \"keys.json\" is not an absolute http or https URL"},
		{"bad OIDC URL", Config{OIDCDiscoveryEndpoints: []string{"ftp://x/"}}, "-auth.oidcDiscoveryEndpoints"},
		{"missing CA file", Config{JWKSEndpoints: []string{"http://127.0.0.1:1/"}, KeysTLSCAFile: "/nonexistent/ca.pem"}, "-auth.keysTLSCAFile"},
		{"negative leeway", Config{PublicKeys: []string{goodPEM}, Leeway: -time.Second}, "-auth.leeway=-1s must not be negative"},
		{"bad header name", Config{PublicKeys: []string{goodPEM}, HTTPHeader: "X Token"}, "not a valid HTTP header name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.cfg)
			if err == nil {
				v.Stop()
				t.Fatalf("New succeeded; want an error containing %q", tc.msg)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

func TestAccessFromClaims(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}}, clk)
	claims := claimsAt(clk.now())
	claims["vm_access"] = map[string]any{
		"tenant_id":     map[string]any{"account_id": int64(4294967295), "project_id": 0},
		"extra_labels":  map[string]string{"team": "dev", "env": "prod", "app": "x"},
		"extra_filters": []string{`{job=~"a|b"}`},
		"mode":          2,
	}
	a, err := v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret(), "", claims))
	if err != nil {
		t.Fatal(err)
	}
	if a.Tenant != (tenant.ID{AccountID: 4294967295}) || a.Mode != ModeWrite {
		t.Fatalf("Access = %+v", a)
	}
	if a.Mode.Allows(route.Read) || !a.Mode.Allows(route.Write) {
		t.Fatalf("a write token must allow writes only")
	}
	if got := fmt.Sprint(a.Enforcer.Labels()); got != "[{app x} {env prod} {team dev}]" {
		t.Fatalf("labels = %s; want them sorted by name", got)
	}
	if got := fmt.Sprint(a.Enforcer.Filters()); got != `[{job=~"a|b"}]` {
		t.Fatalf("filters = %s", got)
	}
	// The vmauth shape grants the same, with vm_access as a string.
	claims["vm_access"] = `{"metrics_account_id":4294967295,"metrics_extra_labels":["team=dev","env=prod","app=x"],` +
		`"metrics_extra_filters":["{job=~\"a|b\"}"],"mode":2,"logs_account_id":5}`
	b, err := v.Verify(sign(t, jwt.SigningMethodHS256, hmacSecret(), "", claims))
	if err != nil {
		t.Fatal(err)
	}
	if b.Tenant != a.Tenant || b.Mode != a.Mode || b.Enforcer.String() != a.Enforcer.String() {
		t.Fatalf("vmauth shape: %+v (%s), want %+v (%s)", b, b.Enforcer, a, a.Enforcer)
	}
}

func TestLogInvalidTokens(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(old)

	clk := newClock()
	secret := writeFile(t, "s", hmacSecret())
	claims := claimsAt(clk.now())
	claims["exp"] = clk.now().Add(-time.Hour).Unix()
	token := sign(t, jwt.SigningMethodHS256, hmacSecret(), "k1", claims)
	sig := token[strings.LastIndexByte(token, '.')+1:]

	quiet := newTestVerifier(t, Config{HMACSecretFiles: []string{secret}}, clk)
	r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	if _, err := quiet.Authenticate(r); err == nil {
		t.Fatal("expired token accepted")
	}
	if buf.Len() != 0 {
		t.Fatalf("logged without LogInvalidTokens: %s", buf.String())
	}

	loud := newTestVerifier(t, Config{HMACSecretFiles: []string{secret}, LogInvalidTokens: true}, clk)
	if _, err := loud.Authenticate(r); err == nil {
		t.Fatal("expired token accepted")
	}
	out := buf.String()
	for _, want := range []string{"reason=expired", "token_header=", "k1", "token_claims=", "alice", "remote_addr=", "path=/api/v1/query"} {
		if !strings.Contains(out, want) {
			t.Fatalf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, sig) || strings.Contains(out, token) {
		t.Fatalf("log %q holds the signature or the raw token", out)
	}
}
