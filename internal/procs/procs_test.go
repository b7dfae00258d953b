package procs

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// load is a span of ticks at one level of CPU use, in cores.
type load struct {
	ticks int
	cores float64
}

func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		from  int
		loads []load
		want  []int // Ps after each span
	}{
		{"idle stays on one P", 8, 1, []load{{50, 0.05}}, []int{1}},
		{"a busy P is doubled at once", 8, 1, []load{{1, 0.95}}, []int{2}},
		{"doubling goes on while the Ps stay busy", 8, 1, []load{{1, 0.95}, {1, 1.9}, {1, 3.8}}, []int{2, 4, 8}},
		{"never above the ceiling", 3, 2, []load{{1, 1.9}, {5, 3}}, []int{3, 3}},
		{"busy less than 60% of the time: kept", 8, 1, []load{{100, 0.55}}, []int{1}},
		{"a lull shorter than the window keeps the Ps", 8, 4, []load{{19, 0}}, []int{4}},
		{"one P back per window of low load", 8, 4, []load{{20, 0.1}, {20, 0.1}, {20, 0.1}, {20, 0.1}}, []int{3, 2, 1, 1}},
		{"the load would keep one fewer busy over 40% of the time: kept", 8, 2, []load{{60, 0.45}}, []int{2}},
		{"a burst in the window restarts it", 8, 2, []load{{15, 0.1}, {1, 1.9}, {15, 0.1}}, []int{2, 4, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &policy{max: tc.max, procs: tc.from}
			for i, l := range tc.loads {
				var got int
				for range l.ticks {
					got = p.observe(time.Duration(l.cores*float64(tick)), tick)
				}
				if got != tc.want[i] {
					t.Fatalf("after span %d (%d ticks at %.2f cores): %d Ps; want %d", i, l.ticks, l.cores, got, tc.want[i])
				}
			}
		})
	}
}

func TestPolicyCeilingShrinks(t *testing.T) {
	p := &policy{max: 8, procs: 8}
	p.setMax(2)
	if p.procs != 2 || p.max != 2 {
		t.Fatalf("after the ceiling fell to 2: %d Ps of at most %d; want 2 of 2", p.procs, p.max)
	}
	p.setMax(0)
	if p.procs != 1 || p.max != 1 {
		t.Fatalf("after a ceiling of 0: %d Ps of at most %d; want 1 of 1", p.procs, p.max)
	}
}

// TestRunFollowsTheLoad runs the loop on a CPU clock the test drives: a load of several cores takes it from one P
// to more, and its end gives them back.
func TestRunFollowsTheLoad(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(1)
	const ceil, tk = 4, 20 * time.Millisecond
	// The clock advances by the load's cores for each wall interval it is read at.
	var cores atomic.Int64
	var cpu time.Duration
	last := time.Now()
	clock := func() time.Duration {
		now := time.Now()
		cpu += time.Duration(cores.Load()) * now.Sub(last)
		last = now
		return cpu
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, &policy{max: ceil, procs: 1}, clock, tk, time.Hour)
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitProcs := func(what string, want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			n := runtime.GOMAXPROCS(0)
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS is %d after %s; want %d", what, n, within, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	cores.Store(ceil)
	waitProcs("a load of four cores", ceil, 5*time.Second)
	cores.Store(0)
	// A window (two seconds) per P given back.
	waitProcs("the load over", 1, 20*time.Second)
}

func TestAdaptRespectsGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "3")
	before := runtime.GOMAXPROCS(0)
	Adapt(context.Background())
	if n := runtime.GOMAXPROCS(0); n != before {
		t.Fatalf("with GOMAXPROCS set, Adapt changed the Ps from %d to %d", before, n)
	}
	if ceiling.Load() != 0 {
		t.Fatal("with GOMAXPROCS set, Adapt took a ceiling")
	}
}
