package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Connection states, for Shutdown: only a connection between requests may be closed under its client, and a new
// one only once it has had time to send its first request (as net/http gives it 5 s). A connection reading a request's
// head (stateHead) is closed by Shutdown only as an active one is, and may be evicted (Server.MaxConns) as a new or
// idle one may: a client that sends a byte of its head and then trickles the rest holds nothing the others need. So
// may one whose answer waits for the rest of a body its handler left unread (stateDiscard): a request that announces
// a body and never sends it, refused before the body is read (no token), held its connection for the idle timeout,
// and as many as -http.maxConnections of them kept every other client out (an attacker's review).
const (
	stateNew int32 = iota
	stateIdle
	stateHead
	stateActive
	stateDiscard
	stateClosed
)

// idleResetsWrites is how long a connection must wait for its next request for the waits of its writes to be
// forgotten (writeWait).
const idleResetsWrites = 100 * time.Millisecond

// newConnGrace is how long Shutdown leaves a connection that has not sent its first request yet: a client that
// connected just before the listener closed is served, not reset.
const newConnGrace = 5 * time.Second

// pendingSize is how much of an answer is held back to give it a Content-Length: net/http holds 2 KiB; the
// gateway's answers (a query result of a few series) are often a little longer.
const pendingSize = 4 << 10

type conn struct {
	srv        *Server
	rwc        net.Conn
	tlsState   *tls.ConnectionState
	remoteAddr string
	start      time.Time
	state      atomic.Int32
	evicted    bool // closed to make room (Server.MaxConns); under Server.mu
	// vouched: a handler vouched for the connection's client (VouchConnection), whose idle connection keeps the whole
	// eviction grace.
	vouched atomic.Bool
	// waitingSince is when the connection began to wait (unix nanoseconds): for a request, from its accept or the end
	// of its last answer; for the rest of a head, from its first byte. Eviction takes the one that has waited longest.
	waitingSince atomic.Int64
	// writes is how long the client has held the connection's writes: a client that takes none of its answers, or
	// takes them a trickle at a time, holds the connection, which may be evicted once it has for writeEvictGrace.
	writes writeWait

	br *bufio.Reader
	bw *bufio.Writer
	// out is what bw writes to (writev.go); chunkLine holds a chunk's size line while it is written.
	out       connWriter
	chunkLine [20]byte
	// scratch is for building strings (a folded header, a canonical name); pending is the answer held back before
	// its head (from bufPool, while a request is served); discard reads a body's rest to drop it.
	scratch, pending, discard []byte
	lastMethod                string
	fields                    []headerField
	// reqHeader and respHeader are the header maps of the request in flight and its answer, kept for the next
	// request (see the package doc: a handler uses neither once it has returned).
	reqHeader  headerStore
	respHeader http.Header
	// bodyInUse: a goroutine the handler left may still read the last body, through br.
	bodyInUse bool

	// wmu orders a 100 Continue, written as the body is first read (maybe by another goroutine), with the head.
	wmu sync.Mutex

	// The background read: once the request's body is read, the connection is read while the handler runs, so
	// that a client going away cancels the request's context (as in net/http). Unlike net/http's, the read is not
	// stopped when the handler returns: it goes on as the wait for the next request, whose first bytes it keeps
	// (bgData) for the request reader. So watching the client costs no deadline juggling and no extra read.
	bgMu     sync.Mutex
	bgCond   sync.Cond
	inRead   bool
	aborted  bool
	bgBuf    []byte
	bgData   []byte
	readErr  error
	cancelFn context.CancelFunc

	// With the client watcher (watch_linux.go) instead of the background read: watched says the socket is in its
	// set; peerClosed that the client's FIN or reset came; watching that the request in flight is read, so a
	// client leaving now cancels it.
	watched, peerClosed, watching bool
	// pipelined: when the request in flight was read, the reader held bytes of another one.
	pipelined bool
	// unread is the body of the request in flight while it is not read to its end: a client that leaves with all of
	// it sent (or cut short) is gone for a handler that has not read it yet, such as a write waiting for a slot.
	unread   *body
	watchID  uint64
	watchRaw syscall.RawConn

	// readDeadline is the read deadline the connection's goroutine last set itself, valid while deadlineKnown: a
	// deadline set elsewhere (the handler, a body read, the background read) clears it. It lets a keep-alive
	// connection renew its idle deadline only now and then instead of twice per request (see awaitNext).
	readDeadline  time.Time
	deadlineKnown atomic.Bool
	// handlerDeadline is the write deadline the handler set, cleared after its answer.
	handlerDeadline handlerDeadline
}

