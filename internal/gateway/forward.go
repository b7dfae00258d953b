package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"golang.org/x/net/http/httpguts"
)

// The forward step: the request goes to the upstream's balancer and the answer streams back, as
// httputil.ReverseProxy (with Rewrite) forwarded it before, header for header, but without its deep copy of the
// request. The gateway owns the request the server handed it, which is not used again after the handler, so the
// outgoing request shares its header map and is changed in place; only the URL, which the balancer aims at a
// backend, is copied. What ReverseProxy did and this keeps:
//   - hop-by-hop headers go both ways: Connection and the headers it names, Proxy-Connection, Keep-Alive,
//     Proxy-Authenticate, Proxy-Authorization, TE (a client's "trailers" is passed on), Trailer,
//     Transfer-Encoding, Upgrade (a valid protocol upgrade asked for is passed on; a 101 answer is refused, as it
//     was, upgrade.go);
//   - Forwarded and the client's X-Forwarded-* are dropped; X-Forwarded-For, -Host and -Proto are set from the
//     connection; the URL's userinfo is cleared and unparsable query parameters are dropped;
//   - without a User-Agent the request goes with an empty one, not Go's;
//   - 1xx answers reach the client (the upstream client reports them to the request's trace);
//   - an answer without a length (exports, federate) or an event stream is flushed at once and after every read,
//     the others go through the server's buffer; the body is copied with the pooled 32 KiB buffers;
//   - an upstream body that breaks mid-answer aborts the client's response (http.ErrAbortHandler, recovered and
//     counted in ServeHTTP), so the client sees a broken answer and not a complete short one;
//   - trailers are passed on (VictoriaMetrics sends none; the cost of this is a length check per answer).

// forwarding is one request's forward step, allocated once for it: the outgoing request and its URL, the 1xx
// hook, the body wrappers and the values of the X-Forwarded-* headers.
type forwarding struct {
	out   http.Request
	url   url.URL
	rw    http.ResponseWriter
	trace httptrace.ClientTrace
	body  noopCloseBody
	// stats reads the stats at the end of a query answer (watchStats).
	stats statsTail
	// xf holds the values of X-Forwarded-For, -Host and -Proto and an empty User-Agent, each header a capped slice
	// of it.
	xf [4]string
	mu sync.Mutex
	// done: the round trip returned; a late 1xx from a transport goroutine must not touch the headers any more.
	done bool
}

