// Package auth turns a request's bearer JWT into a verified Access: it takes the token from the request, verifies
// its signature with PEM public keys, HMAC secrets, JWKS or OIDC discovery keys, checks the time claims and reads
// the vm_access claim. Verified tokens are cached until they expire.
package auth

import (
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Verifier checks tokens. It is safe for concurrent use; Stop ends its background key refresh.
type Verifier struct {
	header     string
	allowBare  bool
	skipVerify bool
	issuer     string
	audience   string
	leeway     time.Duration
	logInvalid bool
	maxToken   int

	keys     *keyring
	cache    *cache
	policies *policyStore // nil without -auth.policyFile
	now      func() time.Time
}

// Stop ends the background key refresh and policy reloads. The Verifier keeps verifying with what it has.
func (v *Verifier) Stop() { v.keys.stop(); v.policies.stop() }

// Authenticate verifies the token of r. It returns an *Error (401) when the token is missing or invalid.
// The request is left as it is: removing the token before forwarding is the caller's job.
func (v *Verifier) Authenticate(r *http.Request) (*Access, error) {
	token, err := tokenFrom(r, v.header, v.allowBare)
	if err == nil {
		var a *Access
		if a, err = v.verify(token); err == nil {
			return a, nil
		}
	}
	return nil, v.reject(err, token, r)
}

// Verify checks a token exactly as Authenticate does for a request carrying it.
func (v *Verifier) Verify(token string) (*Access, error) {
	a, err := v.verify(token)
	if err != nil {
		return nil, v.reject(err, token, nil)
	}
	return a, nil
}

func (v *Verifier) verify(token string) (*Access, *Error) {
	if len(token) > v.maxToken {
		// Checked before the cache, which would hash the whole token.
		return nil, newError(reasonMalformed, "the token is %d bytes long; at most %d are accepted (-auth.maxTokenSize)", len(token), v.maxToken)
	}
	now := v.now()
	if a := v.cache.get(token, now.UnixNano()); a != nil && v.reuse(a) {
		cacheHits.Inc()
		return a, nil
	}
	cacheMisses.Inc()
	t, err := splitToken(token)
	if err != nil {
		return nil, err
	}
	if !v.skipVerify {
		if err := v.checkSignature(t); err != nil {
			return nil, err
		}
	}
	c, err := parseClaims(t.payload)
	if err != nil {
		return nil, err
	}
	notBefore, err := v.checkClaims(c, now)
	if err != nil {
		return nil, err
	}
	a, err := v.access(c)
	if err != nil {
		return nil, err
	}
	v.cache.put(token, a, notBefore, c.exp.UnixNano())
	return a, nil
}

// checkSignature finds the keys that may verify t and accepts the first that does. Only keys whose type fits the
// token's alg are tried: "none" is not an algorithm here, and an HMAC token never meets a public key.
func (v *Verifier) checkSignature(t *jws) *Error {
	method := methods[t.alg]
	if method == nil {
		if t.alg == "none" {
			return newError(reasonUnsupportedAlg, "unsigned tokens (alg \"none\") are not accepted")
		}
		return newError(reasonUnsupportedAlg, "alg %s is not supported; want RS256/384/512, PS256/384/512, ES256/384/512, EdDSA or HS256/384/512", quote(t.alg))
	}
	ks := v.keys.keys()
	fit, kidKnown := ks.candidates(t.alg, t.kid)
	if t.kid != "" && !kidKnown && len(v.keys.remotes) > 0 {
		// An unknown kid may be a key the provider has just rotated in.
		v.keys.refetch()
		ks = v.keys.keys()
		fit, kidKnown = ks.candidates(t.alg, t.kid)
	}
	// A kid means nothing when no key has one (PEM keys and HMAC secrets only): those keys are simply tried.
	unknownKid := t.kid != "" && !kidKnown && (len(ks.byKid) > 0 || len(v.keys.remotes) > 0)
	if len(fit) == 0 {
		switch {
		case unknownKid:
			return newError(reasonUnknownKid, "unknown key id %s", quote(t.kid))
		case kidKnown:
			return newError(reasonNoKey, "the key with id %s cannot verify alg %s", quote(t.kid), t.alg)
		}
		return newError(reasonNoKey, "no configured key can verify alg %s (keys: %s)", t.alg, ks.describe())
	}
	for _, k := range fit {
		if method.Verify(t.signingInput, t.signature, k.pub) == nil {
			return nil
		}
	}
	if unknownKid {
		return newError(reasonUnknownKid, "unknown key id %s, and the signature does not verify with any of the %d keys without an id", quote(t.kid), len(fit))
	}
	return newError(reasonBadSignature, "the signature does not verify with any of the %d keys for alg %s", len(fit), t.alg)
}

// checkClaims checks the time claims, issuer and audience; it returns the Unix nanoseconds from which the token is
// valid, for the cache.
func (v *Verifier) checkClaims(c *claims, now time.Time) (int64, *Error) {
	if !now.Before(c.exp.Add(v.leeway)) {
		return 0, newError(reasonExpired, "the token expired at %s", c.exp.Format(time.RFC3339))
	}
	notBefore := c.nbf
	if !c.nbf.IsZero() && now.Add(v.leeway).Before(c.nbf) {
		return 0, newError(reasonNotYetValid, "the token is not valid before %s (nbf)", c.nbf.Format(time.RFC3339))
	}
	if !c.iat.IsZero() && now.Add(v.leeway).Before(c.iat) {
		return 0, newError(reasonNotYetValid, "the token was issued in the future, at %s (iat)", c.iat.Format(time.RFC3339))
	}
	if c.iat.After(notBefore) {
		notBefore = c.iat
	}
	if v.issuer != "" && c.iss != v.issuer {
		return 0, newError(reasonIssuer, "the token issuer %s is not the expected %s", quote(c.iss), quote(v.issuer))
	}
	if v.audience != "" && !slices.Contains(c.aud, v.audience) {
		return 0, newError(reasonAudience, "the token audience %s does not include %s", quote(strings.Join(c.aud, ", ")), quote(v.audience))
	}
	if notBefore.IsZero() {
		return minInt64, nil
	}
	return notBefore.Add(-v.leeway).UnixNano(), nil
}

const minInt64 = -1 << 63

// reject counts a rejection and, with -logInvalidAuthTokens, logs the decoded header and claims of the token.
func (v *Verifier) reject(e *Error, token string, r *http.Request) error {
	countReject(e.Reason)
	if v.logInvalid {
		attrs := []any{"reason", e.Reason, "error", e.msg}
		if r != nil {
			attrs = append(attrs, "remote_addr", r.RemoteAddr, "path", r.URL.Path)
		}
		if token != "" {
			header, payload := decodedParts(token)
			attrs = append(attrs, "token_header", header, "token_claims", payload)
		}
		slog.Warn("rejected auth token", attrs...)
	}
	return e
}
