// Package procs runs the Go scheduler on as few processors (GOMAXPROCS) as the gateway's load needs, up to the
// runtime's default for the CPUs it may use.
//
// The gateway mostly waits: on its clients, and on VictoriaMetrics, which does the work of a query. With more Ps
// than work, each goroutine the network wakes starts another P's thread, which looks for work, finds little and
// sleeps again: futex wake-ups and spinning that cost as much as the forwarding itself. On the benchmark's
// dashboard mix (two cores shared with VictoriaMetrics) the gateway spent 191 µs of CPU a query on two Ps and 135
// on one, CPU that VictoriaMetrics then lacks. The runtime sizes GOMAXPROCS by the CPUs the process may use and
// libraries such as automaxprocs by the container's quota, both for the most the process could need; none sizes it
// by the load, so this package does: it starts on one P, doubles the Ps when those it has are busy most of the time,
// and gives one back when the load of a longer span would fit in one fewer.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// ceiling is the most Ps while Adapt runs; zero when it does not.
var ceiling atomic.Int64

// Max is the most Ps the gateway runs on: the runtime's default for the CPUs it may use, or GOMAXPROCS's value when
// set. What is sized by the CPUs (not by the Ps of the moment) is sized by this.
func Max() int {
	if m := ceiling.Load(); m > 0 {
		return int(m)
	}
	return runtime.GOMAXPROCS(0)
}

const (
	// tick is how often the load is measured. A burst waits at most about this long for the Ps it needs.
	tick = 100 * time.Millisecond
	// window is the span whose load decides to give back a P: ten ticks, so a short lull between bursts keeps them.
	window = 2 * time.Second
	// relearn is how often the runtime's default is read again (a container's CPU limit may change).
	relearn = time.Minute
	// busy: the Ps were busy this share of a tick's wall time (CPU of the whole process, kernel time included).
	// Past it a request waits for a P longer than its own CPU time (one and a half times at 0.6, three times at
	// 0.75): a remote-write batch, half a millisecond of decoding, lost a tenth of its throughput on one P busy 0.72
	// of the time.
	busy = 0.6
	// idle: one P fewer would have been busy at most this share of the window's wall time. Well under busy, so that
	// giving a P back does not make the rest busy enough to take it again (fewer Ps also cost less CPU for the same
	// work: the wake-ups go).
	idle = 0.4
)

// Adapt sizes GOMAXPROCS to the load until ctx ends, then leaves the runtime's default. It does nothing when the
// GOMAXPROCS environment variable is set (the operator chose), or where the process's CPU time cannot be read.
func Adapt(ctx context.Context) {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		slog.Info("GOMAXPROCS is set: the gateway runs on that many Ps, not on as many as its load needs", "GOMAXPROCS", v)
		return
	}
	if !cpuTimeKnown {
		return
	}
	m := runtime.GOMAXPROCS(0)
	ceiling.Store(int64(m))
	// From one P: the first busy tick doubles it.
	runtime.GOMAXPROCS(1)
	go run(ctx, &policy{max: m, procs: 1}, cpuTime, tick, relearn)
}

// run reads the process's CPU time from clock every tick and sets GOMAXPROCS to what p makes of it.
func run(ctx context.Context, p *policy, clock func() time.Duration, tick, relearn time.Duration) {
	defer func() {
		runtime.SetDefaultGOMAXPROCS()
		ceiling.Store(0)
	}()
	t := time.NewTicker(tick)
	defer t.Stop()
	learned := time.Now()
	lastCPU := clock()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(learned) >= relearn {
				// The runtime's default follows the CPU limit; reading it sets it, for a moment.
				runtime.SetDefaultGOMAXPROCS()
				p.setMax(runtime.GOMAXPROCS(0))
				ceiling.Store(int64(p.max))
				runtime.GOMAXPROCS(p.procs)
				learned = now
			}
			cpu := clock()
			n := p.observe(cpu-lastCPU, now.Sub(last))
			lastCPU, last = cpu, now
			if n != runtime.GOMAXPROCS(0) {
				runtime.GOMAXPROCS(n)
			}
		}
	}
}

// policy decides the number of Ps from the CPU the process used, between one and max.
type policy struct {
	max, procs int
	// The CPU and wall time since the last change or the last window's end.
	cpu, wall time.Duration
}

// observe takes a tick's CPU and wall time and returns the Ps for the next tick.
func (p *policy) observe(cpu, wall time.Duration) int {
	if wall <= 0 {
		return p.procs
	}
	if p.procs < p.max && float64(cpu) > busy*float64(p.procs)*float64(wall) {
		// Doubled, not one more: a burst on many cores finds them in a few ticks.
		p.procs = min(p.max, 2*p.procs)
		p.cpu, p.wall = 0, 0
		return p.procs
	}
	p.cpu += cpu
	p.wall += wall
	if p.wall < window {
		return p.procs
	}
	if p.procs > 1 && float64(p.cpu) < idle*float64(p.procs-1)*float64(p.wall) {
		p.procs--
	}
	p.cpu, p.wall = 0, 0
	return p.procs
}

// setMax takes a new ceiling; Ps above it are given back at once.
func (p *policy) setMax(n int) {
	p.max = max(1, n)
	p.procs = min(p.procs, p.max)
}
