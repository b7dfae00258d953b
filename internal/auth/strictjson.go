package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxJSONDepth bounds the nesting of a token's header, payload and vm_access string. Real claims nest a few levels
// (Keycloak's resource_access.<client>.roles is three); the bound keeps the key scan's recursion small.
const maxJSONDepth = 32

// duplicateKeyError is an object that has a key twice. encoding/json, and golang-jwt with it, silently keep the last
// value while other parsers keep the first: the issuer and the gateway could read two different claims from one
// signed token, so such a token is refused rather than read either way.
type duplicateKeyError struct {
	key  string
	path []string // from the innermost object outwards; reversed when printed
}

func (e *duplicateKeyError) Error() string {
	return fmt.Sprintf("the key %s appears twice (in %s)", quote(e.key), e.where())
}

// where names the object holding the duplicate: "the top-level object" or "the object at vm_access.extra_labels".
func (e *duplicateKeyError) where() string {
	if len(e.path) == 0 {
		return "the top-level object"
	}
	var sb strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		p := e.path[i]
		if i < len(e.path)-1 && !strings.HasPrefix(p, "[") {
			sb.WriteByte('.')
		}
		sb.WriteString(p)
	}
	return "the object at " + truncate(sb.String())
}

// duplicateKey is the rejection of a token whose doc (its header, its payload, a vm_access string) has a key twice.
func duplicateKey(doc string, dup *duplicateKeyError) *Error {
	return newError(reasonDuplicateKey, "%s has the key %s twice (in %s); JSON parsers disagree on which of the two "+
		"values counts, so the token is refused", doc, quote(dup.key), dup.where())
}

// decodeJSON decodes exactly one JSON value with numbers kept as json.Number, so that integers stay exact and
// floats are told apart from integers. Decode keeps the last of two equal keys without a word, so the text is then
// scanned for them (checkKeys): a key given twice in any object at any depth is a *duplicateKeyError.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	if err := checkKeys(b); err != nil {
		return nil, err
	}
	return v, nil
}

// checkKeys finds a key given twice in one object of b, which must be valid JSON (decodeJSON has decoded it), and
// refuses nesting deeper than maxJSONDepth. Keys are compared as Go decodes them ("\u0061" is "a", invalid UTF-8
// is U+FFFD), so no spelling of a key slips past. It allocates only for keys with escapes or non-ASCII bytes and for
// objects of more than smallObject keys.
func checkKeys(b []byte) error {
	var keys [2 * smallObject][]byte // enough for most tokens without growing
	s := keyScanner{b: b, keys: keys[:0]}
	return s.value(0)
}

// caseVariant returns a key of the top-level object of b, which must be valid JSON, that equals one of names
// without regard to case (Unicode simple folding, as encoding/json matches struct fields) but is not spelled as it;
// "" when there is none.
func caseVariant(b []byte, names ...string) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) != nil {
		return ""
	}
	for k := range top {
		for _, name := range names {
			if k != name && strings.EqualFold(k, name) {
				return k
			}
		}
	}
	return ""
}

// smallObject is the number of keys up to which an object's keys are compared one by one; larger objects use a map,
// so that the work stays linear in the size of the token.
const smallObject = 16

type keyScanner struct {
	b    []byte
	i    int
	keys [][]byte // the keys of the objects being scanned, innermost last
}

func (s *keyScanner) value(depth int) error {
	s.space()
	switch s.peek() {
	case 0:
		return io.ErrUnexpectedEOF
	case '{':
		return s.object(depth)
	case '[':
		if depth >= maxJSONDepth {
			return fmt.Errorf("the JSON nests deeper than %d levels", maxJSONDepth)
		}
		s.i++
		for n := 0; ; n++ {
			s.space()
			switch s.peek() {
			case 0:
				return io.ErrUnexpectedEOF
			case ']':
				s.i++
				return nil
			case ',':
				s.i++
			}
			if err := s.value(depth + 1); err != nil {
				var dup *duplicateKeyError
				if errors.As(err, &dup) {
					dup.path = append(dup.path, "["+strconv.Itoa(n)+"]")
				}
				return err
			}
		}
	case '"':
		s.str()
	default: // a number, true, false or null
		for s.i < len(s.b) && !isDelim(s.b[s.i]) {
			s.i++
		}
	}
	return nil
}

func (s *keyScanner) object(depth int) error {
	if depth >= maxJSONDepth {
		return fmt.Errorf("the JSON nests deeper than %d levels", maxJSONDepth)
	}
	s.i++
	first := len(s.keys)
	defer func() { s.keys = s.keys[:first] }()
	var seen map[string]struct{} // for objects of more than smallObject keys
	for {
		s.space()
		switch s.peek() {
		case 0:
			return io.ErrUnexpectedEOF
		case '}':
			s.i++
			return nil
		case ',':
			s.i++
			s.space()
		}
		if s.peek() != '"' {
			return fmt.Errorf("an object key at offset %d is not a string", s.i)
		}
		key := s.key()
		if seen != nil {
			if _, dup := seen[string(key)]; dup {
				return &duplicateKeyError{key: string(key)}
			}
			seen[string(key)] = struct{}{}
		} else {
			for _, k := range s.keys[first:] {
				if bytes.Equal(k, key) {
					return &duplicateKeyError{key: string(key)}
				}
			}
			s.keys = append(s.keys, key)
			if len(s.keys)-first > smallObject {
				seen = make(map[string]struct{}, 2*smallObject)
				for _, k := range s.keys[first:] {
					seen[string(k)] = struct{}{}
				}
			}
		}
		s.space()
		s.i++ // ':'
		if err := s.value(depth + 1); err != nil {
			var dup *duplicateKeyError
			if errors.As(err, &dup) {
				dup.path = append(dup.path, string(key))
			}
			return err
		}
	}
}

// key reads an object key as Go decodes it: the text between the quotes, or its decoded form when it has escapes
// or non-ASCII bytes.
func (s *keyScanner) key() []byte {
	raw := s.str()
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return raw // an unterminated string: cannot happen after decodeJSON
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= 0x80 {
			var k string
			if err := json.Unmarshal(raw, &k); err != nil {
				return raw // cannot happen: decodeJSON has decoded the text
			}
			return []byte(k)
		}
	}
	return raw[1 : len(raw)-1]
}

// str skips a string at s.i and returns it with its quotes.
func (s *keyScanner) str() []byte {
	start := s.i
	s.i++
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			s.i++
			return s.b[start:s.i]
		}
		s.i++
	}
	return s.b[start:]
}

// peek is the byte at s.i, or 0 at the end of the text.
func (s *keyScanner) peek() byte {
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *keyScanner) space() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isDelim(c byte) bool { return c == ',' || c == ']' || c == '}' || isSpace(c) }
