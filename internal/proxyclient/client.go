// Package proxyclient is the gateway's HTTP/1.1 client to its upstreams: an http.RoundTripper for the gateway's
// forward step that sends each request on a pooled connection from the calling goroutine.
//
// Why not http.Transport: it runs two goroutines per connection (a read loop and a write loop) and hands every
// request and response between them and the caller over channels. For a proxy answering small queries that hand-off
// was a quarter of the gateway's CPU (docs/benchmarks.md). Here the caller writes the request (writeRequest,
// request.go: the serialisation of Request.Write, which the Transport uses, without its formatting and sorting)
// and reads the answer (readResponse, response.go) itself, so a request costs no goroutine, no channel and no
// timer:
//   - cancellation: context.AfterFunc closes the connection when the request's context ends, which unblocks a
//     write, a wait for headers or a body read;
//   - the response-header timeout is a read deadline on the connection, set once the request is written (just
//     before its one write, when it all fits the write buffer) and cleared only when the body still needs the
//     socket: an answer that came whole with its head (most queries') costs one deadline, not two, and a
//     connection carrying a stale one clears it before its next read. It is renewed only once it is stale by a
//     sixteenth of the timeout (so the wait for a head ends between the timeout and a sixteenth more), so a busy
//     connection whose answers come whole changes no deadline per request;
//   - a request that goes out in one write on a plain TCP connection, and could go again whole (no body, a held
//     one, or one GetBody gives again), waits for the answer inside that write (sockio.Conn.WriteAwait), so
//     reading the answer costs one read(2), not a first one that finds nothing yet;
//   - a connection goes back to the pool when its answer's body has been read to the end, and is dropped when the
//     body is closed early or broke, the answer said Connection: close, the request did not go out whole, or bytes
//     came past the answer (over TLS, also those the TLS layer took from the socket already: tlsDrained);
//   - an idle connection is reused only after a non-blocking peek at its socket found nothing there
//     (peeker.quiet): an upstream that closed it is seen before the request, and one that sent an answer nobody
//     asked for has that answer dropped with the connection instead of read as the next request's (the
//     Transport's background read loop sees both). A request that could go again whole has the peek as its first
//     byte goes out, inside WriteAwait after the poller's readiness was reset, so that an upstream's end can come
//     neither unseen by the peek nor unseen by the wait (a half-closed connection draws no reset to wake it); a
//     connection found not quiet then is traded for the next, with nothing sent; a new plain one is checked the
//     same way, and one found ended fails the request. Where a socket cannot be peeked at (not unix), no
//     connection is pooled. A request that meets a connection closed after the peek is resent once on a new one when nothing of the answer came and the
//     upstream cannot have acted on it twice: a GET, HEAD, OPTIONS or TRACE without a body, a body none of which
//     was taken, a body that can be had again (GetBody: the read bodies the gateway parsed), or nothing of the
//     request written at all, as the Transport decides. A write whose body went out is never resent, even a small
//     one held whole: the upstream may have stored it before the connection broke, and the client, which gets the
//     error, decides;
//   - a connection idle for 90 s is closed, by the next one pooled or, when no request comes, by a timer (reap).
//
// A body of known length up to 16 KiB is read whole before a connection is taken, so no connection waits on the
// client for it; it goes out with the head in one write when both fit the 4 KiB write buffer (a scrape's import
// does), else in two. A larger one streams as the Transport streams it (chunked bodies flush per chunk), after the headers. Since
// the answer is read only once the request is written, an upstream that answers before reading the whole body and
// then breaks the connection has its early answer read after the write fails. Requests that the environment routes
// through an HTTP proxy (HTTP_PROXY, HTTPS_PROXY) go through an http.Transport, as before.
//
// Why not http.ReadResponse: textproto copies each header value into a string of its own, copies each key it
// does not know, makes a string of the status line and the body is wrapped in three readers: 12 allocations for
// a VictoriaMetrics answer's head of six fields and about 5 % of the gateway's CPU per query (docs/benchmarks.md).
// readResponse finds the head in the read buffer, makes one string of it that the status, the values and the
// keys are cut from, and frames the body in the one answerBody, allocated with the Response and the slices of
// the header's first eight values (framedAnswer): 4 allocations (the head's string, the Response, the header map
// and its table) against 12 in BenchmarkReadResponse, which reads a head alone; it decides the framing as net/http
// does, refuses more (readResponse's doc), and FuzzReadResponse compares the two.
package proxyclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/vmgateway/vmgateway/internal/sockio"
)

