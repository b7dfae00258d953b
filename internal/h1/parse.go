package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
	"golang.org/x/net/http/httpguts"
)

// requestError is a request the server refuses itself: the status and what was wrong, for the client, and the
// same for a log without the pieces of the request it quotes (a header line may hold a token, a request line a
// query).
type requestError struct {
	status      int
	msg, logMsg string
}

func (e *requestError) Error() string { return e.msg }

// refusal is a requestError whose message quotes the request only through its string, []string and error args:
// the log's message has each of them as <elided>.
func refusal(status int, format string, args ...any) *requestError {
	safe := make([]any, len(args))
	for i, a := range args {
		switch a.(type) {
		case string, []string, error:
			safe[i] = "<elided>"
		default:
			safe[i] = a
		}
	}
	return &requestError{status, fmt.Sprintf(format, args...), fmt.Sprintf(format, safe...)}
}

func badRequest(format string, args ...any) *requestError {
	return refusal(http.StatusBadRequest, "cannot parse the HTTP request: "+format, args...)
}

// errHeadTooLarge is a request line and headers beyond MaxHeaderBytes.
var errHeadTooLarge = refusal(http.StatusRequestHeaderFieldsTooLarge, "the request line and headers are too large")

// readHead reads the request line and headers, up to and including the empty line, appending to buf (reused
// per connection); the first line read is the request line unless buf holds one already. The head is at most
// limit bytes. A line ends with LF, CRLF or bare LF alike (RFC 9112 2.2).
func readHead(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	lineStart := len(buf)
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > limit {
			return buf, errHeadTooLarge
		}
		buf = append(buf, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			if len(buf) > 0 && err == io.EOF {
				return buf, io.ErrUnexpectedEOF
			}
			return buf, err
		}
		line := buf[lineStart:]
		// The request line is never the end, even when empty (it is then refused as malformed).
		if lineStart > 0 && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			return buf, nil
		}
		lineStart = len(buf)
	}
}

// bufferedHead is the head readHead would read, without its copy, when br holds all of it within limit: a slice
// of br's buffer, consumed from br and valid until br's next read (parseRequest copies it into the request's
// string first). nil otherwise: readHead reads it, or refuses it.
func bufferedHead(br *bufio.Reader, limit int) []byte {
	buf, _ := br.Peek(br.Buffered())
	// The request line is never the end.
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		return nil
	}
	for start := i + 1; start < limit; {
		j := bytes.IndexByte(buf[start:], '\n')
		if j < 0 {
			return nil
		}
		end := start + j + 1
		if j == 0 || j == 1 && buf[start] == '\r' {
			if end > limit {
				return nil
			}
			_, _ = br.Discard(end)
			return buf[:end:end]
		}
		start = end
	}
	return nil
}

