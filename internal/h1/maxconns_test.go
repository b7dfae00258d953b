package h1

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestMaxConns: at the bound, a new connection takes the place of one waiting for a request, one that never sent
// any or one kept alive after its answer, and is served; when every connection serves a request, the new one is
// closed at once, and those served are not touched.
func TestMaxConns(t *testing.T) {
	release := make(chan struct{})
	var evicted, refused atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		_, _ = w.Write([]byte("ok"))
	})
	s, addr := serveWith(t, h, func(s *Server) {
		s.MaxConns = 3
		s.ConnEvicted = func() { evicted.Add(1) }
		s.ConnRefused = func() { refused.Add(1) }
	})
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

	// Two that never send a request, one kept alive after its answer: the server is full.
	silent1, silent2 := dial(t, addr), dial(t, addr)
	kept := dial(t, addr)
	kept.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body, _ := kept.response("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("first answer: %d %q", resp.StatusCode, body)
	}
	waitOpen(3)
	// A fourth is served in the place of one of them.
	fourth := dial(t, addr)
	fourth.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body, _ := fourth.response("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("a new connection at the bound: %d %q; want it served", resp.StatusCode, body)
	}
	closedOnes := 0
	for _, c := range []*client{silent1, silent2, kept} {
		if c.closed() {
			closedOnes++
		}
	}
	if closedOnes != 1 || evicted.Load() != 1 || refused.Load() != 0 {
		t.Fatalf("%d of the waiting connections closed, %d evicted, %d refused; want one evicted", closedOnes, evicted.Load(), refused.Load())
	}

	// Every connection now serves a request: a new one is closed at once, and none served is touched.
	var held []*client
	for _, c := range []*client{silent1, silent2, kept, fourth} {
		if !c.closed() {
			c.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
			held = append(held, c)
		}
	}
	waitActive := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			if c.state.Load() != stateActive {
				return false
			}
		}
		return len(s.conns) == 3
	}
	for deadline := time.Now().Add(5 * time.Second); !waitActive(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the three held requests never all ran")
		}
	}
	late := dial(t, addr)
	if !late.closed() || refused.Load() != 1 {
		t.Fatalf("a new connection while every one serves a request: closed %v, %d refused; want it closed", late.closed(), refused.Load())
	}
	close(release)
	for _, c := range held {
		if resp, body, _ := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Errorf("a held request: %d %q; want it answered", resp.StatusCode, body)
		}
	}
	if evicted.Load() != 1 {
		t.Errorf("%d evicted; want still 1", evicted.Load())
	}
}
