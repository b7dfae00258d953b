package proxyclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/sockio"
)

// countConns counts the connections a test server accepted.
func countConns(srv *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func get(t *testing.T, c *Client, ctx context.Context, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReuseAndEarlyClose(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
			return
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, err := get(t, c, context.Background(), srv.URL+"/a")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "ok /a" {
			t.Fatalf("body %q", got)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 sequential requests; want 1 kept alive", n)
	}
	// An answer closed before its end leaves bytes on its connection: it is not reused.
	resp, err := get(t, c, context.Background(), srv.URL+"/big")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(resp.Body, make([]byte, 10))
	resp.Body.Close()
	resp, err = get(t, c, context.Background(), srv.URL+"/a")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "ok /a" {
		t.Fatalf("after an early close: %q", got)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want a new one after the early close", n)
	}
}

func TestIdleConnectionClosedByUpstream(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "ok "+string(b))
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		resp, err := get(t, c, context.Background(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		// The upstream drops its idle connections (an idle timeout, a restart).
		srv.CloseClientConnections()
		time.Sleep(20 * time.Millisecond)
	}
	// A read's body (GetBody) is sent again whole on a new connection.
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("query=up"))
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("a replayable body after the upstream closed the idle connection: %v", err)
	}
	if got := readAll(t, resp); got != "ok query=up" {
		t.Fatalf("the upstream got %q", got)
	}
	srv.CloseClientConnections()
	time.Sleep(20 * time.Millisecond)
	// A streamed body, which could not be sent again, goes on a connection found open.
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "body")
		pw.Close()
	}()
	req, _ = http.NewRequest(http.MethodPost, srv.URL, pr)
	resp, err = c.RoundTrip(req)
	if err != nil {
		t.Fatalf("a streamed body after the upstream closed the idle connection: %v", err)
	}
	if got := readAll(t, resp); got != "ok body" {
		t.Fatalf("the upstream got %q", got)
	}
	if n := conns.Load(); n != 4 {
		t.Fatalf("%d connections; want 4, one per request after each close", n)
	}
}

func TestHeaderTimeoutAndCancel(t *testing.T) {
	gone := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			gone <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	c := New(nil, 100*time.Millisecond, 10*time.Second)
	defer c.CloseIdleConnections()
	start := time.Now()
	_, err := get(t, c, context.Background(), srv.URL)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "timeout awaiting response headers") {
		t.Fatalf("got %v; want the header timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the timeout came after %s", d)
	}
	<-gone

	c = New(nil, 0, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = get(t, c, ctx, srv.URL)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v; want context.Canceled", err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the cancellation did not reach the upstream")
	}
}

// A connection whose answers come whole keeps the header timeout's deadline from one request to the next while it
// is late enough (setHeaderDeadline), and a kept deadline never cuts a wait for a head short of the timeout.
func TestHeaderDeadlineKept(t *testing.T) {
	const timeout = 800 * time.Millisecond
	upstream, conns := scriptedUpstream(t, func(i int, w net.Conn) {
		if i == 2 {
			time.Sleep(2 * timeout)
		}
		_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole")
	})
	c := New(nil, timeout, 10*time.Second)
	defer c.CloseIdleConnections()
	pooledDeadline := func() time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, cs := range c.idle {
			if len(cs) == 1 {
				return cs[0].headerDeadline
			}
		}
		t.Fatal("no connection pooled")
		return time.Time{}
	}
	var deadlines []time.Time
	first := time.Now()
	for i := 0; i < 2; i++ {
		resp, err := get(t, c, context.Background(), upstream)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "whole" {
			t.Fatalf("request %d: body %q", i, got)
		}
		deadlines = append(deadlines, pooledDeadline())
	}
	if time.Since(first) < timeout/headerSlack && !deadlines[1].Equal(deadlines[0]) {
		t.Errorf("the second request set the deadline %s, where the first's (%s) was late enough", deadlines[1], deadlines[0])
	}
	start := time.Now()
	_, err := get(t, c, context.Background(), upstream)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v; want the header timeout", err)
	}
	if d := time.Since(start); d < timeout || d > 5*time.Second {
		t.Fatalf("the header timeout came after %s; want %s to a sixteenth more", d, timeout)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections; want 1 kept alive", n)
	}
}

