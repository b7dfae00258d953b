package h1

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/sockio"
)

// smallSendBuffers gives every accepted connection a small socket send buffer, so that an answer of a few hundred
// KiB already waits on the client, as a large export does on a real network.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if sb, ok := c.(interface{ SetWriteBuffer(int) error }); ok {
			_ = sb.SetWriteBuffer(16 << 10)
		}
	}
	return c, err
}

// A client that stops taking its answer has the handler's write fail after WriteIdleTimeout and its connection
// closed, so the handler returns and frees what the request holds; a client that reads slowly but steadily gets
// its whole answer, and its connection serves the next request after the armed deadline has passed; a pause
// between writes longer than the timeout (an event stream) does not count; a handler's own write deadline rules
// instead of the server's. On plain TCP, on the gateway's sockio sockets, and over TLS.
func TestWriteIdleTimeout(t *testing.T) {
	for _, mode := range []string{"plain", "sockio", "tls"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testWriteIdleTimeout(t, mode)
		})
	}
}

func testWriteIdleTimeout(t *testing.T, mode string) {
	// A second: the steady client below reads every 20 ms, and under the race detector on a busy 2-core machine (CI runs
	// the packages at once) a TLS write at 300 ms was once cut (the answer at 736 of 1,024 KiB).
	const idle = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if mode != "plain" {
		ln = sockio.Listener(ln)
	}
	ln = smallSendBuffers{ln}
	if mode == "tls" {
		ln = tlsListener(t, ln)
	}
	piece := bytes.Repeat([]byte("x"), 32<<10)
	result := make(chan error, 1)
	_, addr := serveOn(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if d := q.Get("deadline"); d != "" {
			dd, _ := time.ParseDuration(d)
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(dd))
		}
		pieces, _ := strconv.Atoi(q.Get("pieces"))
		pause, _ := time.ParseDuration(q.Get("pause"))
		w.Header().Set("Content-Length", strconv.Itoa(pieces*len(piece)))
		for range pieces {
			if _, err := w.Write(piece); err != nil {
				result <- err
				return
			}
			if pause > 0 {
				_ = http.NewResponseController(w).Flush()
				time.Sleep(pause)
			}
		}
		result <- nil
	}), func(s *Server) { s.WriteIdleTimeout = idle })

	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		if mode == "tls" {
			c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	send := func(c net.Conn, target string) {
		if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	handlerResult := func(within time.Duration) (error, bool) {
		select {
		case err := <-result:
			return err, true
		case <-time.After(within):
			return nil, false
		}
	}
	// readAnswer reads an answer in 32 KiB steps, sleeping between them.
	readAnswer := func(br *bufio.Reader, step time.Duration) error {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		buf := make([]byte, 32<<10)
		var got int64
		for {
			n, err := io.ReadFull(resp.Body, buf)
			got += int64(n)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return err
			}
			time.Sleep(step)
		}
		if got != resp.ContentLength {
			return errors.New("answer cut at " + strconv.FormatInt(got, 10) + " of " + strconv.FormatInt(resp.ContentLength, 10) + " bytes")
		}
		return nil
	}

	// 64 MiB to a client that reads nothing.
	stalled := dial()
	send(stalled, "/export?pieces=2048")
	err, returned := handlerResult(10 * time.Second)
	var ne net.Error
	switch {
	case !returned:
		t.Fatal("the handler still writes to a client that has read nothing for 10s")
	case err == nil:
		t.Fatal("the handler wrote 64 MiB to a client that read nothing")
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("the stalled write failed with %v; want a timeout", err)
	}
	// The connection is closed: what the kernel held reaches the client, then the end.
	_ = stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stalled); err != nil && errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the stalled client's connection stays open after the write failed: %v", err)
	}

	// 1 MiB read in 32 KiB steps every 20 ms: each write waits far less than the timeout. Then, past the armed
	// deadline, the same connection serves an event stream that pauses longer than the timeout between writes.
	steady := dial()
	_ = steady.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(steady)
	send(steady, "/export?pieces=32")
	if err := readAnswer(br, 20*time.Millisecond); err != nil {
		t.Fatalf("the steady client's answer: %v", err)
	}
	if err, returned := handlerResult(10 * time.Second); !returned || err != nil {
		t.Fatalf("the steady client's handler: returned %v, %v; want the whole answer written", returned, err)
	}
	time.Sleep(2 * idle)
	send(steady, "/events?pieces=2&pause="+(2*idle).String())
	if err := readAnswer(br, 0); err != nil {
		t.Fatalf("an answer pausing %s between writes, on a connection idle past its armed deadline: %v", 2*idle, err)
	}
	if err, returned := handlerResult(10 * time.Second); !returned || err != nil {
		t.Fatalf("the pausing handler: returned %v, %v; want the whole answer written", returned, err)
	}

	// A handler that set its own write deadline keeps it, past the server's.
	own := dial()
	send(own, "/export?pieces=2048&deadline=3s")
	start := time.Now()
	err, returned = handlerResult(10 * time.Second)
	if !returned || err == nil {
		t.Fatalf("the handler with its own deadline: returned %v, %v; want its write to fail", returned, err)
	}
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Errorf("the handler's own 3s write deadline was cut after %s by the server's %s", took, idle)
	}
}

// deadlineConn records the write deadline in force at each write.
type deadlineConn struct {
	net.Conn
	mu   sync.Mutex
	wd   time.Time
	left []time.Duration
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wd = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if !c.wd.IsZero() {
		c.left = append(c.left, time.Until(c.wd))
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

type deadlineListener struct {
	net.Listener
	conns chan *deadlineConn
}

func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	dc := &deadlineConn{Conn: c}
	l.conns <- dc
	return dc, nil
}

// The server's own refusals keep their 5 s write bound: WriteIdleTimeout does not stretch it.
func TestRejectionKeepsItsWriteDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dl := deadlineListener{ln, make(chan *deadlineConn, 1)}
	_, addr := serveOn(t, dl, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
		func(s *Server) { s.WriteIdleTimeout = time.Hour })
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\nBad Header : x\r\n\r\n")
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c.br)
	if !strings.Contains(string(got), " 400 ") {
		t.Fatalf("got %q; want a 400", got)
	}
	dc := <-dl.conns
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if len(dc.left) == 0 {
		t.Fatal("the refusal was written without a write deadline")
	}
	for _, d := range dc.left {
		if d > 6*time.Second {
			t.Errorf("the refusal was written under a %s write deadline; want its own 5s", d.Round(time.Second))
		}
	}
}
