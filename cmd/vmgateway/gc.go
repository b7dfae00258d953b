package main

import (
	"os"
	"runtime/debug"
	"strconv"
)

// The garbage collector's pace. The gateway's live heap is small (caches bounded by their flags, pooled buffers)
// and nearly everything it allocates dies with its request, so at Go's default pace (GOGC=100) it collects each
// time the heap doubles from a few MiB: hundreds of cycles a second under load. At GOGC=200 the heap may reach
// three times the live one before a cycle, a few MiB more, for a tenth or so less CPU per request (`make bench`,
// docs/benchmarks.md). An operator's GOGC (or GOMEMLIMIT beside it) is the Go runtime's own and wins.
const defaultGCPercent = 200

// setGCPace applies defaultGCPercent unless the environment sets GOGC, and returns the pace in force for the start
// summary ("off" when GOGC=off).
func setGCPace() string {
	if v, set := os.LookupEnv("GOGC"); set {
		return v + " (GOGC from the environment)"
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}