func TestBodiesStream(t *testing.T) {
	got := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				got <- string(buf[:n])
			}
			if err != nil {
				break
			}
		}
		_, _ = io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, pr)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	_, _ = io.WriteString(pw, "first")
	select {
	case s := <-got:
		if s != "first" {
			t.Fatalf("the upstream read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first part of a streamed body did not reach the upstream before the body ended")
	}
	pw.Close()
	resp := <-done
	if resp == nil {
		t.FailNow()
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "part1" {
		t.Fatalf("the first part of a streamed answer: %q %v", buf, err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("an answer cancelled mid-way ended without an error")
	}
	resp.Body.Close()
}

func TestEarlyAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = io.WriteString(w, "too big")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, ", refused")
	}))
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(strings.Repeat("x", 32<<20)))
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("an upstream that refuses before reading the body: %v; want its answer", err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := readAll(t, resp); got != "too big, refused" {
		t.Fatalf("the early answer's body: %q", got)
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) != 1 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "tls ok")
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	cert := srv.TLS.Certificates[0]

	c := New(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := get(t, c, context.Background(), srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			if got := readAll(t, resp); got != "tls ok" {
				t.Errorf("body %q", got)
			}
		}()
	}
	wg.Wait()

	// Without the CA the handshake fails with the certificate error the gateway explains to operators.
	c2 := New(&tls.Config{MinVersion: tls.VersionTLS12}, time.Minute, 10*time.Second)
	_, err := get(t, c2, context.Background(), srv.URL)
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		t.Fatalf("got %v; want a certificate verification error", err)
	}
}

