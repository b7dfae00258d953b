//go:build linux

package sockio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair is a client and a server connection over loopback, both through sockio, and plain twins of them to compare
// errors with.
func pair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := Listener(ln)
	t.Cleanup(func() { _ = wl.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := wl.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client = Wrap(nc)
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	for _, c := range []net.Conn{client, server} {
		if _, ok := c.(*Conn); !ok {
			t.Fatalf("got %T; want *sockio.Conn on Linux", c)
		}
	}
	return client, server
}

// A stream larger than the sockets' buffers, both ways at once, arrives whole and in order: writes wait for the
// peer to drain, reads wait for data, and a Read and a Write on one connection run at the same time.
func TestFullDuplexStream(t *testing.T) {
	client, server := pair(t)
	const size = 24 << 20
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(rand.Uint32())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c net.Conn) {
		defer wg.Done()
		// Uneven writes, so that some end inside the socket buffer and some wait for it.
		for off := 0; off < size; {
			n := min(1+rand.IntN(3<<20), size-off)
			w, err := c.Write(src[off : off+n])
			if err != nil || w != n {
				errs <- errors.New("short write: " + err.Error())
				return
			}
			off += n
		}
	}
	recv := func(c net.Conn) {
		defer wg.Done()
		got := make([]byte, 0, size)
		buf := make([]byte, 1+rand.IntN(64<<10))
		for len(got) < size {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				errs <- err
				return
			}
		}
		if !bytes.Equal(got, src) {
			errs <- errors.New("the stream arrived changed")
		}
	}
	wg.Add(4)
	go send(client)
	go send(server)
	go recv(client)
	go recv(server)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEOFAfterPeerClose(t *testing.T) {
	client, server := pair(t)
	if _, err := server.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	_ = server.Close()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "last words" {
		t.Fatalf("ReadAll = %q, %v; want the bytes and the end of the stream", got, err)
	}
	n, err := client.Read(make([]byte, 8))
	if n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v; want 0, io.EOF", n, err)
	}
}

// Errors have net.Conn's shape: callers test them with errors.Is and net.Error, and log their text.
func TestErrorsAsNetConn(t *testing.T) {
	t.Run("read deadline", func(t *testing.T) {
		client, _ := pair(t)
		_ = client.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := client.Read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read past its deadline = %v; want a net.Error timeout wrapping os.ErrDeadlineExceeded", err)
		}
		want := "read tcp " + client.LocalAddr().String() + "->" + client.RemoteAddr().String() + ": i/o timeout"
		if err.Error() != want {
			t.Fatalf("error text %q; want %q", err, want)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		client, _ := pair(t)
		// Made before the deadline is set: zeroing 64 MiB can take longer than the deadline gives.
		p := make([]byte, 64<<20)
		_ = client.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		// The server never reads: the write fills both sockets' buffers and then waits until the deadline.
		n, err := client.Write(p)
		if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= 64<<20 {
			t.Fatalf("Write past its deadline = %d, %v; want part of it written and os.ErrDeadlineExceeded", n, err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		client, _ := pair(t)
		done := make(chan error)
		go func() {
			_, err := client.Read(make([]byte, 8))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		_ = client.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("a Read blocked when the connection closed returned %v; want net.ErrClosed", err)
		}
		if _, err := client.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		client, server := pair(t)
		_ = server.(interface{ SetLinger(int) error }).SetLinger(0)
		_ = server.Close()
		_, err := client.Read(make([]byte, 8))
		if !errors.Is(err, syscall.ECONNRESET) || !strings.HasPrefix(err.Error(), "read tcp ") {
			t.Fatalf("Read after the peer's reset = %v; want ECONNRESET as net.Conn reports it", err)
		}
	})
}

func TestEmptyReadAndWrite(t *testing.T) {
	client, _ := pair(t)
	if n, err := client.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, err := client.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
}

// What is not a TCP connection is left as it is; a wrapped one still offers what the gateway asks of the
// *net.TCPConn beneath (its descriptor, half-close).
func TestWrapKeepsTheConnection(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a connection that is not TCP")
	}
	client, server := pair(t)
	if _, ok := client.(interface{ CloseWrite() error }); !ok {
		t.Fatal("the wrapped connection lost CloseWrite")
	}
	if _, ok := client.(syscall.Conn); !ok {
		t.Fatal("the wrapped connection lost SyscallConn")
	}
	_ = client.(interface{ CloseWrite() error }).CloseWrite()
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the server read %v after the client's half-close; want io.EOF", err)
	}
}

