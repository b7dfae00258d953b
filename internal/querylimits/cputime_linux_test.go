package querylimits

import (
	"syscall"
	"testing"
)

// cpuClock reports the CPU time per op, user and system, of the whole process while it runs: on a machine shared
// with other work the wall time per op (ns/op) counts the time the benchmark waited for a core, the CPU time does
// not. GC work on other threads is counted, as it should be. It starts running; stop and start it with the
// benchmark's timer.
type cpuClock struct {
	b            *testing.B
	total, since int64
}

func startCPUClock(b *testing.B) *cpuClock { return &cpuClock{b: b, since: cpuNanos(b)} }

func (c *cpuClock) stop()  { c.total += cpuNanos(c.b) - c.since }
func (c *cpuClock) start() { c.since = cpuNanos(c.b) }

// report stops the clock and reports its time per op.
func (c *cpuClock) report() {
	c.stop()
	c.b.ReportMetric(float64(c.total)/float64(c.b.N), "cpu-ns/op")
}

func cpuNanos(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
