package server_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/server"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// The HTTP conformance suite: raw bytes on a TCP connection to the real server (internal/server) in front of the
// real gateway handler, a recording upstream behind it. Each case asserts what the client gets and what reached
// the upstream. The client-facing parsing is the gateway's own HTTP/1.1 server (internal/h1), held to net/http's by
// a differential fuzz test; these are the behaviours the gateway relies on, each pinned by a case below, on plain
// and TLS listeners (TestConformanceTLS), so a change of either that breaks one fails here:
//
//   - Transfer-Encoding with Content-Length: chunked wins and Content-Length is dropped (RFC 9112 6.3); the server
//     closes the connection after answering any chunked request (server.go), since net/http does not say whether
//     a Content-Length came with it and RFC 9112 requires the close when one did.
//   - Several Content-Length values that differ, or one that is not a plain decimal: 400, connection closed, nothing
//     forwarded. Identical duplicates are merged.
//   - A Transfer-Encoding other than a single "chunked", or chunked on HTTP/1.0: 501 or 400, nothing forwarded.
//   - A bare LF ends a line of the request head (RFC 9112 2.2 allows it); a bare CR or a NUL in a header is refused
//     with 400; obs-fold continuation lines are refused with 400.
//   - A request line and headers beyond MaxHeaderBytes: our JSON 431 (limits.go), also beyond the server's hard
//     cap, where the server answers it itself.
//   - Expect: 100-continue: the 100 comes only when the handler reads the body; a refused request gets its answer
//     without it, and the connection is closed rather than its unread body read as a request.
//   - Pipelined requests are answered in order, each forwarded once.
//   - HTTP/1.0: the connection closes after the answer unless the client asked for keep-alive; Host is optional.
//   - After an answer the gateway gives (4xx in our JSON), the connection stays usable; after a parse error it is
//     closed.
//   - An absolute-form target: its host is ignored for routing; the upstream gets the backend's host.
//   - Two Host headers or a malformed one: 400. The upstream's Host is always the backend's; X-Forwarded-* from the
//     client are replaced.
//   - A client that sends its head slower than ReadHeaderTimeout is cut off, nothing forwarded; a read body slower
//     than -http.readBodyTimeout and a write body stalled for -http.writeBodyIdleTimeout get a JSON 408.

const (
	confMaxHeaderBytes = 4096
	confHeaderTimeout  = 500 * time.Millisecond
	confBodyTimeout    = 700 * time.Millisecond
)

type confEnv struct {
	addr string
	rec  *vmtest.Recorder
	// tls, when set, is the client's TLS config: the suite runs over a TLS listener (tls_test.go).
	tls *tls.Config
}

func startConformance(t *testing.T) *confEnv {
	t.Helper()
	return startConformanceWith(t, nil)
}

