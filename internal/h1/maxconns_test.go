package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// holdServer serves "ok" at every path, at /hold once release is closed, to at most 3 connections, counting those
// evicted and refused; with vouch the handler vouches for every connection.
func holdServer(t *testing.T, vouch bool) (s *Server, addr string, release chan struct{}, evicted, refused *atomic.Int64) {
	release, evicted, refused = make(chan struct{}), new(atomic.Int64), new(atomic.Int64)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if vouch {
			w.(interface{ VouchConnection() }).VouchConnection()
		}
		if r.URL.Path == "/hold" {
			<-release
		}
		_, _ = w.Write([]byte("ok"))
	})
	s, addr = serveWith(t, h, func(s *Server) {
		s.MaxConns = 3
		s.ConnEvicted = func() { evicted.Add(1) }
		s.ConnRefused = func() { refused.Add(1) }
	})
	return s, addr, release, evicted, refused
}

// TestMaxConns: at the bound, a new connection takes the place of the one that has waited longest for a request's
// head, one that sent none or sends one slowly before one kept alive after its answer, once it has waited the grace;
// a connection younger than that is left alone (a kept-alive one whose next head has just begun too), and so is one
// serving a request: with none that may go, the new one is closed at once.
func TestMaxConns(t *testing.T) {
	defer func(g time.Duration) { evictGrace = g }(evictGrace)
	evictGrace = 200 * time.Millisecond
	// The gateway vouches for a client with a valid token: its idle connection keeps the whole grace.
	s, addr, release, evicted, refused := holdServer(t, true)
	open := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) - s.evicting
	}
	waitOpen := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); open() != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections open; want %d", open(), want)
			}
		}
	}
	get := func(c *client, path string) {
		t.Helper()
		c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body, _ := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}

	// One kept alive after its answer, one that never sends, one that sends a piece of its head: the server is full.
	kept := dial(t, addr)
	get(kept, "/")
	silent := dial(t, addr)
	loris := dial(t, addr)
	loris.send("GET / HT")
	waitOpen(3)
	// Within the grace, a new connection finds none that may go.
	early := dial(t, addr)
	if !early.closed() || refused.Load() != 1 || evicted.Load() != 0 {
		t.Fatalf("a new connection while every other is within its grace: closed %v, %d refused, %d evicted; want it refused", early.closed(), refused.Load(), evicted.Load())
	}
	time.Sleep(2 * evictGrace)
	// The kept one, idle past the grace, begins its next request: from its first byte it is young again.
	kept.send("GET / HT")
	time.Sleep(evictGrace / 10)
	// Past the grace, two new ones are served in the places of the silent one and the slow head, not of the kept one.
	var fresh []*client
	for _, path := range []string{"/a", "/b"} {
		c := dial(t, addr)
		get(c, path)
		fresh = append(fresh, c)
	}
	if !silent.closed() || !loris.closed() || evicted.Load() != 2 {
		t.Fatalf("silent closed %v, slow head closed %v, %d evicted; want both evicted", silent.closed(), loris.closed(), evicted.Load())
	}
	kept.send("TP/1.1\r\nHost: x\r\n\r\n")
	if resp, body, _ := kept.response("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("the kept-alive connection's request, begun before the evictions: %d %q", resp.StatusCode, body)
	}

	// Every connection now serves a request: a new one is closed at once, and none served is touched.
	held := append([]*client{kept}, fresh...)
	time.Sleep(2 * evictGrace)
	for _, c := range held {
		c.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	allActive := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for c := range s.conns {
			if c.state.Load() == stateActive {
				n++
			}
		}
		return n == 3
	}
	for deadline := time.Now().Add(5 * time.Second); !allActive(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the three held requests never all ran")
		}
	}
	before := refused.Load()
	late := dial(t, addr)
	if !late.closed() || refused.Load() != before+1 {
		t.Fatalf("a new connection while every one serves a request: closed %v, %d refused; want it closed", late.closed(), refused.Load()-before)
	}
	close(release)
	for _, c := range held {
		if resp, body, _ := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Errorf("a held request: %d %q; want it answered", resp.StatusCode, body)
		}
	}
}

