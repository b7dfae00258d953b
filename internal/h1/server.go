package h1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves an http.Handler over HTTP/1.x. Its zero value serves with no timeouts and net/http's default
// header limit; set the fields before Serve.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the wait for a request's head from its first byte (from the accept, for the first
	// request, TLS handshake included); a head slower than that is dropped without an answer.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive connection.
	IdleTimeout time.Duration
	// WriteIdleTimeout bounds each write of an answer to the connection (at most the 4 KiB buffer, or one body
	// write with its framing): a client that takes none of it for that long (a full receive window it never reads)
	// has the write fail and the connection closed, so the handler returns; the bound may run a sixteenth late, so
	// that a busy connection does not renew it at every answer. A pause between writes does not count.
	// A handler's own write deadline (http.ResponseController) rules instead. Zero: no bound.
	WriteIdleTimeout time.Duration
	// MaxConnAge closes a connection after the first answer past this age (Connection: close), so load spreads
	// again behind TCP balancers.
	MaxConnAge time.Duration
	// MaxHeaderBytes bounds the request line and headers; a larger head gets 431. Zero: net/http's 1 MiB.
	MaxHeaderBytes int
	// Rejected is told every request the server answers itself (malformed, too large, unknown Expect, plain HTTP
	// on a TLS listener) and returns the answer's JSON error and the request id it names, which the answer also
	// carries as X-Request-Id. Without it the answer is the server's own error, without an id.
	Rejected func(*Rejection) (body []byte, requestID string)
	// ConnOpened is called for every accepted connection.
	ConnOpened func()
	// MaxConns bounds the connections open at once (zero: no bound). Past it, a new connection takes the place of one
	// that has waited at least evictGrace for a request (since its accept or its last answer; a hundredth of it, and first,
	// for a kept-alive one no handler vouched for, response.VouchConnection), for the rest of a
	// request's head (since its first byte), or for the rest of a body its handler left (since the answer began), or,
	// serving a request, whose writes have waited writeEvictGrace in all for its client to take its answers, the longest
	// waiting of those looked at, one that has not sent a whole head
	// before one kept alive after an answer: such a connection costs its client nothing to hold, and thousands of them
	// would otherwise run the process out of file descriptors and keep out every client with a request to send. When
	// none looked at may go, the new one is closed at once.
	MaxConns int
	// ConnEvicted and ConnRefused, when set, are told of each connection closed to make room, and of each new one
	// closed for want of it.
	ConnEvicted, ConnRefused func()

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	evicting  int // connections closed to make room whose goroutines have not ended yet
	stopping  atomic.Bool
	closed    bool // under mu: Close (or Shutdown's end) closed every connection
}

// evictScan bounds the connections looked at for one to evict, so that a flood of connections to a server whose
// connections all serve requests costs little each; the look starts at a random place (map order), so the longest
// waiting of a sample is evicted, which is the attacker's where the attacker holds most.
const evictScan = 64

// evictGrace is how long a connection may wait for its request's head before it may be evicted: a client that has
// just connected, or just been answered on a kept-alive connection, is sending its request (a fresh connection's
// bytes in flight, a pool's next request), and losing it would fail a request that did nothing wrong.
var evictGrace = time.Second

// writeEvictGrace is how long a connection's writes may wait for its client to take its answers, in all, before it may
// be evicted while it serves a request: a client that pipelines requests (or asks for /metrics) and reads none of the
// answers holds its connection in the write, without a token, for -http.answerIdleTimeout; as many of them as
// -http.maxConnections kept every other client out (an attacker's review). Longer than evictGrace: a legitimate client
// may be slow to take a large answer, and loses it when evicted.
var writeEvictGrace = 5 * time.Second