// handlerDeadline is a write deadline a handler set (http.ResponseController), perhaps from another goroutine to break
// a write the client does not take; it rules over the idle deadline the writer arms (connWriter.arm).
type handlerDeadline struct {
	set atomic.Bool
	at  atomic.Int64 // UnixNano; 0: none. Stored before set.
}

func (d *handlerDeadline) store(t time.Time) {
	var at int64
	if !t.IsZero() {
		at = t.UnixNano()
	}
	d.at.Store(at)
	d.set.Store(true)
}

// load says whether a handler's deadline is set, and which.
func (d *handlerDeadline) load() (time.Time, bool) {
	if !d.set.Load() {
		return time.Time{}, false
	}
	if at := d.at.Load(); at != 0 {
		return time.Unix(0, at), true
	}
	return time.Time{}, true
}

// setReadDeadline sets a read deadline the connection's goroutine keeps track of.
func (c *conn) setReadDeadline(t time.Time) {
	_ = c.rwc.SetReadDeadline(t)
	c.readDeadline = t
	c.deadlineKnown.Store(true)
}

// clearReadDeadline lifts the read deadline, without a syscall when the connection's goroutine knows there is none.
func (c *conn) clearReadDeadline() {
	if !c.deadlineKnown.Load() || !c.readDeadline.IsZero() {
		c.setReadDeadline(time.Time{})
	}
}

// setOtherReadDeadline sets a read deadline from anywhere: the one the connection's goroutine tracks is then unknown.
func (c *conn) setOtherReadDeadline(t time.Time) error {
	err := c.rwc.SetReadDeadline(t)
	c.deadlineKnown.Store(false)
	return err
}

var (
	readerPool sync.Pool
	writerPool sync.Pool
	// bufPool holds the buffers a request uses while it is served (its head as read, the answer held back), so an
	// idle connection holds none.
	bufPool sync.Pool
)

func getBuf() *[]byte {
	if v := bufPool.Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, pendingSize)
	return &b
}

func putBuf(b *[]byte) { bufPool.Put(b) }

func (c *conn) tooOld() bool {
	return c.srv.MaxConnAge > 0 && time.Since(c.start) > c.srv.MaxConnAge
}

func (c *conn) discardBuf() []byte {
	if c.discard == nil {
		c.discard = make([]byte, 8<<10)
	}
	return c.discard
}

// serve runs the connection: requests one after another, each answered before the next is read.
func (c *conn) serve() {
	defer c.srv.untrack(c)
	c.bgCond.L = &c.bgMu
	if d := c.srv.ReadHeaderTimeout; d > 0 {
		c.setReadDeadline(c.start.Add(d))
	}
	if tc, ok := c.rwc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			var re tls.RecordHeaderError
			if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
				// Plain HTTP on a TLS listener: told so, in the JSON error, on the bare connection.
				c.rejectPlain(re.Conn)
				return
			}
			slog.Debug("TLS handshake failed", "remoteAddr", c.remoteAddr, "err", err)
			_ = c.rwc.Close()
			return
		}
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	c.watched = watchClients && c.watch()
	c.br = getReader(c)
	c.out.reset(c.rwc, c.srv.WriteIdleTimeout, &c.handlerDeadline, &c.writes)
	c.bw = getWriter(&c.out)
	linger := false
	defer func() {
		c.close(linger)
	}()
	first := true
	for {
		if first {
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		} else {
			idleSince := time.Now()
			c.waitingSince.Store(idleSince.UnixNano())
			if c.srv.shuttingDown() || !c.state.CompareAndSwap(stateActive, stateIdle) {
				return
			}
			if c.br.Buffered() == 0 && !c.awaitNext(idleSince) {
				return
			}
		}
		from := stateIdle
		if first {
			from = stateNew
		}
		// A head's wait counts from its first byte, before the state says so: a kept-alive connection whose client
		// comes back after a long idle is not the oldest while its head comes in.
		now := time.Now().UnixNano()
		if !first && now-c.waitingSince.Load() >= int64(idleResetsWrites) {
			// A client that waited between its requests took its answers: what its writes waited before is forgotten,
			// so that one slow download does not leave a connection evictable in every request after it (an attacker's
			// review). A client that pipelines its requests never waits, and its writes' waits add up.
			c.writes.waited.Store(0)
		}
		c.waitingSince.Store(now)
		if !c.state.CompareAndSwap(from, stateHead) {
			return
		}
		if !first && !c.headBuffered() {
			// The head is still to come: from its first byte it has ReadHeaderTimeout. One the reader holds in full
			// needs no deadline, and the idle one left in place bounds nothing else (a body's read clears it, the
			// handler sets its own).
			if d := c.srv.ReadHeaderTimeout; d > 0 {
				c.setReadDeadline(time.Now().Add(d))
			} else {
				c.clearReadDeadline()
			}
		}
		first = false
		keep, lg := c.serveRequest()
		if !keep {
			linger = lg
			return
		}
		if c.srv.shuttingDown() {
			return
		}
	}
}