// TestMaxConnsBodyNeverSent: a request that announces a body and never sends it, answered without its body being
// read (the gateway refuses a request without a token before reading its body), waits for the rest before its answer,
// for the idle timeout; meanwhile its connection may be evicted as an idle one may. Before, a client without a token
// held every connection of -http.maxConnections that way and kept every other client out (an attacker's review).
func TestMaxConnsBodyNeverSent(t *testing.T) {
	defer func(g time.Duration) { evictGrace = g }(evictGrace)
	evictGrace = 200 * time.Millisecond
	var evicted, answered atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answered.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	})
	_, addr := serveWith(t, h, func(s *Server) {
		s.MaxConns = 3
		s.IdleTimeout = time.Minute
		s.ConnEvicted = func() { evicted.Add(1) }
	})
	var holders []*client
	for _, head := range []string{
		"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
		"GET /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
		"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		c := dial(t, addr)
		c.send(head)
		holders = append(holders, c)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	waitFor("the three requests never all reached their handler", func() bool { return answered.Load() == 3 })
	time.Sleep(2 * evictGrace)
	for _, path := range []string{"/a", "/b", "/c"} {
		c := dial(t, addr)
		c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _, _ := c.response("GET"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s with every connection held by a body never sent: %d; want it served", path, resp.StatusCode)
		}
	}
	if evicted.Load() != 3 {
		t.Errorf("%d evicted; want the three waiting for their bodies", evicted.Load())
	}
	for _, c := range holders {
		waitFor("an evicted connection is still open", c.closed)
	}
}

// TestMaxConnsAnswersNotTaken: a client that takes none of its answer (it pipelines requests and reads nothing, or
// asks for a large answer) holds its connection in the write; once that has lasted writeEvictGrace the connection may
// be evicted, after those waiting for a request. Before, such connections, which need no token, kept every other
// client out for -http.answerIdleTimeout (an attacker's review).
func TestMaxConnsAnswersNotTaken(t *testing.T) {
	defer func(g, w time.Duration) { evictGrace, writeEvictGrace = g, w }(evictGrace, writeEvictGrace)
	evictGrace, writeEvictGrace = 100*time.Millisecond, 300*time.Millisecond
	var evicted, writing atomic.Int64
	chunk := make([]byte, 64<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = w.Write([]byte("ok"))
			return
		}
		writing.Add(1)
		for i := 0; i < 4096; i++ { // 256 MiB at most, far more than the sockets hold
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	_, addr := serveWith(t, h, func(s *Server) {
		s.MaxConns = 3
		s.ConnEvicted = func() { evicted.Add(1) }
	})
	var hogs []*client
	for range 3 {
		c := dial(t, addr)
		c.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		hogs = append(hogs, c)
	}
	for deadline := time.Now().Add(5 * time.Second); writing.Load() != 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the three answers never began")
		}
	}
	// Within the write grace, a new connection finds none that may go.
	early := dial(t, addr)
	if !early.closed() || evicted.Load() != 0 {
		t.Fatalf("a new connection while every answer is within its grace: closed %v, %d evicted", early.closed(), evicted.Load())
	}
	time.Sleep(2 * writeEvictGrace)
	c := dial(t, addr)
	c.send("GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body, _ := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("GET /small with every connection held by an answer nobody takes: %d %q", resp.StatusCode, body)
	}
	if evicted.Load() != 1 {
		t.Errorf("%d evicted; want one of the answers nobody takes", evicted.Load())
	}
	_ = hogs
}

// TestMaxConnsAnswersTrickled: a client that takes its answers a little at a time waits out no single write, yet holds
// its connection as long as it likes; the waits of its writes add up (writeWait), and once they reach writeEvictGrace
// the connection may be evicted while it serves a request, as one that takes nothing may (a first version looked only
// at the write under way). The waits are set here as the writes would have added them.
func TestMaxConnsAnswersTrickled(t *testing.T) {
	defer func(g, w time.Duration) { evictGrace, writeEvictGrace = g, w }(evictGrace, writeEvictGrace)
	evictGrace, writeEvictGrace = 100*time.Millisecond, 400*time.Millisecond
	var w writeWait
	w.end(w.beginAt(time.Now())) // a write that did not wait: not counted
	began := w.beginAt(time.Now())
	time.Sleep(2 * time.Millisecond)
	w.end(began)
	if got := w.waited.Load(); got < int64(2*time.Millisecond) || got > int64(time.Second) {
		t.Fatalf("waited %v after a write of 2 ms and one of none", time.Duration(got))
	}
	if now := time.Now().UnixNano(); w.held(now) != w.waited.Load() {
		t.Fatalf("held %d with no write under way, waited %d", w.held(now), w.waited.Load())
	}

	s, addr, release, evicted, _ := holdServer(t, false)
	defer close(release)
	for range 3 {
		dial(t, addr).send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	active := func() []*conn {
		s.mu.Lock()
		defer s.mu.Unlock()
		var out []*conn
		for c := range s.conns {
			if c.state.Load() == stateActive {
				out = append(out, c)
			}
		}
		return out
	}
	for deadline := time.Now().Add(5 * time.Second); len(active()) != 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the three held requests never all ran")
		}
	}
	// Writes that waited less than the grace in all, one under way: none may go.
	time.Sleep(2 * evictGrace)
	now := time.Now().UnixNano()
	for _, c := range active() {
		c.writes.waited.Store(int64(writeEvictGrace / 4))
		c.writes.since.Store(now)
	}
	if early := dial(t, addr); !early.closed() || evicted.Load() != 0 {
		t.Fatalf("writes that waited half the grace: closed %v, %d evicted; want the new connection refused", early.closed(), evicted.Load())
	}
	// Writes that waited the grace in all, none under way: the request waits on something else (its upstream), and
	// its client holds nothing it could give back (a review of the first version evicted such a request).
	for _, c := range active() {
		c.writes.waited.Store(int64(writeEvictGrace))
		c.writes.since.Store(0)
	}
	if early := dial(t, addr); !early.closed() || evicted.Load() != 0 {
		t.Fatalf("writes that waited the grace, none under way: closed %v, %d evicted; want the new connection refused", early.closed(), evicted.Load())
	}
	// One whose many short waits add up to the grace, a write under way, may go.
	active()[0].writes.since.Store(time.Now().UnixNano())
	c := dial(t, addr)
	c.send("GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body, _ := c.response("GET"); resp.StatusCode != 200 || body != "ok" || evicted.Load() != 1 {
		t.Fatalf("GET /small with a connection whose writes waited the grace in all: %d %q, %d evicted", resp.StatusCode, body, evicted.Load())
	}
}