// batchConn holds what TLS writes until flush when batching, so that two records leave in one write and the
// client's socket read takes both.
type batchConn struct {
	net.Conn
	mu    sync.Mutex
	batch bool
	buf   []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batch {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) setBatch(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batch = on
	if !on {
		_, _ = b.Conn.Write(b.buf)
		b.buf = nil
	}
}

// Over TLS, bytes past an answer that came in a later record, read from the socket with the answer's last one,
// sit in tls.Conn's own buffer, where neither the read buffer nor the peek at the socket sees them: the connection
// is still not pooled, so the next request (perhaps another tenant's) never reads them as its answer. A connection
// pooled after the check carries its expired deadline into the next request, which replaces it with its own
// header timeout (or none) and then lifts it for a body slower than that timeout: sequential requests keep one
// connection.
func TestTLSBytesPastAnswerDropConnection(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS() // for its certificate
	cert := srv.TLS.Certificates[0]
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	const timeout = 150 * time.Millisecond
	wrap := func(nc net.Conn) net.Conn {
		return tls.Server(&batchConn{Conn: nc}, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	addr, conns := scriptedUpstreamVia(t, wrap, func(i int, tc net.Conn) {
		switch (i + 1) % 3 {
		case 1:
			// The head alone, then the body's record and a stray answer's in one segment.
			bc := tc.(*tls.Conn).NetConn().(*batchConn)
			_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
			bc.setBatch(true)
			_, _ = io.WriteString(tc, "first")
			_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			bc.setBatch(false)
		case 2:
			_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
		case 0:
			_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nthird")
			time.Sleep(2 * timeout)
			_, _ = io.WriteString(tc, "-slow")
		}
	})
	url := strings.Replace(addr, "http://", "https://", 1)
	for _, headerTimeout := range []time.Duration{timeout, 0} {
		c := New(&tls.Config{RootCAs: pool, ServerName: "example.com", MinVersion: tls.VersionTLS12}, headerTimeout, 10*time.Second)
		before := conns.Load()
		for i, want := range []string{"first", "second", "third-slow"} {
			resp, err := get(t, c, context.Background(), url)
			if err != nil {
				t.Fatalf("header timeout %s, request %d: %v", headerTimeout, i, err)
			}
			if got := readAll(t, resp); got != want {
				t.Fatalf("header timeout %s, request %d: body %q; want %q, never the answer sent past the first", headerTimeout, i, got, want)
			}
		}
		if n := conns.Load() - before; n != 2 {
			t.Fatalf("header timeout %s: %d connections; want 2: a new one after the stray record, then kept alive", headerTimeout, n)
		}
		c.CloseIdleConnections()
	}
}

func TestDialError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := New(nil, time.Minute, 10*time.Second)
	_, err = get(t, c, context.Background(), "http://"+addr)
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("got %v; want a dial error", err)
	}
}

// scriptedUpstream serves each request with answer(i, conn), i counting the requests of all connections, after
// reading the request and its body; it counts the connections it accepted.
func scriptedUpstream(t *testing.T, answer func(i int, w net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	return scriptedUpstreamVia(t, nil, answer)
}

// scriptedUpstreamVia is scriptedUpstream over wrap(conn) (TLS, say) when wrap is not nil.
func scriptedUpstreamVia(t *testing.T, wrap func(net.Conn) net.Conn, answer func(i int, w net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	return scriptedUpstreamBodies(t, wrap, func(i int, _ []byte, w net.Conn) { answer(i, w) })
}

// scriptedUpstreamBodies is scriptedUpstreamVia whose answer is also given the request's body.
func scriptedUpstreamBodies(t *testing.T, wrap func(net.Conn) net.Conn, answer func(i int, body []byte, w net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var conns, reqs atomic.Int32
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				c := nc
				if wrap != nil {
					c = wrap(nc)
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					answer(int(reqs.Add(1)-1), body, c)
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), &conns
}

// The header timeout bounds the head alone: a body that comes slower than it, whether its first bytes came with
// the head or not, is read whole, and a connection pooled with the deadline of an answer that came whole does
// not carry it into the next request's body, nor fail the peek of a request with a streamed body.
func TestHeaderTimeoutSparesBodies(t *testing.T) {
	const timeout = 150 * time.Millisecond
	slow := 2 * timeout
	upstream, conns := scriptedUpstream(t, func(i int, w net.Conn) {
		switch i {
		case 0, 3, 4:
			// The whole answer at once: the head's deadline stays on the pooled connection.
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole")
		case 1:
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
			time.Sleep(slow)
			_, _ = io.WriteString(w, "-last")
		case 2:
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
			time.Sleep(slow)
			_, _ = io.WriteString(w, "5\r\n-last\r\n0\r\n\r\n")
		}
	})
	c := New(nil, timeout, 10*time.Second)
	defer c.CloseIdleConnections()
	for i, want := range []string{"whole", "first-last", "first-last", "whole"} {
		if i > 0 {
			// Past the deadline the last answer left.
			time.Sleep(slow)
		}
		resp, err := get(t, c, context.Background(), upstream)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != want {
			t.Fatalf("request %d: body %q; want %q", i, got, want)
		}
	}
	time.Sleep(slow)
	// A streamed body takes a pooled connection only after a peek at its socket, which an expired deadline fails.
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "streamed")
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, upstream, pr)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "whole" {
		t.Fatalf("body %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential requests; want 1 kept alive", n)
	}
}

// An upstream that sent more than its answer is confused: its connection is not pooled, so the bytes past the
// answer's end are never taken for the next request's answer.
func TestBytesPastAnswerDropConnection(t *testing.T) {
	upstream, conns := scriptedUpstream(t, func(i int, w net.Conn) {
		if i == 0 {
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			return
		}
		_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
	})
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	for _, want := range []string{"first", "second"} {
		resp, err := get(t, c, context.Background(), upstream)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != want {
			t.Fatalf("body %q; want %q", got, want)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want a new one after the answer with bytes past its end", n)
	}
}

// An upstream that sends an answer nobody asked for while its connection is idle (a desync: it read one request as
// two) must not have that answer read as the next request's, which may be another tenant's: the idle connection
// is found with bytes on it and dropped, whatever the next request's body.
func TestUnsolicitedAnswerOnIdleConnection(t *testing.T) {
	sent := make(chan struct{}, 4)
	upstream, conns := scriptedUpstream(t, func(i int, w net.Conn) {
		if i == 0 {
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
			time.Sleep(30 * time.Millisecond)
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			sent <- struct{}{}
			return
		}
		_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
	})
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	resp, err := get(t, c, context.Background(), upstream)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "first" {
		t.Fatalf("body %q; want first", got)
	}
	<-sent
	time.Sleep(20 * time.Millisecond) // the stray answer is on the idle socket
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"GET", func() *http.Request { r, _ := http.NewRequest(http.MethodGet, upstream, nil); return r }},
		{"small body", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, upstream, io.NopCloser(strings.NewReader("m 1\n")))
			r.ContentLength = 4
			return r
		}},
	} {
		resp, err := c.RoundTrip(tc.req())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := readAll(t, resp); got != "second" {
			t.Fatalf("%s: body %q; want second, never the answer the upstream sent unasked", tc.name, got)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want 2: the one with the stray answer dropped, the new one reused", n)
	}
}