// forward sends req to the upstream and the answer to rw. Failures before the answer's headers go to u.fail.
func (u *upstream) forward(rw http.ResponseWriter, req *http.Request, slot *hold) {
	f := &forwarding{rw: rw}
	f.trace.Got1xxResponse = f.got1xx
	f.out = *req.WithContext(httptrace.WithClientTrace(req.Context(), &f.trace))
	out := &f.out
	f.url = *req.URL
	outURL := &f.url
	out.URL = outURL
	if req.ContentLength == 0 {
		// A nil body can be resent by the balancer and the upstream client.
		out.Body = nil
	}
	if out.Body != nil {
		// The upstream client closes the body it is given, and the server's body must not be closed under a client
		// that is still to send it (100-continue); nor read once the handler has returned.
		f.body.rc = out.Body
		out.Body = &f.body
		defer f.body.Close()
	}
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.Close = false
	// Request trailers never go upstream: they arrive after the body, past every check of the head (a trailer
	// "Authorization" or "AccountID" would otherwise reach whatever merges trailers into headers).
	out.Trailer = nil

	h := out.Header
	upType := upgradeType(h)
	if !isPrint(upType) {
		u.fail(rw, req, fmt.Errorf("client tried to switch to invalid protocol %q", upType))
		return
	}
	// Read before the hop-by-hop headers go: the header map is the client's own.
	teTrailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHopHeaders(h, endToEnd)
	if teTrailers {
		h.Set("Te", "trailers")
	}
	if upType != "" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upType)
	}
	// Whatever the client claimed in Forwarded and X-Forwarded-* goes; the three are set from the connection. The
	// keys are canonical, so the map is written directly.
	delete(h, "Forwarded")
	if clientIP, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		f.xf[0] = clientIP
		h["X-Forwarded-For"] = f.xf[0:1:1]
	} else {
		delete(h, "X-Forwarded-For")
	}
	f.xf[1] = req.Host
	h["X-Forwarded-Host"] = f.xf[1:2:2]
	f.xf[2] = "http"
	if req.TLS != nil {
		f.xf[2] = "https"
	}
	h["X-Forwarded-Proto"] = f.xf[2:3:3]
	q, err := u.cleanQuery(outURL.RawQuery)
	if err != nil {
		httperr.Write(rw, err)
		return
	}
	outURL.RawQuery = q
	outURL.User = nil
	if _, ok := h["User-Agent"]; !ok {
		// Not Go's default User-Agent: the upstream sees the client's, or none.
		h["User-Agent"] = f.xf[3:4:4]
	}

	res, err := u.rt.RoundTrip(out)
	f.mu.Lock()
	f.done = true
	f.mu.Unlock()
	if err != nil {
		u.fail(rw, out, err)
		return
	}
	// The balancer's answer names the backend that gave it, until modifyResponse wraps the body.
	var from *backend
	if d, ok := res.Body.(*doneBody); ok {
		from = d.b
	}
	upgrade := res.StatusCode == http.StatusSwitchingProtocols
	if !upgrade {
		dropUpstreamOnly(res.Header)
	}
	if err := u.modifyResponse(res, &f.stats); err != nil {
		_ = res.Body.Close()
		u.fail(rw, out, err)
		return
	}
	if upgrade {
		u.refuseUpgrade(rw, out, res)
		return
	}
	// A read's slot at the backends (fairslots.go): from here the backend streams its answer, which a cut ends.
	if slot != nil {
		if u.set.runsOn(from) {
			slot.runsOn = true
			// A write deadline already past fails the write the client does not take, and every one after it.
			rc := http.NewResponseController(rw)
			slot.stop = func() { _ = rc.SetWriteDeadline(time.Unix(1, 0)) }
		}
		slot.answering.Store(time.Now().UnixNano())
	}
	dst := rw.Header()
	unCORS(dst)
	for k, vv := range res.Header {
		if len(dst[k]) == 0 {
			// The answer's header is not used again: its values are handed over, not copied.
			dst[k] = vv
			continue
		}
		dst[k] = append(dst[k], vv...)
	}
	// The upstream client reads the announced trailers' names into res.Trailer, not into the header.
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	rw.WriteHeader(res.StatusCode)

	err = copyAnswer(rw, res, slot)
	if err != nil {
		defer res.Body.Close()
		if cw := (*clientWriteError)(nil); slot != nil && slot.runsOn && errors.As(err, &cw) {
			drainAnswer(res.Body, slot)
		}
		// The headers are out: all that is left is to break the response, so the client does not take what it got
		// for the whole answer. ServeHTTP counts it and re-raises it for the server, which drops the connection.
		// (ReverseProxy aborted only under a net/http server, found by its context key; whatever server runs the
		// gateway must recover http.ErrAbortHandler, as ServeHTTP re-raises it anyway.)
		panic(http.ErrAbortHandler)
	}
	// Closed now, not deferred: the close reads the trailers.
	_ = res.Body.Close()
	if len(res.Trailer) > 0 {
		// Chunked, so that the trailers can follow; the server would give a short answer a Content-Length.
		_ = http.NewResponseController(rw).Flush()
	}
	if len(res.Trailer) == announced {
		copyHeader(dst, res.Trailer)
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// got1xx passes an informational answer to the client, while the round trip has not returned.
func (f *forwarding) got1xx(code int, header textproto.MIMEHeader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil
	}
	h := f.rw.Header()
	// The gateway's own headers (RateLimit-*, X-Request-Id) are in the map already and belong to the final answer;
	// the 1xx's go out with it alone, as clean as a final answer's.
	own := h.Clone()
	clear(h)
	copyHeader(h, http.Header(header))
	dropUpstreamOnly(h)
	f.rw.WriteHeader(code)
	clear(h)
	copyHeader(h, own)
	return nil
}

// copyAnswer copies the answer's body to rw with a pooled buffer. An answer without a length, or an event stream,
// is flushed at once (its headers) and after every read: an export or federate stream reaches the client as it
// comes. Returned are write errors and read errors other than the end of the body. The read slot h (nil: none) is
// freed as soon as the whole answer is in, before its last part goes to the client.
func copyAnswer(rw http.ResponseWriter, res *http.Response, h *hold) error {
	var rc *http.ResponseController
	if res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type")) {
		rc = http.NewResponseController(rw)
		_ = rc.Flush()
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var got int64
	for {
		nr, rerr := res.Body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			slog.Debug("the upstream's answer broke while it was copied to the client", "err", rerr)
		}
		got += int64(nr)
		if h != nil && (rerr == io.EOF || got == res.ContentLength) {
			// A body of known length is whole once that much is in, before the reader says so.
			h.f.answered(h)
		}
		if nr > 0 {
			if h != nil && h.stopped.Load() {
				return &clientWriteError{errCutToDrain}
			}
			var began int64
			if h != nil && h.runsOn {
				began = time.Now().UnixNano()
				h.writingSince.Store(began)
			}
			nw, werr := rw.Write(buf[:nr])
			if rc != nil {
				_ = rc.Flush()
			}
			if began != 0 {
				h.writingSince.Store(0)
				h.blocked.Add(time.Now().UnixNano() - began)
			}
			if werr != nil {
				return &clientWriteError{werr}
			}
			if nr != nw {
				return &clientWriteError{io.ErrShortWrite}
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
	}
}

// clientWriteError is an answer that failed on the client's side (it went away, or took nothing for too long), not
// the upstream's.
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

var errCutToDrain = errors.New("the answer was cut for another team's read; its rest is read and dropped")

// drained counts the answers read to their end for nobody (drainAnswer).
var drained = metrics.NewCounter(`vmgateway_read_backend_drained_total`)

// drainAnswer reads the rest of an answer whose client went away, or that was cut, and frees its slot h at its end:
// the backend (VictoriaMetrics before v1.110.0) goes on with it after its connection is closed, in its own slot,
// which the gateway must count as taken until then, or hand it to another team's read that the backend would then
// queue or refuse. Read as fast as the backend sends it, the answer frees the backend's slot soonest. The read ends
// with the backend's answer, which its own limits bound (-search.maxExportDuration), or with its connection.
func drainAnswer(body io.Reader, h *hold) {
	drained.Inc()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			h.drained.Store(time.Now().UnixNano())
		}
		if err == io.EOF {
			h.f.answered(h)
			return
		}
		if err != nil {
			slog.Debug("the upstream's answer broke while it was read to its end for a client that went away", "err", err)
			return
		}
	}
}

