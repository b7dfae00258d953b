package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestGCFloor: with -gc.minHeapGrowth the heap goal after a collection is the live heap plus at least that much, so
// garbage well below it runs no collection; with 0 the goal is GOGC's alone and the same garbage runs several.
func TestGCFloor(t *testing.T) {
	up := discardingUpstream(t)
	// Each read's form body is read whole and split: about 12 MiB of garbage per request, 20 MiB under -race.
	body := "query=up&pad=" + strings.Repeat("x", 3<<20)
	const floor = 1 << 30

	// collections forces a collection, waits for the heap goal the floor (or its absence) sets after it, then sends
	// 8 such reads and returns the goal and how many collections they ran. GOGC and GOMEMLIMIT are the defaults
	// whatever the environment says: either would change the goal.
	collections := func(flag string, goalOK func(float64) bool) (goal float64, n int) {
		g := startGatewayEnv(t, []string{"GOGC=100", "GOMEMLIMIT=off"}, "-read.url="+up.URL, "-write.url="+up.URL, "-pprofAuthKey=k", flag)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if code, _, b := do(t, http.MethodGet, g.URL+"/debug/pprof/heap?gc=1&authKey=k", nil); code != http.StatusOK {
				t.Fatalf("forcing a collection: %d %.200s", code, b)
			}
			// The floor is set by a finalizer, which runs after the forced cycle.
			if goal = metricValue(t, g, "go_memstats_next_gc_bytes"); goalOK(goal) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		before := metricValue(t, g, "go_gc_duration_seconds_count")
		for i := 0; i < 8; i++ {
			if code, _, b := do(t, http.MethodPost, g.URL+"/api/v1/query", strings.NewReader(body)); code != http.StatusOK {
				t.Fatalf("read %d: %d %.200s", i, code, b)
			}
		}
		return goal, int(metricValue(t, g, "go_gc_duration_seconds_count") - before)
	}

	goal, n := collections("-gc.minHeapGrowth="+strconv.Itoa(floor), func(g float64) bool { return g >= floor })
	// The live heap here is a few MiB: the goal is the floor above it, not a multiple of it.
	if goal < floor || goal > floor+64<<20 {
		t.Errorf("with -gc.minHeapGrowth=%d the heap goal after a collection is %.0f bytes; want the live heap plus the floor", floor, goal)
	}
	// The collector starts a cycle once about 70 % of the growth to the goal is used: 8 reads stay far below.
	if n != 0 {
		t.Errorf("with -gc.minHeapGrowth=%d, 8 reads of 3 MiB ran %d collections; want none", floor, n)
	}
	goal0, n0 := collections("-gc.minHeapGrowth=0", func(g float64) bool { return g < 64<<20 })
	if goal0 >= 64<<20 {
		t.Errorf("with -gc.minHeapGrowth=0 the heap goal is %.0f bytes: GOGC alone gives a few MiB here", goal0)
	}
	// The comparison that shows the test can tell: the same garbage runs collections without the floor.
	if n0 < 3 {
		t.Errorf("with -gc.minHeapGrowth=0, 8 reads of 3 MiB ran %d collections; the test expects several to tell the floor apart", n0)
	}
	t.Logf("heap goal and collections for 8 reads of 3 MiB: floor %.1f MiB, %d; none %.1f MiB, %d", goal/(1<<20), n, goal0/(1<<20), n0)
}

// discardingUpstream answers every request with an empty Prometheus success, reading and dropping its body: an
// upstream for floods of large bodies, which vmtest.Recorder would keep.
func discardingUpstream(t testing.TB) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}))
	t.Cleanup(up.Close)
	return up
}
