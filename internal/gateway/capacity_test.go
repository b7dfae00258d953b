package gateway

import (
	"fmt"
	"net/url"
	"testing"
	"time"
)

// TestUsableCapacity: the slots are what the backends the balancer sends to can run, and follow their health.
func TestUsableCapacity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   Policy
		caps     []int // 0: not known
		broken   []int
		replicas int
		want     int
	}{
		{"least_loaded, equal", LeastLoaded, []int{4, 4}, nil, 1, 8},
		{"least_loaded, unequal: each held to the smallest", LeastLoaded, []int{2, 8}, nil, 1, 4},
		{"least_loaded, one broken", LeastLoaded, []int{4, 4}, []int{1}, 1, 4},
		{"least_loaded, every one broken: all count", LeastLoaded, []int{4, 4}, []int{0, 1}, 1, 8},
		{"least_loaded, one not known: the smallest known", LeastLoaded, []int{4, 0, 6}, nil, 1, 12},
		{"none known: no limit", LeastLoaded, []int{0, 0}, nil, 1, 0},
		{"first_available: the first only", FirstAvailable, []int{4, 8}, nil, 1, 4},
		{"first_available, the first broken: the next", FirstAvailable, []int{4, 8}, []int{0}, 1, 8},
		{"first_available, the first not known", FirstAvailable, []int{0, 8}, nil, 1, 8},
		{"two replicas", LeastLoaded, []int{4, 4}, nil, 2, 4},
		{"one backend, broken", LeastLoaded, []int{4}, []int{0}, 1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bs []*backend
			byKey := map[string]BackendCapacity{}
			for i, c := range tc.caps {
				u, _ := url.Parse(fmt.Sprintf("http://capacity-test-%d:8428", i))
				b := newBackend("read", u, "")
				bs = append(bs, b)
				if c > 0 {
					byKey[BackendAddr{URL: u}.Key()] = BackendCapacity{Slots: c}
				}
			}
			s := newBackendSet("read", tc.policy, time.Minute, bs)
			got := -1
			s.slotsTo = func(n int) { got = n }
			s.markBroken(bs[len(bs)-1], "answered 503") // a busy backend keeps its slots
			for _, i := range tc.broken {
				s.markBroken(bs[i], "dial")
			}
			s.setCapacity(byKey, tc.replicas)
			if got != tc.want {
				t.Errorf("slots %d; want %d", got, tc.want)
			}
		})
	}
}

// TestSlotsFollowHealth: a backend that does not accept connections takes its capacity out of the slots at once, and
// its first answer gives it back; a backend marked for a status it answered (a busy VictoriaMetrics' 503, with
// -retryStatusCodes) keeps it.
func TestSlotsFollowHealth(t *testing.T) {
	var bs []*backend
	byKey := map[string]BackendCapacity{}
	for i := range 2 {
		u, _ := url.Parse(fmt.Sprintf("http://health-test-%d:8428", i))
		bs = append(bs, newBackend("write", u, ""))
		byKey[BackendAddr{URL: u}.Key()] = BackendCapacity{Slots: 4}
	}
	s := newBackendSet("write", LeastLoaded, time.Millisecond, bs)
	var got []int
	s.slotsTo = func(n int) { got = append(got, n) }
	s.setCapacity(byKey, 1)
	s.markBroken(bs[0], "answered 503")
	s.markBroken(bs[1], "dial")
	time.Sleep(5 * time.Millisecond) // the mark runs out: still held out until the backend answers
	s.markBroken(bs[1], "connect_timeout")
	s.markOK(bs[1])
	if fmt.Sprint(got) != "[8 4 8]" {
		t.Errorf("slots over time: %v; want [8 4 8]", got)
	}
}
