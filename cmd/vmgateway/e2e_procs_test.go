package main

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestAdaptiveProcs: the gateway runs on one P while idle and on more while a load keeps that one busy, then gives
// them back; with -runtime.adaptiveProcs=false, or GOMAXPROCS set, it runs on what the runtime gives.
func TestAdaptiveProcs(t *testing.T) {
	up := discardingUpstream(t)
	// The runtime's default for this machine, the same for the gateway's processes as for the test's.
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	// An empty GOMAXPROCS is no GOMAXPROCS, whatever the test's environment has.
	unset := []string{"GOMAXPROCS="}
	flags := []string{"-read.url=" + up.URL, "-write.url=" + up.URL}

	g := startGatewayEnv(t, unset, flags...)
	waitMetric(t, g, "go_gomaxprocs", "1 while idle", is(1))
	if def > 1 {
		// Form bodies of 1 MiB, each read whole and split by the gateway: its CPU, not the client's, is what they
		// take.
		body := "query=up&pad=" + strings.Repeat("x", 1<<20)
		stop := flood(8, func(c *http.Client) bool {
			resp, err := c.Post(g.URL+"/api/v1/query", "application/x-www-form-urlencoded", strings.NewReader(body))
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		waitMetric(t, g, "go_gomaxprocs", "more than 1 under load", func(v float64) bool { return v > 1 })
		stop()
		// One P back per 2 s window, from at most the runtime's default.
		for deadline := time.Now().Add(time.Duration(def)*2*time.Second + 10*time.Second); metricValue(t, g, "go_gomaxprocs") != 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("go_gomaxprocs is %v after the load; want 1 again", metricValue(t, g, "go_gomaxprocs"))
			}
		}
	}

	off := startGatewayEnv(t, unset, append(flags, "-runtime.adaptiveProcs=false")...)
	set := startGatewayEnv(t, []string{"GOMAXPROCS=3"}, flags...)
	// Longer than a few of the adapter's ticks.
	time.Sleep(500 * time.Millisecond)
	if v := metricValue(t, off, "go_gomaxprocs"); v != float64(def) {
		t.Errorf("with -runtime.adaptiveProcs=false go_gomaxprocs is %v; want the runtime's default %d", v, def)
	}
	if v := metricValue(t, set, "go_gomaxprocs"); v != 3 {
		t.Errorf("with GOMAXPROCS=3 go_gomaxprocs is %v; want 3", v)
	}
	if !set.logged("GOMAXPROCS is set") {
		t.Error("with GOMAXPROCS=3 the gateway did not say that it does not adapt")
	}
}
