package h1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
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
// its whole answer; a handler's own write deadline rules instead of the server's.
func TestWriteIdleTimeout(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("sockio=%v", wrap), func(t *testing.T) { testWriteIdleTimeout(t, wrap) })
	}
}

func testWriteIdleTimeout(t *testing.T, wrap bool) {
	const idle = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap {
		ln = sockio.Listener(ln)
	}
	piece := bytes.Repeat([]byte("x"), 32<<10)
	result := make(chan error, 1)
	_, addr := serveOn(t, smallSendBuffers{ln}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := r.URL.Query().Get("deadline"); d != "" {
			dd, _ := time.ParseDuration(d)
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(dd))
		}
		pieces, _ := strconv.Atoi(r.URL.Query().Get("pieces"))
		w.Header().Set("Content-Length", strconv.Itoa(pieces*len(piece)))
		for range pieces {
			if _, err := w.Write(piece); err != nil {
				result <- err
				return
			}
		}
		result <- nil
	}), func(s *Server) { s.WriteIdleTimeout = idle })

	request := func(target string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	handlerResult := func(within time.Duration) (error, bool) {
		select {
		case err := <-result:
			return err, true
		case <-time.After(within):
			return nil, false
		}
	}

	// 64 MiB to a client that reads nothing.
	stalled := request("/export?pieces=2048")
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

	// 1 MiB read in 32 KiB steps every 20 ms: each write waits far less than the timeout.
	steady := request("/export?pieces=32")
	br := make([]byte, 32<<10)
	var got int
	_ = steady.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		n, err := steady.Read(br)
		got += n
		if err != nil {
			t.Fatalf("the steady client's answer broke after %d bytes: %v", got, err)
		}
		if got >= 1<<20 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err, returned := handlerResult(10 * time.Second); !returned || err != nil {
		t.Fatalf("the steady client's handler: returned %v, %v; want the whole answer written", returned, err)
	}

	// A handler that set its own write deadline keeps it, past the server's.
	own := request("/export?pieces=2048&deadline=2s")
	start := time.Now()
	err, returned = handlerResult(10 * time.Second)
	if !returned || err == nil {
		t.Fatalf("the handler with its own deadline: returned %v, %v; want its write to fail", returned, err)
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("the handler's own 2s write deadline was cut after %s by the server's %s", took, idle)
	}
	_ = own.Close()
}
