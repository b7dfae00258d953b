package gateway

import "slices"

// capacity is what the backends of one kind run at once, as learned from their /metrics, by address
// (BackendAddr.Key), and how many gateway replicas share them.
type capacity struct {
	byKey    map[string]BackendCapacity
	replicas int
}

// BackendCapacity is what the gateway learned of one backend from its /metrics.
type BackendCapacity struct {
	// Slots is how many requests it runs at once.
	Slots int
	// RunsOn: it goes on with a streamed answer after the gateway has closed the connection (VictoriaMetrics before
	// v1.110.0 exports to the end into nowhere, in its slot), so that an answer whose client went away, or that is
	// cut, is read to its end with its slot held, not closed (fairslots.go).
	RunsOn bool
	// Paced: a write backend that frees its slot while it waits on a request's body (VictoriaMetrics v1.108.0 on), so
	// that a write holds its turn at the gateway only while its body comes (writeturns.go).
	Paced bool
}

// Key names the backend at a as the gateway's capacity maps do (SetReadCapacity, SetWriteCapacity).
func (a BackendAddr) Key() string { return a.URL.String() + " " + a.Host }

// SetReadCapacity gives the read backends' capacity by address (nil: not known, no limit), and the gateway replicas in
// front of them: the reads forwarded at once are then what the backends the balancer sends to run (usable), divided
// between the replicas, and follow the backends' health.
func (g *Gateway) SetReadCapacity(byKey map[string]BackendCapacity, replicas int) {
	g.read.set.setCapacity(byKey, replicas)
}

// SetWriteCapacity is SetReadCapacity for the write backends. Where every one is Paced, a write whose client is slow
// gives its turn up while it waits on it; else it holds it for its whole body.
func (g *Gateway) SetWriteCapacity(byKey map[string]BackendCapacity, replicas int) {
	g.write.set.setCapacity(byKey, replicas)
}

// ReplicaPart is what one of replicas forwards of the backends' capacity (0: no limit): rounded down, so that the
// replicas together never pass it, but at least 1, so that each forwards requests at all.
func ReplicaPart(capacity, replicas int) int {
	if capacity <= 0 || replicas <= 1 {
		return capacity
	}
	return max(1, capacity/replicas)
}

func (s *backendSet) setCapacity(byKey map[string]BackendCapacity, replicas int) {
	if byKey == nil {
		s.capacity.Store(nil)
		s.slotsTo(0)
		if s.pacedTo != nil {
			s.pacedTo(false)
		}
		return
	}
	s.capacity.Store(&capacity{byKey: byKey, replicas: replicas})
	s.refreshSlots()
}

// refreshSlots gives the slots what the backends can take now; it runs when the capacity, the list of backends or a
// backend's health changes.
func (s *backendSet) refreshSlots() {
	c := s.capacity.Load()
	if c != nil {
		s.slotsTo(ReplicaPart(s.usable(c), c.replicas))
	}
	if s.pacedTo != nil {
		// A backend not known (its /metrics not read, or found since) may hold its slot for a whole body.
		paced := c != nil
		for _, b := range s.backends() {
			paced = paced && c.byKey[b.key].Paced
		}
		s.pacedTo(paced)
	}
}

// usable is how many requests at once the backends the balancer sends to can run. Under first_available that is
// the first one not marked broken. Under least_loaded, which spreads requests evenly (each goes to the backend with
// the fewest in flight), it is as many times the smallest capacity among those not marked broken as there are of
// them: with the requests in flight at most that, none gets more than it runs, however unequal they are. A backend
// is left out while its last mark was for a connection it did not accept (not for a status it answered, such as a busy
// VictoriaMetrics' 503: it still runs what it can), whether the mark has run out or not, so the limit comes back with
// its first answer; with every backend left out, all count. An address whose capacity is not known counts as the
// smallest one known; none known, 0: no limit.
func (s *backendSet) usable(c *capacity) int {
	bs := s.backends()
	least := 0
	for _, b := range bs {
		if n := c.byKey[b.key].Slots; n > 0 && (least == 0 || n < least) {
			least = n
		}
	}
	if least == 0 {
		return 0
	}
	capOf := func(b *backend) int {
		if n := c.byKey[b.key].Slots; n > 0 {
			return n
		}
		return least
	}
	anyHealthy := slices.ContainsFunc(bs, func(b *backend) bool { return !b.unreachable.Load() })
	counts := func(b *backend) bool { return !anyHealthy || !b.unreachable.Load() }
	n, smallest := 0, 0
	for _, b := range bs {
		if !counts(b) {
			continue
		}
		if s.policy == FirstAvailable {
			return capOf(b)
		}
		n++
		if c := capOf(b); smallest == 0 || c < smallest {
			smallest = c
		}
	}
	return n * smallest
}

// runsOn says whether b was learned to go on with an answer after its connection is closed. Not known (a fixed
// -read.maxConcurrentRequests, a page not read): no, the connection is closed.
func (s *backendSet) runsOn(b *backend) bool {
	c := s.capacity.Load()
	return c != nil && b != nil && c.byKey[b.key].RunsOn
}
