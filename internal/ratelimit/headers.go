package ratelimit

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
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

// setHeaders describes the caller's counted limits: the drafts' quota unit is the request, which only queries
// limits count, so write APIs (limited in rows and series) get none. The draft-03 fields and the RateLimit field
// describe the limit with the fewest requests left (on a rejection, the rejecting one); RateLimit-Policy lists them
// all. Nothing in them is about anyone but the caller.
func (g *Gate) setHeaders(h http.Header, figs []figure, r *Rejection) {
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
		if near < 0 || remaining[i] < remaining[near] || remaining[i] == remaining[near] && f.reset > figs[near].reset {
			near = i
		}
	}
	reset := figs[max(near, 0)].reset
	if r != nil {
		if near < 0 {
			return // a rejection by a limit that is not counted in requests
		}
		remaining[near], reset = 0, r.retry
	}
	resetSec := strconv.FormatInt(int64(roundUpSeconds(reset)/time.Second), 10)
	nf := figs[near]
	if g.headers == HeadersDraft03 || g.headers == HeadersBoth {
		var b strings.Builder
		b.WriteString(strconv.FormatUint(nf.limit.Value, 10))
		for _, f := range figs {
			fmt.Fprintf(&b, ", %d;w=%d", f.limit.Value, int64(f.limit.meter().window()/time.Second))
		}
		h.Set("RateLimit-Limit", b.String())
		h.Set("RateLimit-Remaining", strconv.FormatInt(remaining[near], 10))
		h.Set("RateLimit-Reset", resetSec)
	}
	if g.headers == HeadersIETF || g.headers == HeadersBoth {
		var b strings.Builder
		for i, f := range figs {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s;q=%d;w=%d%s", policyName(f.limit), f.limit.Value, int64(f.limit.meter().window()/time.Second), partitionKey(f))
		}
		h.Set("RateLimit-Policy", b.String())
		h.Set("RateLimit", fmt.Sprintf("%s;r=%d;t=%s%s", policyName(nf.limit), remaining[near], resetSec, partitionKey(nf)))
	}
}

// policyName names a limit as a Structured Fields String, e.g. "queries-minute" or "queries-hour-claim:sub".
func policyName(l Limit) string {
	name := l.Type.String() + "-" + l.Resolution.String()
	if !l.Key.IsZero() {
		name += "-" + l.Key.String()
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// partitionKey is the pk parameter of a limit with a key: the caller's own value, as a Byte Sequence.
func partitionKey(f figure) string {
	if f.limit.Key.IsZero() {
		return ""
	}
	return ";pk=:" + base64.StdEncoding.EncodeToString([]byte(f.keyValue)) + ":"
}
