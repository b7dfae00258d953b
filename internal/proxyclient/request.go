package proxyclient

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
	"golang.org/x/net/http/httpguts"
)

// writeRequest writes req on bw as Request.Write does: the same request line, Host, User-Agent, framing headers,
// header fields and body framing, with the headers in map order rather than sorted. Request.Write formats with
// fmt, sorts the header keys and copies every value it cleans; here the head goes straight into the buffer. A
// request outside the plain case, where Request.Write does more (an IDN or otherwise unusual host, an opaque URL,
// CONNECT, Close, trailers, a transfer encoding other than chunked, a body of unknown length on a method that
// usually has none, which Request.Write probes, or a trace that watches the write), goes through Request.Write.
func writeRequest(bw *bufio.Writer, req *http.Request) (err error) {
	if !plainRequest(req) {
		return req.Write(bw)
	}
	defer func() {
		// Request.Write closes the body, whatever happens.
		if req.Body != nil {
			if cerr := req.Body.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	u := req.URL
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if containsCTL(path) || containsCTL(u.RawQuery) {
		// Request.Write's refusal.
		return req.Write(bw)
	}
	host := req.Host
	if host == "" {
		host = u.Host
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	// Request.Write's framing: a known length is sent as Content-Length, an unknown one (0 with a body means
	// unknown) chunked; no body is Content-Length: 0 for POST, PUT and PATCH only.
	cl := int64(0)
	chunked := false
	if body != nil {
		cl = req.ContentLength
		if len(req.TransferEncoding) == 1 || cl <= 0 {
			chunked, cl = true, -1
		}
	}

	_, _ = bw.WriteString(method)
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(path)
	if u.ForceQuery || u.RawQuery != "" {
		_ = bw.WriteByte('?')
		_, _ = bw.WriteString(u.RawQuery)
	}
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = bw.WriteString(host)
	_, _ = bw.WriteString("\r\n")
	ua := "Go-http-client/1.1"
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = v[0]
		}
	}
	if ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	switch {
	case chunked:
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	case cl > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		var b [20]byte
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(b[:0], cl, 10))
		_, _ = bw.WriteString("\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			// Request.Write drops what it cannot write.
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if body == nil {
		return nil
	}
	// The upstream may need the head before the body comes (a streamed import): it goes out at once, unless the
	// body fits beside it (a small body RoundTrip read whole), when both go in one write.
	if chunked || cl > int64(bw.Available()) {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	if chunked {
		return writeChunked(bw, body)
	}
	n, err := bw.ReadFrom(io.LimitReader(body, cl))
	if err != nil {
		return err
	}
	// More than the length said is read, as Request.Write reads it, only to report the mismatch.
	extra, err := io.Copy(io.Discard, body)
	if err != nil {
		return err
	}
	if n += extra; n != cl {
		return fmt.Errorf("http: ContentLength=%d with Body length %d", cl, n)
	}
	return nil
}

// plainRequest reports whether writeRequest writes req itself.
func plainRequest(req *http.Request) bool {
	u := req.URL
	if u == nil || u.Opaque != "" || req.Close || req.Method == http.MethodConnect || len(req.Trailer) > 0 {
		return false
	}
	if req.ContentLength != 0 && req.Body == nil {
		// Request.Write's error.
		return false
	}
	switch len(req.TransferEncoding) {
	case 0:
		if req.Body != nil && req.Body != http.NoBody && req.ContentLength <= 0 && lacksBody(req.Method) {
			return false
		}
	case 1:
		if req.TransferEncoding[0] != "chunked" {
			return false
		}
	default:
		return false
	}
	host := req.Host
	if host == "" {
		host = u.Host
	}
	for i := 0; i < len(host); i++ {
		if !plainHostByte[host[i]] {
			return false
		}
	}
	if t := httptrace.ContextClientTrace(req.Context()); t != nil && (t.WroteHeaderField != nil || t.WroteHeaders != nil || t.WroteRequest != nil) {
		return false
	}
	return true
}

// lacksBody are the methods for which Request.Write probes a body of unknown length before chunking it.
func lacksBody(method string) bool {
	switch method {
	case "GET", "HEAD", "DELETE", "OPTIONS", "PROPFIND", "SEARCH":
		return true
	}
	return false
}

// writeField writes one header field, its value cleaned as Request.Write cleans it: line breaks become spaces and
// surrounding white space goes.
func writeField(bw *bufio.Writer, k, v string) {
	if needsCleaning(v) {
		v = httpsyntax.NewlinesToSpaces(v)
		v = strings.Trim(v, " \t\n\r")
	}
	httpsyntax.WriteField(bw, k, v)
}

func needsCleaning(v string) bool {
	if v == "" {
		return false
	}
	if c := v[0]; c == ' ' || c == '\t' {
		return true
	}
	if c := v[len(v)-1]; c == ' ' || c == '\t' {
		return true
	}
	return strings.ContainsAny(v, "\r\n")
}

// writeChunked writes body in chunks of what each read gave, each flushed to the connection as it comes (a
// streamed import reaches the upstream as the client sends it), then the last chunk and an empty trailer.
func writeChunked(bw *bufio.Writer, body io.Reader) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	if _, err := io.CopyBuffer(chunkWriter{bw}, body, *bp); err != nil {
		return err
	}
	_, err := bw.WriteString("0\r\n\r\n")
	return err
}

// chunkWriter writes each Write as one chunk and flushes it.
type chunkWriter struct{ bw *bufio.Writer }

func (w chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		// An empty chunk would end the body.
		return 0, nil
	}
	var size [16]byte
	_, _ = w.bw.Write(strconv.AppendUint(size[:0], uint64(len(p)), 16))
	_, _ = w.bw.WriteString("\r\n")
	_, _ = w.bw.Write(p)
	if _, err := w.bw.WriteString("\r\n"); err != nil {
		return 0, err
	}
	if err := w.bw.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

func containsCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

var (
	// plainHostByte are the bytes of a valid Host header (net/http's set) but '%': a zone, which Request.Write
	// strips, or an escape.
	plainHostByte = byteSet("!$&'()*+,-.:;=[]_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
)

func byteSet(s string) (t [256]bool) {
	for i := 0; i < len(s); i++ {
		t[s[i]] = true
	}
	return t
}
