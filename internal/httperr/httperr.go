// Package httperr writes errors to clients in the Prometheus API shape:
// {"status":"error","errorType":"...","error":"..."}.
package httperr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an error meant for the client, with its HTTP status.
type Error struct {
	Status int
	Msg    string
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
	WriteStatus(w, Status(err), err.Error())
}

// WriteStatus sends msg with the given status. The body names the request id the answer carries in
// X-Request-Id, and a response writer that records refusals (the access log's entry) is told msg.
func WriteStatus(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	body := JSON(status, msg, h.Get("X-Request-Id"))
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	noteReason(w, msg)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// JSON is the body of an error answer, newline included; requestID is left out when empty. <, > and & are not
// escaped: the body is JSON, never HTML, and a query such as a<b must read as the client wrote it.
func JSON(status int, msg, requestID string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		RequestID string `json:"requestId,omitempty"`
	}{"error", errorType(status), msg, requestID})
	return buf.Bytes()
}

// noteReason tells msg to the first writer in w's chain that records why a request was refused.
func noteReason(w http.ResponseWriter, msg string) {
	for {
		if r, ok := w.(interface{ SetReason(string) }); ok {
			r.SetReason(msg)
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
		http.StatusRequestHeaderFieldsTooLarge, http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed:
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
