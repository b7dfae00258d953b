//go:build !unix

package procs

import "time"

// cpuTimeKnown: the process's CPU time cannot be read here, and Adapt leaves GOMAXPROCS to the runtime.
const cpuTimeKnown = false

func cpuTime() time.Duration { return 0 }
