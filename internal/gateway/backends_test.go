package gateway

import (
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for the health marks.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64              { return c.ns.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func testSet(t testing.TB, policy Policy, n int) (*backendSet, *fakeClock) {
	t.Helper()
	bs := make([]*backend, n)
	for i := range bs {
		u, err := url.Parse(fmt.Sprintf("http://user:pw@backend-%s-%d.test:8481/prefix", t.Name(), i))
		if err != nil {
			t.Fatal(err)
		}
		bs[i] = newBackend("read", u, "")
	}
	s := newBackendSet("read", policy, 3*time.Second, bs)
	c := &fakeClock{}
	c.ns.Store(1e18)
	s.now = c.now
	return s, c
}

func counts(s *backendSet, picks int, tried uint64) []int {
	bs := s.backends()
	got := make([]int, len(bs)+1)
	for range picks {
		got[s.pick(bs, tried)+1]++
	}
	return got[1:]
}

func TestLeastLoadedRotatesTiesAndPrefersTheIdle(t *testing.T) {
	s, _ := testSet(t, LeastLoaded, 3)
	if got := counts(s, 300, 0); got[0] != 100 || got[1] != 100 || got[2] != 100 {
		t.Fatalf("idle backends: picks %v, want 100 each (ties rotated)", got)
	}
	bs := s.backends()
	bs[0].inflight.Store(2)
	bs[2].inflight.Store(1)
	if got := counts(s, 30, 0); got[1] != 30 {
		t.Fatalf("in flight 2,0,1: picks %v, want all on backend 1", got)
	}
	bs[1].inflight.Store(1)
	if got := counts(s, 30, 0); got[0] != 0 || got[1] != 15 || got[2] != 15 {
		t.Fatalf("in flight 2,1,1: picks %v, want 0,15,15", got)
	}
}

func TestFirstAvailableUsesTheFirstHealthy(t *testing.T) {
	s, clock := testSet(t, FirstAvailable, 3)
	bs := s.backends()
	bs[0].inflight.Store(100)
	if got := counts(s, 20, 0); got[0] != 20 {
		t.Fatalf("picks %v, want all on the first backend whatever its load", got)
	}
	s.markBroken(bs[0], "test")
	if got := counts(s, 20, 0); got[1] != 20 {
		t.Fatalf("first broken: picks %v, want all on the second", got)
	}
	clock.advance(3*time.Second - 1)
	if got := counts(s, 20, 0); got[1] != 20 {
		t.Fatalf("1ns before the fail timeout ends: picks %v, want all on the second", got)
	}
	clock.advance(1)
	if got := counts(s, 20, 0); got[0] != 20 {
		t.Fatalf("fail timeout over: picks %v, want the first again", got)
	}
	if bs[0].broken.Get() != 1 {
		t.Fatal("a backend past its fail timeout that has not answered yet must still show as broken")
	}
	s.markOK(bs[0])
	if bs[0].broken.Get() != 0 || bs[0].brokenUntil.Load() != 0 {
		t.Fatal("an answer must clear the broken mark")
	}
}

func TestPickSkipsTriedAndBroken(t *testing.T) {
	for _, p := range []Policy{LeastLoaded, FirstAvailable} {
		s, clock := testSet(t, p, 3)
		bs := s.backends()
		if got := counts(s, 30, 1<<0|1<<2); got[1] != 30 {
			t.Fatalf("policy %d, 0 and 2 tried: picks %v, want all on 1", p, got)
		}
		if got := s.pick(bs, 1<<0|1<<1|1<<2); got != -1 {
			t.Fatalf("policy %d, all tried: pick %d, want -1", p, got)
		}
		s.markBroken(bs[1], "test")
		clock.advance(time.Second)
		s.markBroken(bs[0], "test")
		clock.advance(time.Second)
		s.markBroken(bs[2], "test")
		// Every backend broken: the first attempt still goes out, to the one whose mark ends first.
		if got := counts(s, 10, 0); got[1] != 10 {
			t.Fatalf("policy %d, all broken: picks %v, want all on 1 (its mark ends first)", p, got)
		}
		// ...but no retry goes to a broken backend.
		if got := s.pick(bs, 1<<1); got != -1 {
			t.Fatalf("policy %d, all broken, 1 tried: pick %d, want -1", p, got)
		}
		clock.advance(2*time.Second + 1)
		if got := s.pick(bs, 1<<1); got != 0 {
			t.Fatalf("policy %d, 0's mark over: pick %d, want 0", p, got)
		}
	}
}

func TestSingleBackendIsAlwaysTriedOnce(t *testing.T) {
	s, _ := testSet(t, LeastLoaded, 1)
	bs := s.backends()
	s.markBroken(bs[0], "test")
	if s.pick(bs, 0) != 0 || s.pick(bs, 1) != -1 {
		t.Fatal("one backend: the first attempt must go to it, broken or not, and no retry")
	}
}

func TestParsePolicy(t *testing.T) {
	for s, want := range map[string]Policy{"least_loaded": LeastLoaded, "first_available": FirstAvailable, "": LeastLoaded} {
		if p, err := ParsePolicy(s); err != nil || p != want {
			t.Fatalf("ParsePolicy(%q) = %d, %v", s, p, err)
		}
	}
	if _, err := ParsePolicy("round_robin"); err == nil {
		t.Fatal("an unknown policy must be refused")
	}
}

// BenchmarkPick is the balancing decision of one request: well under a microsecond, no allocation.
func BenchmarkPick(b *testing.B) {
	for _, p := range []struct {
		name   string
		policy Policy
		n      int
	}{{"least_loaded/2", LeastLoaded, 2}, {"least_loaded/8", LeastLoaded, 8}, {"first_available/8", FirstAvailable, 8}} {
		b.Run(p.name, func(b *testing.B) {
			s, _ := testSet(b, p.policy, p.n)
			bs := s.backends()
			// One broken backend, marked without the log line markBroken writes, which would garble the output.
			bs[0].brokenUntil.Store(s.now() + s.failTimeout)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := s.pick(bs, 0)
					bs[i].start()
					bs[i].done()
				}
			})
		})
	}
}