// parseRequest builds the request from its head, as net/http's ReadRequest and its server's checks do. The strings
// of the request point into one string holding the whole head. The header map comes from st when it is not nil,
// and the URL is u when u is not nil and the target is a plain path (parseTarget).
func parseRequest(r *http.Request, u *url.URL, head []byte, scratch *[]byte, st *headerStore) error {
	s := string(head)
	line, rest := httpsyntax.CutLine(s)
	method, rest1, ok1 := strings.Cut(line, " ")
	uri, proto, ok2 := strings.Cut(rest1, " ")
	if !ok1 || !ok2 {
		return badRequest("malformed request line %q", clip(line))
	}
	if !httpguts.ValidHeaderFieldName(method) {
		return badRequest("invalid method %q", clip(method))
	}
	major, minor, ok := parseHTTPVersion(proto)
	if !ok {
		return badRequest("malformed HTTP version %q", clip(proto))
	}
	r.Method, r.RequestURI, r.Proto, r.ProtoMajor, r.ProtoMinor = method, uri, proto, major, minor
	rawURL := uri
	justAuthority := method == http.MethodConnect && !strings.HasPrefix(uri, "/")
	if justAuthority {
		rawURL = "http://" + uri
	}
	u, err := parseTarget(rawURL, u)
	if err != nil {
		return badRequest("malformed request target: %s", clipErr(err))
	}
	if justAuthority {
		u.Scheme = ""
	}
	r.URL = u

	h, err := parseHeader(rest, scratch, st, false)
	if err != nil {
		return err
	}
	r.Header = h
	hosts, haveHost := h["Host"]
	if len(hosts) > 1 {
		return badRequest("too many Host headers")
	}
	r.Host = u.Host
	if r.Host == "" && len(hosts) == 1 {
		r.Host = hosts[0]
	}
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	conn := h["Connection"]
	if major == 1 && minor == 0 {
		r.Close = httpguts.HeaderValuesContainsToken(conn, "close") || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	} else {
		r.Close = httpguts.HeaderValuesContainsToken(conn, "close")
	}
	if err := parseFraming(r); err != nil {
		return err
	}
	if major != 1 {
		if major == 2 && method == "PRI" {
			return refusal(http.StatusHTTPVersionNotSupported, "HTTP/2 is not served here: the gateway speaks HTTP/1.1; "+
				"connect without HTTP/2 prior knowledge (over TLS, ALPN offers only http/1.1)")
		}
		return refusal(http.StatusHTTPVersionNotSupported, "unsupported protocol version %q: send HTTP/1.1", clip(proto))
	}
	if minor >= 1 && !haveHost && method != http.MethodConnect {
		return badRequest("missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return badRequest("malformed Host header")
	}
	delete(h, "Host")
	return nil
}

// parseTarget is url.ParseRequestURI(target), into u when u is not nil and target is a plain path (with any query):
// one whose path has only unreserved bytes and slashes, which net/url takes as it is (no unescaping, no RawPath).
// The URL is then no allocation of its own (u is the connection's exchange's); any other target goes to net/url.
func parseTarget(target string, u *url.URL) (*url.URL, error) {
	if u == nil || target == "" || target[0] != '/' {
		return url.ParseRequestURI(target)
	}
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		if c := path[i]; !httpsyntax.IsUnreserved(c) && c != '/' {
			return url.ParseRequestURI(target)
		}
	}
	for i := 0; i < len(query); i++ {
		// net/url refuses control bytes anywhere in the target.
		if c := query[i]; c < ' ' || c == 0x7f {
			return url.ParseRequestURI(target)
		}
	}
	// As net/url: a lone '?' at the end is ForceQuery with an empty query; the query is everything after the first '?'.
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return u, nil
}

// maxHeaderHint is the most header lines parseHeader allocates room for up front; more grow the map as needed.
const maxHeaderHint = 32

// headerStore is what a connection keeps of one request's header for the next: the map, emptied, and the array
// that backs the single values. Only maps of up to maxHeaderHint fields are kept, so a request with many does
// not make every later one clear a large table.
type headerStore struct {
	h      http.Header
	values []string
}

func (st *headerStore) take(n int) (http.Header, []string) {
	if st == nil {
		return make(http.Header, n), make([]string, n)
	}
	if st.h == nil || len(st.h) > maxHeaderHint {
		st.h = make(http.Header, n)
	} else {
		clear(st.h)
	}
	if st.values == nil {
		st.values = make([]string, maxHeaderHint)
	}
	return st.h, st.values[:n]
}

// parseHeader reads the header lines of s (the head after the request line) as textproto does: obs-fold
// continuation lines are joined to their field with a space; names must be tokens, values free of controls. The
// map comes from st (emptied) when it is not nil. A trailer's names may hold spaces, kept as sent: textproto takes
// them (go.dev/issue/34540), and net/http refuses them only in the head.
func parseHeader(s string, scratch *[]byte, st *headerStore, trailer bool) (http.Header, error) {
	// The line count sizes the map and the values in one allocation each, but only up to what a real client sends:
	// a head of a million empty or invalid lines must cost no more than its bytes before the first one is refused.
	n := min(strings.Count(s, "\n"), maxHeaderHint)
	h, values := st.take(n)
	if len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		return nil, badRequest("malformed header: the first header line starts with a space")
	}
	for {
		var line string
		line, s = httpsyntax.CutLine(s)
		if line == "" {
			return h, nil
		}
		if strings.IndexByte(line, ':') < 0 {
			return nil, badRequest("malformed header line %q: missing colon", clip(line))
		}
		line = trimOWS(line)
		if len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
			// obs-fold: rare, so built in a new string.
			b := append((*scratch)[:0], line...)
			for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
				var cont string
				cont, s = httpsyntax.CutLine(s)
				b = append(b, ' ')
				b = append(b, trimOWS(cont)...)
			}
			*scratch = b
			line = string(b)
		}
		k, v, _ := strings.Cut(line, ":")
		key, ok := canonicalKey(k, scratch)
		if !ok && trailer {
			key, ok = k, tokenWithSpaces(k)
		}
		if !ok {
			return nil, badRequest("malformed header name %q", clip(k))
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, badRequest("invalid character %q in the value of header %q", c, clip(key))
			}
		}
		// Left only: an obs-fold joins a continuation with a space that stays at the value's end, as in textproto.
		// Not strings.TrimLeft: it builds its set of bytes on every call.
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		if vv, ok := h[key]; ok {
			h[key] = append(vv, v)
		} else if len(values) > 0 {
			values[0] = v
			h[key], values = values[:1:1], values[1:]
		} else {
			h[key] = []string{v}
		}
	}
}

