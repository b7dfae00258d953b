package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// A query answer that comes without a length (VictoriaMetrics flushes its answers) reaches the client whole: a
// small one with its length, a large one streamed; the streaming APIs pass as they come; an upstream that breaks
// before the end of a small answer gives a 502, not a cut answer.
func TestSmallAnswersGetALength(t *testing.T) {
	g, read, _ := newGateway(t, false, nil, nil)
	small := `{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "3","executionTimeMsec":1}}`
	large := `{"status":"success","data":{"resultType":"vector","result":[` + strings.Repeat(`{"metric":{},"value":[1,"1"]},`, 4000) + `{}]}}`
	for _, tc := range []struct {
		name, path, body string
		wantLength       bool
	}{
		{"small query", "/api/v1/query?query=up", small, true},
		{"small query_range", "/api/v1/query_range?query=up&start=1&end=2&step=1", small, true},
		{"large query", "/api/v1/query?query=up", large, false},
		{"export streams", "/api/v1/export?match[]=up", small, false},
	} {
		read.Respond(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			half := len(tc.body) / 2
			_, _ = w.Write([]byte(tc.body[:half]))
			w.(http.Flusher).Flush() // no Content-Length from here on
			_, _ = w.Write([]byte(tc.body[half:]))
		})
		rec := serve(g, http.MethodGet, tc.path)
		if rec.Code != http.StatusOK || rec.Body.String() != tc.body {
			t.Fatalf("%s: %d, %d bytes of %d", tc.name, rec.Code, rec.Body.Len(), len(tc.body))
		}
		if got := rec.Header().Get("Content-Length"); (got != "") != tc.wantLength {
			t.Errorf("%s: Content-Length %q; want one: %v", tc.name, got, tc.wantLength)
		}
	}

	read.Respond(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(small[:20]))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	rec := serve(g, http.MethodGet, "/api/v1/query?query=up")
	if rec.Code != http.StatusBadGateway || !strings.Contains(errorOf(t, rec), "the read upstream broke off its answer before the end") {
		t.Errorf("an answer cut short: %d %s; want a 502", rec.Code, rec.Body)
	}
}
