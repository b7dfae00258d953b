package accesslog

import (
	"math/rand/v2"
	"net/http"
)

// maxIDLen bounds a client's X-Request-Id: longer ones are replaced, so an id cannot bloat every line and header.
const maxIDLen = 128

// setRequestID keeps a well-formed X-Request-Id of the client and replaces any other (missing, too long, odd
// characters, given twice) with a new one. The id goes upstream with the request and back on the answer.
func (e *Entry) setRequestID(r *http.Request) {
	if v := r.Header["X-Request-Id"]; len(v) == 1 && validID(v[0]) {
		e.ids[0] = v[0]
	} else {
		e.ids[0] = newID()
		r.Header["X-Request-Id"] = e.ids[:]
	}
	e.ResponseWriter.Header()["X-Request-Id"] = e.ids[:]
}

// validID accepts 1 to 128 characters of [A-Za-z0-9._:-]: what a log line, a header and a grep take as they are.
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// newID returns 128 random bits in hex, the size of a W3C trace id: unique across gateways and restarts without
// coordination, and telling nothing about the request rate, as a counter would.
func newID() string {
	const hex = "0123456789abcdef"
	var b [32]byte
	for half := 0; half < 2; half++ {
		v := rand.Uint64()
		for i := 0; i < 16; i++ {
			b[half*16+i] = hex[v&0xf]
			v >>= 4
		}
	}
	return string(b[:])
}
