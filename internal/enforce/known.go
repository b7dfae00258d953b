package enforce

import (
	"encoding/binary"
	"net/url"
)

// Arg is one of the args the checks of a read request read besides the ones they rewrite: the selectors and the
// time range, step and timeout the query limits judge. Known holds their values at an index, recorded as the
// gateway splits a request's args, so that a check does not look each one up by name again.
type Arg uint8

// The args in Known.
const (
	ArgQuery Arg = iota
	ArgMatch
	ArgMatchLegacy
	ArgTime
	ArgStart
	ArgEnd
	ArgStep
	ArgLatencyOffset
	ArgMaxLookback
	ArgLookbackDelta
	ArgTimeout
	ArgDate
	NumArgs
)

var argNames = [NumArgs]string{
	ArgQuery: argQuery, ArgMatch: argMatch, ArgMatchLegacy: argMatchLegacy, ArgTime: "time", ArgStart: "start", ArgEnd: "end",
	ArgStep: "step", ArgLatencyOffset: "latency_offset", ArgMaxLookback: "max_lookback", ArgLookbackDelta: "lookback_delta",
	ArgTimeout: "timeout", ArgDate: "date",
}

func (a Arg) String() string { return argNames[a] }

// ArgOf returns the Arg of an arg's name, if it is one.
func ArgOf(name string) (Arg, bool) {
	// A switch compiles to comparisons of length and bytes: no hash of the name.
	switch name {
	case argQuery:
		return ArgQuery, true
	case argMatch:
		return ArgMatch, true
	case argMatchLegacy:
		return ArgMatchLegacy, true
	case "time":
		return ArgTime, true
	case "start":
		return ArgStart, true
	case "end":
		return ArgEnd, true
	case "step":
		return ArgStep, true
	case "latency_offset":
		return ArgLatencyOffset, true
	case "max_lookback":
		return ArgMaxLookback, true
	case "lookback_delta":
		return ArgLookbackDelta, true
	case "timeout":
		return ArgTimeout, true
	case "date":
		return ArgDate, true
	}
	return 0, false
}

// Where an arg's values come from: VictoriaMetrics reads the form's before the URL's.
const (
	FromForm = 0
	FromURL  = 1
)

// Known are the values of every Arg of one request, the form's and the URL's, in the order sent: the same slices
// as in the url.Values the args were split into, and valid as long as those are not changed. The zero value holds
// none; Reset empties it for the next request.
type Known struct {
	vals [NumArgs][2][]string
	// has says which args have values, so that Reset and Into visit those only.
	has uint16
	// whole says which args have one value, of whole decimal digits (WholeNumber), read into nums when recorded.
	whole uint16
	nums  [NumArgs]int64
}

// Values returns the values of a: [FromForm] the form's, [FromURL] the URL's. The caller must not change them.
func (k *Known) Values(a Arg) *[2][]string { return &k.vals[a] }

// Has says whether a has a value, in the form or the URL.
func (k *Known) Has(a Arg) bool { return k.has&(1<<a) != 0 }

// Whole returns the value of a read as a whole number, when a has one value and it is whole decimal digits of
// WholeNumber's reach: read as it was recorded, so that a check does not read it again.
func (k *Known) Whole(a Arg) (int64, bool) { return k.nums[a], k.whole&(1<<a) != 0 }

// readWhole reads the one value of a as a whole number, or notes that a has none.
func (k *Known) readWhole(a Arg) {
	k.whole &^= 1 << a
	vs := &k.vals[a]
	var v string
	switch {
	case len(vs[FromURL]) == 1 && len(vs[FromForm]) == 0:
		v = vs[FromURL][0]
	case len(vs[FromForm]) == 1 && len(vs[FromURL]) == 0:
		v = vs[FromForm][0]
	default:
		return
	}
	if n, ok := WholeNumber(v); ok {
		k.nums[a] = n
		k.whole |= 1 << a
	}
}

// Add records value v of a, from the form or the URL (FromForm, FromURL).
func (k *Known) Add(a Arg, from int, v string) {
	k.vals[a][from] = append(k.vals[a][from], v)
	k.has |= 1 << a
	k.readWhole(a)
}

// Set records the values of a from one source at once, for a caller that split its args without recording them.
func (k *Known) Set(a Arg, from int, vs []string) {
	k.vals[a][from] = vs
	k.has |= 1 << a
	k.readWhole(a)
}

// Into sets the values recorded from one source into vs, which the split of that source filled with every other
// arg: vs then holds what url.ParseQuery returns, and shares its slices with k.
func (k *Known) Into(vs url.Values, from int) {
	for a := Arg(0); a < NumArgs; a++ {
		if k.has&(1<<a) != 0 && k.vals[a][from] != nil {
			vs[argNames[a]] = k.vals[a][from]
		}
	}
}

// Reset empties k for the next request, dropping what it holds of the last.
func (k *Known) Reset() {
	for a := Arg(0); a < NumArgs; a++ {
		if k.has&(1<<a) != 0 {
			k.vals[a] = [2][]string{}
		}
	}
	k.has, k.whole = 0, 0
}

// WholeNumber reads a number of at most 11 decimal digits and nothing else (no sign, no point): the seconds of the
// time and step args of almost every request (what Grafana sends), read without strconv's generality. A digit at a
// time, each step waits on the multiplication of the last; the last 8 digits are read at once (eightDigits), so a
// Unix time of 10 digits costs 2 steps and a few multiplications.
func WholeNumber(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 11 {
		return 0, false
	}
	head := max(len(s)-8, 0)
	var n int64
	for i := 0; i < head; i++ {
		c := s[i] - '0'
		if c > 9 {
			return 0, false
		}
		n = n*10 + int64(c)
	}
	if len(s) < 8 {
		for i := head; i < len(s); i++ {
			c := s[i] - '0'
			if c > 9 {
				return 0, false
			}
			n = n*10 + int64(c)
		}
		return n, true
	}
	low, ok := eightDigits(binary.LittleEndian.Uint64([]byte(s[head:])))
	if !ok {
		return 0, false
	}
	return n*1e8 + int64(low), true
}

// eightDigits reads 8 ASCII decimal digits packed in a word, the first in the lowest byte: each byte must be '0'
// to '9'; pairs, then quads, then the halves are combined by a multiplication each.
func eightDigits(w uint64) (uint64, bool) {
	const ones = 0x0101010101010101
	if w&(0xf0*ones) != 0x30*ones || (w+0x06*ones)&(0xf0*ones) != 0x30*ones {
		return 0, false // a byte outside 0x30..0x39
	}
	w -= 0x30 * ones
	w = (w * (1 + 10<<8)) >> 8                           // each byte pair: 10*first + second, in the even bytes
	w = ((w & 0x00ff00ff00ff00ff) * (1 + 100<<16)) >> 16 // each quad, in the low 16 bits of each half
	w = ((w & 0x0000ffff0000ffff) * (1 + 10000<<32)) >> 32
	return w, true
}
