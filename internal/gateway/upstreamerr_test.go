package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// TestWrapPlainError: error answers that are not JSON reach the client as Prometheus JSON errors with the
// upstream's status and message (gzip decoded, VictoriaMetrics 1.79's address prefix cut, bounded); JSON errors,
// successes and bodies the gateway cannot decode pass as they came.
func TestWrapPlainError(t *testing.T) {
	gz := func(s string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.String()
	}
	long := strings.Repeat("x", maxWrappedError+100)
	for _, tc := range []struct {
		name        string
		status      int
		ctype, cenc string
		body        string
		want        string // the wrapped message; "" means the answer passes untouched
	}{
		{"plain text", 400, "text/plain; charset=utf-8", "", "missing `match[]` arg\n", "missing `match[]` arg"},
		{"1.79 prefix", 400, "text/plain; charset=utf-8", "", `remoteAddr: "127.0.0.1:41426"; requestURI: /federate?x=1; missing ` + "`match[]`" + ` arg`, "missing `match[]` arg"},
		{"gzip", 400, "text/plain", "gzip", gz("cannot parse a<b & c>d"), "cannot parse a<b & c>d"},
		{"no content type", 503, "", "", "too many concurrent requests", "too many concurrent requests"},
		{"HTML page of a proxy", 502, "text/html", "", "<html>bad gateway</html>", "<html>bad gateway</html>"},
		{"empty", 503, "text/plain", "", "", "the upstream answered 503 Service Unavailable without a message"},
		{"long", 400, "text/plain", "", long, long[:maxWrappedError] + " … (cut)"},
		{"JSON error", 422, "application/json", "", `{"status":"error","errorType":"422","error":"bad"}`, ""},
		{"success", 200, "text/plain", "", "ok", ""},
		{"brotli", 400, "text/plain", "br", "\x01\x02", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Request-Id") != "rid-1" {
					t.Errorf("upstream got X-Request-Id %q", r.Header.Get("X-Request-Id"))
				}
				h := w.Header()
				h["Content-Type"] = nil
				if tc.ctype != "" {
					h.Set("Content-Type", tc.ctype)
				}
				if tc.cenc != "" {
					h.Set("Content-Encoding", tc.cenc)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}
			upstream := httptest.NewServer(http.HandlerFunc(up))
			t.Cleanup(upstream.Close)
			srv := serveGateway(t, upstream.URL, tlsclient.Options{}, nil)
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/federate?match[]=up", nil)
			req.Header.Set("X-Request-Id", "rid-1")
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.want == "" {
				if string(b) != tc.body {
					t.Fatalf("body changed: %q", b)
				}
				return
			}
			var e struct{ Status, ErrorType, Error, RequestID string }
			if err := json.Unmarshal(b, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Content-Encoding") != "" {
				t.Fatalf("not a JSON error (%v): %v %q", err, resp.Header, b)
			}
			if e.Status != "error" || e.Error != tc.want || e.RequestID != "rid-1" || e.ErrorType != errTypeOf(tc.status) {
				t.Fatalf("got %+v\nwant error %q, request id rid-1", e, tc.want)
			}
			if bytes.Contains(b, []byte(`\u003c`)) {
				t.Fatalf("HTML-escaped: %s", b)
			}
		})
	}
}

func errTypeOf(status int) string {
	switch status {
	case 400:
		return "bad_data"
	case 502, 503:
		return "unavailable"
	}
	return "internal"
}