// startConformanceWith starts the suite's server; with tlsCfg, on a TLS listener (and tlsCfg set for the client).
func startConformanceWith(t *testing.T, tlsCfg func(cfg *server.Config) *tls.Config) *confEnv {
	t.Helper()
	rec := vmtest.NewRecorder(t)
	u, err := url.Parse(rec.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's own upstream client, as the binary runs it: http.Transport would also pass the upstream's
	// 100 Continue on to the client, after the server's own.
	tr, err := tlsclient.NewUpstream("read", tlsclient.Options{}, 10*time.Second, tlsclient.DefaultDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	gw, err := gateway.New(gateway.Config{ReadURL: u, WriteURL: u, ReadTransport: tr, WriteTransport: tr,
		Limits: gateway.Limits{ReadBodyTimeout: confBodyTimeout, WriteBodyIdleTimeout: confBodyTimeout, MaxReadBodySize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	cfg := server.Config{
		ListenAddrs: []string{"127.0.0.1:0"}, Handler: gw, MaxHeaderBytes: confMaxHeaderBytes,
		ReadHeaderTimeout: confHeaderTimeout, IdleConnTimeout: time.Minute, MaxGracefulShutdown: time.Second,
	}
	var clientTLS *tls.Config
	if tlsCfg != nil {
		clientTLS = tlsCfg(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	return &confEnv{addr: srv.Addrs()[0].String(), rec: rec, tls: clientTLS}
}

func (e *confEnv) dial() (net.Conn, error) {
	if e.tls != nil {
		return tls.Dial("tcp", e.addr, e.tls)
	}
	return net.Dial("tcp", e.addr)
}

// confResp is one response as the client read it.
type confResp struct {
	status int
	proto  string
	header http.Header
	body   string
}

// exchange writes parts on one connection, pausing between them, reads want responses (or fewer, if the server
// closes first) and reports whether the server closed the connection after them.
func (e *confEnv) exchange(t *testing.T, want int, pause time.Duration, parts ...string) ([]confResp, bool) {
	t.Helper()
	conn, err := e.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, p := range parts {
		if i > 0 {
			time.Sleep(pause)
		}
		if _, err := io.WriteString(conn, p); err != nil {
			// The server may close early (a refused head); what it answered is still to be read.
			break
		}
	}
	br := bufio.NewReader(conn)
	var out []confResp
	for len(out) < want {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return out, true
			}
			t.Fatalf("reading response %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil && !isReset(err) {
			t.Fatalf("reading the body of response %d: %v", len(out)+1, err)
		}
		out = append(out, confResp{resp.StatusCode, resp.Proto, resp.Header, string(b)})
	}
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := br.ReadByte()
	switch {
	case err == nil:
		t.Fatalf("a byte %q after the %d responses expected", n, want)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return out, false
	}
	return out, true
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && strings.Contains(err.Error(), "reset")
}

// isJSONError reports whether body is our error shape.
func isJSONError(body string) bool {
	var e struct {
		Status, ErrorType, Error string
	}
	return json.Unmarshal([]byte(body), &e) == nil && e.Status == "error" && e.ErrorType != "" && e.Error != ""
}

const (
	getUp   = "GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n\r\n"
	imPath  = "/api/v1/import/prometheus"
	oneLine = "m 1\n"
)

// confCase is one case of the suite.
type confCase struct {
	name   string
	parts  []string
	pause  time.Duration
	status []int
	// jsonErrors: every error answer must be our JSON shape (false: net/http's own plain answer is accepted).
	jsonErrors bool
	closed     bool
	// settle is how long to wait for a forwarded request to be recorded once the client has its answer.
	settle time.Duration
	// forwarded checks what reached the upstream, in order.
	forwarded func(t *testing.T, got []vmtest.Recorded)
}

func TestConformance(t *testing.T) {
	runConformance(t, startConformance(t), conformanceCases())
}

func conformanceCases() []confCase {
	return []confCase{
		{
			name:   "plain GET keeps the connection",
			parts:  []string{getUp},
			status: []int{200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query")
				if got[0].Query.Get("query") != "up" || got[0].Method != "GET" {
					t.Errorf("forwarded %s %v", got[0].Method, got[0].Query)
				}
			},
		},
		{
			name: "Content-Length with Transfer-Encoding: chunked wins, the smuggled bytes are not a request, connection closed",
			parts: []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"4\r\nm 1\n\r\n0\r\n\r\n" + getUp},
			status: []int{200},
			closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, imPath)
				if got[0].Body != oneLine || got[0].Header.Get("Content-Length") == "40" {
					t.Errorf("forwarded body %q, Content-Length %q; want the chunked body alone", got[0].Body, got[0].Header.Get("Content-Length"))
				}
			},
		},
		{
			name:   "chunked alone is answered and the connection closed",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nm 1\n\r\n0\r\n\r\n" + getUp},
			status: []int{200},
			closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, imPath)
				if got[0].Body != oneLine {
					t.Errorf("forwarded body %q", got[0].Body)
				}
			},
		},
		{
			name:   "two different Content-Length values",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nm 1\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "identical duplicate Content-Length values are one",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nm 1\n" + getUp},
			status: []int{200, 200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, imPath, "/api/v1/query")
				if got[0].Body != oneLine {
					t.Errorf("forwarded body %q", got[0].Body)
				}
			},
		},
		{
			name:   "Content-Length list",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 4, 4\r\n\r\nm 1\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "signed Content-Length",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: +4\r\n\r\nm 1\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "negative Content-Length",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "hex Content-Length",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 0x4\r\n\r\nm 1\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "Transfer-Encoding gzip, chunked",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
			status: []int{501}, jsonErrors: true, closed: true,
		},
		{
			name:   "Transfer-Encoding chunked twice",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
			status: []int{501}, jsonErrors: true, closed: true,
		},
		{
			name:   "Transfer-Encoding xchunked",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nm 1\n"},
			status: []int{501}, jsonErrors: true, closed: true,
		},
		{
			name:   "Transfer-Encoding identity",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: identity\r\nContent-Length: 4\r\n\r\nm 1\n"},
			status: []int{501}, jsonErrors: true, closed: true,
		},
		{
			name:   "chunked on HTTP/1.0 with keep-alive: Content-Length frames it, connection closed",
			parts:  []string{"POST " + imPath + " HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nm 1\n" + getUp},
			status: []int{200}, closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, imPath)
				if got[0].Body != oneLine {
					t.Errorf("forwarded body %q", got[0].Body)
				}
			},
		},
		{
			// The write streams: its head is forwarded before the body is read, and the upstream request is aborted
			// when the body turns out malformed; the upstream never gets a complete request.
			name:   "chunk size with a bare LF",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n4\nm 1\n\r\n0\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true, settle: 300 * time.Millisecond,
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				for _, r := range got {
					if r.Body != "" {
						t.Errorf("the upstream got %s with body %q; want no complete request", r.Path, r.Body)
					}
				}
			},
		},
		{
			name:   "a head ended by bare LFs is read as lines",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\nHost: gw\nX-A: 1\n\n"},
			status: []int{200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query")
				if got[0].Header.Get("X-A") != "1" {
					t.Errorf("forwarded X-A %q", got[0].Header.Get("X-A"))
				}
			},
		},
		{
			name:   "obs-fold is one value, folded with a space",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n X-Smuggled: 2\r\n\r\n"},
			status: []int{200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query")
				if h := got[0].Header; h.Get("X-A") != "1 X-Smuggled: 2" || h.Get("X-Smuggled") != "" {
					t.Errorf("forwarded X-A %q, X-Smuggled %q", h.Get("X-A"), h.Get("X-Smuggled"))
				}
			},
		},
		{
			name:   "a bare CR in a header value",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nX-A: 1\rX-B: 2\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "a NUL in a header value",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nX-A: 1\x002\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "a space before the colon",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nContent-Length : 4\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "a request line beyond -http.maxHeaderBytes",
			parts:  []string{"GET /api/v1/query?query=" + strings.Repeat("a", 2*confMaxHeaderBytes) + " HTTP/1.1\r\nHost: gw\r\n\r\n"},
			status: []int{431}, jsonErrors: true, closed: true,
		},
		{
			name:   "headers beyond -http.maxHeaderBytes",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nX-Pad: " + strings.Repeat("p", 2*confMaxHeaderBytes) + "\r\n\r\n"},
			status: []int{431}, jsonErrors: true, closed: true,
		},
		{
			name:   "headers beyond net/http's own cap",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nX-Pad: " + strings.Repeat("p", 2<<20) + "\r\n\r\n"},
			status: []int{431}, jsonErrors: true, closed: true,
		},
		{
			name:   "pipelined requests are answered in order",
			parts:  []string{"GET /api/v1/query?query=a HTTP/1.1\r\nHost: gw\r\n\r\nGET /api/v1/query?query=b HTTP/1.1\r\nHost: gw\r\n\r\nGET /api/v1/labels HTTP/1.1\r\nHost: gw\r\n\r\n"},
			status: []int{200, 200, 200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query", "/api/v1/query", "/api/v1/labels")
				if got[0].Query.Get("query") != "a" || got[1].Query.Get("query") != "b" {
					t.Errorf("forwarded queries %q, %q", got[0].Query.Get("query"), got[1].Query.Get("query"))
				}
			},
		},
		{
			name:   "HTTP/1.0 without Host closes after the answer",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.0\r\n\r\n"},
			status: []int{200}, closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) { wantPaths(t, got, "/api/v1/query") },
		},
		{
			name:   "HTTP/1.0 keep-alive is not kept",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /api/v1/labels HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
			status: []int{200}, closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) { wantPaths(t, got, "/api/v1/query") },
		},
		{
			name:   "HTTP/1.1 Connection: close",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" + getUp},
			status: []int{200}, closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) { wantPaths(t, got, "/api/v1/query") },
		},
		{
			name:   "keep-alive after the gateway's own 4xx",
			parts:  []string{"GET /no/such/api HTTP/1.1\r\nHost: gw\r\n\r\nGET /api/v1/query?query=a&query=b HTTP/1.1\r\nHost: gw\r\n\r\n" + getUp},
			status: []int{404, 400, 200}, jsonErrors: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) { wantPaths(t, got, "/api/v1/query") },
		},
		{
			name:   "a malformed request after a good one closes the connection",
			parts:  []string{getUp + "GET /api/v1/query?query=up HTTP/9.9\r\nHost: gw\r\n\r\n" + getUp},
			status: []int{200, 505}, jsonErrors: true, closed: true,
			forwarded: func(t *testing.T, got []vmtest.Recorded) { wantPaths(t, got, "/api/v1/query") },
		},
		{
			name:   "an absolute-form target does not choose the upstream",
			parts:  []string{"GET http://evil.example:8428/api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n\r\n"},
			status: []int{200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query")
				if strings.Contains(got[0].Host, "evil") {
					t.Errorf("the upstream got Host %q", got[0].Host)
				}
			},
		},
		{
			name:   "an absolute-form target with a userinfo",
			parts:  []string{"GET http://user:pw@evil.example/api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n\r\n"},
			status: []int{200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query")
				if got[0].Header.Get("Authorization") != "" || strings.Contains(got[0].Host, "evil") {
					t.Errorf("the upstream got Host %q, Authorization %q", got[0].Host, got[0].Header.Get("Authorization"))
				}
			},
		},
		{
			name:   "an authority-form target",
			parts:  []string{"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"},
			status: []int{400}, jsonErrors: true,
		},
		{
			name:   "two Host headers",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\nHost: evil.example\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "a malformed Host",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw evil\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name:   "HTTP/1.1 without Host",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\n\r\n"},
			status: []int{400}, jsonErrors: true, closed: true,
		},
		{
			name: "the upstream's Host and X-Forwarded-* are the gateway's",
			parts: []string{"GET /api/v1/query?query=up HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n" +
				"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\n\r\n"},
			status: []int{200},
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				wantPaths(t, got, "/api/v1/query")
				h := got[0].Header
				if strings.Contains(got[0].Host, "evil") || h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("Forwarded") != "" ||
					h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != "evil.example" {
					t.Errorf("the upstream got Host %q and %v", got[0].Host, h)
				}
			},
		},
		{
			// The server answers it itself, before any handler (in JSON, which the case does not require).
			name:   "Expect with an unknown expectation",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nExpect: 200-ok\r\nContent-Length: 4\r\n\r\nm 1\n"},
			status: []int{417}, closed: true,
		},
		{
			name:   "a head slower than -http.readHeaderTimeout",
			parts:  []string{"GET /api/v1/query?query=up HTTP/1.1\r\n", "Host: gw\r\n", "X-A: 1\r\n", "\r\n"},
			pause:  confHeaderTimeout / 2,
			status: nil, closed: true,
		},
		{
			name:   "a read body slower than -http.readBodyTimeout",
			parts:  []string{"POST /api/v1/query HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nquery", "=up"},
			pause:  2 * confBodyTimeout,
			status: []int{408}, jsonErrors: true, closed: true,
		},
		{
			// The write streams: the upstream request is aborted when the body stalls, never completed.
			name:   "a write body that stalls for -http.writeBodyIdleTimeout",
			parts:  []string{"POST " + imPath + " HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\nm 1\n", "m 2\n"},
			pause:  2 * confBodyTimeout,
			status: []int{408}, jsonErrors: true, closed: true, settle: 300 * time.Millisecond,
			forwarded: func(t *testing.T, got []vmtest.Recorded) {
				for _, r := range got {
					if r.Body == oneLine+"m 2\n" {
						t.Errorf("the upstream got the whole stalled write: %+v", r)
					}
				}
			},
		},
	}
}

