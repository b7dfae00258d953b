package enforce

import "net/url"

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
}

// Values returns the values of a: [FromForm] the form's, [FromURL] the URL's. The caller must not change them.
func (k *Known) Values(a Arg) *[2][]string { return &k.vals[a] }

// Has says whether a has a value, in the form or the URL.
func (k *Known) Has(a Arg) bool { return k.has&(1<<a) != 0 }

// One returns the value of a when it has exactly one, in the form or the URL.
func (k *Known) One(a Arg) (string, bool) {
	vs := &k.vals[a]
	switch {
	case len(vs[FromURL]) == 1 && len(vs[FromForm]) == 0:
		return vs[FromURL][0], true
	case len(vs[FromForm]) == 1 && len(vs[FromURL]) == 0:
		return vs[FromForm][0], true
	}
	return "", false
}

// Add records value v of a, from the form or the URL (FromForm, FromURL).
func (k *Known) Add(a Arg, from int, v string) {
	k.vals[a][from] = append(k.vals[a][from], v)
	k.has |= 1 << a
}

// Set records the values of a from one source at once, for a caller that split its args without recording them.
func (k *Known) Set(a Arg, from int, vs []string) {
	k.vals[a][from] = vs
	k.has |= 1 << a
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
	k.has = 0
}
