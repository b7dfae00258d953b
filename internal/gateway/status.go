package gateway

import (
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync"
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
	// Reason is the token's rejection reason (expired, bad_signature, ...) or the status in words.
	Reason      string
	Count       uint64
	Last        time.Time
	LastMessage string
}

// refusals remembers the refusals of the pipeline by reason, for the status page. It is written once per refused
// request, never for a forwarded one.
type refusals struct {
	mu       sync.Mutex
	byReason map[refusalKey]*RefusalCount
}

type refusalKey struct {
	status int
	reason string
}

// maxRefusalReasons bounds the table: reasons are a small fixed set, this is only a guard.
const maxRefusalReasons = 200

func (rs *refusals) add(err error, now time.Time) {
	status := httperr.Status(err)
	reason := strings.ToLower(http.StatusText(status))
	var ae *auth.Error
	if errors.As(err, &ae) {
		reason = ae.Reason
	}
	k := refusalKey{status, reason}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.byReason == nil {
		rs.byReason = map[refusalKey]*RefusalCount{}
	}
	c := rs.byReason[k]
	if c == nil {
		if len(rs.byReason) >= maxRefusalReasons {
			return
		}
		c = &RefusalCount{Status: status, Reason: reason}
		rs.byReason[k] = c
	}
	c.Count++
	c.Last, c.LastMessage = now, err.Error()
}

// Refusals lists the reasons requests were refused for since the start, the latest first.
func (g *Gateway) Refusals() []RefusalCount {
	g.refused.mu.Lock()
	out := make([]RefusalCount, 0, len(g.refused.byReason))
	for _, c := range g.refused.byReason {
		out = append(out, *c)
	}
	g.refused.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	return out
}
