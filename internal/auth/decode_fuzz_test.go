package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzDecodeAgainstGolangJWT checks our decoder against golang-jwt's on valid tokens: each input is made into a
// token with the given claims, signed with a real key (RS256, ES256 or HS256), and read both by the verifier's
// path (splitToken, checkSignature, parseClaims, checkClaims) and by jwt.Parser with the same checks switched on
// (issuer, audience, exp required, nbf, iat, leeway, the three algs). Both must accept it with the same claims, or
// both refuse it. The only tokens we alone refuse are the ones the package doc says we refuse on purpose: a key
// given twice (duplicate_key) and nesting deeper than maxJSONDepth (malformed).
func FuzzDecodeAgainstGolangJWT(f *testing.F) {
	// flags: bits 0-1 pick the alg; 2 nbf, 3 iat, 4 iss, 5 aud, 6 aud as a list, 7 sub present.
	f.Add(uint8(0xff), int64(3600), int64(-60), int64(-60), "alice", "idp", "vmgateway", "groups", `["dev","ops"]`)
	f.Add(uint8(0x3d), int64(-10), int64(0), int64(0), "", "idp", "vmgateway", "n", `1.5e3`)
	f.Add(uint8(0x3e), int64(20), int64(40), int64(-5), "bob", "other", "vmgateway", "tid", `"15"`)
	f.Add(uint8(0xf2), int64(100), int64(-1), int64(31), "x", "idp", "vmgateway", "team", `{"a":1,"a":2}`)
	f.Add(uint8(0x72), int64(100), int64(0), int64(0), "x", "idp", "metrics", "team", `"dev"`)
	f.Add(uint8(0x31), int64(100), int64(0), int64(0), "x", "idp", "vmgateway", "deep", strings.Repeat("[", 40)+strings.Repeat("]", 40))
	f.Add(uint8(0x30), int64(100), int64(0), int64(0), "x", "idp", "vmgateway", "o", `{"b":{"c":null},"d":[true,false]}`)
	f.Add(uint8(0x30), int64(0), int64(0), int64(0), "x", "idp", "vmgateway", "s", `not json`)

	clk := newClock()
	secretFile := writeFile(f, "hmac", hmacSecret())
	secret, err := ReadHMACSecret(secretFile)
	if err != nil {
		f.Fatal(err)
	}
	const leeway = 30 * time.Second
	v := newTestVerifier(f, Config{
		PublicKeys:      []string{pemOf(f, &rsaKey().PublicKey), pemOf(f, &p256Key().PublicKey)},
		HMACSecretFiles: []string{secretFile},
		Issuer:          "idp",
		Audience:        "vmgateway",
		Leeway:          leeway,
	}, clk)
	type signer struct {
		m   jwt.SigningMethod
		key any
		pub any
	}
	signers := []signer{
		{jwt.SigningMethodRS256, rsaKey(), &rsaKey().PublicKey},
		{jwt.SigningMethodES256, p256Key(), &p256Key().PublicKey},
		{jwt.SigningMethodHS256, secret, secret},
		{jwt.SigningMethodRS256, rsaKey(), &rsaKey().PublicKey},
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "ES256", "HS256"}), jwt.WithJSONNumber(),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(leeway), jwt.WithIssuer("idp"),
		jwt.WithAudience("vmgateway"), jwt.WithTimeFunc(clk.now))
	e := base64.RawURLEncoding

	f.Fuzz(func(t *testing.T, flags uint8, exp, nbf, iat int64, sub, iss, aud, name, extra string) {
		// Whole seconds within a century of now: both libraries then read the same instants.
		const span = 100 * 365 * 24 * 3600
		at := func(d int64) int64 { return clk.now().Unix() + d%span }
		claims := map[string]any{"exp": at(exp)}
		if flags&4 != 0 {
			claims["nbf"] = at(nbf)
		}
		if flags&8 != 0 {
			claims["iat"] = at(iat)
		}
		if flags&16 != 0 {
			claims["iss"] = iss
		}
		if flags&32 != 0 {
			claims["aud"] = aud
			if flags&64 != 0 {
				claims["aud"] = []string{aud, "other"}
			}
		}
		if flags&128 != 0 {
			claims["sub"] = sub
		}
		if _, registered := map[string]bool{"exp": true, "nbf": true, "iat": true, "iss": true, "aud": true, "sub": true}[name]; !registered {
			if json.Valid([]byte(extra)) {
				claims[name] = json.RawMessage(extra)
			} else {
				claims[name] = extra
			}
		}
		payload, err := json.Marshal(claims)
		if err != nil {
			t.Fatalf("cannot encode the claims %v: %v", claims, err) // cannot happen: the raw extra is valid JSON
		}
		s := signers[flags&3]
		input := e.EncodeToString([]byte(`{"alg":"`+s.m.Alg()+`","typ":"JWT"}`)) + "." + e.EncodeToString(payload)
		sig, err := s.m.Sign(input, s.key)
		if err != nil {
			t.Fatal(err)
		}
		token := input + "." + e.EncodeToString(sig)

		ours, ourErr := verifyClaims(v, token, clk.now())
		theirs, theirErr := parser.Parse(token, func(*jwt.Token) (any, error) { return s.pub, nil })
		switch {
		case ourErr == nil && theirErr == nil:
			if got := map[string]any(theirs.Claims.(jwt.MapClaims)); !reflect.DeepEqual(ours, got) {
				t.Fatalf("the claims differ:\nours:       %#v\ngolang-jwt: %#v\ntoken payload: %s", ours, got, payload)
			}
		case ourErr == nil:
			t.Fatalf("we accept a token golang-jwt refuses (%v); payload %s", theirErr, payload)
		case theirErr == nil:
			var e *Error
			if !errors.As(ourErr, &e) {
				t.Fatalf("our refusal %v is not an *Error", ourErr)
			}
			onPurpose := e.Reason == reasonDuplicateKey || e.Reason == reasonMalformed && strings.Contains(e.msg, "nests deeper than")
			if !onPurpose {
				t.Fatalf("we refuse a token golang-jwt accepts: %s (%s); payload %s", ourErr, e.Reason, payload)
			}
		}
	})
}

// verifyClaims runs the verifier's path without the vm_access step, which golang-jwt has no equivalent of, and
// returns the claims it read.
func verifyClaims(v *Verifier, token string, now time.Time) (map[string]any, error) {
	t, err := splitToken(token)
	if err != nil {
		return nil, err
	}
	if err := v.checkSignature(t); err != nil {
		return nil, err
	}
	c, err := parseClaims(t.payload)
	if err != nil {
		return nil, err
	}
	if _, err := v.checkClaims(c, now); err != nil {
		return nil, err
	}
	return c.all, nil
}