// Client is a pool of keep-alive connections to upstreams, by scheme and address.
type Client struct {
	tls           *tls.Config
	dialer        net.Dialer
	headerTimeout time.Duration
	// proxied serves the requests the environment sends through a proxy.
	proxied *http.Transport

	mu      sync.Mutex
	idle    map[poolKey][]*conn
	tlsByHo map[string]*tls.Config
	// reaper closes the connections idle past idleTimeout when no request comes to do it (put); armed while the
	// pool holds any, so a gateway left alone does not keep sockets its upstreams closed long ago (CLOSE_WAIT).
	reaper *time.Timer
}

// poolKey is the scheme and host (as the URL has it) of the upstream a connection goes to.
type poolKey struct{ scheme, host string }

// idleTimeout is how long a connection may wait in the pool; a variable for the tests.
var idleTimeout = 90 * time.Second

const (
	handshakeTimeout = 10 * time.Second
	maxIdlePerHost   = 512
	// maxEarlyAnswerWait is how long an answer is waited for after the request's write failed.
	maxEarlyAnswerWait = 50 * time.Millisecond
	max1xx             = 5
	// readBufferSize is the read buffer of a connection in use, which an answer's head must fit to be parsed
	// without a copy: an answer of up to about this size is read with one syscall (8 KiB took three for 24 KiB).
	// An idle connection holds none (readBuffers).
	readBufferSize = 32 << 10
)

// New returns a client with tlsCfg for https upstreams; headerTimeout bounds the wait for an answer's headers
// after the request is sent (0: no bound; it may run a sixteenth late), never the body, so a long export is not cut; dialTimeout bounds a
// connection attempt.
func New(tlsCfg *tls.Config, headerTimeout, dialTimeout time.Duration) *Client {
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c := &Client{
		tls:           tlsCfg,
		dialer:        net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		headerTimeout: headerTimeout,
		idle:          map[poolKey][]*conn{},
		tlsByHo:       map[string]*tls.Config{},
	}
	c.proxied = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           c.dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   handshakeTimeout,
		ResponseHeaderTimeout: headerTimeout,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       idleTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return c
}

// CloseIdleConnections closes the pooled connections.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = map[poolKey][]*conn{}
	if c.reaper != nil {
		// A reap already under way finds the pool empty, or the timer of a later put.
		c.reaper.Stop()
		c.reaper = nil
	}
	c.mu.Unlock()
	for _, cs := range idle {
		for _, pc := range cs {
			_ = pc.nc.Close()
		}
	}
	c.proxied.CloseIdleConnections()
}

type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	cw     *connWriter
	key    poolKey
	idleAt time.Time
	reused bool
	// closeNC closes nc: made once, it is what a request's cancellation calls.
	closeNC func()
	// deadline tells a read deadline may be set: a connection keeps its header timeout's deadline when the whole
	// answer came with the head, and clears it only before it next reads from the socket (clearDeadline).
	deadline bool
	// headerDeadline is the header timeout's deadline in force, zero when the one set (if any) is another: while it
	// is late enough for the next request's head, that request keeps it (setHeaderDeadline).
	headerDeadline time.Time
}

// setDeadline sets a read deadline other than the header timeout's.
func (pc *conn) setDeadline(t time.Time) {
	_ = pc.nc.SetReadDeadline(t)
	pc.deadline, pc.headerDeadline = true, time.Time{}
}

// clearDeadline lifts a read deadline left from an answer's head, before a read from the socket that it must not
// cut: a body, an upgraded connection.
func (pc *conn) clearDeadline() {
	if pc.deadline {
		_ = pc.nc.SetReadDeadline(time.Time{})
		pc.deadline, pc.headerDeadline = false, time.Time{}
	}
}

