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
