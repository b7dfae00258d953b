package gateway

import (
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
)

// BackendStatus is one backend as the status page shows it.
type BackendStatus struct {
	// Kind is read or write; URL the backend without credentials.
	Kind, URL string
	// Broken is set while the backend is skipped after a failure; BrokenUntil is when it is tried again.
	Broken      bool
	BrokenUntil time.Time
	InFlight    int64
}

// Backends lists every backend of both kinds with its health.
func (g *Gateway) Backends() []BackendStatus {
	var out []BackendStatus
	for _, up := range []*upstream{g.read, g.write} {
		for _, b := range up.set.backends() {
			st := BackendStatus{Kind: up.kind, URL: b.name, InFlight: b.inflight.Load()}
			if until := b.brokenUntil.Load(); until != 0 {
				st.Broken, st.BrokenUntil = true, time.Unix(0, until)
			}
			out = append(out, st)
		}
	}
	return out
}

// RefusalCount is how often the gateway refused requests for one reason, and the last such refusal.
type RefusalCount struct {
	Status int
	// Reason is the token's rejection reason (expired, bad_signature, ...), the upstream kind and how it failed
	// for a 502 or 504 ("read upstream: timeout"), or the status in words.
	Reason      string
	Count       uint64
	Last        time.Time
	LastMessage string
}

// refusals remembers the refusals of the pipeline by reason, for the status page. It is written once per refused
// request, never for a forwarded one, without a lock: a flood of bad tokens from many connections must not queue
// on one mutex.
type refusals struct {
	byReason sync.Map // refusalKey → *refusalEntry
	n        atomic.Int32
}

type refusalKey struct {
	status int
	reason string
}

type refusalEntry struct {
	count atomic.Uint64
	last  atomic.Int64 // unix nanoseconds
	msg   atomic.Pointer[string]
}

// maxRefusalReasons bounds the table: reasons are a small fixed set, this is only a guard.
const maxRefusalReasons = 200

func (rs *refusals) add(err error, now time.Time) {
	status := httperr.Status(err)
	reason := statusReasons[0]
	if status > 0 && status < len(statusReasons) {
		reason = statusReasons[status]
	}
	var ae *auth.Error
	if errors.As(err, &ae) {
		reason = ae.Reason
	}
	// The page never shows a client's query text, as the access log does not without -accessLog.queries.
	rs.record(status, reason, httperr.NoQuery(err), now)
}

// addUpstream counts a request the upstream of kind did not answer (502, 504) under that kind and how it failed:
// the vmgateway_upstream_errors_total reason.
func (rs *refusals) addUpstream(status int, kind, failure, msg string, now time.Time) {
	rs.record(status, kind+" upstream: "+failure, msg, now)
}

func (rs *refusals) record(status int, reason, msg string, now time.Time) {
	k := refusalKey{status, reason}
	v, ok := rs.byReason.Load(k)
	if !ok {
		if rs.n.Load() >= maxRefusalReasons {
			return
		}
		var loaded bool
		if v, loaded = rs.byReason.LoadOrStore(k, &refusalEntry{}); !loaded {
			rs.n.Add(1)
		}
	}
	e := v.(*refusalEntry)
	e.count.Add(1)
	e.last.Store(now.UnixNano())
	// Refusals of one reason mostly repeat one message: it is stored only when it changes.
	if m := e.msg.Load(); m == nil || *m != msg {
		e.msg.Store(&msg)
	}
}

// statusReasons are the statuses in words, lower case, computed once: "too many requests".
var statusReasons = func() []string {
	r := make([]string, 600)
	for i := range r {
		if r[i] = strings.ToLower(http.StatusText(i)); r[i] == "" {
			r[i] = "status " + strconv.Itoa(i)
		}
	}
	r[0] = "unknown"
	return r
}()

// Refusals lists the reasons requests were refused for since the start, upstream failures included, the latest
// first.
func (g *Gateway) Refusals() []RefusalCount {
	var out []RefusalCount
	g.refused.byReason.Range(func(k, v any) bool {
		key, e := k.(refusalKey), v.(*refusalEntry)
		c := RefusalCount{Status: key.status, Reason: key.reason, Count: e.count.Load(), Last: time.Unix(0, e.last.Load())}
		if m := e.msg.Load(); m != nil {
			c.LastMessage = *m
		}
		out = append(out, c)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	return out
}