// timeoutError is what the wait for an answer's headers ends with when the header timeout passes.
type timeoutError struct{ err error }

func (e *timeoutError) Error() string   { return "timeout awaiting response headers" }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Unwrap() error   { return e.err }

// RoundTrip sends req and returns the answer with its body streaming from the connection.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	u := req.URL
	if u == nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		closeBody(req)
		return nil, fmt.Errorf("unsupported upstream URL %q: want http:// or https:// with a host", u)
	}
	if p, err := c.proxied.Proxy(req); err != nil || p != nil {
		return c.proxied.RoundTrip(req)
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err
	}
	key := poolKey{u.Scheme, u.Host}
	body := req.Body
	var sb *sentBody
	var held *[]byte
	if body != nil && body != http.NoBody {
		if req.GetBody == nil && req.ContentLength > 0 && req.ContentLength <= smallBody && len(req.Header["Expect"]) == 0 {
			// A small body (a scrape's import, a form) is read whole first (see the package doc).
			var err error
			if held, err = holdBody(body, req.ContentLength); err != nil {
				return nil, err
			}
			defer smallBodies.Put(held)
			body = heldBody(held)
		}
		sb = &sentBody{rc: body}
	}
	// A request that can go again whole (no body, one held, or one GetBody gives again) has its connection checked
	// as its first byte goes out, not when the connection is taken: the check then closes the window in which an
	// upstream's end could come unseen (sockio.Conn.WriteAwait), and a connection found not quiet is traded for
	// another.
	replayable := sb == nil || held != nil || req.GetBody != nil
	fresh := false
	for {
		pc, err := c.get(ctx, key, fresh, replayable)
		if err != nil {
			if sb != nil {
				_ = sb.rc.Close()
			}
			return nil, err
		}
		out := req
		if sb != nil {
			out = new(http.Request)
			*out = *req
			out.Body = sb
		}
		resp, err := c.send(ctx, pc, out, sb, replayable)
		if err == nil {
			if sb != nil {
				_ = sb.rc.Close()
			}
			return resp, nil
		}
		if errors.Is(err, sockio.ErrNotQuiet) && replayable && pc.reused {
			// Nothing went out: the request goes again whole, on the next idle connection or a new one. A new
			// connection found not quiet is the upstream's answer to connecting, and the loop ends there.
			nb, gerr := sentAgain(req, sb, held)
			if gerr != nil {
				_ = sb.rc.Close()
				return nil, gerr
			}
			sb = nb
			continue
		}
		// A reused connection the upstream closed after the peek meets the request with an EOF or a reset: the
		// request goes once more, on a new connection, when nothing of the answer came and the upstream cannot have
		// acted on it. A held body that went out may have been stored: it is not resent.
		if pc.reused && !fresh && ctx.Err() == nil && deadConn(err) {
			switch {
			case sb == nil && repeatable(req.Method), sb != nil && sb.n == 0 && sb.err == nil && (!sb.eof || pc.cw.n == 0):
				// A request without a body that may be repeated, or the head of one whose body the upstream still
				// waits for. An empty body that ended went out whole (its last chunk), as a request without one
				// does, unless nothing went out at all.
				fresh = true
				continue
			case pc.cw.n == 0 && (sb == nil || held != nil), req.GetBody != nil:
				// The first write met the reset, so nothing went out; or the body can be had again.
				if nb, gerr := sentAgain(req, sb, held); gerr == nil {
					sb = nb
					fresh = true
					continue
				}
			}
		}
		if sb != nil {
			_ = sb.rc.Close()
		}
		return nil, err
	}
}

// sentAgain is the body of another attempt at req, whose last one sent sb: none, the held copy from its start, or
// GetBody's, when neither (sb is then closed). On GetBody's error sb is left as it was.
func sentAgain(req *http.Request, sb *sentBody, held *[]byte) (*sentBody, error) {
	switch {
	case sb == nil:
		return nil, nil
	case held != nil:
		return &sentBody{rc: heldBody(held)}, nil
	}
	nb, err := req.GetBody()
	if err != nil {
		return sb, err
	}
	_ = sb.rc.Close()
	return &sentBody{rc: nb}, nil
}

