package main

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// startTime is when the process started, for the uptime metric.
var startTime = time.Now()

// The build and uptime metrics, as VictoriaMetrics' own apps export vm_app_version and vm_app_uptime_seconds: a
// dashboard shows which version every replica runs (a rolling upgrade that stalls halfway is visible), and an
// uptime that keeps falling back to zero is a crash loop. version is set by the linker before init runs.
func init() {
	metrics.NewGauge(fmt.Sprintf(`vmgateway_build_info{version=%q}`, version), func() float64 { return 1 })
	metrics.NewGauge(`vmgateway_app_uptime_seconds`, func() float64 { return time.Since(startTime).Seconds() })
}
