package auth

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
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
	return v, nil
}

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

// decodedParts returns the token's header and payload as text for -logInvalidAuthTokens; never the signature.
func decodedParts(token string) (header, payload string) {
	h, rest, _ := strings.Cut(token, ".")
	p, _, _ := strings.Cut(rest, ".")
	return decodeForLog(h), decodeForLog(p)
}

func decodeForLog(seg string) string {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return "(not base64url)"
	}
	const maxLog = 4 << 10
	if len(b) > maxLog {
		return string(b[:maxLog]) + "..."
	}
	return string(b)
}