// repeatable tells the methods whose requests may be sent twice (RFC 9110 9.2.2), as the Transport's resend does.
func repeatable(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// smallBody bounds the bodies RoundTrip reads whole before it takes a connection; smallBodies holds their buffers.
const smallBody = 16 << 10

var smallBodies = sync.Pool{New: func() any { b := make([]byte, smallBody); return &b }}

// heldBody reads a body holdBody held, from its start.
func heldBody(held *[]byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(*held)) }

// holdBody reads a body of length cl whole into a pooled buffer and closes it. A body shorter or longer than cl
// gets Request.Write's error; the body's own error (a client gone or too slow) comes back as it is.
func holdBody(body io.ReadCloser, cl int64) (*[]byte, error) {
	defer body.Close()
	bp := smallBodies.Get().(*[]byte)
	b := (*bp)[:cl]
	n, err := io.ReadFull(body, b)
	if err == nil {
		var one [1]byte
		var m int
		if m, err = body.Read(one[:]); m > 0 {
			n += m
			err = io.ErrUnexpectedEOF
		} else if err == io.EOF {
			err = nil
		}
	}
	if err != nil {
		smallBodies.Put(bp)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, fmt.Errorf("http: ContentLength=%d with Body length %d", cl, n)
		}
		return nil, err
	}
	*bp = b
	return bp, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// sentBody counts what the request took of the body, whether it took it to the end, and keeps its read error
// apart from the connection's; it stays open across attempts: the client closes the body once.
type sentBody struct {
	rc  io.ReadCloser
	n   int64
	err error
	eof bool
}

func (s *sentBody) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	s.n += int64(n)
	if err == io.EOF {
		s.eof = true
	}
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func (s *sentBody) Close() error { return nil }

// deadConn tells the errors of a connection the upstream closed before the request.
func deadConn(err error) bool {
	// readResponse reports a connection that ended before the head's end as io.ErrUnexpectedEOF, as
	// http.ReadResponse does.
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// testHookSend runs as send starts, after the connection was taken: the tests' way to act in between.
var testHookSend func()

// send writes the request on pc and reads the answer's headers.
func (c *Client) send(ctx context.Context, pc *conn, req *http.Request, sb *sentBody, replayable bool) (*http.Response, error) {
	if testHookSend != nil {
		testHookSend()
	}
	stop := context.AfterFunc(ctx, pc.closeNC)
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = pc.nc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	pc.cw.err, pc.cw.n = nil, 0
	werr := writeRequest(pc.bw, req)
	deadlineSet := false
	if werr == nil {
		if pc.cw.aw != nil && pc.cw.n == 0 && replayable {
			// The whole request is in the buffer: it goes out in one write that then waits for the answer
			// (sockio.Conn.WriteAwait), so the head's deadline is set before it, and the read after it does not find
			// the socket empty. A plain connection, reused or new, is checked inside that write, where nothing can
			// come unseen after the check. A body streamed from the client keeps the plain write: the connection was
			// checked when taken, and an end that came while the body was read must be seen by the read.
			c.setHeaderDeadline(pc)
			deadlineSet = true
			pc.cw.await = true
			werr = pc.bw.Flush()
			pc.cw.await = false
		} else {
			werr = pc.bw.Flush()
		}
	}
	if werr != nil {
		if errors.Is(pc.cw.err, sockio.ErrNotQuiet) {
			// Nothing was read either: the read buffer goes back, as it would have had the connection been
			// refused when taken (an upstream that closes idle connections sooner than the pool leaves many).
			pc.br.Reset(nil)
			readBuffers.Put(pc.br)
			pc.br = nil
			return fail(sockio.ErrNotQuiet)
		}
		var ne net.Error
		if deadlineSet && pc.cw.n == 0 && errors.As(werr, &ne) && ne.Timeout() && ctx.Err() == nil {
			// The head's deadline passed before the write could start: that is the header timeout.
			return fail(&timeoutError{werr})
		}
		if sb != nil && sb.err != nil {
			// The client's body failed (stalled, malformed, gone): the upstream must not see it end.
			return fail(sb.err)
		}
		if pc.cw.err != nil {
			// Request.Write (which writeRequest falls back to) reports a failed write of the body as a body error,
			// without its cause.
			werr = pc.cw.err
		}
		if pc.cw.n == 0 {
			// Nothing went out (refused as written, or the first write failed): whatever the socket holds is no
			// answer to this request, and the connection may not have been checked yet (get's deferQuiet).
			return fail(werr)
		}
		// The upstream may have answered before taking the whole body (a refusal) and closed the connection.
		pc.setDeadline(time.Now().Add(maxEarlyAnswerWait))
		a, f, err := c.readAnswer(ctx, pc, req)
		if err != nil {
			return fail(werr)
		}
		a.resp.Close = true
		return c.wrap(pc, a, f, stop)
	}
	if !deadlineSet {
		c.setHeaderDeadline(pc)
	}
	a, f, err := c.readAnswer(ctx, pc, req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			if k, ok := KeeperFrom(ctx); ok {
				// The upstream may work on: the connection stays open until its answer begins, for the keeper.
				stop()
				go c.awaitLate(pc, req.Method, k.Keep())
				return nil, &timeoutError{err}
			}
			err = &timeoutError{err}
		}
		return fail(err)
	}
	return c.wrap(pc, a, f, stop)
}

