package server

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// net/http answers a request it cannot parse (a malformed head, a bad Content-Length, an unsupported
// Transfer-Encoding, headers beyond its cap) before any handler runs, with a plain-text body. On plain listeners the
// server rewrites those answers into the JSON error every other refusal has, as they leave the connection: net/http
// writes each of them in one Write straight to the connection, as a status line followed by exactly
// goErrorHeaders, an order its handler responses never have (their headers are sorted, Connection first, and carry
// a Date). TLS listeners keep net/http's plain answers: net/http needs the *tls.Conn itself.

var malformedRequests = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="malformed_request"}`)

// goErrorHeaders are the headers of net/http's own error answers (net/http server.go, conn.serve).
const goErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

type jsonErrorListener struct {
	net.Listener
	// headerCap is net/http's MaxHeaderBytes and limit -http.maxHeaderBytes, for the 431 message.
	headerCap, limit int
}

func (l *jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c, l: l}, nil
}

type jsonErrorConn struct {
	net.Conn
	l *jsonErrorListener
}

func (c *jsonErrorConn) Write(b []byte) (int, error) {
	out, ok := c.l.jsonAnswer(b)
	if !ok {
		return c.Conn.Write(b)
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// CloseWrite lets net/http half-close before it closes (a 431 answer), as it does on a bare TCP connection.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps net/http's sendfile/splice path for responses copied from files or connections.
func (c *jsonErrorConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// jsonAnswer returns the JSON form of b when b is one of net/http's own error answers.
func (l *jsonErrorListener) jsonAnswer(b []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	if len(b) < len(proto)+3 || string(b[:len(proto)]) != proto || b[len(proto)] < '4' {
		return nil, false
	}
	end := bytes.IndexByte(b, '\r')
	if end < 0 || !bytes.HasPrefix(b[end:], []byte(goErrorHeaders)) {
		return nil, false
	}
	code, err := strconv.Atoi(string(b[len(proto) : len(proto)+3]))
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	text := string(b[end+len(goErrorHeaders):])
	var msg string
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		headersTooLarge.Inc()
		limit := l.limit
		if limit <= 0 {
			limit = http.DefaultMaxHeaderBytes
		}
		msg = fmt.Sprintf("the request line and headers are larger than %d bytes; at most %d are accepted (-http.maxHeaderBytes): "+
			"send a shorter URL, fewer cookies or a smaller token", max(l.headerCap, http.DefaultMaxHeaderBytes), limit)
	case http.StatusNotImplemented:
		malformedRequests.Inc()
		msg = "unsupported Transfer-Encoding: a request body may only be sent with Content-Length or a single Transfer-Encoding: chunked"
	default:
		malformedRequests.Inc()
		// net/http's text is "400 Bad Request" or "400 Bad Request: <what>"; the what never echoes the request.
		detail := strings.TrimPrefix(text, strconv.Itoa(code)+" "+http.StatusText(code))
		detail = strings.TrimPrefix(detail, ": ")
		if detail == "" {
			detail = "malformed request line or headers"
		}
		msg = "cannot parse the HTTP request: " + detail
	}
	body := httperr.JSON(code, msg, "")
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: %d\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\r\n%s",
		code, http.StatusText(code), len(body), body), true
}
