//go:build linux

package main

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"net/http"
	"os"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 4095, 4096, 123456, 1e9, 3e10, 1 << 62} {
		i := bucketOf(v)
		mid := bucketMid(i)
		if rel := math.Abs(mid-float64(v)) / math.Max(1, float64(v)); rel > 1.0/64 {
			t.Errorf("value %d: bucket %d has middle %.0f, %.2f%% off; want within 1/64", v, i, mid, rel*100)
		}
		if i > 0 && bucketOf(v) < bucketOf(v-1) {
			t.Errorf("buckets are not monotonic at %d", v)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {0.999, 999}, {0, 1}} {
		if got := h.quantile(tc.q); math.Abs(got-tc.want)/tc.want > 0.02 {
			t.Errorf("quantile(%v) = %.1f µs; want %.0f µs within 2%%", tc.q, got, tc.want)
		}
	}
	var other histogram
	other.record(time.Second)
	h.merge(&other)
	if h.n != 1001 || h.max != time.Second {
		t.Errorf("after merge: n=%d max=%s; want 1001 and 1s", h.n, h.max)
	}
}

// The load generator writes raw requests: they must be exactly one valid HTTP request each.
func TestRawRequests(t *testing.T) {
	for _, wl := range []string{"read", "write"} {
		raw := rawRequest(wl, "127.0.0.1:1", "tok")
		br := bufio.NewReader(bytes.NewReader(raw))
		r, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("%s: %s", wl, err)
		}
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer tok" || br.Buffered() != 0 {
			t.Errorf("%s: Authorization %q, %d bytes left over", wl, r.Header.Get("Authorization"), br.Buffered())
		}
		if wl == "read" && (r.Method != http.MethodGet || r.URL.Query().Get("step") != "15" || len(body) != 0) {
			t.Errorf("read: %s %s with %d body bytes", r.Method, r.URL, len(body))
		}
		if wl == "write" && (r.Method != http.MethodPost || !bytes.Equal(body, importBody)) {
			t.Errorf("write: %s with body %q", r.Method, body)
		}
	}
}

func TestPatternReader(t *testing.T) {
	for _, n := range []int64{0, 1, int64(len(pattern)) - 1, int64(len(pattern)) + 7, 1 << 20} {
		got, err := io.Copy(io.Discard, &patternReader{left: n})
		if err != nil || got != n {
			t.Errorf("patternReader{%d} gave %d bytes, %v", n, got, err)
		}
	}
	b, _ := io.ReadAll(&patternReader{left: int64(len(pattern)) + 10})
	if !bytes.Equal(b[len(pattern):], pattern[:10]) {
		t.Errorf("patternReader does not wrap around: %q", b[len(pattern):])
	}
}

func TestReadGoBench(t *testing.T) {
	path := t.TempDir() + "/go-bench.txt"
	const out = `goos: linux
pkg: github.com/vmgateway/vmgateway/internal/auth
BenchmarkAuthenticateCached-2   	 9391231	       127.4 ns/op	       0 B/op	       0 allocs/op
pkg: github.com/vmgateway/vmgateway/internal/ratelimit
BenchmarkGate/allowed-2         	31236190	        38.15 ns/op	       0 B/op	       0 allocs/op
BenchmarkGate/allowed/parallel-2	31236190	        20.5 ns/op
PASS
`
	if err := writeFile(path, out); err != nil {
		t.Fatal(err)
	}
	got := readGoBench(path)
	if g := got["BenchmarkAuthenticateCached"]; g.NsOp != 127.4 || g.Package != "github.com/vmgateway/vmgateway/internal/auth" {
		t.Errorf("AuthenticateCached: %+v", g)
	}
	if g := got["BenchmarkGate/allowed"]; g.NsOp != 38.15 || g.AllocsOp != 0 {
		t.Errorf("Gate/allowed: %+v", g)
	}
	if g := got["BenchmarkGate/allowed/parallel"]; g.NsOp != 20.5 {
		t.Errorf("Gate/allowed/parallel without -benchmem columns: %+v", g)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// Ratios pair the runs of one round: a round where the machine was busy for everyone must not skew them.
func TestPairedRatio(t *testing.T) {
	res := &Results{}
	for i, rps := range [][2]float64{{100, 100}, {50, 40}, {200, 100}} { // per-round ratios 1, 1.25, 2
		res.Runs = append(res.Runs,
			Run{Workload: "read", Target: "vmgateway", Round: i + 1, RPS: rps[0], P50us: 1, P99us: 1, CPUPer1k: 10},
			Run{Workload: "read", Target: "vmauth", Round: i + 1, RPS: rps[1], P50us: 2, P99us: 4, CPUPer1k: 20})
	}
	res.Runs = append(res.Runs, Run{Workload: "read", Target: "direct", Round: 1, RPS: 1000, P50us: 1, P99us: 1})
	res.summarize([]*target{{name: "direct"}, {name: "vmgateway"}, {name: "vmauth"}}, []string{"read"}, 3)
	r := res.ratio("read", "vmauth")
	if r == nil || r.RPS != 1.25 || r.P50 != 0.5 || r.P99 != 0.25 || r.CPU == nil || *r.CPU != 0.5 {
		t.Fatalf("gateway/vmauth = %+v; want rps 1.25, p50 0.5, p99 0.25, cpu 0.5", r)
	}
	if d := res.ratio("read", "direct"); d == nil || d.RPS != 0.1 || d.CPU != nil {
		t.Errorf("gateway/direct = %+v; want rps 0.1 from the one round both ran, no CPU ratio", d)
	}
	if s := res.summary("read", "vmgateway"); s == nil || s.RPS != 100 {
		t.Errorf("summary = %+v; want the median 100 req/s", s)
	}
	res.evaluateTargets()
	if len(res.Targets) == 0 || res.Targets[0].Value != 1.25 || !res.Targets[0].Met {
		t.Errorf("targets = %+v; want the read throughput target met at 1.25", res.Targets)
	}
}

// The dashboard mix: one valid request per query; direct ones carry the proxies' restriction and no token.
func TestDashboardRequests(t *testing.T) {
	realEnd = 1700003600
	for _, direct := range []bool{false, true} {
		raws := dashboardRequests("127.0.0.1:1", "tok", direct)
		if len(raws) != len(dashboardQueries) {
			t.Fatalf("%d requests for %d queries", len(raws), len(dashboardQueries))
		}
		for i, raw := range raws {
			br := bufio.NewReader(bytes.NewReader(raw))
			r, err := http.ReadRequest(br)
			if err != nil || br.Buffered() != 0 {
				t.Fatalf("request %d: %v, %d bytes left over", i, err, br.Buffered())
			}
			q := r.URL.Query()
			if q.Get("query") != dashboardQueries[i].query {
				t.Errorf("request %d: query %q; want %q", i, q.Get("query"), dashboardQueries[i].query)
			}
			if dashboardQueries[i].instant != (r.URL.Path == "/api/v1/query") || (q.Get("time") != "1700003600" && q.Get("end") != "1700003600") {
				t.Errorf("request %d: %s", i, r.URL)
			}
			if got := q.Get("extra_label"); direct != (got == "team=dev") {
				t.Errorf("request %d (direct %v): extra_label %q", i, direct, got)
			}
			if got := r.Header.Get("Authorization"); direct != (got == "") {
				t.Errorf("request %d (direct %v): Authorization %q", i, direct, got)
			}
		}
	}
}