// Keeper is told, through the context of a request (WithKeeper), that its answer did not begin within the header
// timeout: the request fails with the timeout as ever, but the connection stays open until the upstream answers, or
// for lateAnswerWaits header timeouts at most, and the function Keep returns runs then. VictoriaMetrics computes a
// query to its end whether its client is there or not, so this is how long the query holds one of its slots.
type Keeper interface {
	Keep() (answered func())
}

type keeperKey struct{}

// WithKeeper returns ctx with k, which a request sent with the context tells of its header timeout.
func WithKeeper(ctx context.Context, k Keeper) context.Context {
	return context.WithValue(ctx, keeperKey{}, k)
}

// IsKeeperKey reports whether key is the one WithKeeper puts its Keeper under: a Context of the caller's own
// type that answers it with a Keeper carries one as WithKeeper's would, without a context of its own.
func IsKeeperKey(key any) bool {
	_, ok := key.(keeperKey)
	return ok
}

// KeeperFrom returns the Keeper of ctx, if it has one.
func KeeperFrom(ctx context.Context) (Keeper, bool) {
	k, ok := ctx.Value(keeperKey{}).(Keeper)
	return k, ok
}

// lateAnswerWaits bounds the wait for an answer after its header timeout, in header timeouts.
const lateAnswerWaits = 10

// awaitLate waits for the head of pc's late answer to a request of method, then closes pc and runs answered; the
// answer is never read. It outlives the request's handler, so it keeps the method alone: the server reuses a request's
// header map for its connection's next request (h1), which may be another team's.
func (c *Client) awaitLate(pc *conn, method string, answered func()) {
	defer answered()
	pc.setDeadline(time.Now().Add(lateAnswerWaits * c.headerTimeout))
	_, _, _ = readResponse(pc.br, &http.Request{Method: method})
	_ = pc.nc.Close()
	pc.br.Reset(nil)
	readBuffers.Put(pc.br)
	pc.br = nil
}

// headerSlack is the share of the header timeout by which the wait for an answer's head may run late: the deadline
// is renewed only once it is that stale, not at every request of a busy connection (a deadline change costs a timer
// update in the runtime), as h1 renews its idle deadline.
const headerSlack = 16

// setHeaderDeadline bounds the wait for the answer's head to between the header timeout and a sixteenth more from
// now. The deadline the last answer left is kept when it falls in that span; wrap clears it only when the body
// needs the socket.
func (c *Client) setHeaderDeadline(pc *conn) {
	d := c.headerTimeout
	if d <= 0 {
		pc.clearDeadline()
		return
	}
	earliest := time.Now().Add(d)
	latest := earliest.Add(d / headerSlack)
	if pc.deadline && !pc.headerDeadline.IsZero() && !pc.headerDeadline.Before(earliest) && !pc.headerDeadline.After(latest) {
		return
	}
	_ = pc.nc.SetReadDeadline(latest)
	pc.deadline, pc.headerDeadline = true, latest
}