// headBuffered reports whether the reader holds a whole request head (up to its empty line), so reading it needs
// no read of the connection. At least 4 bytes: after a POST, up to 4 are peeked for a stray CRLF, and what
// serveRequest drops then is no part of the head (CRLFs alone would otherwise pass for its empty line).
func (c *conn) headBuffered() bool {
	n := c.br.Buffered()
	if n < 4 {
		return false
	}
	buf, _ := c.br.Peek(n)
	if c.lastMethod == http.MethodPost {
		buf = buf[strayCRLF(buf):]
	}
	// A line that is empty or only CR ends the head; the request line never does, but then an empty line follows
	// later or the request is refused on what is buffered.
	return bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n"))
}

// strayCRLF is how many of the (at most 4) leading bytes of b are CR or LF: what is dropped before the head that
// follows a POST.
func strayCRLF(b []byte) int {
	n := 0
	for n < len(b) && n < 4 && (b[n] == '\r' || b[n] == '\n') {
		n++
	}
	return n
}

// serveRequest reads one request and answers it; keep says whether the connection can carry another, linger
// whether its client may still be sending when it closes.
func (c *conn) serveRequest() (keep, linger bool) {
	if c.lastMethod == http.MethodPost {
		// RFC 9112 2.2 tolerance for old clients that end a POST body with an extra CRLF.
		peek, _ := c.br.Peek(4)
		_, _ = c.br.Discard(strayCRLF(peek))
	}
	limit := c.srv.MaxHeaderBytes
	if limit <= 0 {
		limit = http.DefaultMaxHeaderBytes
	}
	// A head the reader holds whole is parsed where it lies; one still to come is gathered in a buffer.
	var hp *[]byte
	var err error
	head := bufferedHead(c.br, limit)
	if head == nil {
		hp = getBuf()
		head, err = readHead(c.br, (*hp)[:0], limit)
		defer func() {
			// The head is copied into the request's string by then: its buffer goes back, unless it grew large.
			if cap(head) <= 64<<10 {
				*hp = head[:0]
				putBuf(hp)
			}
		}()
	}
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			c.reject(re, nil)
			return false, true
		}
		// The client went away or was too slow: no answer (as net/http).
		return false, false
	}
	ex := &exchange{}
	var tmpl http.Request
	if err := parseRequest(&tmpl, &ex.url, head, &c.scratch, &c.reqHeader); err != nil {
		var re *requestError
		if !errors.As(err, &re) {
			re = badRequest("%s", err)
		}
		c.reject(re, &tmpl)
		return false, true
	}
	if !c.state.CompareAndSwap(stateHead, stateActive) {
		return false, false // evicted as its head came in
	}
	c.lastMethod = tmpl.Method
	if len(c.scratch) > 4<<10 {
		c.scratch = nil
	}

	pp := getBuf()
	c.pending = (*pp)[:0]
	defer func() {
		*pp = c.pending[:0]
		c.pending = nil
		putBuf(pp)
	}()

	w, b := &ex.w, &ex.b
	w.c, w.header, w.contentLength, w.isHead = c, c.takeRespHeader(), -1, tmpl.Method == http.MethodHead
	expect := ""
	if e := tmpl.Header["Expect"]; len(e) > 0 {
		expect = e[0]
	}
	wantsContinue := false
	if expect != "" {
		if !httpguts.HeaderValuesContainsToken([]string{expect}, "100-continue") {
			c.reject(refusal(http.StatusExpectationFailed, "unsupported Expect header: only 100-continue is known"), &tmpl)
			return false, true
		}
		wantsContinue = tmpl.ProtoAtLeast(1, 1) && tmpl.ContentLength != 0
	}
	tmpl.RemoteAddr = c.remoteAddr
	tmpl.TLS = c.tlsState
	ctx, cancel := context.WithCancel(context.Background())
	// Copied out of WithContext's request, which is then not allocated: the exchange holds the request.
	ex.req = *tmpl.WithContext(ctx)
	r := &ex.req
	w.req = r
	switch {
	case r.ContentLength == 0:
		r.Body = http.NoBody
	default:
		// The head's deadline is not the body's: the handler sets its own (http.ResponseController).
		c.clearReadDeadline()
		b.c, b.w, b.r = c, w, r
		b.continueWanted = wantsContinue
		if r.ContentLength > 0 {
			b.remaining = r.ContentLength
		} else {
			b.chunked = newChunkedReader(b)
		}
		r.Body = b
		w.body = b
	}

	c.bgMu.Lock()
	c.cancelFn = cancel
	if w.body != nil {
		c.unread = b
		// The client's FIN may have come before the request was set up, and the watcher tells it once.
		if c.peerClosed && b.allSent() {
			cancel()
		}
	}
	c.bgMu.Unlock()
	if w.body == nil {
		c.startBackgroundRead()
	}
	ok := c.runHandler(w, r)
	cancel()
	c.bgMu.Lock()
	c.cancelFn, c.watching, c.unread = nil, false, nil
	c.bgMu.Unlock()
	if !ok {
		// A panic: what the answer has is sent, unless its head was still held back, and the connection closes.
		if w.committed.Load() {
			_ = c.bw.Flush()
		}
		w.done.Store(true)
		c.retire(w.body)
		return false, false
	}
	w.finish()
	if c.handlerDeadline.set.Load() {
		_ = c.rwc.SetWriteDeadline(time.Time{})
		c.handlerDeadline.set.Store(false)
		c.out.armed = time.Time{}
	}
	c.bgMu.Lock()
	readFailed := c.readErr != nil
	c.bgMu.Unlock()
	if w.closeAfter || readFailed {
		c.retire(w.body)
		return false, w.linger || c.br.Buffered() > 0
	}
	if w.body != nil {
		// Read to its end by now (discardRest), so no read of it can be blocked: a goroutine the handler left
		// reading it gets http.ErrBodyReadAfterClose, never the next request.
		_ = w.body.Close()
	}
	return true, false
}

