package route

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// maxPathLen bounds a client path. Real API paths (pushgateway grouping labels included) stay far below it;
// anything longer is refused before any work is done on it.
const maxPathLen = 8192

// canonical returns the path VictoriaMetrics would route on: percent-escapes decoded exactly once, empty segments
// collapsed, "." and ".." resolved. A trailing slash is kept, since vmui tells "/vmui" from "/vmui/".
//
// Escapes that would make the gateway and VictoriaMetrics see different paths are refused: an encoded '/'
// (it would split a segment after the gateway classified it), '\' (some servers read it as '/'), NUL and other
// control characters, invalid escapes and invalid UTF-8. A ".." that climbs above the root is refused too.
func canonical(p string) (string, error) {
	if len(p) > maxPathLen {
		return "", errorf(http.StatusRequestURITooLong, "path of %d bytes is longer than the %d bytes vmgateway accepts: %s", len(p), maxPathLen, quote(p))
	}
	if p == "" || p[0] != '/' {
		return "", errorf(http.StatusBadRequest, "path %s must start with '/'", quote(p))
	}
	if isCanonical(p) {
		return p, nil
	}
	decoded, err := decode(p)
	if err != nil {
		return "", err
	}
	return resolve(decoded, p)
}

// isCanonical reports whether p is already canonical, so the common case costs one scan and no allocation.
func isCanonical(p string) bool {
	start := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if c := p[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '\\' {
				return false
			}
			continue
		}
		seg := p[start:i]
		if (seg == "" && i < len(p)) || seg == "." || seg == ".." {
			return false
		}
		start = i + 1
	}
	return true
}

func decode(p string) (string, error) {
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		escaped := c == '%'
		if escaped {
			if i+2 >= len(p) || unhex(p[i+1]) < 0 || unhex(p[i+2]) < 0 {
				return "", errorf(http.StatusBadRequest, "invalid percent-escape %s at byte %d of path %s", quote(p[i:min(i+3, len(p))]), i, quote(p))
			}
			c = byte(unhex(p[i+1])<<4 | unhex(p[i+2]))
			i += 2
		}
		switch {
		case c == '/' && escaped:
			return "", errorf(http.StatusBadRequest, "path %s contains an encoded '/' (%%2F): it would let VictoriaMetrics split a segment the gateway classified as one; send '/' unencoded", quote(p))
		case c == '\\':
			return "", errorf(http.StatusBadRequest, "path %s contains '\\', which some servers read as '/'; it is not allowed", quote(p))
		case c < ' ' || c == 0x7f:
			return "", errorf(http.StatusBadRequest, "path %s contains the control character %#02x; it is not allowed", quote(p), c)
		}
		b = append(b, c)
	}
	if !utf8.Valid(b) {
		return "", errorf(http.StatusBadRequest, "path %s is not valid UTF-8 after percent-decoding", quote(p))
	}
	return string(b), nil
}

// resolve collapses empty segments and resolves "." and ".." in an already decoded path (RFC 3986 section 5.2.4,
// except that ".." above the root is an error instead of being dropped: such a path is an attack, not a typo).
func resolve(p, orig string) (string, error) {
	out := make([]byte, 0, len(p)+1)
	for rest := p[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		switch seg {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", errorf(http.StatusBadRequest, "path %s climbs above the root with '..'", quote(orig))
			}
			out = out[:bytes.LastIndexByte(out, '/')]
		default:
			out = append(out, '/')
			out = append(out, seg...)
		}
		if !more {
			if seg == "" || seg == "." || seg == ".." || len(out) == 0 {
				out = append(out, '/')
			}
			return string(out), nil
		}
		rest = tail
	}
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// quote formats a client path for an error message, cut short so a hostile path cannot flood logs.
func quote(p string) string {
	const max = 256
	if len(p) > max {
		return fmt.Sprintf("%q...", p[:max])
	}
	return fmt.Sprintf("%q", p)
}
