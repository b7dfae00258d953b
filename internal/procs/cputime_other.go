//go:build !unix

package procs

import "time"

// cpuTime cannot be read here: Adapt leaves GOMAXPROCS to the runtime.
func cpuTime() (time.Duration, bool) { return 0, false }
