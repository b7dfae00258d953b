package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

var bodyStalls = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="write_body_stalled"}`)

// errBodyStalled ends the upstream request of a write whose client stopped sending its body.
var errBodyStalled = errors.New("the client stopped sending the request body")

// idleBody is a write body as it streams to the upstream. A client that sends no byte for the idle timeout gets
// its read failed: the transport then aborts the upstream request without ending the body, so VictoriaMetrics sees
// a broken request and not a shorter complete one, and the request's context is cancelled, so the request's
// concurrency slot is freed at once. A body the client framed wrong (a malformed chunk) is aborted the same way,
// and answered as the client's fault.
type idleBody struct {
	io.ReadCloser
	// rc is nil when there is no idle timeout to watch (none set, or a server without read deadlines).
	rc      *http.ResponseController
	idle    time.Duration
	cancel  context.CancelCauseFunc
	stalled atomic.Bool
	// refused is the answer for a body the client framed wrong (a malformed chunk) or one the label guard refused
	// while it streamed.
	refused atomic.Pointer[httperr.Error]
}

// streamWriteBody wraps r's body for the proxy; the returned func clears the connection's read deadline once the
// request is done. Without a deadline to set (none configured, another server, a test recorder), the body streams
// without an idle timeout.
func (g *Gateway) streamWriteBody(w http.ResponseWriter, r *http.Request) (*http.Request, func()) {
	if r.Body == nil || r.Body == http.NoBody {
		return r, func() {}
	}
	var rc *http.ResponseController
	d := g.limits.WriteBodyIdleTimeout
	if d > 0 {
		rc = http.NewResponseController(w)
		// Only probes for support: the deadline is set at each read, so only the client's silence counts, not the
		// time the proxy spends waiting for the upstream to take what it already read.
		if rc.SetReadDeadline(time.Time{}) != nil {
			rc = nil
		}
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	b := &idleBody{ReadCloser: r.Body, rc: rc, idle: d, cancel: cancel}
	// The proxy hands its error handler its own wrapper of the body; the context is what reaches it.
	r = r.WithContext(context.WithValue(ctx, idleBodyKey{}, b))
	r.Body = b
	return r, func() {
		cancel(nil)
		if rc != nil {
			_ = rc.SetReadDeadline(time.Time{})
		}
	}
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.rc != nil {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		// The server's background read of the idle connection must not time out while the upstream answers.
		if b.rc != nil {
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case b.rc != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.stalled.Store(true)
		bodyStalls.Inc()
		// Closed while the deadline has passed, so the server gives up on the rest of the body at once and closes the
		// connection after the 408, instead of waiting for the body before it answers.
		_ = b.ReadCloser.Close()
		b.cancel(errBodyStalled)
		return n, errBodyStalled
	case isFramingError(err):
		malformedBodies.Inc()
		b.refuse(httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot read the request body: %s; the upstream request was cancelled: "+
			"send the body with a valid Content-Length or chunked encoding", err)))
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The client closed its side before the end of the body (a half-close): it may still read the answer, which
		// must not blame the upstream, whose request was broken off as for a stall.
		malformedBodies.Inc()
		b.refuse(httperr.New(http.StatusBadRequest, "the request body ended before its announced length or its last chunk: "+
			"the client closed its side of the connection; the upstream request was cancelled: send the whole body"))
	}
	return n, err
}

// refuse ends the upstream request of a body that must not be sent whole; the client gets err.
func (b *idleBody) refuse(err *httperr.Error) {
	b.refused.CompareAndSwap(nil, err)
	b.cancel(err)
}

var malformedBodies = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="malformed_body"}`)

// isFramingError tells a body the client framed wrong (net/http's chunked reader: a bad chunk size or line end,
// a truncated chunk) from a connection that went away, which is not an answerable fault.
func isFramingError(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "chunk") || strings.Contains(s, "line too long")
}

type idleBodyKey struct{}

// stalledBody returns the 408 for a request whose write body stalled, the answer for one whose body was framed
// wrong or refused as it streamed, nil for others.
func stalledBody(r *http.Request) error {
	b, ok := r.Context().Value(idleBodyKey{}).(*idleBody)
	if !ok {
		return nil
	}
	if err := b.refused.Load(); err != nil {
		return err
	}
	if !b.stalled.Load() {
		return nil
	}
	return httperr.New(http.StatusRequestTimeout, fmt.Sprintf("the request body stalled: no byte came for -http.writeBodyIdleTimeout=%s; "+
		"the upstream request was cancelled: send the request again", b.idle))
}
