//go:build unix

package procs

import (
	"context"
	"runtime"
	"testing"
	"time"
)

func TestCPUTime(t *testing.T) {
	start := cpuTime()
	// Spins until the clock has seen 30ms of CPU: a clock that does not move fails by the deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := cpuTime()
		if now-start >= 30*time.Millisecond {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CPU time moved by %s in 10s of spinning", now-start)
		}
	}
}

func TestAdaptEndsOnTheRuntimeDefault(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	ctx, cancel := context.WithCancel(context.Background())
	Adapt(ctx)
	if runtime.GOMAXPROCS(0) != 1 || Max() != def {
		t.Fatalf("Adapt started on %d Ps with Max %d; want 1 and the runtime's default %d", runtime.GOMAXPROCS(0), Max(), def)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for ceiling.Load() != 0 || runtime.GOMAXPROCS(0) != def {
		if time.Now().After(deadline) {
			t.Fatalf("after ctx ended: %d Ps (default %d), ceiling %d", runtime.GOMAXPROCS(0), def, ceiling.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
