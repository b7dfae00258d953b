package proxyclient

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
	"golang.org/x/net/http/httpguts"
)

// maxHeadBytes bounds an answer's head (status line and header fields). VictoriaMetrics sends a few hundred bytes;
// an upstream that sends more than this is broken, and its connection is dropped.
const maxHeadBytes = 1 << 20

// errHeadTooLarge is the answer of an upstream whose head passes maxHeadBytes.
var errHeadTooLarge = errors.New("the upstream's answer head is larger than 1 MiB")

// errTrailerLine is a chunked answer's trailer with a line that does not end in CRLF, which net/http reads
// depending on what follows it.
var errTrailerLine = errors.New("malformed trailer after the upstream's chunked answer: a line without CRLF")

// headError is an answer head this client refuses: the connection it came on is never reused.
type headError struct{ msg string }

func (e *headError) Error() string { return "malformed answer from the upstream: " + e.msg }

func badHead(format string, args ...any) error { return &headError{fmt.Sprintf(format, args...)} }

// readResponse reads an answer's head from br for req and frames its body as http.ReadResponse does: the same
// Status, Header (with net/http's changes: Transfer-Encoding, a Connection: close and a chunked answer's Trailer
// taken out, Content-Length deduplicated, Pragma: no-cache copied to Cache-Control), ContentLength, Close,
// TransferEncoding and Trailer. It is stricter: besides what net/http refuses, it refuses an obs-folded line, a
// space before a field's colon, a Transfer-Encoding beside a Content-Length or in an HTTP/1.0 answer, a version
// other than HTTP/1.0 and 1.1, more than one space after it, a status code outside 100-999, control bytes in the
// reason phrase and a head past maxHeadBytes (and, after a chunked body, a trailer line without CRLF or a
// trailer past maxTrailerBytes). The head's text is one string that every value, the status and the keys
// already canonical are cut from. The body is set by the caller (wrap): Body is nil here for an answer that
// has one.
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, framing, error) {
	a := new(struct {
		resp http.Response
		vals [headValues]string
	})
	f, err := readResponseInto(&a.resp, a.vals[:], br, req)
	if err != nil {
		return nil, framing{}, err
	}
	return &a.resp, f, nil
}

// headValues is how many header fields an answer's head has room for beside its Response (vals): a
// VictoriaMetrics answer has six or seven.
const headValues = 8

// readResponseInto is readResponse into resp, which the caller allocated (with the answer's body: framedAnswer),
// with vals, allocated with it, backing the header's first values.
func readResponseInto(resp *http.Response, vals []string, br *bufio.Reader, req *http.Request) (framing, error) {
	head, err := readHead(br)
	if err != nil {
		return framing{}, err
	}
	resp.Request = req
	line, rest := httpsyntax.CutLine(head)
	if err := parseStatusLine(resp, line); err != nil {
		return framing{}, err
	}
	h, err := parseFields(rest, strings.Count(rest, "\n"), vals)
	if err != nil {
		return framing{}, err
	}
	resp.Header = h
	method := http.MethodGet
	if req != nil && req.Method != "" {
		method = req.Method
	}
	return frame(resp, method)
}