// readAnswer reads the final answer's headers, passing informational ones to the request's trace (the forward
// step passes them on to the client), as the Transport does.
func (c *Client) readAnswer(ctx context.Context, pc *conn, req *http.Request) (*framedAnswer, framing, error) {
	trace := httptrace.ContextClientTrace(ctx)
	for n := 0; ; n++ {
		a := new(framedAnswer)
		resp := &a.resp
		f, err := readResponseInto(resp, a.vals[:], pc.br, req)
		if err != nil {
			return nil, framing{}, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return a, f, nil
		}
		if n >= max1xx {
			return nil, framing{}, errors.New("too many 1xx informational responses")
		}
		// A 100 Continue is not passed on: the body it asks for has been sent, and the client had its own 100 from
		// the server when the body was first read.
		if resp.StatusCode != http.StatusContinue && trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, framing{}, err
			}
		}
	}
}

// framedAnswer is an answer, its body and the first values of its header, in one allocation.
type framedAnswer struct {
	resp http.Response
	body answerBody
	vals [headValues]string
}

// wrap ties the body of a's answer, framed as f, to pc: the connection is pooled again at the body's end.
func (c *Client) wrap(pc *conn, a *framedAnswer, f framing, stop func() bool) (*http.Response, error) {
	resp := &a.resp
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop()
		pc.clearDeadline()
		resp.Body = &upgraded{pc: pc}
		return resp, nil
	}
	b := &a.body
	*b = answerBody{c: c, pc: pc, br: pc.br, stop: stop, reusable: !resp.Close, framing: f, resp: resp}
	if f.kind == bodyNone {
		b.finish(true)
		return resp, nil
	}
	if f.kind != bodyLength || int64(pc.br.Buffered()) < f.remaining {
		// The body needs the socket: the head's deadline must not cut a long export.
		pc.clearDeadline()
	}
	if f.kind == bodyChunked {
		b.chunked = httputil.NewChunkedReader(pc.br)
	}
	resp.Body = b
	return resp, nil
}

// answerBody is an answer's body on its connection, framed as its head said; the forward step reads and closes it
// from one goroutine.
type answerBody struct {
	framing
	c        *Client
	pc       *conn
	br       *bufio.Reader // pc's until the body's end, when a pooled pc gives it back
	stop     func() bool
	chunked  io.Reader      // net/http's chunked reader; the trailer after it is readTrailer's
	resp     *http.Response // whose Trailer a chunked body's trailer fills
	reusable bool
	done     bool
}

func (b *answerBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	var n int
	var err error
	switch b.kind {
	case bodyLength:
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			// The end comes with the last bytes: the connection is pooled before the caller reads again.
			b.finish(true)
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	case bodyChunked:
		n, err = b.chunked.Read(p)
		if err == io.EOF {
			if terr := readTrailer(b.br, b.resp); terr != nil {
				err = terr
			}
		}
	default:
		n, err = b.br.Read(p)
	}
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *answerBody) Close() error {
	if !b.done {
		// Closed before its end: the rest of the answer is still on the connection.
		b.finish(false)
	}
	return nil
}

func (b *answerBody) finish(complete bool) {
	b.done = true
	if b.stop() && complete && b.reusable {
		b.c.put(b.pc)
		return
	}
	_ = b.pc.nc.Close()
}

// connWriter is the writing side of a connection, which keeps its last error (Request.Write hides the errors of
// writing a body behind its own type) and counts what the request put on the connection (a held body is resent
// only when nothing went out).
type connWriter struct {
	nc  net.Conn
	err error
	n   int64
	// aw is nc when it can write and then await the answer (a plain TCP connection through sockio); await asks
	// the next write to.
	aw interface {
		WriteAwait(p []byte, quiet bool) (int, error)
	}
	await bool
	// checkQuiet: the connection was taken from the pool unchecked (get's deferQuiet); the next write first makes
	// sure it is quiet, and writes nothing (sockio.ErrNotQuiet) if not. peek tells whether the connection is still
	// quiet, before it is reused.
	checkQuiet bool
	peek       *peeker
}

