package labelguard

// The JSON lines of /api/v1/import are scanned by hand after the grammar of fastjson, the parser VictoriaMetrics
// reads them with, and not with fastjson itself: its Parse builds a node of some 80 bytes per value, so a 16 MiB line
// of samples cost gigabytes and seconds of CPU for every team's requests, none of it counted by the Budget; and its
// Validate recurses without a depth limit, so a 16 MiB line of '[' would overflow the stack. The scanner holds no
// more than the line, a stack of 300 bits and the key it is comparing, and gives fastjson's answer for every line:
// a line fastjson refuses is refused here too, but for a blank one, passed on as it always was.

import (
	"bytes"

	"github.com/valyala/fastjson"
)

// jsonCounter counts the labels of the metric object of a JSON line as VictoriaMetrics reads it.
type jsonCounter struct {
	// key unescapes a short key that may be "metric" once unescaped, exactly as fastjson does (its own unescaping is
	// not exported); quoted holds the key between quotes for it.
	key    fastjson.Parser
	quoted []byte
}

// metricLen is the longest key that fastjson may unescape to "metric": six bytes of \u006d for each of its letters.
const metricLen = 6 * len("metric")

// labels counts the keys of the line's metric object that have a value (VictoriaMetrics skips an empty one, and
// refuses a value that is not a string). VictoriaMetrics takes the object fastjson's Get("metric") gives: the first
// member whose key is "metric" as written or, when none is, the first whose key unescapes to it.
func (c *jsonCounter) labels(line []byte) (int, bool) {
	s := line
	i := skipWS(s, 0)
	if i == len(s) {
		return 0, true
	}
	if s[i] != '{' {
		return 0, false
	}
	i = skipWS(s, i+1)
	if i < len(s) && s[i] == '}' {
		return 0, false
	}
	// plain is the metric object of a key written "metric", escaped the one of a key that unescapes to it.
	var plain, escaped struct {
		found, ok bool
		n         int
	}
	for {
		k, j, ok := memberKey(s, i)
		if !ok {
			return 0, false
		}
		i = j
		switch {
		case !plain.found && string(k) == "metric":
			plain.found = true
			plain.n, plain.ok, i, ok = metricLabels(s, i)
		case !plain.found && !escaped.found && c.unescapesToMetric(k):
			escaped.found = true
			escaped.n, escaped.ok, i, ok = metricLabels(s, i)
		default:
			i, ok = skipValue(s, i, 2)
		}
		if !ok {
			return 0, false
		}
		var more bool
		if i, more, ok = afterValue(s, i, '}'); !ok {
			return 0, false
		}
		if !more {
			break
		}
	}
	if skipWS(s, i) != len(s) {
		return 0, false
	}
	switch {
	case plain.found && plain.ok:
		return plain.n, true
	case !plain.found && escaped.found && escaped.ok:
		return escaped.n, true
	}
	return 0, false
}

// unescapesToMetric says whether fastjson would unescape the raw key k to "metric".
func (c *jsonCounter) unescapesToMetric(k []byte) bool {
	if len(k) > metricLen || bytes.IndexByte(k, '\\') < 0 {
		return false
	}
	c.quoted = append(append(append(c.quoted[:0], '"'), k...), '"')
	v, err := c.key.ParseBytes(c.quoted)
	if err != nil {
		return false
	}
	u, err := v.StringBytes()
	return err == nil && string(u) == "metric"
}

// metricLabels counts the labels of the value at s[i:], a member of the top-level object: it has labels only if it
// is an object of strings (ok), but any valid value is read to its end (valid), at j.
func metricLabels(s []byte, i int) (n int, ok bool, j int, valid bool) {
	if i == len(s) || s[i] != '{' {
		j, valid = skipValue(s, i, 2)
		return 0, false, j, valid
	}
	ok = true
	i = skipWS(s, i+1)
	if i < len(s) && s[i] == '}' {
		return 0, true, i + 1, true
	}
	for {
		_, i, valid = memberKey(s, i)
		if !valid {
			return 0, false, i, false
		}
		if i < len(s) && s[i] == '"' {
			end := stringEnd(s, i+1)
			if end < 0 {
				return 0, false, i, false
			}
			if end > i+1 {
				n++
			}
			i = end + 1
		} else {
			ok = false
			if i, valid = skipValue(s, i, 3); !valid {
				return 0, false, i, false
			}
		}
		var more bool
		if i, more, valid = afterValue(s, i, '}'); !valid {
			return 0, false, i, false
		}
		if !more {
			return n, ok, i, true
		}
	}
}

// skipWS returns the index of the first byte from s[i] on that is not the whitespace fastjson skips.
func skipWS(s []byte, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
		i++
	}
	return i
}

