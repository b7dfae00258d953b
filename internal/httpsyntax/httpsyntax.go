// Package httpsyntax holds the small pieces of HTTP/1.1 syntax that the gateway's server (internal/h1), its
// upstream client (internal/proxyclient) and its forward step each read: one definition, so that the three agree
// on what a token or a line is. Token bytes and tokens in header values are golang.org/x/net/http/httpguts'.
package httpsyntax

import (
	"bufio"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// EqualFold compares case-insensitively in ASCII only, as net/http compares tokens: a value with other letters
// that Unicode folds to ASCII ones ("chun\u212Aed", with a Kelvin sign) is another token, not "chunked".
func EqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// CutLine cuts the first line off s, without its LF or CRLF; rest is empty when s holds no LF.
func CutLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// NewlinesToSpaces turns the CRs and LFs of a header value into spaces, as net/http does before writing one.
func NewlinesToSpaces(v string) string { return newlines.Replace(v) }

var newlines = strings.NewReplacer("\n", " ", "\r", " ")

// WriteField writes the header line "k: v" as it stands (the caller has made k and v safe to write): one copy into
// bw's free space where it fits, which costs less than a write for each of its four pieces.
func WriteField(bw *bufio.Writer, k, v string) {
	if len(k)+len(v)+4 <= bw.Available() {
		line := append(bw.AvailableBuffer(), k...)
		line = append(line, ':', ' ')
		line = append(line, v...)
		line = append(line, '\r', '\n')
		_, _ = bw.Write(line)
		return
	}
	_, _ = bw.WriteString(k)
	_, _ = bw.WriteString(": ")
	_, _ = bw.WriteString(v)
	_, _ = bw.WriteString("\r\n")
}

// CanonicalKey returns the canonical form of the field name k (textproto's: "content-type" is "Content-Type"),
// k itself when it is canonical already, and false when k is not a token. A name to change is written in buf
// (grown when short), which is returned for the caller to keep; common interns the result when it holds it.
func CanonicalKey(k string, buf []byte, common map[string]string) (string, []byte, bool) {
	if k == "" {
		return "", buf, false
	}
	canonical := true
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !httpguts.IsTokenRune(rune(c)) {
			return "", buf, false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	if canonical {
		return k, buf, true
	}
	b := append(buf[:0], k...)
	upper = true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	if v, ok := common[string(b)]; ok {
		return v, b, true
	}
	return string(b), b, true
}

// IsUnreserved reports whether c is an RFC 3986 unreserved byte, which a URL path never needs escaped (net/url
// neither escapes nor unescapes it).
func IsUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}