func (w *connWriter) Write(p []byte) (int, error) {
	var n int
	var err error
	check := w.checkQuiet
	w.checkQuiet = false
	switch {
	case w.await && w.aw != nil:
		n, err = w.aw.WriteAwait(p, check)
	case check && !w.peek.quiet():
		err = sockio.ErrNotQuiet
	default:
		n, err = w.nc.Write(p)
	}
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// ReadFrom copies a body through Write with a pooled buffer, where bufio would copy it 4 KiB at a time.
func (w *connWriter) ReadFrom(r io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	return io.CopyBuffer(writeOnly{w}, r, *bp)
}

type writeOnly struct{ io.Writer }

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// readBuffers are the read buffers of the connections in use: a connection takes one when it is dialled or taken
// from the pool, and gives it back when it is pooled, so that up to maxIdlePerHost idle connections per upstream
// cost no buffer memory.
var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

func readBuffer(nc net.Conn) *bufio.Reader {
	br := readBuffers.Get().(*bufio.Reader)
	br.Reset(nc)
	return br
}

// upgraded is a 101 answer's connection, handed to the forward step to copy both ways.
type upgraded struct{ pc *conn }

func (u *upgraded) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgraded) Write(p []byte) (int, error) { return u.pc.nc.Write(p) }
func (u *upgraded) Close() error                { return u.pc.nc.Close() }

// get returns an idle connection to key that is still quiet, or a new one. With deferQuiet an idle connection is
// not peeked at here: its writer checks it before the request's first byte (connWriter.checkQuiet), as it checks
// a new plain one.
func (c *Client) get(ctx context.Context, key poolKey, fresh, deferQuiet bool) (*conn, error) {
	if !fresh {
		now := time.Now()
		for {
			c.mu.Lock()
			cs := c.idle[key]
			if len(cs) == 0 {
				c.mu.Unlock()
				break
			}
			pc := cs[len(cs)-1]
			cs[len(cs)-1] = nil
			c.idle[key] = cs[:len(cs)-1]
			c.mu.Unlock()
			if now.Sub(pc.idleAt) < idleTimeout && (deferQuiet || pc.cw.peek.quiet()) {
				pc.reused = true
				pc.cw.checkQuiet = deferQuiet
				pc.br = readBuffer(pc.nc)
				return pc, nil
			}
			_ = pc.nc.Close()
		}
	}
	pc, err := c.dial(ctx, key)
	if err == nil && deferQuiet && pc.cw.aw != nil {
		// A new connection too may have ended before the first byte goes out (an upstream that closes what it
		// accepts, reading on), and an end that came before WriteAwait reset the poller would not wake its wait.
		// Only a plain TCP one: a new TLS connection's socket may hold the server's session tickets.
		pc.cw.checkQuiet = true
	}
	return pc, err
}

func (c *Client) dial(ctx context.Context, key poolKey) (*conn, error) {
	u := &url.URL{Scheme: key.scheme, Host: key.host}
	nc, err := c.dialer.DialContext(ctx, "tcp", canonicalAddr(u))
	if err != nil {
		return nil, err
	}
	nc = sockio.Wrap(nc)
	if key.scheme == "https" {
		tc := tls.Client(nc, c.tlsFor(u.Hostname()))
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = nc.Close()
			return nil, err
		}
		nc = tc
	}
	return newConn(nc, key), nil
}

// newConn is a connection to key, in use.
func newConn(nc net.Conn, key poolKey) *conn {
	cw := &connWriter{nc: nc}
	cw.aw, _ = nc.(interface {
		WriteAwait(p []byte, quiet bool) (int, error)
	})
	pc := &conn{nc: nc, br: readBuffer(nc), bw: bufio.NewWriterSize(cw, 4<<10), cw: cw, key: key}
	pc.closeNC = func() { _ = nc.Close() }
	cw.peek = newPeeker(nc)
	return pc
}

