// Package httperr writes errors to clients in the Prometheus API shape:
// {"status":"error","errorType":"...","error":"..."}.
package httperr

import (
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

// WriteStatus sends msg with the given status.
func WriteStatus(w http.ResponseWriter, status int, msg string) {
	body, _ := json.Marshal(struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", errorType(status), msg})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
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
