package gateway

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// The args of a rewritten request go out spliced: the args the gateway left as they were keep the client's bytes,
// in the client's order, and only the names whose values it changed, removed or added are encoded, as
// url.Values.Encode encodes them (sorted by name, after the client's). An arg is kept only when all the values of
// its name decode, in order, to exactly the values forwarded under that name; every other value sent under that
// name is dropped, however its name was spelled (`%71uery` is `query`). VictoriaMetrics reads args into
// url.Values, where the order of different names is not seen, so the upstream reads exactly the values the
// gateway checked and rewrote, while the escaping of an unchanged Grafana time range or a long untouched arg is
// not redone for every request.

// rawArg is one arg as split: the bytes sent and what they decode to.
type rawArg struct {
	kv, name, value string
}

// maxSpliced is the most args a spliced query or form has: deciding which names changed compares each arg with
// the ones before it. More are encoded whole, as url.Values.Encode does.
const maxSpliced = 64

// rawArgs are one request's args as split, the URL's and the form's, reused between requests. A list is left empty
// and marked whole when its args are too many to splice.
type rawArgs struct {
	url, form           []rawArg
	urlWhole, formWhole bool
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
	ra.urlWhole, ra.formWhole = false, false
	rawArgsPool.Put(ra)
}

// appendArgs appends to dst the args vs as the query string or form body to forward, spliced from raw, the args
// as sent that vs was split from and then changed; whole: raw was not kept (too many args), vs is encoded whole.
func appendArgs(dst []byte, raw []rawArg, whole bool, vs url.Values) []byte {
	if whole || len(raw) > maxSpliced {
		return append(dst, vs.Encode()...)
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
	// The names to encode: the changed and added ones (removed ones are not in vs), sorted as url.Values.Encode sorts.
	var changedBuf [16]namedValues
	changed := changedBuf[:0]
	size := 0
	for i, a := range raw {
		if keep[i] {
			size += len(a.kv) + 1
		}
	}
	for name, values := range vs {
		if len(values) == 0 || keptName(raw, keep, name) {
			continue
		}
		changed = append(changed, namedValues{name, values})
		n := escapedLen(name)
		for _, v := range values {
			size += n + 1 + escapedLen(v) + 1
		}
	}
	slices.SortFunc(changed, func(a, b namedValues) int { return strings.Compare(a.name, b.name) })
	dst = slices.Grow(dst, size)
	start := len(dst)
	for i, a := range raw {
		if !keep[i] {
			continue
		}
		if len(dst) > start {
			dst = append(dst, '&')
		}
		dst = append(dst, a.kv...)
	}
	for _, c := range changed {
		for _, v := range c.values {
			if len(dst) > start {
				dst = append(dst, '&')
			}
			dst = appendEscaped(dst, c.name)
			dst = append(dst, '=')
			dst = appendEscaped(dst, v)
		}
	}
	return dst
}

type namedValues struct {
	name   string
	values []string
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

// keptName says whether the args of name are forwarded as sent.
func keptName(raw []rawArg, keep []bool, name string) bool {
	for i, a := range raw {
		if a.name == name {
			return keep[i]
		}
	}
	return false
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

// appendEscaped appends url.QueryEscape(s) to dst, the bytes that need no escape a run at a time.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for {
		i := 0
		for i < len(s) && noEscape[s[i]] {
			i++
		}
		dst = append(dst, s[:i]...)
		if i == len(s) {
			return dst
		}
		if c := s[i]; c == ' ' {
			dst = append(dst, '+')
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
		s = s[i+1:]
	}
}

// argsString is b, which nothing writes into any more, as a string, without a copy.
func argsString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
