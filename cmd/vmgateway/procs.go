package main

import (
	"context"
	"flag"

	"github.com/vmgateway/vmgateway/internal/procs"
)

var adaptiveProcs = flag.Bool("runtime.adaptiveProcs", true, "Run the Go scheduler on as few processors as the load needs (GOMAXPROCS from 1 up to the CPUs the gateway may use, "+
	"raised within 0.1s of a busy moment): less CPU per request when the gateway mostly waits on VictoriaMetrics, which gets that CPU. "+
	"No effect when the GOMAXPROCS environment variable is set. See go_gomaxprocs on /metrics")

// startAdaptiveProcs runs procs.Adapt for the life of the process when -runtime.adaptiveProcs is on.
func startAdaptiveProcs() {
	if *adaptiveProcs {
		procs.Adapt(context.Background())
	}
}
