package querylimits

import (
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// cpuClock reports the CPU time per op, user and system, of the whole process while it runs: on a machine shared
// with other work the wall time per op (ns/op) counts the time the benchmark waited for a core, the CPU time does
// not. GC work on other threads is counted, as it should be. It starts running; stop and start it with the
// benchmark's timer.
type cpuClock struct {
	b            *testing.B
	total, since time.Duration
}

func startCPUClock(b *testing.B) *cpuClock { return &cpuClock{b: b, since: vmtest.ProcessCPU()} }

func (c *cpuClock) stop()  { c.total += vmtest.ProcessCPU() - c.since }
func (c *cpuClock) start() { c.since = vmtest.ProcessCPU() }

// report stops the clock and reports its time per op.
func (c *cpuClock) report() {
	c.stop()
	c.b.ReportMetric(float64(c.total)/float64(c.b.N), "cpu-ns/op")
}
