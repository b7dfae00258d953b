// Package httpsyntax holds the small pieces of HTTP/1.1 syntax that the gateway's server (internal/h1), its
// upstream client (internal/proxyclient) and its forward step each read: one definition, so that the three agree
// on what a token or a line is. Tokens in header values are golang.org/x/net/http/httpguts'.
package httpsyntax

import "strings"

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