// A chunked answer's trailer fills the answer's Trailer at the body's end, the announced keys there before; a
// trailer past its bound breaks the body and the connection.
func TestTrailers(t *testing.T) {
	upstream, conns := scriptedUpstream(t, func(i int, w net.Conn) {
		trailer := "X-T: v\r\nx-other: w\r\n"
		if i == 2 {
			trailer = "X-Big: " + strings.Repeat("v", maxTrailerBytes) + "\r\n"
		}
		_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n"+trailer+"\r\n")
	})
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		resp, err := get(t, c, context.Background(), upstream)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := resp.Trailer["X-T"]; !ok || v != nil || len(resp.Trailer) != 1 || resp.Header["Trailer"] != nil {
			t.Fatalf("before the body: Trailer %q, header %q; want the announced key alone", resp.Trailer, resp.Header)
		}
		if got := readAll(t, resp); got != "body" {
			t.Fatalf("body %q", got)
		}
		if want := (http.Header{"X-T": {"v"}, "X-Other": {"w"}}); !reflect.DeepEqual(resp.Trailer, want) {
			t.Fatalf("after the body: Trailer %q; want %q", resp.Trailer, want)
		}
	}
	resp, err := get(t, c, context.Background(), upstream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil || !strings.Contains(err.Error(), "trailer") {
		t.Fatalf("a trailer past its bound read with %v; want an error", err)
	}
	resp.Body.Close()
	resp, err = get(t, c, context.Background(), upstream)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want 2: one kept alive, then a new one after the broken trailer", n)
	}
}

// Concurrent requests on pooled connections, with answers framed every way, each get their own answer: the read
// buffers that connections give back when pooled never carry one request's answer into another's.
func TestConcurrentAnswersStayApart(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		body := strings.Repeat(id+",", 1+len(id)*997%9000)
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		case "/chunked":
			w.Header().Set("Trailer", "X-Id")
			defer func() { w.Header().Set("X-Id", id) }()
		}
		half := len(body) / 2
		_, _ = io.WriteString(w, body[:half])
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, body[half:])
	}))
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				id := strconv.Itoa(g*1000 + i)
				path := []string{"/length", "/chunked"}[i%2]
				resp, err := get(t, c, context.Background(), srv.URL+path+"?id="+id)
				if err != nil {
					t.Error(err)
					return
				}
				got := readAll(t, resp)
				if want := strings.Repeat(id+",", 1+len(id)*997%9000); got != want {
					t.Errorf("request %s got an answer of %d bytes starting %.20q; want its own", id, len(got), got)
					return
				}
				if path == "/chunked" && resp.Trailer.Get("X-Id") != id {
					t.Errorf("request %s got the trailer %q", id, resp.Trailer)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A small body with a length is read whole before a connection is taken: an idle connection the upstream closed
// is found before the body is written to it (the peek), so the body goes once, on a new connection; and a body
// that is not the length it claims is refused whole, before anything reaches the upstream.
func TestSmallBodyHeld(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "ok "+string(b))
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	post := func(body string, cl int64) (*http.Response, error) {
		// NopCloser: no GetBody, as the gateway's client bodies come.
		req, _ := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader(body)))
		req.ContentLength = cl
		return c.RoundTrip(req)
	}
	resp, err := post("first", 5)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	srv.CloseClientConnections()
	time.Sleep(20 * time.Millisecond)
	resp, err = post("m{a=\"b\"} 1\n", 11)
	if err != nil {
		t.Fatalf("a small body after the upstream closed the idle connection: %v", err)
	}
	if got := readAll(t, resp); got != "ok m{a=\"b\"} 1\n" {
		t.Fatalf("the upstream got %q", got)
	}
	if n, r := conns.Load(), requests.Load(); n != 2 || r != 2 {
		t.Fatalf("%d connections, %d requests; want 2 and 2: the closed idle connection found before the write, the second request sent once on a new one", n, r)
	}
	for _, c := range []struct {
		body string
		cl   int64
	}{{"short", 10}, {"longer than said", 4}} {
		if _, err := post(c.body, c.cl); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("ContentLength=%d with Body length", c.cl)) {
			t.Errorf("a %d-byte body sent as %d: %v; want the length mismatch", len(c.body), c.cl, err)
		}
	}
	if r := requests.Load(); r != 2 {
		t.Fatalf("%d requests reached the upstream; a body of the wrong length must not", r)
	}
}

