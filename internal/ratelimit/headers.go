package ratelimit

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// Headers selects the rate-limit response headers Admit sets (-ratelimit.headers).
type Headers uint8

const (
	// HeadersNone sets none.
	HeadersNone Headers = iota
	// HeadersDraft03 sets RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (draft-polli-ratelimit-headers-03).
	HeadersDraft03
	// HeadersIETF sets the structured fields RateLimit-Policy and RateLimit of the current IETF draft.
	HeadersIETF
	// HeadersBoth sets all five.
	HeadersBoth
)

var headersNames = [...]string{HeadersNone: "none", HeadersDraft03: "draft03", HeadersIETF: "ietf", HeadersBoth: "both"}

func (h Headers) String() string {
	if int(h) < len(headersNames) {
		return headersNames[h]
	}
	return "unknown"
}

// ParseHeaders reads the -ratelimit.headers value: none, draft03, ietf or both.
func ParseHeaders(s string) (Headers, error) {
	for h, name := range headersNames {
		if strings.EqualFold(s, name) {
			return Headers(h), nil
		}
	}
	return 0, fmt.Errorf("-ratelimit.headers=%q: want none, draft03 (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset), "+
		"ietf (RateLimit-Policy, RateLimit) or both", s)
}

// set describes the caller's counted limits: queries limits in requests, cost limits (series_fetched,
// query_time_ms) in their own units; write APIs (limited in rows and series, which the gateway does not count) get
// none. The draft-03 fields and the RateLimit field describe one limit: on a rejection the rejecting one, else a
// used-up cost limit, else the queries limit with the fewest requests left (a cost limit when there is none);
// RateLimit-Policy lists them all. Nothing in them is about anyone but the caller: figs holds no count a narrowed
// caller shares with other teams (figures).
func (hs Headers) set(h http.Header, figs []figure, r *limitError) {
	if len(figs) == 0 {
		return
	}
	remaining := make([]int64, len(figs))
	near := -1
	for i, f := range figs {
		remaining[i] = max(int64(f.limit.Value)-int64(math.Ceil(f.usage)), 0)
		if r != nil {
			if f.limit == r.Limit && f.keyValue == r.KeyValue {
				near = i
			}
			continue
		}
		if near < 0 || nearer(f, remaining[i], figs[near], remaining[near]) {
			near = i
		}
	}
	reset := figs[max(near, 0)].reset
	if r != nil {
		if near < 0 {
			return // a rejection by a limit the gateway does not count
		}
		remaining[near], reset = 0, r.retry
	}
	resetSec := int64(roundUpSeconds(reset) / time.Second)
	var b []byte
	if hs == HeadersDraft03 || hs == HeadersBoth {
		b = setDraft03(h, b, figs, figs[near], remaining[near], resetSec)
	}
	if hs == HeadersIETF || hs == HeadersBoth {
		setIETF(h, b, figs, figs[near], remaining[near], resetSec)
	}
}

// setDraft03 sets RateLimit-Limit (nf's value, then every policy), RateLimit-Remaining and RateLimit-Reset; b is
// a buffer to reuse, returned for the next writer.
func setDraft03(h http.Header, b []byte, figs []figure, nf figure, remaining, resetSec int64) []byte {
	b = strconv.AppendUint(b[:0], nf.limit.Value, 10)
	for _, f := range figs {
		b = append(b, ", "...)
		b = strconv.AppendUint(b, f.limit.Value, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(meterOf(f.limit).window()/time.Second), 10)
	}
	h[hdrLimit] = one(string(b))
	h[hdrRemaining] = one(strconv.FormatInt(remaining, 10))
	h[hdrReset] = one(strconv.FormatInt(resetSec, 10))
	return b
}

// setIETF sets RateLimit-Policy (every policy) and RateLimit (nf's state).
func setIETF(h http.Header, b []byte, figs []figure, nf figure, remaining, resetSec int64) {
	b = b[:0]
	for i, f := range figs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendPolicyName(b, f.limit)
		b = append(b, ";q="...)
		b = strconv.AppendUint(b, f.limit.Value, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(meterOf(f.limit).window()/time.Second), 10)
		b = appendPartitionKey(b, f)
	}
	h[hdrPolicy] = one(string(b))
	b = appendPolicyName(b[:0], nf.limit)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, resetSec, 10)
	b = appendPartitionKey(b, nf)
	h[hdrState] = one(string(b))
}

// nearer reports whether figure f, with left remaining, describes the caller better than n: a used-up limit
// first, then the request unit the drafts assume, then the fewest left, then the longest wait.
func nearer(f figure, left int64, n figure, nLeft int64) bool {
	if (left == 0) != (nLeft == 0) {
		return left == 0
	}
	if fq, nq := !f.limit.Type.Cost(), !n.limit.Type.Cost(); fq != nq {
		return fq
	}
	return left < nLeft || left == nLeft && f.reset > n.reset
}

// The header names in canonical form, set directly to spare canonicalising them on every response. On the wire
// they read Ratelimit-Limit etc.: header names are case-insensitive.
const (
	hdrLimit     = "Ratelimit-Limit"
	hdrRemaining = "Ratelimit-Remaining"
	hdrReset     = "Ratelimit-Reset"
	hdrPolicy    = "Ratelimit-Policy"
	hdrState     = "Ratelimit"
)

func one(v string) []string { return []string{v} }

// appendPolicyName names a limit as a Structured Fields String, e.g. "queries-minute" or "queries-hour-claim:sub".
func appendPolicyName(b []byte, l limitfile.Limit) []byte {
	b = append(b, '"')
	b = append(b, l.Type.String()...)
	b = append(b, '-')
	b = append(b, l.Resolution.String()...)
	if !l.Key.IsZero() {
		b = append(b, '-')
		for _, c := range []byte(l.Key.String()) {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c > 0x7e:
				b = append(b, '_')
			default:
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// appendPartitionKey appends the pk parameter of a limit with a key: the caller's own value, as a Byte Sequence.
func appendPartitionKey(b []byte, f figure) []byte {
	if f.limit.Key.IsZero() {
		return b
	}
	b = append(b, ";pk=:"...)
	b = base64.StdEncoding.AppendEncode(b, []byte(f.keyValue))
	return append(b, ':')
}