// memberKey reads an object member's key at s[i:] (past whitespace): the raw key and the index of its value.
func memberKey(s []byte, i int) (key []byte, j int, ok bool) {
	if i == len(s) || s[i] != '"' {
		return nil, i, false
	}
	end := stringEnd(s, i+1)
	if end < 0 {
		return nil, i, false
	}
	key = s[i+1 : end]
	i = skipWS(s, end+1)
	if i == len(s) || s[i] != ':' {
		return nil, i, false
	}
	return key, skipWS(s, i+1), true
}

// afterValue reads what follows a member or element at s[i:]: a comma (more, and j past its whitespace) or closer.
func afterValue(s []byte, i int, closer byte) (j int, more, ok bool) {
	i = skipWS(s, i)
	switch {
	case i == len(s):
		return i, false, false
	case s[i] == ',':
		return skipWS(s, i+1), true, true
	case s[i] == closer:
		return i + 1, false, true
	}
	return i, false, false
}

// stringEnd returns the index of the quote that ends the string whose body starts at s[i], or -1: the first quote
// after an even run of backslashes, as fastjson's parseRawString finds it.
func stringEnd(s []byte, i int) int {
	for {
		n := bytes.IndexByte(s[i:], '"')
		if n < 0 {
			return -1
		}
		q := i + n
		b := q
		for b > i && s[b-1] == '\\' {
			b--
		}
		if (q-b)%2 == 0 {
			return q
		}
		i = q + 1
	}
}

// scalarEnd returns the end of the number, true, false or null at s[i] (i < len(s)), or -1, as fastjson's parseValue
// reads one: a number is any run of digits, signs, dots and exponents, or an inf or nan of any case, signed or not.
func scalarEnd(s []byte, i int) int {
	switch s[i] {
	case 't':
		return literalEnd(s, i, "true")
	case 'f':
		return literalEnd(s, i, "false")
	case 'n':
		if j := literalEnd(s, i, "null"); j >= 0 {
			return j
		}
		if len(s)-i >= 3 && bytes.EqualFold(s[i:i+3], []byte("nan")) {
			return i + 3
		}
		return -1
	}
	j := i
	for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == '-' || s[j] == 'e' || s[j] == 'E' || s[j] == '+') {
		j++
	}
	if j < len(s) && (j == i || j == i+1 && (s[i] == '-' || s[i] == '+')) {
		if len(s)-j >= 3 && (bytes.EqualFold(s[j:j+3], []byte("inf")) || bytes.EqualFold(s[j:j+3], []byte("nan"))) {
			return j + 3
		}
		return -1
	}
	return j
}

func literalEnd(s []byte, i int, lit string) int {
	if len(s)-i >= len(lit) && string(s[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// skipValue reads the value at s[i:] (past whitespace), at nesting depth depth (the top-level value is at 1), and
// returns the index after it; ok is false where fastjson would fail, nesting past fastjson.MaxDepth included. The
// containers open are a stack of bits, not of calls.
func skipValue(s []byte, i, depth int) (j int, ok bool) {
	var objects [(fastjson.MaxDepth + 63) / 64]uint64
	// d is the depth of the innermost open container; the value read next is at d+1.
	base := depth - 1
	d := base
	for {
		// A value at depth d+1.
		if i == len(s) || d+1 > fastjson.MaxDepth {
			return i, false
		}
		switch s[i] {
		case '{', '[':
			object := s[i] == '{'
			d++
			if object {
				objects[(d-1)/64] |= 1 << ((d - 1) % 64)
			} else {
				objects[(d-1)/64] &^= 1 << ((d - 1) % 64)
			}
			i = skipWS(s, i+1)
			if i < len(s) && (object && s[i] == '}' || !object && s[i] == ']') {
				i++
				d--
				break
			}
			if object {
				if _, i, ok = memberKey(s, i); !ok {
					return i, false
				}
			}
			continue
		case '"':
			end := stringEnd(s, i+1)
			if end < 0 {
				return i, false
			}
			i = end + 1
		default:
			if i = scalarEnd(s, i); i < 0 {
				return 0, false
			}
		}
		// A value has ended: close the containers it ends, up to the next element or member.
		for {
			if d == base {
				return i, true
			}
			object := objects[(d-1)/64]&(1<<((d-1)%64)) != 0
			closer := byte(']')
			if object {
				closer = '}'
			}
			var more bool
			if i, more, ok = afterValue(s, i, closer); !ok {
				return i, false
			}
			if more {
				if object {
					if _, i, ok = memberKey(s, i); !ok {
						return i, false
					}
				}
				break
			}
			d--
		}
	}
}