// tlsFor is the TLS config for host: the server name is the host's unless -*.tlsServerName sets it.
func (c *Client) tlsFor(host string) *tls.Config {
	if c.tls.ServerName != "" {
		return c.tls
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg := c.tlsByHo[host]
	if cfg == nil {
		cfg = c.tls.Clone()
		cfg.ServerName = host
		c.tlsByHo[host] = cfg
	}
	return cfg
}

// put pools pc for the next request to its upstream; past the bound, or idle too long, connections are closed.
func (c *Client) put(pc *conn) {
	if pc.cw.peek == nil {
		// Its socket cannot be peeked at before reuse (not a unix one): an answer the upstream sent unasked would be
		// read as the next request's, so the connection is not reused at all.
		_ = pc.nc.Close()
		return
	}
	if pc.br.Buffered() != 0 {
		// Bytes past the answer's end: the upstream is confused, and its next answer would not be the next one.
		_ = pc.nc.Close()
		return
	}
	if tc, ok := pc.nc.(*tls.Conn); ok && !tlsDrained(pc, tc) {
		_ = pc.nc.Close()
		return
	}
	pc.br.Reset(nil)
	readBuffers.Put(pc.br)
	pc.br = nil
	now := time.Now()
	pc.idleAt = now
	c.mu.Lock()
	cs, drop := expire(c.idle[pc.key], now, nil)
	if len(cs) >= maxIdlePerHost {
		drop = append(drop, pc)
	} else {
		cs = append(cs, pc)
	}
	c.idle[pc.key] = cs
	if c.reaper == nil {
		c.reaper = time.AfterFunc(idleTimeout, c.reap)
	}
	c.mu.Unlock()
	for _, d := range drop {
		_ = d.nc.Close()
	}
}

// reap closes the connections idle past idleTimeout, and is armed again for the oldest one left.
func (c *Client) reap() {
	now := time.Now()
	var drop []*conn
	c.mu.Lock()
	oldest := now
	for key, cs := range c.idle {
		cs, drop = expire(cs, now, drop)
		if len(cs) == 0 {
			delete(c.idle, key)
			continue
		}
		c.idle[key] = cs
		if cs[0].idleAt.Before(oldest) {
			oldest = cs[0].idleAt
		}
	}
	if len(c.idle) == 0 {
		c.reaper = nil
	} else {
		// Not sooner than a second: a pool refilled at every instant would otherwise wake it at every instant.
		c.reaper.Reset(max(oldest.Add(idleTimeout).Sub(now), time.Second))
	}
	c.mu.Unlock()
	for _, d := range drop {
		_ = d.nc.Close()
	}
}

// expire moves the connections of cs idle past idleTimeout at now to drop. The oldest are first in cs (put appends,
// get takes the newest).
func expire(cs []*conn, now time.Time, drop []*conn) (keep, dropped []*conn) {
	i := 0
	for i < len(cs) && now.Sub(cs[i].idleAt) >= idleTimeout {
		i++
	}
	if i == 0 {
		return cs, drop
	}
	drop = append(drop, cs[:i]...)
	n := copy(cs, cs[i:])
	clear(cs[n:])
	return cs[:n], drop
}

// tlsDrained tells whether a TLS connection holds nothing past the answer that just ended. A later record read
// from the socket with the answer's last one sits in tls.Conn's own buffer, where neither the read buffer's
// Buffered nor quiet's peek at the socket sees it. A one-byte read through the tls.Conn with a deadline already
// passed takes such a record and otherwise ends at once with a timeout, without a syscall (the poller checks the
// deadline first) and without breaking the connection (crypto/tls does not keep a timeout as its error). The
// connection keeps the expired deadline, as after an answer that came whole: the next request sets its own after
// writing, or lifts it (conn.deadline). Plain connections have no such buffer and pay nothing.
func tlsDrained(pc *conn, tc *tls.Conn) bool {
	pc.setDeadline(expired)
	var one [1]byte
	n, err := tc.Read(one[:])
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// expired is a read deadline that has passed.
var expired = time.Unix(1, 0)

// canonicalAddr is u's host:port, the port from the scheme when the URL has none.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}
