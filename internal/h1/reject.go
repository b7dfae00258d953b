package h1

import (
	"io"
	"net"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// reject answers a request the server refuses before any handler sees it, with the gateway's JSON error, and the
// connection closes: what follows on the wire cannot be trusted to be the next request.
func (c *conn) reject(re *requestError) {
	body := c.rejectBody(re.status, re.msg)
	bw := c.bw
	writeStatusLine(bw, re.status)
	_, _ = bw.WriteString("Connection: close\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nDate: ")
	_, _ = bw.Write(httpDate())
	_, _ = bw.WriteString("\r\nContent-Length: ")
	_, _ = bw.WriteString(itoa(len(body)))
	_, _ = bw.WriteString("\r\n\r\n")
	_, _ = bw.Write(body)
	// Its own bound, not WriteIdleTimeout's: the connection closes after it.
	c.out.idle = 0
	_ = c.rwc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = bw.Flush()
}

// rejectBody is the JSON error of a refusal, its message as the server's Rejected hook (if any) words it.
func (c *conn) rejectBody(status int, msg string) []byte {
	if f := c.srv.Rejected; f != nil {
		msg = f(status, msg)
	}
	return httperr.JSON(status, msg, "")
}

// looksLikeHTTP: the first bytes of a TLS record are those of a plain HTTP request.
func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH":
		return true
	}
	return false
}

func (c *conn) rejectPlain(nc net.Conn) {
	body := c.rejectBody(http.StatusBadRequest, "the client sent a plain HTTP request to an HTTPS listener: use https://")
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(nc, "HTTP/1.0 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\n"+
		"X-Content-Type-Options: nosniff\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+string(body))
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, nc)
	}
	_ = nc.Close()
}
