package auth

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// maxTokenLen is the default -auth.maxTokenSize: it bounds the work a request can ask for; real tokens are a few
// KiB at most.
const maxTokenLen = 16 << 10

// tokenFrom takes the token from header h of r: "Bearer <token>" (the scheme is case-insensitive), or the bare
// token when allowBare is set. Nothing is removed from the request.
func tokenFrom(r *http.Request, h string, allowBare bool) (string, *Error) {
	vals := r.Header[h]
	if len(vals) > 1 {
		return "", newError(reasonMalformed, "the request has %d %s headers; send one", len(vals), h)
	}
	if len(vals) == 0 || strings.TrimSpace(vals[0]) == "" {
		return "", newError(reasonMissingToken, "missing %s header with a Bearer token", h)
	}
	v := vals[0]
	const prefix = "Bearer "
	switch {
	case len(v) >= len(prefix) && strings.EqualFold(v[:len(prefix)], prefix):
		v = v[len(prefix):]
	case !allowBare:
		return "", newError(reasonMissingToken, "the %s header must be \"Bearer <token>\"", h)
	}
	v = strings.Trim(v, " \t")
	if v == "" {
		return "", newError(reasonMissingToken, "the %s header has an empty Bearer token", h)
	}
	// Three vectorised searches: ContainsAny reads the token, hundreds of bytes, one at a time at every request.
	if strings.IndexByte(v, ' ') >= 0 || strings.IndexByte(v, '\t') >= 0 || strings.IndexByte(v, ',') >= 0 {
		// `Bearer A, Bearer B` read as one token of five parts, which was called encrypted.
		return "", newError(reasonMalformed, "the %s header holds more than one token (a JWT has no space or comma); send one Bearer token", h)
	}
	return v, nil
}

// The decoder. Every reading of a token goes through splitToken and decodePayload: the verifier's (with the
// signature checked between the two, so no claim of a forged token is ever parsed), Decode's for `vmgateway token
// explain`, and the rejection log's, which reads the parts with the same base64url.

// jws is a token split into its parts; nothing in it is trusted before the signature is verified.
type jws struct {
	alg, kid     string
	signingInput string // header.payload, what the signature covers
	payload      []byte
	signature    []byte
}

var b64 = base64.RawURLEncoding.Strict()

// splitToken decodes the compact serialisation header.payload.signature and the header.
func splitToken(token string) (*jws, *Error) {
	switch n := strings.Count(token, "."); n {
	case 2:
	case 4:
		return nil, newError(reasonMalformed, "the token is encrypted (JWE); only signed tokens (JWS) are accepted")
	default:
		return nil, newError(reasonMalformed, "the token is not a JWT: want three base64url parts separated by dots, got %d parts", n+1)
	}
	h, rest, _ := strings.Cut(token, ".")
	p, s, _ := strings.Cut(rest, ".")
	header, err := b64.DecodeString(h)
	if err != nil {
		return nil, newError(reasonMalformed, "the token header is not base64url: %s", err)
	}
	var hdr struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(header, &hdr); err != nil {
		return nil, newError(reasonMalformed, "the token header is not a JSON object with string alg and kid: %s", err)
	}
	// Unmarshal has checked the syntax, and kept the last of two equal keys: {"alg":"RS256",...,"alg":"none"} could
	// mean one alg to the gateway and another to a library downstream.
	if err := checkKeys(header); err != nil {
		if dup, ok := err.(*duplicateKeyError); ok {
			return nil, duplicateKey("the token header", dup)
		}
		return nil, newError(reasonMalformed, "the token header: %s", err)
	}
	// Unmarshal also matches the names without regard to case, where most libraries read them exactly: in
	// {"alg":"HS256","ALG":"RS256"} the gateway would read RS256 and another reader HS256.
	if k := caseVariant(header, "alg", "kid", "crit"); k != "" {
		return nil, newError(reasonMalformed, "the token header has the key %s; its names are case-sensitive (alg, kid, crit), "+
			"so readers would disagree on it", quote(k))
	}
	if hdr.Crit != nil {
		// RFC 7515 section 4.1.11: a token whose critical extensions are not understood must be rejected.
		return nil, newError(reasonMalformed, "the token header has crit %s; no critical header extensions are supported", truncate(string(hdr.Crit)))
	}
	t := &jws{alg: hdr.Alg, kid: hdr.Kid, signingInput: token[:len(h)+1+len(p)]}
	if t.payload, err = b64.DecodeString(p); err != nil {
		return nil, newError(reasonMalformed, "the token payload is not base64url: %s", err)
	}
	if t.signature, err = b64.DecodeString(s); err != nil {
		return nil, newError(reasonMalformed, "the token signature is not base64url: %s", err)
	}
	return t, nil
}

// Token is a JWT as the verifier reads it before it trusts anything in it. Nothing in it is verified: it is for
// tools that must read a token exactly as the gateway does (`vmgateway token explain`).
type Token struct {
	// Alg and Kid are the header's alg and kid.
	Alg, Kid string
	// Claims are the payload's claims, numbers as json.Number.
	Claims map[string]any
}

// Decode takes a token apart by the verifier's own rules: strict base64url, a header and a payload that are each
// one JSON object with no key given twice at any depth, no critical header extensions. The error is an *Error
// with the reason the verifier counts the token under. The registered claims are not checked (a token without exp
// decodes): Time and VMAccess read them as the verifier does.
func Decode(token string) (*Token, error) {
	t, err := splitToken(token)
	if err != nil {
		return nil, err
	}
	all, err := decodePayload(t.payload)
	if err != nil {
		return nil, err
	}
	return &Token{Alg: t.alg, Kid: t.kid, Claims: all}, nil
}

// Time reads the NumericDate claim name (exp, nbf or iat) as the verifier does; the zero time when it is absent.
func (t *Token) Time(name string) (time.Time, error) {
	return numericDate(t.Claims, name)
}

// VMAccess reads the vm_access claim as the verifier does; ok is false when the token has none. The error is an
// *Error with the reason the verifier counts the token under.
func (t *Token) VMAccess() (va VMAccess, ok bool, err error) {
	raw := t.Claims["vm_access"]
	if raw == nil {
		return VMAccess{}, false, nil
	}
	va, e := vmAccessFrom(raw)
	if e != nil {
		return VMAccess{}, true, e
	}
	return va, true, nil
}

// decodedParts returns the token's header and payload as text for -logInvalidAuthTokens; never the signature.
func decodedParts(token string) (header, payload string) {
	h, rest, _ := strings.Cut(token, ".")
	p, _, _ := strings.Cut(rest, ".")
	return decodeForLog(h), decodeForLog(p)
}

func decodeForLog(seg string) string {
	b, err := b64.DecodeString(seg)
	if err != nil {
		return "(not base64url)"
	}
	const maxLog = 4 << 10
	if len(b) > maxLog {
		return string(b[:maxLog]) + "..."
	}
	return string(b)
}