// BenchmarkPingPong is a request and its answer over loopback: plain net.Conn against sockio.
func BenchmarkPingPong(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "net"
		if wrap {
			name = "sockio"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if wrap {
					c = Wrap(c)
				}
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if wrap {
				c = Wrap(c)
			}
			msg := make([]byte, 300)
			buf := make([]byte, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < len(msg); {
					n, err := c.Read(buf)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}

// Writev sends its pieces in order, whole, when they are more than one writev(2) takes (more than maxIovecs
// pieces, more bytes than the socket buffers hold) and some are empty.
func TestWritevWhole(t *testing.T) {
	client, server := pair(t)
	wc := client.(*Conn)
	var pieces [][]byte
	var want []byte
	for i := 0; i < 3*maxIovecs+1; i++ {
		n := []int{0, 1, 3 << 20, 4096, 17}[i%5]
		p := bytes.Repeat([]byte{byte('a' + i%26)}, n)
		pieces = append(pieces, p)
		want = append(want, p...)
	}
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(server, int64(len(want))))
		got <- b
	}()
	n, err := wc.Writev(pieces)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Writev = %d, %v; want %d bytes", n, err, len(want))
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the peer read %d bytes, equal %v; want the %d bytes in order", len(b), bytes.Equal(b, want), len(want))
	}
	_ = server.Close()
	// Writes to a peer that is gone fail as net.Conn's do, whatever the pieces.
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = wc.Writev([][]byte{[]byte("x"), bytes.Repeat([]byte("y"), 64<<10)})
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Fatalf("Writev to a closed peer = %v; want EPIPE or ECONNRESET", werr)
	}
}

// pending is how many bytes c's socket holds unread, without taking them.
func pending(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(*Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var errno error
	buf := make([]byte, 64<<10)
	if err := raw.Control(func(fd uintptr) {
		n, _, errno = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		t.Fatal(err)
	}
	if errno == syscall.EAGAIN {
		return 0
	}
	if errno != nil {
		t.Fatalf("peek: %v", errno)
	}
	return n
}

// WriteAwait returns once the answer to what it wrote is there to read, whatever the peer did with the
// connection; a failed wait is the next Read's to report, and a write larger than the socket's buffer still goes
// out whole.
func TestWriteAwait(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		// peer answers the request it read; nil leaves the connection silent.
		peer     func(s net.Conn)
		deadline time.Duration
		closeAt  time.Duration // the client closes its own connection while it waits
		readErr  func(error) bool
		answer   string
	}{
		{name: "answer after a while", size: 100, answer: "pong",
			peer: func(s net.Conn) { time.Sleep(50 * time.Millisecond); _, _ = s.Write([]byte("pong")) }},
		{name: "answer at once", size: 100, answer: "pong",
			peer: func(s net.Conn) { _, _ = s.Write([]byte("pong")) }},
		{name: "larger than the socket buffers", size: 16 << 20, answer: "pong",
			peer: func(s net.Conn) { _, _ = s.Write([]byte("pong")) }},
		{name: "peer closes", size: 100,
			peer:    func(s net.Conn) { time.Sleep(20 * time.Millisecond); _ = s.Close() },
			readErr: func(err error) bool { return err == io.EOF }},
		{name: "peer resets", size: 100,
			peer: func(s net.Conn) {
				_ = s.(*Conn).SetLinger(0)
				_ = s.Close()
			},
			readErr: func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
		{name: "read deadline", size: 100, deadline: 80 * time.Millisecond,
			readErr: func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }},
		{name: "closed while waiting", size: 100, closeAt: 80 * time.Millisecond,
			readErr: func(err error) bool { return errors.Is(err, net.ErrClosed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			req := bytes.Repeat([]byte{'r'}, tc.size)
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, tc.size)
				_, err := io.ReadFull(server, b)
				if err != nil {
					got <- nil
					return
				}
				got <- b
				if tc.peer != nil {
					tc.peer(server)
				}
			}()
			if tc.deadline > 0 {
				_ = client.SetReadDeadline(time.Now().Add(tc.deadline))
			}
			if tc.closeAt > 0 {
				time.AfterFunc(tc.closeAt, func() { _ = client.Close() })
			}
			start := time.Now()
			n, err := client.(*Conn).WriteAwait(req, true)
			waited := time.Since(start)
			if err != nil || n != len(req) {
				t.Fatalf("WriteAwait = %d, %v; want %d, nil", n, err, len(req))
			}
			if b := <-got; !bytes.Equal(b, req) {
				t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(req))
			}
			switch {
			case tc.answer != "" && tc.size > 1<<20:
				// Finished as Write finishes it: the answer is read as usual.
				b := make([]byte, 16)
				if n, err := io.ReadAtLeast(client, b, len(tc.answer)); err != nil || string(b[:n]) != tc.answer {
					t.Fatalf("Read = %q, %v; want %q", b[:n], err, tc.answer)
				}
			case tc.answer != "":
				if p := pending(t, client); p != len(tc.answer) {
					t.Fatalf("WriteAwait returned with %d bytes to read; want the answer's %d", p, len(tc.answer))
				}
				b := make([]byte, 16)
				if n, err := client.Read(b); err != nil || string(b[:n]) != tc.answer {
					t.Fatalf("Read = %q, %v; want %q", b[:n], err, tc.answer)
				}
			default:
				if wait := max(tc.deadline, tc.closeAt); waited < wait/2 {
					t.Fatalf("WriteAwait returned after %v, before its wait could end (%v)", waited, wait)
				}
				_, err := client.Read(make([]byte, 16))
				if !tc.readErr(err) {
					t.Fatalf("Read after the wait: %v", err)
				}
			}
		})
	}
}