// A request that went out whole on a reused connection which then broke before the answer is resent only when
// sending it twice is harmless: a write (a small body held whole, or a POST without a body, such as an admin
// call) may have been acted on and gets the error; a GET goes again on a new connection.
func TestWrittenRequestResentOnlyWhenRepeatable(t *testing.T) {
	const body = "metric 1 1700000000000\n"
	for _, tc := range []struct {
		name   string
		req    func(url string) *http.Request
		resent bool
	}{
		{"small write body", func(url string) *http.Request {
			// NopCloser: no GetBody, as the gateway's write bodies come.
			r, _ := http.NewRequest(http.MethodPost, url+"/api/v1/import", io.NopCloser(strings.NewReader(body)))
			r.ContentLength = int64(len(body))
			return r
		}, false},
		{"POST without a body", func(url string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url+"/api/v1/admin/tsdb/delete_series?match[]=up", nil)
			return r
		}, false},
		{"POST with an empty streamed body", func(url string) *http.Request {
			// A client's chunked body without a chunk, as the forward step passes it on: of unknown length, it
			// goes out whole (its last chunk) having given no byte.
			r, _ := http.NewRequest(http.MethodPost, url+"/api/v1/admin/tsdb/snapshot/create", io.NopCloser(strings.NewReader("")))
			r.ContentLength = -1
			return r
		}, false},
		{"GET", func(url string) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, url+"/api/v1/query?query=up", nil)
			return r
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int32
			upstream, conns := scriptedUpstream(t, func(i int, w net.Conn) {
				if i > 0 {
					sent.Add(1)
				}
				if i == 1 {
					_ = w.Close() // read whole, then the connection dies before the answer
					return
				}
				_, _ = io.WriteString(w, "HTTP/1.1 204 No Content\r\n\r\n")
			})
			c := withPooledConn(t, upstream)
			resp, err := c.RoundTrip(tc.req(upstream))
			wantConns, wantSent := int32(1), int32(1)
			if tc.resent {
				wantConns, wantSent = 2, 2
				if err != nil {
					t.Fatalf("got %v; want the request resent on a new connection", err)
				}
				readAll(t, resp)
			} else {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got %d; want the broken connection's error", resp.StatusCode)
				}
				if !deadConn(err) {
					t.Errorf("error %v; want the connection's end", err)
				}
			}
			if n, p := conns.Load(), sent.Load(); n != wantConns || p != wantSent {
				t.Fatalf("%d connections, the request reached the upstream %d times; want %d and %d", n, p, wantConns, wantSent)
			}
		})
	}
}

// resetConn is a pooled connection the upstream reset after the peek: its writes fail with nothing sent and its
// reads end.
type resetConn struct{ net.Conn }

func (resetConn) Write([]byte) (int, error) {
	return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}
}

// A request that met a reused connection reset after the peek, before any of it went out, is sent once on a new
// connection whatever its body: none, one the request can give again (GetBody), or a small body held whole.
func TestResetBeforeWriteResent(t *testing.T) {
	var bodies []string
	var mu sync.Mutex
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.Method+" "+string(b))
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	key := poolKey{"http", strings.TrimPrefix(srv.URL, "http://")}
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want string
	}{
		{"no body", func() *http.Request { r, _ := http.NewRequest(http.MethodGet, srv.URL, nil); return r }, "GET "},
		{"POST without a body", func() *http.Request { r, _ := http.NewRequest(http.MethodPost, srv.URL, nil); return r }, "POST "},
		{"GetBody", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("query=up"))
			return r
		}, "POST query=up"},
		{"small body held", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("m 1\n")))
			r.ContentLength = 4
			return r
		}, "POST m 1\n"},
	} {
		mu.Lock()
		bodies = nil
		mu.Unlock()
		c.CloseIdleConnections()
		near, far := net.Pipe()
		_ = far.Close()
		c.put(newConn(resetConn{near}, key))
		resp, err := c.RoundTrip(tc.req())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		readAll(t, resp)
		mu.Lock()
		got := bodies
		mu.Unlock()
		if len(got) != 1 || got[0] != tc.want {
			t.Fatalf("%s: the upstream got %q; want %q once", tc.name, got, tc.want)
		}
	}
	if n := conns.Load(); n != 4 {
		t.Fatalf("%d connections; want 4, a new one per request", n)
	}
}

