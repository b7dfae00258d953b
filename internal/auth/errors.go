package auth

import (
	"fmt"
	"net/http"
	"strings"
)

// Reasons a token is rejected: short, stable labels for vmgateway_auth_rejects_total{reason="..."}.
const (
	reasonMissingToken    = "missing_token"
	reasonMalformed       = "malformed"
	reasonUnsupportedAlg  = "unsupported_alg"
	reasonNoKey           = "no_key"
	reasonUnknownKid      = "unknown_kid"
	reasonBadSignature    = "bad_signature"
	reasonMissingExp      = "missing_exp"
	reasonExpired         = "expired"
	reasonNotYetValid     = "not_yet_valid"
	reasonIssuer          = "issuer"
	reasonAudience        = "audience"
	reasonMissingVMAccess = "missing_vm_access"
	reasonBadVMAccess     = "bad_vm_access"
	// Claim shapes that would grant more than the issuer meant, each with a reason of its own.
	reasonDuplicateKey       = "duplicate_key"
	reasonNullInVMAccess     = "null_in_vm_access"
	reasonEmptyRestriction   = "empty_restriction"
	reasonLogsOnly           = "logs_only_vm_access"
	reasonFilterMatchesEmpty = "filter_matches_empty"
	reasonNoPolicyMatch      = "no_policy_match"
	reasonPolicyClaim        = "policy_claim"
)

var allReasons = []string{
	reasonMissingToken, reasonMalformed, reasonUnsupportedAlg, reasonNoKey, reasonUnknownKid, reasonBadSignature,
	reasonMissingExp, reasonExpired, reasonNotYetValid, reasonIssuer, reasonAudience, reasonMissingVMAccess,
	reasonBadVMAccess, reasonDuplicateKey, reasonNullInVMAccess, reasonEmptyRestriction, reasonLogsOnly, reasonFilterMatchesEmpty,
	reasonNoPolicyMatch, reasonPolicyClaim,
}

// Error is a rejected token. Reason is a short stable label (missing_token, malformed, bad_signature, expired, ...);
// Error() says exactly what was wrong with the token.
type Error struct {
	Reason string
	msg    string
	// forbidden marks a valid token that nothing grants access to (the access policies): 403, not 401.
	forbidden bool
}

func newError(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, msg: fmt.Sprintf(format, args...)}
}

func newForbidden(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, msg: fmt.Sprintf(format, args...), forbidden: true}
}

func (e *Error) Error() string { return e.msg }

// HTTPStatus is 401, the client must present a valid token; or 403 for a valid token that no access policy
// gives access to.
func (e *Error) HTTPStatus() int {
	if e.forbidden {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// WWWAuthenticate is the RFC 6750 WWW-Authenticate header value for the rejection.
func (e *Error) WWWAuthenticate() string {
	if e.forbidden {
		return `Bearer error="insufficient_scope", error_description="` + headerSafe(e.msg) + `"`
	}
	if e.Reason == reasonMissingToken {
		// RFC 6750 section 3.1: a request without credentials gets no error code.
		return "Bearer"
	}
	return `Bearer error="invalid_token", error_description="` + headerSafe(e.msg) + `"`
}

// maxDescription keeps header values short; the JSON body carries the full message.
const maxDescription = 256

// headerSafe maps s into the characters RFC 6750 allows in error_description (%x20-21 / %x23-5B / %x5D-7E):
// double quotes and backslashes may not appear even escaped, so they become single quotes and slashes.
func headerSafe(s string) string {
	if len(s) > maxDescription {
		s = s[:maxDescription-3] + "..."
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"':
			return '\''
		case r == '\\':
			return '/'
		case r < 0x20 || r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

// maxQuoted bounds how much of a client-supplied value (a kid, an issuer) goes into a message.
const maxQuoted = 64

// quote quotes a client-supplied string for a message, cut to maxQuoted bytes.
func quote(s string) string {
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q...", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}
