// Package httperr writes errors to clients in the Prometheus API shape:
// {"status":"error","errorType":"...","error":"..."}.
package httperr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error is an error meant for the client, with its HTTP status.
type Error struct {
	Status int
	Msg    string
	// noQuery is Msg without the client's query text, for the access log without -accessLog.queries; empty when
	// Msg quotes no query.
	noQuery string
}

func (e *Error) Error() string { return e.Msg }

// HTTPStatus is the status the client gets.
func (e *Error) HTTPStatus() int { return e.Status }

// New returns an Error with the given status and message.
func New(status int, msg string) *Error { return &Error{Status: status, Msg: msg} }

// Errorf returns an Error with the given status and a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Elided stands for the client's query text in the form of a message the access log gets without
// -accessLog.queries.
const Elided = "<query elided>"

// WithQuery is New for a message that quotes the client's query text (or parser words that do): noQuery says the
// same with Elided in its place. The client gets msg; the access log records noQuery unless -accessLog.queries is set.
func WithQuery(status int, msg, noQuery string) *Error {
	return &Error{Status: status, Msg: msg, noQuery: noQuery}
}

// Status returns the HTTP status an error carries through an HTTPStatus method anywhere in its chain,
// or 500 when it carries none.
func Status(err error) int {
	var s interface{ HTTPStatus() int }
	if errors.As(err, &s) {
		return s.HTTPStatus()
	}
	return http.StatusInternalServerError
}

// Write sends err with its status. Headers already set on w (WWW-Authenticate, Retry-After) are kept.
func Write(w http.ResponseWriter, err error) {
	msg := err.Error()
	write(w, Status(err), msg, noQuery(err, msg), nil)
}

// NoQuery is err's message without the client's query text, for what an operator reads: the access log without
// -accessLog.queries, the status page.
func NoQuery(err error) string {
	msg := err.Error()
	if nq := noQuery(err, msg); nq != "" {
		return nq
	}
	return msg
}

// noQuery is msg, the text of err, with the query text of the *Error in err's chain elided; empty when that
// error quotes no query.
func noQuery(err error, msg string) string {
	var e *Error
	if !errors.As(err, &e) || e.noQuery == "" {
		return ""
	}
	// A wrapping error adds its own words around the client's message.
	return strings.Replace(msg, e.Msg, e.noQuery, 1)
}

// WriteStatus sends msg with the given status. The body names the request id the answer carries in
// X-Request-Id, and a response writer that records refusals (the access log's entry) is told msg.
func WriteStatus(w http.ResponseWriter, status int, msg string) {
	write(w, status, msg, "", nil)
}

// WriteList is WriteStatus for an answer that has several problems (a reload's invalid files): msg sums them up
// and the body lists each in an errors field.
func WriteList(w http.ResponseWriter, status int, msg string, list []string) {
	if list == nil {
		list = []string{}
	}
	write(w, status, msg, "", list)
}

func write(w http.ResponseWriter, status int, msg, noQuery string, list []string) {
	h := w.Header()
	body := encode(status, msg, h.Get("X-Request-Id"), list)
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	noteReason(w, msg, noQuery)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// JSON is the body of an error answer, newline included; requestID is left out when empty. <, > and & are not
// escaped: the body is JSON, never HTML, and a query such as a<b must read as the client wrote it.
func JSON(status int, msg, requestID string) []byte { return encode(status, msg, requestID, nil) }

func encode(status int, msg, requestID string, list []string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Status    string   `json:"status"`
		ErrorType string   `json:"errorType"`
		Error     string   `json:"error"`
		Errors    []string `json:"errors,omitempty"`
		RequestID string   `json:"requestId,omitempty"`
	}{"error", errorType(status), msg, list, requestID})
	return buf.Bytes()
}

// noteReason tells msg, and its form without query text (empty when msg quotes none), to the first writer in w's
// chain that records why a request was refused.
func noteReason(w http.ResponseWriter, msg, noQuery string) {
	for {
		if r, ok := w.(interface{ SetReason(msg, noQuery string) }); ok {
			r.SetReason(msg, noQuery)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

func errorType(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusRequestURITooLong,
		http.StatusRequestHeaderFieldsTooLarge, http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed,
		// The server answers 501 to a Transfer-Encoding it does not implement, 505 to a protocol version it does
		// not speak and 417 to an Expect it does not know: the client's request is at fault.
		http.StatusNotImplemented, http.StatusHTTPVersionNotSupported, http.StatusExpectationFailed:
		return "bad_data"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusTooManyRequests:
		return "too_many_requests"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return "timeout"
	case http.StatusUnprocessableEntity:
		// Prometheus answers 422 "execution" for a query it will not run.
		return "execution"
	}
	return "internal"
}