// takeRespHeader is the answer's header map: the last answer's, emptied, unless it grew large.
func (c *conn) takeRespHeader() http.Header {
	if h := c.respHeader; h != nil && len(h) <= maxHeaderHint {
		clear(h)
		return h
	}
	c.respHeader = make(http.Header)
	return c.respHeader
}

// retire closes the body of a request after which the connection closes. A read of it still under way in a
// goroutine the handler left ends when the connection closes; its reader is then not handed back to the pool.
func (c *conn) retire(b *body) {
	if b == nil {
		return
	}
	if b.mu.TryLock() {
		b.closed = true
		b.mu.Unlock()
		return
	}
	c.bodyInUse = true
}

// exchange is what one request allocates for itself, in one object: the *http.Request with its URL (unless
// net/url parses the target: parseTarget), the response writer and the body.
type exchange struct {
	req http.Request
	url url.URL
	w   response
	b   body
}

// runHandler runs the handler; false when it panicked. http.ErrAbortHandler is the handler's way to break off an
// answer (the proxy does, when its upstream breaks off): the connection closes without a word in the log.
func (c *conn) runHandler(w *response, r *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				slog.Error("panic serving a request; the connection is closed", "remoteAddr", c.remoteAddr, "method", r.Method,
					"path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	c.srv.Handler.ServeHTTP(w, r)
	return true
}

// close ends the connection. With linger, the client may still be sending (a refused request's body, a pipelined
// request): the server half-closes and drops what comes for a moment before the close, as net/http does, so the
// client reads the answer before a reset could destroy it.
func (c *conn) close(linger bool) {
	c.abortBackgroundRead()
	c.unwatch()
	if linger && c.state.Load() != stateClosed {
		if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.setOtherReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, _ = io.Copy(io.Discard, c.rwc)
		}
	}
	c.state.Store(stateClosed)
	_ = c.rwc.Close()
	if c.br != nil && !c.bodyInUse {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw = nil
	}
}

func getReader(r io.Reader) *bufio.Reader {
	if v := readerPool.Get(); v != nil {
		br := v.(*bufio.Reader)
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, 4<<10)
}

func getWriter(w io.Writer) *bufio.Writer {
	if v := writerPool.Get(); v != nil {
		bw := v.(*bufio.Writer)
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return string(b[i:])
}

// remoteAddrOf is net/http's RemoteAddr: the client's ip:port.
func remoteAddrOf(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
