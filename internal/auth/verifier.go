// Package auth turns a request's bearer JWT into a verified Access: it takes the token from the request, verifies
// its signature with PEM public keys, HMAC secrets, JWKS or OIDC discovery keys, checks the time claims and reads
// the vm_access claim. Verified tokens are cached until they expire; rejected ones for -auth.negativeCacheTTL, or
// less when the rejection may stop holding.
//
// Verification does not use golang-jwt's jwt.Parser; only its SigningMethods check the signatures. The parser does
// not do what the gateway must:
//   - Strictness. It keeps the last of two equal keys in the header or payload (other parsers keep the first), so
//     the issuer and the gateway could read two different claims from one signed token; with WithJSONNumber, which
//     exact integers need, it ignores data after the payload's JSON object; it takes non-canonical base64url and
//     nesting of any depth. Such tokens are refused here, as FuzzDecodeAgainstGolangJWT pins: on every other valid
//     token both read the same claims and reach the same verdict.
//   - crit. It ignores the crit header, which RFC 7515 section 4.1.11 says must make a token whose critical
//     extensions are not understood invalid.
//   - Order. It decodes the claims before it checks the signature; here no claim of a forged token is parsed.
//   - Exact refusals. Every refusal here has a stable reason (vmgateway_auth_rejects_total{reason}) and a message
//     naming what is wrong (which claim, which kid, which alg, which keys were tried), which `token explain` and
//     the RFC 6750 header repeat; the parser's errors are generic ("token is malformed", "signature is invalid").
//   - Keys and caching. The key is chosen by alg and kid among PEM, HMAC, JWKS and OIDC sources, an unknown kid may
//     refetch the JWKS, and a refusal stays in the negative cache only while its cause holds (rememberRejection),
//     which needs to know which step refused and under which key set.
//
// Decode exposes the same decoder to tools, and VMAccess holds the claim's shape: its decoding, its encoding in
// both shapes and its validation.
package auth

import (
	"crypto/sha256"
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
	cache    *cache[*Access]
	policies *policyStore // nil without -auth.policyFile
	// rejected answers repeats of a refused token without verifying it again; see rememberRejection.
	rejected    *cache[*rejection]
	rejectedTTL time.Duration
	now         func() time.Time
}

// rejection is a refused token in the negative cache.
type rejection struct {
	err *Error
	// keys, when set, is the key set the token was refused with: the answer holds only while that set is current.
	keys *keySet
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
	var digest string
	if v.rejected != nil {
		// Rejected tokens are remembered by their SHA-256 rather than by their text: anyone can send bad tokens of up
		// to -auth.maxTokenSize bytes, and a full cache of them must stay small. A digest match is as good as
		// comparing the tokens.
		sum := sha256.Sum256([]byte(token))
		digest = string(sum[:])
		if r := v.rejected.get(digest, now.UnixNano()); r != nil && (r.keys == nil || r.keys == v.keys.keys()) {
			negativeCacheHits.Inc()
			return nil, r.err
		}
	}
	cacheMisses.Inc()
	// Both read before verification: a set published meanwhile must void what is remembered below, and a cache
	// cleared meanwhile (a key removed) must not get this token back.
	epoch := v.cache.currentEpoch()
	keys := v.keys.keys()
	a, c, err := v.verifyUncached(token, now, epoch)
	if err != nil {
		v.rememberRejection(digest, err, c, keys, now)
		return nil, err
	}
	return a, nil
}

// verifyUncached verifies a token in full and caches it when it is valid and the cache was not cleared since epoch.
// The claims are returned when they could be read, also with an error.
func (v *Verifier) verifyUncached(token string, now time.Time, epoch uint64) (*Access, *claims, *Error) {
	t, err := splitToken(token)
	if err != nil {
		return nil, nil, err
	}
	if !v.skipVerify {
		if err := v.checkSignature(t); err != nil {
			return nil, nil, err
		}
	}
	c, err := parseClaims(t.payload)
	if err != nil {
		return nil, nil, err
	}
	notBefore, err := v.checkClaims(c, now)
	if err != nil {
		return nil, c, err
	}
	a, err := v.access(c)
	if err != nil {
		return nil, c, err
	}
	v.cache.putSince(token, a, notBefore, c.exp.UnixNano(), epoch)
	return a, c, nil
}

// rememberRejection puts a refused token in the negative cache for as long as the refusal surely holds, at most
// -auth.negativeCacheTTL. Most refusals depend only on the token and the flags (malformed, expired, a bad claim)
// and hold for the whole TTL. The others must not outlive their cause:
//   - not_yet_valid holds until the token's nbf/iat minus -auth.leeway, when it becomes valid;
//   - bad_signature, no_key and unknown_kid depend on the keys: they hold while the key set they were judged by is
//     the current one (every JWKS refresh publishes a new set);
//   - unknown_kid with JWKS or OIDC sources is not remembered at all: the next such token may trigger the key
//     refetch that brings a freshly rotated key (at most every -auth.keysRefetchMinInterval), and an answer from
//     the cache would keep it from ever doing so until the next periodic refresh.
func (v *Verifier) rememberRejection(digest string, e *Error, c *claims, keys *keySet, now time.Time) {
	if v.rejected == nil {
		return
	}
	until := now.Add(v.rejectedTTL).UnixNano()
	r := &rejection{err: e}
	switch e.Reason {
	case reasonNoPolicyMatch, reasonPolicyClaim:
		// They depend on the policy file, which may be reloaded at any moment.
		return
	case reasonUnknownKid:
		if len(v.keys.remotes) > 0 {
			return
		}
		r.keys = keys
	case reasonBadSignature, reasonNoKey:
		r.keys = keys
	case reasonNotYetValid:
		validFrom := c.nbf
		if c.iat.After(validFrom) {
			validFrom = c.iat
		}
		until = min(until, validFrom.Add(-v.leeway).UnixNano())
	}
	v.rejected.put(digest, r, minInt64, until)
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
