package h1

import (
	"io"
	"net"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"golang.org/x/net/http/httpguts"
)

// reject answers a request the server refuses before any handler sees it, with the gateway's JSON error, and the
// connection closes: what follows on the wire cannot be trusted to be the next request. r is the request as far as
// it was parsed, nil when its request line was not.
func (c *conn) reject(re *requestError, r *http.Request) {
	method, path := target(r)
	body, id := c.rejectBody(&Rejection{Status: re.status, Msg: re.msg, LogMsg: re.logMsg, Method: method, Path: path})
	bw := c.bw
	writeStatusLine(bw, re.status)
	if id != "" {
		_, _ = bw.WriteString("X-Request-Id: ")
		_, _ = bw.WriteString(id)
		_, _ = bw.WriteString("\r\n")
	}
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

// target is the method and path of a refused request for its Rejection, empty before its request line was read.
func target(r *http.Request) (method, path string) {
	if r == nil || r.URL == nil {
		return "", ""
	}
	return r.Method, r.URL.EscapedPath()
}

// rejectBody is the JSON error of a refusal and its request id, as the server's Rejected hook makes them.
func (c *conn) rejectBody(rej *Rejection) ([]byte, string) {
	f := c.srv.Rejected
	if f == nil {
		return httperr.JSON(rej.Status, rej.Msg, ""), ""
	}
	rej.RemoteAddr = c.remoteAddr
	body, id := f(rej)
	if !httpguts.ValidHeaderFieldValue(id) {
		// Not a header value the answer could carry: the hook's id goes only where its body put it.
		id = ""
	}
	return body, id
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
	const msg = "the client sent a plain HTTP request to an HTTPS listener: use https://"
	body, id := c.rejectBody(&Rejection{Status: http.StatusBadRequest, Msg: msg, LogMsg: msg})
	if id != "" {
		id = "X-Request-Id: " + id + "\r\n"
	}
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(nc, "HTTP/1.0 400 Bad Request\r\n"+id+"Connection: close\r\nContent-Type: application/json\r\n"+
		"X-Content-Type-Options: nosniff\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+string(body))
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, nc)
	}
	_ = nc.Close()
}
