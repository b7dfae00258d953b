package main

import (
	"flag"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// The gateway's live heap is small (connection buffers, caches) while every request leaves a few KiB of garbage, so
// with GOGC's proportional goal alone the collector runs tens of times a second under load, and each cycle also
// empties the sync.Pools of copy buffers and request state, which are then allocated and zeroed again. A floor
// under the growth allowed between collections makes cycles rare at a fixed cost in memory, and unlike a higher
// GOGC it does not scale with a large live heap (many connections), where GOGC's own goal is the bigger one.
var gcMinHeapGrowth = flag.Int("gc.minHeapGrowth", 8<<20, "The heap may grow by at least this many bytes of garbage between two garbage collections, "+
	"above GOGC's proportional growth when the live heap is small: fewer collections under load for at most this much more memory. "+
	"GOMEMLIMIT, when set, still bounds the whole. Zero leaves the collector to GOGC alone")

// startGCFloor keeps the heap goal after every collection at the live heap plus max(GOGC's growth, minGrowth), by
// raising GOGC for the next cycle when its growth would be smaller. Nothing happens with GOGC=off or minGrowth <= 0.
func startGCFloor(minGrowth int) {
	samples := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	metrics.Read(samples[:1])
	if minGrowth <= 0 || samples[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	base := int64(samples[0].Value.Uint64())
	if base <= 0 {
		// GOGC=off (which reads as uint64(-1)) or 0: the operator runs the collector by GOMEMLIMIT or not at all.
		return
	}
	f := &gcFloor{base: base, minGrowth: int64(minGrowth), samples: samples}
	f.arm()
}

// gcFloor is re-armed as a finalizer on a fresh sentinel after every cycle: the runtime runs it once the cycle that
// found the sentinel unreachable has measured the live heap, and SetGCPercent then recomputes that cycle's goal.
type gcFloor struct {
	base, minGrowth int64
	percent         int64
	samples         []metrics.Sample
}

// gcSentinel holds a pointer so it is not a tiny allocation, whose finalizer may never run.
type gcSentinel struct{ f *gcFloor }

func (f *gcFloor) arm() {
	runtime.SetFinalizer(&gcSentinel{f: f}, func(s *gcSentinel) {
		s.f.adjust()
		s.f.arm()
	})
}

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales with GOGC.
const heapMinimum = 4 << 20

func (f *gcFloor) adjust() {
	metrics.Read(f.samples)
	v := func(i int) int64 {
		if f.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(min(f.samples[i].Value.Uint64(), 1<<50))
	}
	live := v(1)
	// The runtime's goal is max(heapMinimum×GOGC/100, live + (live+stacks+globals)×GOGC/100): the largest GOGC
	// that keeps both within live+minGrowth.
	scanned := max(live+v(2)+v(3), 1)
	p := min(f.minGrowth*100/scanned, (live+f.minGrowth)*100/heapMinimum)
	// SetGCPercent takes an int32: a percent past it would wrap and turn the collector off.
	p = min(max(p, f.base), math.MaxInt32)
	if p != f.percent {
		f.percent = p
		debug.SetGCPercent(int(p))
	}
}
