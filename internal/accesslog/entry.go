// Package accesslog gives every request an id and a record, and writes the record as one JSON line (-accessLog.*).
package accesslog

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Entry is the record of one request, filled in by the steps that learn its parts. It is also the response writer
// the handlers write through, so status and size are known without a second wrapper. Its setters do nothing on a
// nil Entry, so code that may run without one (a handler served alone, in a test) needs no check.
type Entry struct {
	http.ResponseWriter
	log   *Log
	start time.Time
	// ids backs the X-Request-Id header of the request and of the answer: one slice for both, allocated with the entry.
	ids [1]string

	remoteAddr, method, path string

	status      int
	wroteHeader bool
	// outcome, when set, is the status the request is counted with although another had been sent: a response
	// broken off after its headers counts as 502 (the upstream broke it) or 499 (the client went away).
	outcome  int
	bytesOut int64
	body     countedBody

	api, subject, mode, upstream, reason, query string
	tenant                                      tenant.ID
	hasTenant                                   bool
}

// Wrap gives every request an Entry and its request id before h sees it, and hands the finished entry to l, which
// may be nil: ids are given and errors carry them without an access log too.
func Wrap(h http.Handler, l *Log) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := &Entry{ResponseWriter: w, log: l, start: time.Now(), remoteAddr: r.RemoteAddr, method: r.Method, path: r.URL.RawPath}
		if e.path == "" {
			e.path = r.URL.Path
		}
		e.setRequestID(r)
		if r.Body != nil && r.Body != http.NoBody {
			// On a copy of the request: the server handed out its own Body, and whether the connection may carry
			// another request after it depends on that body's state, not on what wraps it. (net/http, which
			// serves the gateway in tests, also decides from the Body's type.)
			rc := *r
			rc.Body = &e.body
			e.body.rc = r.Body
			r = &rc
		}
		// Deferred so that a response the proxy aborts (it panics with http.ErrAbortHandler) is logged too.
		defer l.record(e)
		h.ServeHTTP(e, r)
	})
}

// From returns the Entry of the request w answers, nil when it has none.
func From(w http.ResponseWriter) *Entry {
	for {
		if e, ok := w.(*Entry); ok {
			return e
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

// Of returns the Entry of the request w answers, or a new one without id or log when it has none.
func Of(w http.ResponseWriter) *Entry {
	if e := From(w); e != nil {
		return e
	}
	return &Entry{ResponseWriter: w, start: time.Now()}
}

type entryKey struct{}

// NewContext carries e to code that sees only the request (the upstream's transport).
func NewContext(ctx context.Context, e *Entry) context.Context {
	return context.WithValue(ctx, entryKey{}, e)
}

// FromContext returns the Entry NewContext put in ctx, nil when there is none.
func FromContext(ctx context.Context) *Entry {
	e, _ := ctx.Value(entryKey{}).(*Entry)
	return e
}

// Logging reports whether the entry goes to an access log: fields only the log reads need not be filled otherwise.
func (e *Entry) Logging() bool { return e != nil && e.log != nil }

// LogsQueries reports whether the access log wants the query text (-accessLog.queries).
func (e *Entry) LogsQueries() bool { return e.Logging() && e.log.queries }

// RequestID is the request's id, as the answer's X-Request-Id carries it; empty without an entry from Wrap.
func (e *Entry) RequestID() string {
	if e == nil {
		return ""
	}
	return e.ids[0]
}

// SetAPI names the API (or own endpoint) the request is for.
func (e *Entry) SetAPI(api string) {
	if e != nil {
		e.api = api
	}
}

// SetAccess records who made the request: the tenant, the token's subject and its mode.
func (e *Entry) SetAccess(t tenant.ID, subject, mode string) {
	if e != nil {
		e.tenant, e.hasTenant, e.subject, e.mode = t, true, subject, mode
	}
}

// SetTenant records the upstream tenant once it is decided (it can differ from the token's without -enable.auth).
func (e *Entry) SetTenant(t tenant.ID) {
	if e != nil {
		e.tenant, e.hasTenant = t, true
	}
}

// AddUpstream records a backend the request went to, without credentials; retries add the next ones.
func (e *Entry) AddUpstream(name string) {
	switch {
	case e == nil:
	case e.upstream == "":
		e.upstream = name
	case e.upstream != name:
		e.upstream += "," + name
	}
}

// SetReason records why the request was refused, in the words the client got; noQuery is msg without the client's
// query text (empty when msg quotes none), which is recorded instead unless -accessLog.queries is set. httperr
// calls it for every error it writes.
func (e *Entry) SetReason(msg, noQuery string) {
	if e == nil {
		return
	}
	if noQuery != "" && !e.LogsQueries() {
		msg = noQuery
	}
	e.reason = msg
}

// SetQuery records the query text, written only with -accessLog.queries.
func (e *Entry) SetQuery(q string) {
	if e != nil {
		e.query = q
	}
}

// SetOutcome counts the request with status code and reason although the client got another status: the
// response broke off after its headers.
func (e *Entry) SetOutcome(code int, reason string) {
	if e != nil {
		e.outcome, e.reason = code, reason
	}
}

// Status is the status the request is counted with: 499 when nothing was answered (the client went away first).
func (e *Entry) Status() int {
	switch {
	case e.outcome != 0:
		return e.outcome
	case !e.wroteHeader:
		return 499
	}
	return e.status
}

func (e *Entry) WriteHeader(code int) {
	// 1xx answers (103 Early Hints, passed on by the proxy) come before the final status.
	if !e.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		e.status, e.wroteHeader = code, true
		// An upstream's own X-Request-Id would add a second value to the gateway's.
		if h := e.ResponseWriter.Header(); e.ids[0] != "" && len(h["X-Request-Id"]) != 1 {
			h["X-Request-Id"] = e.ids[:]
		}
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *Entry) Write(b []byte) (int, error) {
	if !e.wroteHeader {
		e.WriteHeader(http.StatusOK)
	}
	n, err := e.ResponseWriter.Write(b)
	e.bytesOut += int64(n)
	return n, err
}

// Flush lets the proxy flush streamed answers (exports, federate) through the entry.
func (e *Entry) Flush() {
	if f, ok := e.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (read deadlines).
func (e *Entry) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// countedBody counts the request body's bytes as the gateway reads them; the transport may read a streamed write
// body from its own goroutine, hence the atomic.
type countedBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.n.Add(int64(n))
	}
	return n, err
}

func (b *countedBody) Close() error { return b.rc.Close() }

// Wrote reports whether the status has been sent.
func (e *Entry) Wrote() bool { return e.wroteHeader }

// Refusal is the Entry of a request the HTTP server answers itself, before any handler (a malformed or oversized
// head): it has its request id at once, for the answer, and its line is written by Refused. l may be nil.
func Refusal(l *Log, remoteAddr, method, path string) *Entry {
	e := &Entry{log: l, start: time.Now(), remoteAddr: remoteAddr, method: method, path: path}
	e.ids[0] = newID()
	return e
}

// Refused writes the line of a Refusal: the status sent, the reason and the size of the answer's body.
func (e *Entry) Refused(status int, reason string, bytesOut int) {
	e.status, e.wroteHeader, e.reason, e.bytesOut = status, true, reason, int64(bytesOut)
	e.log.record(e)
}