// The peek before each reuse costs a syscall and nothing else: its socket and callback are prepared once, when the
// connection is made.
func TestQuietPeekAllocatesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	up := <-accepted
	defer up.Close()
	pc := newConn(sockio.Wrap(nc), poolKey{"http", ln.Addr().String()})
	if !pc.cw.peek.quiet() {
		t.Fatal("an open connection with nothing to read is not quiet")
	}
	if a := testing.AllocsPerRun(100, func() { pc.cw.peek.quiet() }); a != 0 {
		t.Errorf("the peek allocates %.0f times per reuse; want 0", a)
	}
	if _, err := io.WriteString(up, "HTTP/1.1 200 OK\r\n"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); pc.cw.peek.quiet(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bytes the upstream sent unasked leave the connection quiet")
		}
	}
}

// TestIdleConnectionsReaped: connections idle past idleTimeout are closed with no request coming to the pool, and
// not before: a gateway left alone does not keep its upstreams' sockets.
func TestIdleConnectionsReaped(t *testing.T) {
	defer func(d time.Duration) { idleTimeout = d }(idleTimeout)
	idleTimeout = 400 * time.Millisecond
	var open atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	// Three connections at once, all pooled when their answers end.
	var resps []*http.Response
	for i := 0; i < 3; i++ {
		resp, err := get(t, c, context.Background(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	pooled := time.Now()
	for _, resp := range resps {
		readAll(t, resp)
	}
	time.Sleep(idleTimeout / 4)
	// On a loaded machine the sleep may outlast the timeout: then only the reap is checked.
	if n := open.Load(); time.Since(pooled) < idleTimeout*3/4 && n != 3 {
		t.Fatalf("%d connections open a quarter of the idle timeout after they were pooled; want the 3 still pooled", n)
	}
	deadline := time.Now().Add(idleTimeout + 5*time.Second)
	for open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open %s after the idle timeout, with no request to the pool", open.Load(), 5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	left, armed := len(c.idle), c.reaper != nil
	c.mu.Unlock()
	if left != 0 || armed {
		t.Fatalf("after the reap the pool holds %d keys and the reaper is armed: %v; want neither", left, armed)
	}
	// The pool works on: a new connection, pooled and reaped again.
	resp, err := get(t, c, context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	deadline = time.Now().Add(idleTimeout + 5*time.Second)
	for open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a connection pooled after a reap was not reaped in turn")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// halfClosingUpstream answers every request with "ok", except that after the first answer its connection ends
// its side (a half-close: the socket stays open and drains what comes, drawing no reset) once told to, and answers
// nothing more. It counts the connections it accepted, the bytes that reached the half-closed one, and the bodies
// of the requests after the first.
type halfClosingUpstream struct {
	url          string
	tell, closed chan struct{}
	conns        *atomic.Int32
	drained      atomic.Int64
	mu           sync.Mutex
	bodies       []string
}

func newHalfClosingUpstream(t *testing.T) *halfClosingUpstream {
	t.Helper()
	u := &halfClosingUpstream{tell: make(chan struct{}), closed: make(chan struct{})}
	u.url, u.conns = scriptedUpstreamBodies(t, nil, func(i int, body []byte, w net.Conn) {
		if i > 0 {
			u.mu.Lock()
			u.bodies = append(u.bodies, string(body))
			u.mu.Unlock()
		}
		if _, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil || i > 0 {
			return
		}
		<-u.tell
		_ = w.(*net.TCPConn).CloseWrite()
		close(u.closed)
		n, _ := io.Copy(io.Discard, w)
		u.drained.Add(n)
	})
	return u
}

func (u *halfClosingUpstream) halfClose() { close(u.tell); <-u.closed }

// A pooled connection whose upstream ends its side after the connection was taken, before the request goes out,
// costs the request nothing more than a new connection: the end is seen before the first byte goes out (a request
// that can go again, whether it goes in the one write that awaits the answer or, larger than the write buffer, in
// several), so nothing reaches the ended connection and the request arrives once, whole, on a new one; or, for a
// body streamed from the client, by the read after the write, which then fails at once. Never is it waited out
// until the header timeout.
func TestUpstreamEndBetweenTakeAndWrite(t *testing.T) {
	big := strings.Repeat("m 1\n", 2560) // 10 KiB: held, and larger than the write buffer
	for _, tc := range []struct {
		name     string
		req      func(url string) *http.Request
		wantBody string
		wantErr  bool
	}{
		{name: "GET", req: func(url string) *http.Request { r, _ := http.NewRequest(http.MethodGet, url, nil); return r }},
		{name: "GET with a head larger than the write buffer", req: func(url string) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, url, nil)
			r.Header.Set("X-Padding", strings.Repeat("p", 6<<10))
			return r
		}},
		{name: "held body", wantBody: "m 1\n", req: func(url string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader("m 1\n")))
			r.ContentLength = 4
			return r
		}},
		{name: "held body larger than the write buffer", wantBody: big, req: func(url string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader(big)))
			r.ContentLength = int64(len(big))
			return r
		}},
		{name: "body to be had again", wantBody: "query=up", req: func(url string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("query=up"))
			return r
		}},
		{name: "streamed body", wantErr: true, req: func(url string) *http.Request {
			// Not held (Expect), and small enough to go out with the head in one write.
			pr, pw := io.Pipe()
			go func() { _, _ = io.WriteString(pw, "m 1\n"); _ = pw.Close() }()
			r, _ := http.NewRequest(http.MethodPost, url, pr)
			r.ContentLength = 4
			r.Header.Set("Expect", "100-continue")
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newHalfClosingUpstream(t)
			url := u.url + "/"
			c := New(nil, 5*time.Second, 5*time.Second)
			defer c.CloseIdleConnections()
			resp, err := get(t, c, context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			testHookSend = func() {
				testHookSend = nil
				u.halfClose()
				// Long enough for the poller to take the end's readiness, as it would while the request is built.
				time.Sleep(50 * time.Millisecond)
			}
			defer func() { testHookSend = nil }()
			start := time.Now()
			resp, err = c.RoundTrip(tc.req(url))
			took := time.Since(start)
			if took > 2*time.Second {
				t.Fatalf("the request took %v (%v): the upstream's end was waited out", took, err)
			}
			if tc.wantErr {
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
					t.Fatalf("got %v; want the connection's end at once", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v; want the request sent again on a new connection", err)
			}
			if body := readAll(t, resp); body != "ok" {
				t.Fatalf("answer %q", body)
			}
			if n := u.conns.Load(); n != 2 {
				t.Fatalf("%d connections; want 2", n)
			}
			c.CloseIdleConnections()
			time.Sleep(20 * time.Millisecond)
			if n := u.drained.Load(); n != 0 {
				t.Fatalf("%d bytes reached the ended connection; want none", n)
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			if len(u.bodies) != 1 || u.bodies[0] != tc.wantBody {
				t.Fatalf("the new connection got %d requests (first body %.20q); want one with the whole body", len(u.bodies), u.bodies)
			}
		})
	}
}

// Pooled connections the upstream has closed cost the request that meets them a peek each, not a read buffer each:
// nothing was read on them, and their buffers go back to the pool (an upstream that closes idle connections sooner
// than the pool leaves them, as VictoriaMetrics after a minute, makes many).
func TestDeadPooledConnectionsKeepNoBuffer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	c := New(nil, 5*time.Second, 5*time.Second)
	defer c.CloseIdleConnections()
	const n = 50
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := get(t, c, context.Background(), srv.URL); err == nil {
				readAll(t, resp)
			}
		}()
	}
	wg.Wait()
	key := poolKey{"http", strings.TrimPrefix(srv.URL, "http://")}
	c.mu.Lock()
	pooled := len(c.idle[key])
	c.mu.Unlock()
	if pooled < n/2 {
		t.Fatalf("%d connections pooled; want most of %d", pooled, n)
	}
	srv.CloseClientConnections()
	time.Sleep(100 * time.Millisecond)
	var m0, m1 runtime.MemStats
	// Two collections empty the buffer pool (and its victim cache): each buffer taken now is a new one.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m0)
	resp, err := get(t, c, context.Background(), srv.URL)
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	// A read buffer is 32 KiB: one per dead connection would be 1.6 MiB here. The bound leaves room for the race
	// detector, under which sync.Pool drops some of what it is given.
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 1<<20 {
		t.Fatalf("the request past %d dead connections allocated %d KiB; want less than 1024", pooled, got>>10)
	}
}