// isEventStream tells a Content-Type of Server-Sent Events, whose answers are flushed as they come.
func isEventStream(ct string) bool {
	if ct == "" {
		return false
	}
	base, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// noopCloseBody is the client's body as the upstream client sees it: its Close only ends the reads.
type noopCloseBody struct {
	rc     io.ReadCloser
	closed atomic.Bool
}

func (b *noopCloseBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errors.New("the request body was read after the request was forwarded")
	}
	return b.rc.Read(p)
}

func (b *noopCloseBody) Close() error {
	b.closed.Store(true)
	return nil
}

// hopHeaders are the hop-by-hop headers of RFC 2616, still removed although RFC 7230 has them named in Connection.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // non-standard, but libcurl sends it
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// endToEnd are the request headers the gateway read when it checked the request, or set itself: the upstream must
// read the body as the gateway read it (a form's type, its encoding and length, the identity encoding asked of costed
// answers) and log the request under the id the client and the access log see (X-Request-Id), so a client's
// Connection header cannot remove them (RFC 9110 7.6.1 forbids naming the first four there anyway).
var endToEnd = map[string]bool{"Content-Type": true, "Content-Length": true, "Content-Encoding": true, "Accept-Encoding": true, "X-Request-Id": true}

// dropUpstreamOnly removes from an answer's headers, final or informational, what is the upstream's alone: the
// headers of its connection to the gateway, and the backend's host, which VictoriaMetrics names in every answer (in
// Kubernetes its pod's name, which clients are not told; a review found it on every answer, and another on 103s).
func dropUpstreamOnly(h http.Header) {
	removeHopByHopHeaders(h, nil)
	delete(h, "X-Server-Hostname")
}

// removeHopByHopHeaders removes the headers of one connection, before a message goes on to the next.
// Headers in keep stay even when Connection names them.
func removeHopByHopHeaders(h http.Header, keep map[string]bool) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" && !keep[textproto.CanonicalMIMEHeaderKey(sf)] {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f)
	}
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// upgradeType is the protocol a request or answer asks to switch to, "" when none.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func isPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// cleanQuery is the URL query the upstream gets. One VictoriaMetrics would not read whole is refused:
// url.ParseQuery, which its HTTP server parses with, drops every arg of a query with more than maxArgs (Go
// 1.24.12, 1.25.6 and later), and so would the args the gateway added for the token (extra_label, match[],
// timeout) and the backend URL's own; a client padding its query up to the bound must not push them out (counted
// as url.ParseQuery counts, by separators). The parameters that cannot be parsed (a ';' separator, a bad escape)
// are dropped: the upstream must read the query the gateway checked, not its own reading of an ambiguous one.
func (u *upstream) cleanQuery(s string) (string, error) {
	if s == "" {
		return s, nil
	}
	// Searched byte by byte with the vectorised searches: a rewritten query is read here once more.
	params, clean := strings.Count(s, "&")+1, strings.IndexByte(s, ';') < 0
	for rest := s; clean; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			break
		}
		if i+2 >= len(rest) || !ishex(rest[i+1]) || !ishex(rest[i+2]) {
			clean = false
		}
		rest = rest[min(i+3, len(rest)):]
	}
	if n := params + u.backendArgs; n > maxArgs {
		return "", httperr.New(http.StatusBadRequest, fmt.Sprintf("the request would reach the %s upstream with %d URL query "+
			"args, counting those the gateway adds for the token and the backend URL's own; VictoriaMetrics reads at "+
			"most %d and would drop them all: send fewer args", u.kind, n, maxArgs))
	}
	if clean {
		return s, nil
	}
	v, _ := url.ParseQuery(s)
	return v.Encode(), nil
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
