package gateway

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// The args of a rewritten request go out spliced: the names whose values the gateway changed, removed or added are
// encoded, the others keep the bytes the client sent. A name's args are kept only when all the values sent under
// it decode, in order, to exactly the values forwarded under it; otherwise every value sent under that name is
// dropped, however its name was spelled (`%71uery` is `query`), and its forwarded values are encoded. The names go
// in url.Values.Encode's order (sorted, a name's values in order), so the args of a client that encodes as Go does
// go out byte for byte as url.Values.Encode wrote them before; the upstream reads exactly the values the gateway
// checked and rewrote either way, while the unchanged args of a Grafana range are not escaped again per request.

// rawArg is one arg as split: the bytes sent and what they decode to.
type rawArg struct {
	kv, name, value string
}

// maxSpliced is the most args a spliced query or form has: deciding which names changed compares each arg with
// the ones before it. More are encoded whole, as url.Values.Encode does.
const maxSpliced = 64

// rawArgs are one request's args as split, the URL's and the form's, reused between requests (none are recorded
// of more than maxSpliced args: splitRecording).
type rawArgs struct {
	url, form []rawArg
}

var rawArgsPool = sync.Pool{New: func() any { return &rawArgs{url: make([]rawArg, 0, 16), form: make([]rawArg, 0, 16)} }}

func releaseRawArgs(ra *rawArgs) {
	if cap(ra.url) > 4*maxSpliced || cap(ra.form) > 4*maxSpliced {
		return
	}
	// Held by the pool, they must not hold the request's query or body.
	clear(ra.url)
	clear(ra.form)
	ra.url, ra.form = ra.url[:0], ra.form[:0]
	rawArgsPool.Put(ra)
}

// appendArgs appends to dst prefix, then the args vs as the query string or form body to forward, spliced from raw,
// the args as sent that vs was split from and then changed; dst grows once for both (a request target and its
// query are one allocation). Without raw (none sent, or too many to record) vs is encoded whole, which is what
// splicing nothing gives too.
func appendArgs(dst []byte, prefix string, raw []rawArg, vs url.Values) []byte {
	if len(raw) == 0 || len(raw) > maxSpliced {
		return append(append(dst, prefix...), vs.Encode()...)
	}
	var keepBuf [maxSpliced]bool
	keep := keepBuf[:len(raw)]
	for i := range raw {
		first := i
		for j := 0; j < i; j++ {
			if raw[j].name == raw[i].name {
				first = j
				break
			}
		}
		if first < i {
			keep[i] = keep[first]
			continue
		}
		keep[i] = unchanged(raw[i:], vs[raw[i].name])
	}
	// Every name forwarded, sorted as url.Values.Encode sorts; first is the index of its first arg in raw when its
	// args are kept as sent, else -1.
	var namesBuf [16]namedValues
	names := namesBuf[:0]
	// The escaped lengths of the values encoded, in the order of vs's names: counted once, for the size and for
	// the writes.
	var lensBuf [16]int
	lens := lensBuf[:0]
	size := 0
	for i, a := range raw {
		if keep[i] {
			size += len(a.kv) + 1
		}
	}
	for name, values := range vs {
		if len(values) == 0 {
			continue
		}
		first := keptFirst(raw, keep, name)
		nv := namedValues{name: name, values: values, first: first}
		if first < 0 {
			nv.nameLen, nv.lens = escapedLen(name), len(lens)
			for _, v := range values {
				n := escapedLen(v)
				lens = append(lens, n)
				size += nv.nameLen + 1 + n + 1
			}
		}
		names = append(names, nv)
	}
	slices.SortFunc(names, func(a, b namedValues) int { return strings.Compare(a.name, b.name) })
	dst = append(slices.Grow(dst, len(prefix)+size), prefix...)
	start := len(dst)
	for _, nv := range names {
		if nv.first >= 0 {
			for _, a := range raw[nv.first:] {
				if a.name != nv.name {
					continue
				}
				if len(dst) > start {
					dst = append(dst, '&')
				}
				dst = append(dst, a.kv...)
			}
			continue
		}
		for i, v := range nv.values {
			if len(dst) > start {
				dst = append(dst, '&')
			}
			dst = appendEscaped(dst, nv.name, nv.nameLen)
			dst = append(dst, '=')
			dst = appendEscaped(dst, v, lens[nv.lens+i])
		}
	}
	return dst
}

type namedValues struct {
	name   string
	values []string
	first  int
	// For values encoded: the escaped length of the name, and where those of the values begin in appendArgs' lens.
	nameLen, lens int
}

// unchanged says whether the values of the name of raw[0] in raw (the args from it on) are exactly values, in order.
func unchanged(raw []rawArg, values []string) bool {
	name, n := raw[0].name, 0
	for _, a := range raw {
		if a.name != name {
			continue
		}
		if n >= len(values) || values[n] != a.value {
			return false
		}
		n++
	}
	return n == len(values)
}

// keptFirst is the index in raw of the first arg of name when its args are forwarded as sent, else -1.
func keptFirst(raw []rawArg, keep []bool, name string) int {
	for i, a := range raw {
		if a.name == name {
			if keep[i] {
				return i
			}
			return -1
		}
	}
	return -1
}

// queryUnescape is url.QueryUnescape, the same string or the same error, in one pass over an escaped s into a
// buffer of its exact length: the standard one writes a byte at a time through a strings.Builder, and a Grafana
// query is a third escapes.
func queryUnescape(s string) (string, error) {
	escapes := strings.Count(s, "%")
	if escapes == 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	n := len(s) - 2*escapes
	if n <= 0 {
		// Too few bytes for its escapes: a bad one, which url.QueryUnescape names.
		return url.QueryUnescape(s)
	}
	b := make([]byte, n)
	j := 0
	for i := 0; i < len(s); i++ {
		if j == len(b) {
			// Valid escapes fill b exactly, so a bad one is ahead.
			return url.QueryUnescape(s)
		}
		c := s[i]
		switch c {
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return url.QueryUnescape(s)
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		case '+':
			c = ' '
		}
		b[j] = c
		j++
	}
	return unsafe.String(&b[0], len(b)), nil
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// noEscape says which bytes url.QueryEscape leaves as they are; space becomes '+', the rest %XX.
var noEscape = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		s := string([]byte{byte(c)})
		t[c] = url.QueryEscape(s) == s
	}
	return t
}()

// escapedLen is the length of url.QueryEscape(s).
func escapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; !noEscape[c] && c != ' ' {
			n += 2
		}
	}
	return n
}

// appendEscaped appends url.QueryEscape(s), whose length n is (escapedLen), to dst: into room made at once, a byte
// at a time by index, where appends of each run and escape took twice as long over a query.
func appendEscaped(dst []byte, s string, n int) []byte {
	const hex = "0123456789ABCDEF"
	dst = slices.Grow(dst, n)
	out := dst[len(dst) : len(dst)+n]
	j := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case noEscape[c]:
			out[j] = c
			j++
		case c == ' ':
			out[j] = '+'
			j++
		default:
			out[j+2] = hex[c&15]
			out[j+1] = hex[c>>4]
			out[j] = '%'
			j += 3
		}
	}
	return dst[:len(dst)+n]
}

// argsString is b, which nothing writes into any more, as a string, without a copy.
func argsString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