// TestWriteWaitsForgottenWhenIdle: a client that waits between its requests took its answers, and what its writes
// waited before is forgotten: one slow download does not leave its connection evictable in every request after it.
func TestWriteWaitsForgottenWhenIdle(t *testing.T) {
	s, addr := serveWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }), nil)
	c := dial(t, addr)
	get := func() {
		t.Helper()
		c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body, _ := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET: %d %q", resp.StatusCode, body)
		}
	}
	get()
	var conn *conn
	s.mu.Lock()
	for k := range s.conns {
		conn = k
	}
	s.mu.Unlock()
	conn.writes.waited.Store(int64(time.Hour))
	time.Sleep(2 * idleResetsWrites)
	get()
	if w := conn.writes.waited.Load(); w >= int64(time.Hour) {
		t.Errorf("the writes' waits after an idle of %s: %s; want them forgotten", 2*idleResetsWrites, time.Duration(w))
	}
}

// TestMaxConnsPollersNobodyVouchedFor: clients nobody vouched for (no token) that poll /health on kept-alive
// connections more often than the grace held every connection of the bound (an attacker's review: 20 connections
// polling twice a second refused a client with a token 29 times of 30). Idle, such a connection keeps a hundredth of the
// grace, and goes first; the same pollers vouched for keep the whole grace, and the new connection is refused.
func TestMaxConnsPollersNobodyVouchedFor(t *testing.T) {
	g := evictGrace
	t.Cleanup(func() { evictGrace = g }) // after the servers' own cleanups: they read it
	evictGrace = time.Second
	for _, vouch := range []bool{false, true} {
		var evicted atomic.Int64
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if vouch {
				w.(interface{ VouchConnection() }).VouchConnection()
			}
			_, _ = w.Write([]byte("ok"))
		})
		_, addr := serveWith(t, h, func(s *Server) {
			s.MaxConns = 3
			s.ConnEvicted = func() { evicted.Add(1) }
		})
		stop := make(chan struct{})
		var pollers sync.WaitGroup
		for range 3 {
			c := dial(t, addr)
			pollers.Add(1)
			go func() {
				defer pollers.Done()
				vmtest.PollHealth(c.conn, c.br, 300*time.Millisecond, stop) // well within the grace
			}()
		}
		time.Sleep(500 * time.Millisecond)
		served := 0
		for range 5 {
			n, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(n, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
			_ = n.SetReadDeadline(time.Now().Add(2 * time.Second))
			if resp, err := http.ReadResponse(bufio.NewReader(n), nil); err == nil && resp.StatusCode == 200 {
				served++
			}
			n.Close()
			time.Sleep(100 * time.Millisecond)
		}
		close(stop)
		pollers.Wait()
		if !vouch && (served == 0 || evicted.Load() == 0) {
			t.Errorf("pollers nobody vouched for: %d of 5 new clients served, %d evicted; want them served", served, evicted.Load())
		}
		if vouch && (served != 0 || evicted.Load() != 0) {
			t.Errorf("pollers vouched for, within the grace: %d of 5 new clients served, %d evicted; want none", served, evicted.Load())
		}
	}
}