// A write the peer cannot take fails in WriteAwait as in Write, with nothing waited for.
func TestWriteAwaitWriteFails(t *testing.T) {
	client, server := pair(t)
	_ = server.(*Conn).SetLinger(0)
	_ = server.Close()
	// The reset comes back for a first write; the second fails at once.
	var err error
	for i := 0; i < 50 && err == nil; i++ {
		_, err = client.(*Conn).WriteAwait([]byte("ping"), false)
		if err == nil {
			_, _ = client.Read(make([]byte, 16))
		}
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("WriteAwait on a reset connection: %v; want EPIPE or ECONNRESET", err)
	}
	if oe, ok := err.(*net.OpError); !ok || oe.Op != "write" {
		t.Fatalf("error %#v; want a net.OpError of op write", err)
	}
	_ = client.Close()
	if _, err := client.(*Conn).WriteAwait([]byte("ping"), false); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteAwait on a closed connection: %v; want net.ErrClosed", err)
	}
}

// A connection that holds something before the write, bytes or its peer's end (a half-close that draws no reset),
// is refused with quiet and nothing is written: neither could wake the wait after the write. Without quiet the
// bytes are there for the next Read.
func TestWriteAwaitQuiet(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer func(s net.Conn)
	}{
		{"bytes", func(s net.Conn) { _, _ = s.Write([]byte("unasked")) }},
		{"half-closed", func(s net.Conn) { _ = s.(*Conn).CloseWrite() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			tc.peer(server)
			// Whatever the poller does with it first, the peer's act has reached the socket.
			deadline := time.Now().Add(5 * time.Second)
			for pending(t, client) == 0 && tc.name == "bytes" && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			// A WriteAwait that wrote would wait for an answer that never comes: the deadline ends it.
			_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := client.(*Conn).WriteAwait([]byte("GET / HTTP/1.1\r\n\r\n"), true)
			if n != 0 || !errors.Is(err, ErrNotQuiet) {
				t.Fatalf("WriteAwait = %d, %v; want 0, ErrNotQuiet", n, err)
			}
			_ = server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, err := server.Read(make([]byte, 64)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the peer read %d bytes (%v); want nothing written", n, err)
			}
		})
	}
	// Without quiet nothing is checked: the bytes there stay for the Read, with the answer that woke the wait.
	client, server := pair(t)
	_, _ = server.Write([]byte("unasked"))
	time.Sleep(50 * time.Millisecond)
	go func() {
		if _, err := io.ReadFull(server, make([]byte, 4)); err == nil {
			_, _ = server.Write([]byte("pong"))
		}
	}()
	if n, err := client.(*Conn).WriteAwait([]byte("ping"), false); n != 4 || err != nil {
		t.Fatalf("WriteAwait without quiet = %d, %v; want 4, nil", n, err)
	}
	b := make([]byte, 11)
	if n, err := io.ReadFull(client, b); err != nil || string(b[:n]) != "unaskedpong" {
		t.Fatalf("Read = %q, %v; want the bytes that were there, then the answer", b[:n], err)
	}
}

// On a connection that already carried an answer, and whose poller readiness that answer left set, WriteAwait
// still waits for the next one: the readiness is reset before the write.
func TestWriteAwaitReused(t *testing.T) {
	client, server := pair(t)
	go func() {
		b := make([]byte, 4)
		for i := 0; i < 3; i++ {
			if _, err := io.ReadFull(server, b); err != nil {
				return
			}
			if i > 0 {
				time.Sleep(50 * time.Millisecond)
			}
			_, _ = server.Write([]byte("pong"))
		}
	}()
	b := make([]byte, 4)
	for i := 0; i < 3; i++ {
		if _, err := client.(*Conn).WriteAwait([]byte("ping"), i > 0); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if i > 0 {
			if p := pending(t, client); p != 4 {
				t.Fatalf("round %d: WriteAwait returned with %d bytes to read; want the answer's 4", i, p)
			}
		}
		if _, err := io.ReadFull(client, b); err != nil || string(b) != "pong" {
			t.Fatalf("round %d: Read = %q, %v", i, b, err)
		}
	}
}

// A read deadline already passed refuses the write as a timeout, with nothing written.
func TestWriteAwaitDeadlinePassed(t *testing.T) {
	client, server := pair(t)
	_ = client.SetReadDeadline(time.Now().Add(-time.Second))
	n, err := client.(*Conn).WriteAwait([]byte("ping"), true)
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("WriteAwait = %d, %v; want 0 and a timeout", n, err)
	}
	_ = server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := server.Read(make([]byte, 16)); n != 0 {
		t.Fatalf("the peer read %d bytes; want none", n)
	}
}
