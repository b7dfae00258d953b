package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// switchProtocols joins the client's connection to the upstream's after a 101 answer to a protocol upgrade the
// client asked for, and copies both ways until one side ends. VictoriaMetrics upgrades nothing; this keeps what
// the gateway passed on before (httputil.ReverseProxy did the same).
func (u *upstream) switchProtocols(rw http.ResponseWriter, req *http.Request, res *http.Response) {
	reqUpType := upgradeType(req.Header)
	resUpType := upgradeType(res.Header)
	if !isPrint(resUpType) {
		u.fail(rw, req, fmt.Errorf("backend tried to switch to invalid protocol %q", resUpType))
		return
	}
	if !asciiEqualFold(reqUpType, resUpType) {
		u.fail(rw, req, fmt.Errorf("backend tried to switch protocol %q when %q was requested", resUpType, reqUpType))
		return
	}
	backConn, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		u.fail(rw, req, errors.New("internal error: 101 switching protocols response with non-writable body"))
		return
	}
	conn, brw, hijackErr := http.NewResponseController(rw).Hijack()
	if errors.Is(hijackErr, http.ErrNotSupported) {
		u.fail(rw, req, fmt.Errorf("can't switch protocols using non-Hijacker ResponseWriter type %T", rw))
		return
	}
	backConnCloseCh := make(chan bool)
	go func() {
		// The request's cancellation closes the upstream's side.
		select {
		case <-req.Context().Done():
		case <-backConnCloseCh:
		}
		_ = backConn.Close()
	}()
	defer close(backConnCloseCh)
	if hijackErr != nil {
		u.fail(rw, req, fmt.Errorf("Hijack failed on protocol switch: %v", hijackErr))
		return
	}
	defer conn.Close()

	copyHeader(rw.Header(), res.Header)
	res.Header = rw.Header()
	// Only the head: the body is backConn, copied below.
	res.Body = nil
	if err := res.Write(brw); err != nil {
		u.fail(rw, req, fmt.Errorf("response write: %v", err))
		return
	}
	if err := brw.Flush(); err != nil {
		u.fail(rw, req, fmt.Errorf("response flush: %v", err))
		return
	}
	errc := make(chan error, 1)
	go copyUpgraded(conn, backConn, errc)
	go copyUpgraded(backConn, conn, errc)
	// One side's end ends both: the deferred closes unblock the other copy.
	<-errc
}

var errCopyDone = errors.New("hijacked connection copy complete")

// copyUpgraded copies src to dst and, at src's end, closes dst's writing side when it has one.
func copyUpgraded(dst io.Writer, src io.Reader, errc chan<- error) {
	if _, err := io.Copy(dst, src); err != nil {
		errc <- err
		return
	}
	if wc, ok := dst.(interface{ CloseWrite() error }); ok {
		errc <- wc.CloseWrite()
		return
	}
	errc <- errCopyDone
}