// readHead returns the head up to and including its blank line, consumed from br. A head within br's buffer is
// found there without a copy; a larger one is gathered line by line up to maxHeadBytes.
func readHead(br *bufio.Reader) (string, error) {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		for {
			i := bytes.IndexByte(buf[scanned:], '\n')
			if i < 0 {
				break
			}
			line := buf[scanned : scanned+i]
			scanned += i + 1
			if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
				head := string(buf[:scanned])
				_, _ = br.Discard(scanned)
				return head, nil
			}
		}
		if br.Buffered() == br.Size() {
			return readLongHead(br)
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil && br.Buffered() < len(buf)+1 {
			if err == io.EOF {
				// The upstream closed the connection before the head's end; as http.ReadResponse reports it,
				// which tells a connection closed while idle (deadConn).
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
}

// readLongHead gathers a head larger than the read buffer.
func readLongHead(br *bufio.Reader) (string, error) {
	var acc []byte
	lineStart := 0
	for {
		part, err := br.ReadSlice('\n')
		if len(acc)+len(part) > maxHeadBytes {
			return "", errHeadTooLarge
		}
		acc = append(acc, part...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			return "", io.ErrUnexpectedEOF
		case err != nil:
			return "", err
		}
		if n := len(acc) - lineStart; n == 1 || n == 2 && acc[lineStart] == '\r' {
			return string(acc), nil
		}
		lineStart = len(acc)
	}
}

// parseStatusLine reads "HTTP/1.x NNN reason".
func parseStatusLine(resp *http.Response, line string) error {
	proto, status, ok := strings.Cut(line, " ")
	if !ok {
		return badHead("status line %q", line)
	}
	switch proto {
	case "HTTP/1.1":
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		return badHead("version %q", proto)
	}
	if len(status) < 3 || len(status) > 3 && status[3] != ' ' {
		return badHead("status line %q", line)
	}
	code := 0
	for i := 0; i < 3; i++ {
		c := status[i]
		if c < '0' || c > '9' {
			return badHead("status code %q", status[:3])
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return badHead("status code %q", status[:3])
	}
	if !httpguts.ValidHeaderFieldValue(status[3:]) {
		return badHead("reason phrase in %q", line)
	}
	resp.Status, resp.StatusCode = status, code
	return nil
}

// parseFields reads the header fields of a head (after its status line, up to its blank line) into a new
// http.Header with canonical keys; n is the number of lines, which sizes the map up to a bound (a head of
// thousands of tiny fields is not worth a big allocation up front). The first values are stored in vals when it
// has room for n, which the caller allocated with what holds the header.
func parseFields(s string, n int, vals []string) (http.Header, error) {
	n = min(n, 64)
	h := make(http.Header, n)
	strs := vals
	if len(strs) < n {
		strs = make([]string, n)
	}
	for {
		line, rest := httpsyntax.CutLine(s)
		s = rest
		if line == "" {
			return h, nil
		}
		if c := line[0]; c == ' ' || c == '\t' {
			// An obs-folded line, which net/http joins to the one before: refused.
			return nil, badHead("folded header line %q", line)
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return nil, badHead("header line %q", line)
		}
		key := canonicalKey(line[:colon])
		if key == "" {
			return nil, badHead("header name %q", line[:colon])
		}
		v := line[colon+1:]
		if !httpguts.ValidHeaderFieldValue(v) {
			return nil, badHead("header value in %q", line)
		}
		v = strings.Trim(v, " \t")
		if vv, ok := h[key]; ok {
			h[key] = append(vv, v)
			continue
		}
		if len(strs) == 0 {
			h[key] = []string{v}
			continue
		}
		vv := strs[:1:1]
		strs = strs[1:]
		vv[0] = v
		h[key] = vv
	}
}

// canonicalKey is k in canonical form (http.CanonicalHeaderKey's), or "" when k is not a token. A key sent
// canonical, as most are, is k itself; one that is not is looked up among the common keys before it is copied.
func canonicalKey(k string) string {
	var b [64]byte
	key, _, ok := httpsyntax.CanonicalKey(k, b[:0], commonKeys)
	if !ok {
		return ""
	}
	return key
}

// commonKeys are the keys upstreams send that some send in lower case.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept-Ranges", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods", "Access-Control-Allow-Origin",
		"Cache-Control", "Connection", "Content-Encoding", "Content-Length", "Content-Type", "Date", "Etag",
		"Keep-Alive", "Last-Modified", "Location", "Pragma", "Server", "Trailer", "Transfer-Encoding", "Vary",
		"X-Content-Type-Options", "X-Server-Hostname",
	} {
		m[k] = k
	}
	return m
}()

// framing is how an answer's body is delimited on the connection.
type framing struct {
	kind      bodyKind
	remaining int64 // for bodyLength
}

type bodyKind uint8

const (
	bodyNone    bodyKind = iota
	bodyLength           // Content-Length bytes
	bodyChunked          // chunked, then trailers
	bodyToEOF            // until the upstream closes the connection
)

// frame sets resp's ContentLength, Close, TransferEncoding and Trailer from its header as net/http's readTransfer
// does for an answer to method, and returns how its body is delimited.
func frame(resp *http.Response, method string) (framing, error) {
	h := resp.Header
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	resp.Close = shouldClose(resp, h)

	chunked := false
	if te, ok := h["Transfer-Encoding"]; ok {
		delete(h, "Transfer-Encoding")
		if resp.ProtoMinor == 0 {
			// net/http ignores it; a confused upstream is not trusted with the framing.
			return framing{}, badHead("Transfer-Encoding in an HTTP/1.0 answer")
		}
		if len(te) != 1 || !httpsyntax.EqualFold(te[0], "chunked") {
			return framing{}, badHead("transfer encoding %q", te)
		}
		chunked = true
	}
	cls := h["Content-Length"]
	if len(cls) > 1 {
		for _, v := range cls[1:] {
			if v != cls[0] {
				return framing{}, badHead("differing Content-Length values %q", cls)
			}
		}
		cls = []string{cls[0]}
		h["Content-Length"] = cls
	}
	if chunked && len(cls) > 0 {
		// net/http drops the Content-Length; both framings in one answer is how responses are split.
		return framing{}, badHead("both Transfer-Encoding and Content-Length")
	}
	n := int64(-1)
	if len(cls) > 0 {
		v, err := strconv.ParseUint(cls[0], 10, 63)
		if err != nil {
			return framing{}, badHead("Content-Length %q", cls[0])
		}
		n = int64(v)
	}

	var err error
	if resp.Trailer, err = announcedTrailer(h, chunked); err != nil {
		return framing{}, err
	}
	if chunked {
		resp.TransferEncoding = []string{"chunked"}
	}
	noBody := method == http.MethodHead || resp.StatusCode < 200 || resp.StatusCode == 204 || resp.StatusCode == 304
	switch {
	case method == http.MethodHead:
		resp.ContentLength = n
	case noBody:
		resp.ContentLength = 0
	case chunked:
		resp.ContentLength = -1
	default:
		resp.ContentLength = n
	}
	switch {
	case noBody || resp.ContentLength == 0:
		resp.Body = http.NoBody
		return framing{kind: bodyNone}, nil
	case chunked:
		return framing{kind: bodyChunked}, nil
	case n > 0:
		return framing{kind: bodyLength, remaining: n}, nil
	default:
		// Neither length nor chunks: the body ends with the connection.
		resp.Close = true
		return framing{kind: bodyToEOF}, nil
	}
}

// shouldClose is net/http's: an HTTP/1.0 answer without keep-alive, or one with Connection: close, which an
// HTTP/1.1 answer loses from its header.
func shouldClose(resp *http.Response, h http.Header) bool {
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if resp.ProtoMinor == 0 {
		return hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	if hasClose {
		delete(h, "Connection")
	}
	return hasClose
}

// announcedTrailer is the Trailer field of a chunked answer, taken out of h, as the keys of the answer's
// Trailer, whose values come after the body.
func announcedTrailer(h http.Header, chunked bool) (http.Header, error) {
	vv, ok := h["Trailer"]
	if !ok || !chunked {
		return nil, nil
	}
	delete(h, "Trailer")
	var t http.Header
	for _, v := range vv {
		for _, k := range strings.Split(v, ",") {
			k = strings.Trim(k, " \t")
			if k == "" {
				continue
			}
			k = http.CanonicalHeaderKey(k)
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return nil, badHead("trailer key %q", k)
			}
			if t == nil {
				t = http.Header{}
			}
			t[k] = nil
		}
	}
	return t, nil
}

// maxTrailerBytes bounds a chunked answer's trailer section, as the read buffer bounded it under http.ReadResponse.
const maxTrailerBytes = 8 << 10

// readTrailer reads what follows a chunked body's last chunk: an empty line, or trailer fields (CRLF lines, up to
// maxTrailerBytes) that go into resp.Trailer as net/http puts them.
func readTrailer(br *bufio.Reader, resp *http.Response) error {
	if b, _ := br.Peek(2); len(b) == 2 && b[0] == '\r' && b[1] == '\n' {
		_, _ = br.Discard(2)
		return nil
	}
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		full := len(buf) >= maxTrailerBytes || len(buf) == br.Size()
		buf = buf[:min(len(buf), maxTrailerBytes)]
		for {
			i := bytes.IndexByte(buf[scanned:], '\n')
			if i < 0 {
				break
			}
			if i == 0 || buf[scanned+i-1] != '\r' {
				return errTrailerLine
			}
			scanned += i + 1
			if i == 1 {
				t, err := parseFields(string(buf[:scanned]), bytes.Count(buf[:scanned], []byte{'\n'}), nil)
				if err != nil {
					return err
				}
				_, _ = br.Discard(scanned)
				if resp.Trailer == nil {
					resp.Trailer = t
					return nil
				}
				for k, vv := range t {
					resp.Trailer[k] = vv
				}
				return nil
			}
		}
		if full {
			return errors.New("the upstream's trailer after a chunked answer is larger than 8 KiB")
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil && br.Buffered() < len(buf)+1 {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}