// An upstream that ends its side of a new connection before the request goes out (a half-close right after the
// accept, reading on) fails the request at once, with nothing sent and no other connection tried: its end is not
// waited out until the header timeout.
func TestUpstreamEndBeforeFirstRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Each connection's count of the bytes that reached it, once the client closed it.
	drained := make(chan int64, 16)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.(*net.TCPConn).CloseWrite()
				n, _ := io.Copy(io.Discard, nc)
				drained <- n
			}()
		}
	}()
	url := "http://" + ln.Addr().String() + "/"
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"GET", func() *http.Request { r, _ := http.NewRequest(http.MethodGet, url, nil); return r }},
		{"GET with a head larger than the write buffer", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, url, nil)
			r.Header.Set("X-Padding", strings.Repeat("p", 6<<10))
			return r
		}},
		{"held body", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader("m 1\n")))
			r.ContentLength = 4
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(nil, 5*time.Second, 5*time.Second)
			defer c.CloseIdleConnections()
			testHookSend = func() {
				// Long enough for the poller to take the end's readiness, as it would while the request is built.
				time.Sleep(50 * time.Millisecond)
			}
			defer func() { testHookSend = nil }()
			start := time.Now()
			resp, err := c.RoundTrip(tc.req())
			took := time.Since(start)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got an answer (%d) from an upstream that answers nothing", resp.StatusCode)
			}
			if took > 2*time.Second {
				t.Fatalf("the request took %v (%v): the upstream's end was waited out", took, err)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("got a timeout (%v); want the connection's end at once", err)
			}
			// One connection, not one after another, and the request never reached it.
			select {
			case n := <-drained:
				if n != 0 {
					t.Fatalf("%d bytes reached the ended connection; want none", n)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the ended connection was not closed")
			}
			select {
			case <-drained:
				t.Fatal("a second connection was made")
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// A request refused before any of it went out (Request.Write's refusal of a control character) gets that refusal,
// not what its connection holds: taken from the pool unchecked (its check is at its first write), the connection
// may hold an answer nobody asked for, another request's.
func TestNothingWrittenReadsNothing(t *testing.T) {
	upstream, _ := scriptedUpstream(t, func(i int, w net.Conn) {
		_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if i == 0 {
			time.Sleep(30 * time.Millisecond)
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nother's secret")
		}
	})
	c := withPooledConn(t, upstream)
	time.Sleep(100 * time.Millisecond) // the stray answer is on the idle connection now
	req, _ := http.NewRequest(http.MethodGet, upstream+"/", nil)
	req.URL.RawQuery = "a=\x01"
	start := time.Now()
	resp, err := c.RoundTrip(req)
	if err == nil {
		t.Fatalf("a request that never went out got an answer: %d %q", resp.StatusCode, readAll(t, resp))
	}
	if !strings.Contains(err.Error(), "control character") {
		t.Errorf("error %v; want the refusal of the request", err)
	}
	if took := time.Since(start); took >= maxEarlyAnswerWait {
		t.Errorf("the refusal took %v: an early answer was waited for on a connection nothing went out on", took)
	}
}

// A connection whose socket cannot be peeked at before reuse (no unix socket under it: every connection on the
// platforms without the peek) is closed after its answer, never pooled: an answer sent unasked on it could not be
// told from the next request's.
func TestUnpeekableConnectionNotPooled(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := New(nil, time.Minute, time.Second)
	key := poolKey{"http", "upstream:80"}
	pc := newConn(client, key)
	if pc.cw.peek != nil {
		t.Fatal("a pipe has a peeker")
	}
	if pc.cw.peek.quiet() {
		t.Fatal("a connection that cannot be peeked at is quiet")
	}
	c.put(pc)
	c.mu.Lock()
	n := len(c.idle[key])
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d idle connections; want the unpeekable one closed, not pooled", n)
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write on the connection after put: %v; want it closed", err)
	}
}

// withPooledConn is a client whose first request to upstream left its connection in the pool, so the next
// request reuses it; its idle connections close when the test ends.
func withPooledConn(t *testing.T, upstream string) *Client {
	t.Helper()
	c := New(nil, time.Minute, 10*time.Second)
	t.Cleanup(c.CloseIdleConnections)
	resp, err := get(t, c, context.Background(), upstream)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	return c
}