// parseFraming applies Transfer-Encoding and Content-Length as net/http does (RFC 9112 6): chunked wins over a
// Content-Length, which must still be valid; several Content-Length values must agree; Transfer-Encoding on
// HTTP/1.0 is ignored.
func parseFraming(r *http.Request) error {
	h := r.Header
	chunked := false
	if te, ok := h["Transfer-Encoding"]; ok {
		delete(h, "Transfer-Encoding")
		if r.ProtoAtLeast(1, 1) {
			if len(te) != 1 {
				return refusal(http.StatusNotImplemented, "unsupported Transfer-Encoding: %d Transfer-Encoding headers; "+
					"a request body may only be sent with Content-Length or a single Transfer-Encoding: chunked", len(te))
			}
			if !httpsyntax.EqualFold(te[0], "chunked") {
				return refusal(http.StatusNotImplemented, "unsupported Transfer-Encoding %q: "+
					"a request body may only be sent with Content-Length or a single Transfer-Encoding: chunked", clip(te[0]))
			}
			chunked = true
		}
	}
	var n int64
	cls := h["Content-Length"]
	if len(cls) > 1 {
		first := trimSpace(cls[0])
		for _, cl := range cls[1:] {
			if trimSpace(cl) != first {
				return badRequest("several Content-Length headers that differ: %q", clipAll(cls))
			}
		}
		cls = cls[:1:1]
		cls[0] = first
		h["Content-Length"] = cls
	}
	if len(cls) > 0 {
		cl := trimSpace(cls[0])
		v, err := strconv.ParseUint(cl, 10, 63)
		if err != nil {
			return badRequest("bad Content-Length %q: send a decimal number of bytes", clip(cl))
		}
		n = int64(v)
	}
	if chunked {
		delete(h, "Content-Length")
		n = -1
		r.TransferEncoding = []string{"chunked"}
	}
	r.ContentLength = n
	if tr, ok := h["Trailer"]; ok && chunked {
		delete(h, "Trailer")
		var trailer http.Header
		for _, v := range tr {
			for _, f := range strings.Split(v, ",") {
				f = trimSpace(f)
				if f == "" {
					continue
				}
				key := http.CanonicalHeaderKey(f)
				switch key {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return badRequest("bad trailer key %q", key)
				}
				if trailer == nil {
					trailer = make(http.Header)
				}
				trailer[key] = nil
			}
		}
		r.Trailer = trailer
	}
	return nil
}

// canonicalKey returns the canonical form of a header name, a substring of the head when it is canonical
// already; false when k is not a token. scratch is the connection's buffer for names to change.
func canonicalKey(k string, scratch *[]byte) (string, bool) {
	key, b, ok := httpsyntax.CanonicalKey(k, *scratch, commonKeys)
	*scratch = b
	return key, ok
}

func tokenWithSpaces(k string) bool {
	if k == "" {
		// textproto refuses an empty name (":x") in a trailer as in the head.
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] != ' ' && !httpguts.IsTokenRune(rune(k[i])) {
			return false
		}
	}
	return true
}

// commonKeys interns the canonical names clients often send in lower case (HTTP/2-minded clients, curl -H).
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control", "Connection",
		"Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Expect", "Host", "If-Modified-Since", "If-None-Match",
		"Origin", "Pragma", "Referer", "Transfer-Encoding", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "Te", "Trailer", "Upgrade", "Accept-Charset", "Content-Range", "Range"} {
		m[k] = k
	}
	return m
}()

func parseHTTPVersion(v string) (int, int, bool) {
	switch v {
	case "HTTP/1.1":
		return 1, 1, true
	case "HTTP/1.0":
		return 1, 0, true
	}
	if len(v) != len("HTTP/X.Y") || !strings.HasPrefix(v, "HTTP/") || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// trimSpace is textproto.TrimString: spaces, tabs, CR and LF, around a Content-Length or a list element.
func trimSpace(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// trimOWS trims spaces and tabs around a header line, as textproto does; a CR left is refused as a value byte.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// clip bounds what an error message quotes of the client's request.
func clip(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func clipAll(ss []string) []string {
	out := make([]string, 0, min(len(ss), 4))
	for i, s := range ss {
		if i == 4 {
			break
		}
		out = append(out, clip(s))
	}
	return out
}

func clipErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return clip(ue.Err.Error())
	}
	return clip(err.Error())
}
