package vmtest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Recorded is one request as it reached a Recorder.
type Recorded struct {
	Method string
	// Path is the decoded path; RawPath the path as sent on the wire.
	Path, RawPath string
	Query         url.Values
	RawQuery      string
	Header        http.Header
	Host          string
	Body          string
}

// Recorder is a fake upstream that records exactly what was forwarded to it, for tests that assert the exact
// request (path, args, headers, body byte for byte), which no real backend can show. It never replaces a real
// backend: Start, StartCurrent and StartCluster run those. Respond sets its answer.
type Recorder struct {
	URL string

	mu       sync.Mutex
	requests []Recorded
	respond  http.HandlerFunc
}

// NewRecorder starts a Recorder that answers 200 with an empty Prometheus success body until told otherwise (an empty
// list of running queries for active_queries, whose answer the gateway reads).
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	rec := &Recorder{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/api/v1/status/active_queries") {
			_, _ = io.WriteString(w, `{"status":"ok","data":[]}`)
			return
		}
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.requests = append(rec.requests, Recorded{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: r.URL.Query(), RawQuery: r.URL.RawQuery,
			Header: r.Header.Clone(), Host: r.Host, Body: string(body),
		})
		respond := rec.respond
		rec.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body)) // a Respond handler may read it too, e.g. to pass it on
		respond(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

// Respond replaces the handler that answers forwarded requests.
func (rec *Recorder) Respond(h http.HandlerFunc) {
	rec.mu.Lock()
	rec.respond = h
	rec.mu.Unlock()
}

// Requests returns what was recorded so far and forgets it.
func (rec *Recorder) Requests() []Recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := rec.requests
	rec.requests = nil
	return r
}