func runConformance(t *testing.T, e *confEnv, cases []confCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.rec.Requests()
			resps, closed := e.exchange(t, len(tc.status), tc.pause, tc.parts...)
			var got []int
			for _, r := range resps {
				got = append(got, r.status)
				if r.status >= 400 && tc.jsonErrors && !isJSONError(r.body) {
					t.Errorf("status %d answered %q (Content-Type %q); want our JSON error", r.status, r.body, r.header.Get("Content-Type"))
				}
			}
			if !equalInts(got, tc.status) {
				t.Fatalf("statuses %v; want %v (bodies: %v)", got, tc.status, resps)
			}
			if closed != tc.closed {
				t.Errorf("connection closed: %v; want %v", closed, tc.closed)
			}
			time.Sleep(tc.settle)
			fw := e.rec.Requests()
			if tc.forwarded == nil {
				if len(fw) != 0 {
					t.Errorf("%d requests reached the upstream; want none: %+v", len(fw), fw)
				}
				return
			}
			tc.forwarded(t, fw)
		})
	}
}

// Expect: 100-continue: the 100 comes before the client sends the body, only for a request that will be forwarded.
func TestConformanceExpectContinue(t *testing.T) {
	e := startConformance(t)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	read := func() *http.Response {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	_, _ = io.WriteString(conn, "POST "+imPath+" HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if r := read(); r.StatusCode != http.StatusContinue {
		t.Fatalf("got %d before sending the body; want 100", r.StatusCode)
	}
	_, _ = io.WriteString(conn, oneLine)
	if r := read(); r.StatusCode != http.StatusOK {
		t.Fatalf("got %d for the body; want 200", r.StatusCode)
	}
	if fw := e.rec.Requests(); len(fw) != 1 || fw[0].Body != oneLine {
		t.Fatalf("forwarded %+v; want the one write with its body", fw)
	}

	// A request the gateway refuses before reading the body: the answer comes without a 100 and says the connection
	// closes. The server then drops what the client still sends (the body it owes), never reading it as a request:
	// the GET after it gets no answer and reaches no upstream.
	_, _ = io.WriteString(conn, "POST /no/such/api HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
	r := read()
	if r.StatusCode != http.StatusNotFound || !r.Close {
		t.Fatalf("got %d (close %v) for a refused request; want 404 without a 100, and Connection: close", r.StatusCode, r.Close)
	}
	_, _ = io.WriteString(conn, strings.Repeat("x", 1000)+getUp)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := br.ReadByte(); err == nil {
		t.Errorf("after the refused request's body, the server sent %q; want the connection closed", b)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after the refused request's body, the connection is still open; want it closed")
	}
	if fw := e.rec.Requests(); len(fw) != 0 {
		t.Fatalf("forwarded %+v; want nothing", fw)
	}
}

func wantPaths(t *testing.T, got []vmtest.Recorded, paths ...string) {
	t.Helper()
	var gp []string
	for _, r := range got {
		gp = append(gp, strings.TrimPrefix(r.Path, "/prometheus"))
	}
	if strings.Join(gp, " ") != strings.Join(paths, " ") {
		t.Fatalf("the upstream got %v; want %v", gp, paths)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
