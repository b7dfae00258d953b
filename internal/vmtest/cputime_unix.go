//go:build unix

package vmtest

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time the process has spent, user and system, on every thread (the garbage collector's
// included): the benchmarks' cpu-ns/op, which other processes sharing the machine disturb much less than the wall
// time of ns/op.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic("getrusage of the process itself failed: " + err.Error())
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
