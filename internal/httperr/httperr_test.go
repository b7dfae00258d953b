package httperr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		err     error
		status  int
		errType string
	}{
		{New(400, `cannot parse "up{"`), 400, "bad_data"},
		{fmt.Errorf("wrapped: %w", New(403, "no")), 403, "forbidden"},
		{New(429, "limited"), 429, "too_many_requests"},
		{New(502, "down"), 502, "unavailable"},
		{New(504, "slow"), 504, "timeout"},
		{Errorf(414, "path of %d bytes", 9000), 414, "bad_data"},
		{New(417, "unknown expectation"), 417, "bad_data"},
		{New(505, "HTTP/1.1 only"), 505, "bad_data"},
		{fmt.Errorf("plain"), 500, "internal"},
	} {
		rec := httptest.NewRecorder()
		rec.Header().Set("Content-Length", "99")
		Write(rec, tc.err)
		var got struct{ Status, ErrorType, Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%v: body is not JSON: %q", tc.err, rec.Body.String())
		}
		if rec.Code != tc.status || got.Status != "error" || got.ErrorType != tc.errType || got.Error != tc.err.Error() {
			t.Errorf("%v: got %d %+v", tc.err, rec.Code, got)
		}
		if rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Content-Length") != "" {
			t.Errorf("%v: bad headers %v", tc.err, rec.Header())
		}
	}
	if Status(nil) != http.StatusInternalServerError {
		t.Fatal("nil error must map to 500")
	}
}

type reasonWriter struct {
	http.ResponseWriter
	reason string
}

func (w *reasonWriter) SetReason(msg, _ string) { w.reason = msg }

type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestWriteStatusRequestIDAndReason: the body names the answer's request id, keeps <, > and & as they are, and a
// writer that records refusals, found through Unwrap, gets the message.
func TestWriteStatusRequestIDAndReason(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-Id", "abc-123")
	rw := &reasonWriter{ResponseWriter: rec}
	msg := `cannot parse query "a<b && c>d"`
	WriteStatus(wrapped{rw}, http.StatusBadRequest, msg)
	want := `{"status":"error","errorType":"bad_data","error":"cannot parse query \"a<b && c>d\"","requestId":"abc-123"}` + "\n"
	if got := rec.Body.String(); got != want {
		t.Fatalf("body %s\nwant %s", got, want)
	}
	if rw.reason != msg {
		t.Fatalf("reason %q, want %q", rw.reason, msg)
	}
	// Without an id the field is left out.
	if got := string(JSON(http.StatusBadGateway, "down", "")); got != `{"status":"error","errorType":"unavailable","error":"down"}`+"\n" {
		t.Fatalf("without an id: %s", got)
	}
}

// TestWriteList: an answer with several problems keeps the shape of every error (the request id included) and
// lists each problem.
func TestWriteList(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-Id", "r-1")
	WriteList(rec, 400, "reload failed: a; b", []string{"a", "b"})
	var got struct {
		Status, ErrorType, Error, RequestID string
		Errors                              []string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body is not JSON: %q", rec.Body.String())
	}
	if rec.Code != 400 || got.Status != "error" || got.ErrorType != "bad_data" || got.Error != "reload failed: a; b" ||
		got.RequestID != "r-1" || len(got.Errors) != 2 || got.Errors[1] != "b" {
		t.Errorf("got %d %+v", rec.Code, got)
	}
	rec = httptest.NewRecorder()
	WriteStatus(rec, 400, "one")
	if strings.Contains(rec.Body.String(), "errors") {
		t.Errorf("a single error has an errors field: %s", rec.Body.String())
	}
}

type reasonRecorder struct {
	*httptest.ResponseRecorder
	msg, noQuery string
}

func (r *reasonRecorder) SetReason(msg, noQuery string) { r.msg, r.noQuery = msg, noQuery }

// TestWithQuery: the client gets the message with its query, what records the reason also gets the form without
// it, through wrapping errors too.
func TestWithQuery(t *testing.T) {
	err := fmt.Errorf("the query limits: %w", WithQuery(400, `cannot parse query "secret{": oops`, "cannot parse query "+Elided))
	rec := &reasonRecorder{ResponseRecorder: httptest.NewRecorder()}
	Write(rec, err)
	if !strings.Contains(rec.Body.String(), `cannot parse query \"secret{\": oops`) {
		t.Errorf("the client does not get its query: %s", rec.Body.String())
	}
	if rec.msg != err.Error() || rec.noQuery != "the query limits: cannot parse query "+Elided {
		t.Errorf("reason %q, without query %q", rec.msg, rec.noQuery)
	}
	if got := NoQuery(err); got != rec.noQuery {
		t.Errorf("NoQuery: %q", got)
	}
	if got := NoQuery(New(400, "plain")); got != "plain" {
		t.Errorf("NoQuery of a message without query: %q", got)
	}
	Write(rec, New(400, "plain"))
	if rec.msg != "plain" || rec.noQuery != "" {
		t.Errorf("reason %q, without query %q", rec.msg, rec.noQuery)
	}
}
