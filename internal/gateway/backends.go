package gateway

import (
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/redact"
)

// Policy is how a request's backend is chosen among several URLs of one kind (vmauth's load_balancing_policy).
type Policy uint8

const (
	// LeastLoaded sends each request to the backend with the fewest requests in flight; ties are rotated, so
	// an idle set is used round-robin.
	LeastLoaded Policy = iota
	// FirstAvailable sends every request to the first backend in the list that is not broken; the rest are spares.
	FirstAvailable
)

// ParsePolicy reads a -loadBalancingPolicy value.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "least_loaded", "":
		return LeastLoaded, nil
	case "first_available":
		return FirstAvailable, nil
	}
	return 0, fmt.Errorf("unknown load balancing policy %q: use least_loaded or first_available", s)
}

// backend is one address of a backend set: its target and its health. It knows nothing of HTTP, so the balancing
// decision survives a change of the forwarding core.
type backend struct {
	// target carries the scheme, host, path prefix and credentials of the URL it came from.
	target *url.URL
	// host is the Host header to send when target's host is a discovered IP address ("" otherwise).
	host string
	// name is the target without credentials: the only form of it that reaches logs and metrics.
	name string
	// key is its BackendAddr's Key, by which its capacity is known.
	key      string
	inflight atomic.Int64
	// brokenUntil is the unix time in nanoseconds until which the backend is skipped; 0 while it is healthy.
	// Past that time it is tried again, and stays marked (for the log and the metric) until it answers.
	brokenUntil atomic.Int64
	// unreachable: its last mark was for a connection it did not accept (it is not there), not for an answer (a 503
	// of a busy VictoriaMetrics, with -retryStatusCodes): only then do its slots go (capacity.go).
	unreachable atomic.Bool

	requests          *metrics.Counter
	inflightG, broken *metrics.Gauge
	// labels are the backend's metric labels without the braces: a discovered address also has the host it was
	// found under, since two names behind one address (virtual hosts) are two backends with counts of their own.
	labels string
}

func newBackend(kind string, target *url.URL, host string) *backend {
	b := &backend{target: target, host: host, name: redact.URL(target), key: BackendAddr{URL: target, Host: host}.Key()}
	b.labels = fmt.Sprintf(`upstream=%q,backend=%q`, kind, b.name)
	if host != "" {
		b.labels += fmt.Sprintf(`,host=%q`, host)
	}
	l := "{" + b.labels + "}"
	b.requests = metrics.GetOrCreateCounter(`vmgateway_backend_requests_total` + l)
	b.inflightG = metrics.GetOrCreateGauge(`vmgateway_backend_requests_in_flight`+l, nil)
	b.broken = metrics.GetOrCreateGauge(`vmgateway_backend_broken`+l, nil)
	return b
}

func (b *backend) errors(reason string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_backend_errors_total{%s,reason=%q}`, b.labels, reason))
}

func (b *backend) start() {
	b.inflight.Add(1)
	b.requests.Inc()
	b.inflightG.Inc()
}

func (b *backend) done() {
	b.inflight.Add(-1)
	b.inflightG.Dec()
}

// maxTried bounds the attempts of one request: the set of backends already tried is a bit mask.
const maxTried = 64

// backendSet is the backends of one kind (read or write) and the policy that chooses among them.
type backendSet struct {
	kind        string
	policy      Policy
	failTimeout int64
	now         func() int64
	list        atomic.Pointer[[]*backend]
	rr          atomic.Uint32
	// capacity is what the backends run at once, when learned (capacity.go); slotsTo gives the gateway's slots of this
	// kind what the backends can take, as their list and health change.
	capacity atomic.Pointer[capacity]
	slotsTo  func(int)
	// pacedTo, for the write backends, is told whether every backend the balancer may send to is known to free its
	// slot while it waits on a body (BackendCapacity.Paced), as the list changes too.
	pacedTo func(bool)
}

func newBackendSet(kind string, policy Policy, failTimeout time.Duration, bs []*backend) *backendSet {
	s := &backendSet{kind: kind, policy: policy, failTimeout: int64(failTimeout), now: func() int64 { return time.Now().UnixNano() }}
	s.list.Store(&bs)
	return s
}

// backends is the current list; discovery replaces it whole, so a request keeps one list for all its attempts.
func (s *backendSet) backends() []*backend { return *s.list.Load() }

func (s *backendSet) isBroken(b *backend, now *int64) bool {
	until := b.brokenUntil.Load()
	if until == 0 {
		return false
	}
	if *now == 0 {
		*now = s.now()
	}
	return *now < until
}

// pick returns the index in bs of the backend for the next attempt, skipping those in tried and those broken;
// -1 when none is left. The first attempt of a request (tried == 0) always gets one: when every backend is
// broken, the one whose mark ends first, since it is the likeliest to be back.
func (s *backendSet) pick(bs []*backend, tried uint64) int {
	n := len(bs)
	if n == 1 {
		if tried == 0 {
			return 0
		}
		return -1
	}
	var now int64
	best := -1
	if s.policy == FirstAvailable {
		for i, b := range bs {
			if !isTried(tried, i) && !s.isBroken(b, &now) {
				return i
			}
		}
	} else {
		// The fewest in flight wins; among equals the turn rotates, so an idle set is used round-robin.
		var minLoad int64
		ties := 0
		for i, b := range bs {
			if isTried(tried, i) || s.isBroken(b, &now) {
				continue
			}
			switch load := b.inflight.Load(); {
			case best < 0 || load < minLoad:
				best, minLoad, ties = i, load, 1
			case load == minLoad:
				ties++
			}
		}
		if ties > 1 {
			turn := int(s.rr.Add(1) % uint32(ties))
			for i := best; i < n; i++ {
				b := bs[i]
				if isTried(tried, i) || s.isBroken(b, &now) || b.inflight.Load() > minLoad {
					continue
				}
				if turn == 0 {
					return i
				}
				turn--
			}
		}
		if best >= 0 {
			return best
		}
	}
	if tried != 0 {
		return -1
	}
	var soonest int64
	for i, b := range bs {
		if until := b.brokenUntil.Load(); best < 0 || until < soonest {
			best, soonest = i, until
		}
	}
	return best
}

func isTried(tried uint64, i int) bool { return i < maxTried && tried&(1<<uint(i)) != 0 }

// markBroken takes b out of rotation for the fail timeout; the first mark of an outage is logged.
func (s *backendSet) markBroken(b *backend, reason string) {
	unreachable := reason == "dial" || reason == "connect_timeout"
	if b.unreachable.Swap(unreachable) != unreachable {
		s.refreshSlots()
	}
	if b.brokenUntil.Swap(s.now()+s.failTimeout) == 0 {
		b.broken.Set(1)
		slog.Warn("backend marked broken; skipping it until the fail timeout ends or it answers again",
			"upstream", s.kind, "backend", b.name, "reason", reason, "failTimeout", time.Duration(s.failTimeout))
	}
}

// markOK records an answer from b; a backend that was marked broken is logged as back.
func (s *backendSet) markOK(b *backend) {
	if b.unreachable.Load() && b.unreachable.Swap(false) {
		s.refreshSlots()
	}
	if b.brokenUntil.Load() != 0 && b.brokenUntil.Swap(0) != 0 {
		b.broken.Set(0)
		slog.Info("backend is back", "upstream", s.kind, "backend", b.name)
	}
}
