package httperr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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

func (w *reasonWriter) SetReason(msg string) { w.reason = msg }

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
