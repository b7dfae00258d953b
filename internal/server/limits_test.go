package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startTestServer serves h on a random loopback port with -http.maxHeaderBytes=limit.
func startTestServer(t *testing.T, limit int, h http.Handler) string {
	t.Helper()
	s, err := New(Config{ListenAddrs: []string{"127.0.0.1:0"}, MaxHeaderBytes: limit, ReadHeaderTimeout: 10 * time.Second,
		MaxGracefulShutdown: time.Second, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	return s.Addrs()[0].String()
}

// rawRequest sends a GET with one extra header of the given size over a fresh connection and returns the
// status, Content-Type and body of the answer.
func rawRequest(t *testing.T, addr string, headerLen int) (int, string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_, _ = fmt.Fprintf(c, "GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", headerLen))
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to a %d-byte header: %s", headerLen, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// TestMaxHeaderBytes: headers over -http.maxHeaderBytes get a JSON 431 from the gateway and never reach the
// handler; headers beyond the server's larger hard cap get the same JSON 431 from the server itself.
func TestMaxHeaderBytes(t *testing.T) {
	var reached atomic.Int64
	addr := startTestServer(t, 8<<10, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	for _, tc := range []struct {
		name      string
		headerLen int
		status    int
		json      bool
	}{
		{"well within", 1 << 10, http.StatusNoContent, false},
		{"just over the limit", 8 << 10, http.StatusRequestHeaderFieldsTooLarge, true},
		{"four times the limit", 32 << 10, http.StatusRequestHeaderFieldsTooLarge, true},
		{"beyond net/http's cap", 2 << 20, http.StatusRequestHeaderFieldsTooLarge, true},
	} {
		before := reached.Load()
		code, ct, body := rawRequest(t, addr, tc.headerLen)
		if code != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, code, tc.status, body)
			continue
		}
		if code/100 == 2 {
			if reached.Load() != before+1 {
				t.Errorf("%s: the handler was not reached", tc.name)
			}
			continue
		}
		if reached.Load() != before {
			t.Errorf("%s: an oversized request reached the handler", tc.name)
		}
		var e struct{ Status, ErrorType, Error string }
		isJSON := ct == "application/json" && json.Unmarshal([]byte(body), &e) == nil && e.Status == "error"
		if isJSON != tc.json {
			t.Errorf("%s: JSON answer %v, want %v: %s %q", tc.name, isJSON, tc.json, ct, body)
		}
		if tc.json && (e.ErrorType != "bad_data" || !strings.Contains(e.Error, "-http.maxHeaderBytes") || !strings.Contains(e.Error, "at most 8192")) {
			t.Errorf("%s: error %+v should name the flag and its value", tc.name, e)
		}
	}
}

// TestHeaderSizeCountsLikeNetHTTP: the size checked is the request line and headers as sent.
func TestHeaderSizeCountsLikeNetHTTP(t *testing.T) {
	raw := "GET /a?b=c HTTP/1.1\r\nHost: example\r\nX-A: 1\r\nUser-Agent: t\r\n\r\n"
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if got := headerSize(r); got != len(raw) {
		t.Fatalf("headerSize = %d, want %d, the bytes on the wire", got, len(raw))
	}
}

func TestGoHeaderLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want int }{{0, 0}, {64 << 10, 1 << 20}, {4 << 20, 8 << 20}} {
		if got := goHeaderLimit(tc.limit); got != tc.want {
			t.Errorf("goHeaderLimit(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

// TestGoErrorRewriteLeavesHandlers: a handler's own plain-text error goes out as the handler wrote it; what the
// server refuses itself is our JSON.
func TestGoErrorRewriteLeavesHandlers(t *testing.T) {
	addr := startTestServer(t, 8<<10, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "400 Bad Request")
	}))
	for _, tc := range []struct {
		raw, ct, body string
	}{
		{"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n", "text/plain; charset=utf-8", "400 Bad Request"},
		{"GET /x HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n", "application/json", `"cannot parse the HTTP request: `},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, tc.raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != tc.ct || !strings.Contains(string(b), tc.body) {
			t.Errorf("%q: %d %q %q; want 400 %q with %q", tc.raw, resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.ct, tc.body)
		}
	}
}