// Rejection is a request the server answered itself, before any handler saw it.
type Rejection struct {
	Status int
	// Msg says what was wrong, for the client: it may quote a clipped piece of the request (a header line, which
	// may hold a token). LogMsg is the same with every such piece as <elided>.
	Msg, LogMsg string
	RemoteAddr  string
	// Method and Path (the target's path, as sent, without its query) are empty when the request line was not read.
	Method, Path string
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

func (s *Server) shuttingDown() bool { return s.stopping.Load() }

// Serve accepts connections on ln until Shutdown or Close; each is served by its own goroutine. A TLS listener
// (tls.NewListener) gives TLS connections: their handshake runs within ReadHeaderTimeout.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.stopping.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				slog.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "retryIn", backoff.String())
				time.Sleep(backoff)
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			return err
		}
		backoff = 0
		if s.ConnOpened != nil {
			s.ConnOpened()
		}
		c := &conn{srv: s, rwc: rwc, remoteAddr: remoteAddrOf(rwc), start: time.Now()}
		c.waitingSince.Store(c.start.UnixNano())
		switch s.track(c) {
		case trackStopping:
			_ = rwc.Close()
			return ErrServerClosed
		case trackFull:
			// Told first: whoever sees the connection closed sees it counted.
			if s.ConnRefused != nil {
				s.ConnRefused()
			}
			_ = rwc.Close()
			continue
		}
		go c.serve()
	}
}

// Results of track.
const (
	tracked = iota
	trackStopping
	trackFull
)

// track adds c to the connections served, making room under MaxConns.
func (s *Server) track(c *conn) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return trackStopping
	}
	// Accepted as Shutdown closed the listener: served as one accepted a moment earlier, with a new connection's grace
	// (as net/http serves it), not reset.
	if s.MaxConns > 0 && len(s.conns)-s.evicting >= s.MaxConns && !s.evictLocked() {
		return trackFull
	}
	s.conns[c] = struct{}{}
	return tracked
}

// evictLocked closes the connection that has waited longest for a request's head among those looked at, preferring
// one that has sent none since it opened (or sends one slowly) to one kept alive after an answer; false when none may
// go. Its goroutine ends soon after, and untracks it.
func (s *Server) evictLocked() bool {
	now := time.Now().UnixNano()
	var best *conn
	var bestState int32
	var bestRank int
	var bestSince int64
	looked := 0
	for c := range s.conns {
		if c.evicted {
			continue
		}
		if looked++; looked > evictScan {
			break
		}
		st, since := c.state.Load(), c.waitingSince.Load()
		// Ranked by what it waits for: a request or the rest of one, then a request after an answer (kept alive),
		// then a client to take its answer; then by how long it has waited, past its grace.
		rank, grace := 0, evictGrace
		switch st {
		case stateNew, stateHead, stateDiscard:
		case stateIdle:
			if c.vouched.Load() {
				rank = 1
			} else {
				// A client nobody vouched for that polls /health or /metrics more often than the grace, on as many
				// kept-alive connections as the bound, kept every other client out (an attacker's review): it keeps a
				// hundredth of the grace, for the bytes of its next request that may be on their way, and goes first.
				// (A client that reuses a connection resends a request the server closed under it, as Go's does.)
				grace = evictGrace / 100
			}
		case stateActive:
			// Only while a write waits for the client: one serving a request that waits on its upstream is not
			// holding anything the client could give back (an attacker's review). The longest held first.
			if c.writes.since.Load() == 0 {
				continue
			}
			since, rank, grace = now-c.writes.held(now), 2, writeEvictGrace
		default:
			continue
		}
		if now-since < int64(grace) {
			continue
		}
		if best == nil || rank < bestRank || rank == bestRank && since < bestSince {
			best, bestState, bestRank, bestSince = c, st, rank, since
		}
	}
	if best == nil || !best.state.CompareAndSwap(bestState, stateClosed) {
		return false
	}
	best.evicted = true
	s.evicting++
	if s.ConnEvicted != nil {
		s.ConnEvicted()
	}
	_ = best.rwc.Close()
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	if c.evicted {
		s.evicting--
	}
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping.Store(true)
	for ln := range s.listeners {
		_ = ln.Close()
	}
	s.listeners = nil
}

// closeIdle closes the connections waiting for a request and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) ||
			time.Since(c.start) > newConnGrace && c.state.CompareAndSwap(stateNew, stateClosed) {
			_ = c.rwc.Close()
		}
	}
	return len(s.conns) == 0
}

// Shutdown stops accepting, closes the connections between requests and waits for the requests in flight to be
// answered (their connections then close); at ctx's end it closes the rest and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.closeAll()
	return nil
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.state.Store(stateClosed)
		_ = c.rwc.Close()
	}
}
