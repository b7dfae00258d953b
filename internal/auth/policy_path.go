package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// claimPath names a claim inside a token's payload: the keys from the top-level object down, e.g.
// realm_access.roles or "kubernetes.io".serviceaccount.name.
type claimPath []string

const (
	// maxPathLen and maxPathSegments bound a claim path: real ones are a few segments of a few dozen bytes.
	maxPathLen      = 1024
	maxPathSegments = 32
)

// parseClaimPath reads a dot-separated claim path. A segment of letters, digits, '_' and '-' is written bare; any
// other segment (with dots, slashes, colons, spaces...) is double-quoted, with \" and \\ inside the quotes.
func parseClaimPath(s string) (claimPath, error) {
	if s == "" {
		return nil, errors.New("the claim path is empty")
	}
	if len(s) > maxPathLen {
		return nil, fmt.Errorf("the claim path is %d bytes long; at most %d are accepted", len(s), maxPathLen)
	}
	if !utf8.ValidString(s) {
		return nil, errors.New("the claim path is not valid UTF-8")
	}
	var p claimPath
	for i := 0; ; {
		if len(p) == maxPathSegments {
			return nil, fmt.Errorf("the claim path has more than %d segments", maxPathSegments)
		}
		var seg string
		if s[i] == '"' {
			end, val, err := quotedSegment(s, i)
			if err != nil {
				return nil, err
			}
			seg, i = val, end
		} else {
			j := i
			for j < len(s) && isBareChar(s[j]) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected %q at offset %d of the claim path %s: a segment with characters other than letters, digits, '_' and '-' must be double-quoted, as in \"kubernetes.io\".namespace", s[i:i+1], i, strconv.Quote(s))
			}
			seg, i = s[i:j], j
		}
		p = append(p, seg)
		if i == len(s) {
			return p, nil
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("unexpected %q at offset %d of the claim path %s: segments are separated by '.', and a segment with characters other than letters, digits, '_' and '-' must be double-quoted, as in \"kubernetes.io\".namespace", s[i:i+1], i, strconv.Quote(s))
		}
		i++
		if i == len(s) {
			return nil, fmt.Errorf("the claim path %s ends with '.'", strconv.Quote(s))
		}
	}
}

// quotedSegment reads the double-quoted segment starting at s[start]; it returns the offset after its closing quote.
func quotedSegment(s string, start int) (int, string, error) {
	var b strings.Builder
	for i := start + 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			if b.Len() == 0 {
				return 0, "", fmt.Errorf("empty quoted segment at offset %d of the claim path %s", start, strconv.Quote(s))
			}
			return i + 1, b.String(), nil
		case c == '\\':
			if i+1 == len(s) || (s[i+1] != '"' && s[i+1] != '\\') {
				return 0, "", fmt.Errorf("at offset %d of the claim path %s: inside quotes only \\\" and \\\\ are escapes", i, strconv.Quote(s))
			}
			i++
			b.WriteByte(s[i])
		case c < 0x20 || c == 0x7f:
			return 0, "", fmt.Errorf("control character at offset %d of the claim path %s", i, strconv.Quote(s))
		default:
			b.WriteByte(c)
		}
	}
	return 0, "", fmt.Errorf("unterminated quoted segment at offset %d of the claim path %s", start, strconv.Quote(s))
}

func isBareChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// String writes the path as parseClaimPath reads it, quoting only the segments that need it.
func (p claimPath) String() string {
	var b strings.Builder
	for i, seg := range p {
		if i > 0 {
			b.WriteByte('.')
		}
		bare := seg != ""
		for j := 0; j < len(seg) && bare; j++ {
			bare = isBareChar(seg[j])
		}
		if bare {
			b.WriteString(seg)
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(seg); j++ {
			if seg[j] == '"' || seg[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(seg[j])
		}
		b.WriteByte('"')
	}
	return b.String()
}

// lookup finds the claim at p. When there is none, missing names the shortest prefix of p that is absent or is
// not an object, so that messages can say which claim is missing.
func (p claimPath) lookup(claims map[string]any) (v any, missing string) {
	v, n := p.find(claims)
	if n == len(p) {
		return v, ""
	}
	if v != nil {
		return nil, fmt.Sprintf("%s is %s, not an object", p[:n], kindOf(v))
	}
	return nil, fmt.Sprintf("%s is missing", p[:n+1])
}

// find walks p down claims without allocating: it returns the claim and len(p), or the number of segments found
// and the value there when it is not an object (nil when the next segment is absent).
func (p claimPath) find(claims map[string]any) (any, int) {
	var cur any = claims
	for i, seg := range p {
		m, ok := cur.(map[string]any)
		if !ok {
			return cur, i
		}
		if cur, ok = m[seg]; !ok || cur == nil {
			return nil, i
		}
	}
	return cur, len(p)
}

// scalarText is how a match compares a claim value: strings as they are, numbers and booleans by their JSON text.
func scalarText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	}
	return "", false
}

// kindOf names the JSON type of a claim value without its content: messages to clients never carry claim values.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("a %T", v)
}
