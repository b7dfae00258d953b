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
// (Keycloak's resource_access.<client>.roles is three); the bound keeps the recursive decoder's stack small.
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
	sb.WriteString("the object at ")
	for i := len(e.path) - 1; i >= 0; i-- {
		p := e.path[i]
		if i < len(e.path)-1 && !strings.HasPrefix(p, "[") {
			sb.WriteByte('.')
		}
		sb.WriteString(p)
	}
	return truncate(sb.String())
}

// duplicateKey is the rejection of a token whose doc (its header, its payload, a vm_access string) has a key twice.
func duplicateKey(doc string, dup *duplicateKeyError) *Error {
	return newError(reasonDuplicateKey, "%s has the key %s twice (in %s); JSON parsers disagree on which of the two "+
		"values counts, so the token is refused", doc, quote(dup.key), dup.where())
}

// decodeJSON decodes exactly one JSON value with numbers kept as json.Number, so that integers stay exact and
// floats are told apart from integers. It walks the tokens itself rather than calling Decode, so that it sees every
// key: a key given twice in any object at any depth is a *duplicateKeyError.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF && depth > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxJSONDepth {
		return nil, fmt.Errorf("the JSON nests deeper than %d levels", maxJSONDepth)
	}
	if d == '[' {
		list := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				var dup *duplicateKeyError
				if errors.As(err, &dup) {
					dup.path = append(dup.path, "["+strconv.Itoa(len(list))+"]")
				}
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token() // ']'
		return list, err
	}
	// The object being built is the set of keys seen so far: finding duplicates costs one map lookup per key.
	m := make(map[string]any)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := kt.(string)
		if !ok {
			return nil, fmt.Errorf("an object key is %v, not a string", kt)
		}
		if _, dup := m[key]; dup {
			return nil, &duplicateKeyError{key: key}
		}
		v, err := decodeValue(dec, depth+1)
		if err != nil {
			var dup *duplicateKeyError
			if errors.As(err, &dup) {
				dup.path = append(dup.path, key)
			}
			return nil, err
		}
		m[key] = v
	}
	_, err = dec.Token() // '}'
	return m, err
}
