package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// startGatewayAt runs vmgateway on addr, as a restarted instance behind a fixed endpoint would be. With addr empty
// it picks a free port, and another when a process took that port before the gateway could bind it.
func startGatewayAt(t testing.TB, addr string, flags ...string) *gw {
	t.Helper()
	for attempt := 1; ; attempt++ {
		at := addr
		if at == "" {
			at = vmtest.FreePort(t)
		}
		g := runGateway(t, "http://"+at, exec.Command(gatewayBin, append([]string{"-httpListenAddr=" + at}, flags...)...))
		if g.waitHealthy("") {
			t.Cleanup(func() { g.stop(syscall.SIGKILL) })
			return g
		}
		g.stop(syscall.SIGKILL)
		if addr != "" || attempt == 3 || !strings.Contains(g.logs.String(), "address already in use") {
			t.Fatalf("vmgateway on %s did not become healthy; logs:\n%s", at, g.logs.String())
		}
	}
}

// retryingWriter is a client in front of several gateways: it sends each write to the next gateway and, when
// the connection is refused (a gateway restarting), to the others, until one takes it. Nothing else is retried.
type retryingWriter struct {
	urls   []string
	client *http.Client

	next                      atomic.Uint64
	acked, refused, failed    atomic.Int64
	statuses                  sync.Map // status → *atomic.Int64
	firstFailure, firstStatus atomic.Value
}

func newRetryingWriter(urls ...string) *retryingWriter {
	// A fresh connection per request: a gateway that stops accepting shows as refused connections, and a kept-alive
	// connection the gateway closes between requests cannot eat a write.
	return &retryingWriter{urls: urls, client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}}
}

// write sends body and reports whether it was acknowledged with 2xx.
func (w *retryingWriter) write(path, body string, header ...string) bool {
	start := w.next.Add(1)
	deadline := time.Now().Add(20 * time.Second)
	for i := uint64(0); time.Now().Before(deadline); i++ {
		u := w.urls[(start+i)%uint64(len(w.urls))]
		req, _ := http.NewRequest(http.MethodPost, u+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		for j := 0; j+1 < len(header); j += 2 {
			req.Header.Set(header[j], header[j+1])
		}
		resp, err := w.client.Do(req)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				w.refused.Add(1)
				if i%uint64(len(w.urls)) == uint64(len(w.urls)-1) {
					time.Sleep(20 * time.Millisecond) // every gateway refused: give one a moment to come up
				}
				continue
			}
			w.failed.Add(1)
			w.firstFailure.CompareAndSwap(nil, err.Error())
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c, _ := w.statuses.LoadOrStore(resp.StatusCode, &atomic.Int64{})
		c.(*atomic.Int64).Add(1)
		if resp.StatusCode/100 == 2 {
			w.acked.Add(1)
			return true
		}
		w.firstStatus.CompareAndSwap(nil, fmt.Sprintf("%d from %s", resp.StatusCode, u))
		return false
	}
	w.failed.Add(1)
	w.firstFailure.CompareAndSwap(nil, "every gateway refused connections for 20s")
	return false
}

func (w *retryingWriter) statusCounts() map[int]int64 {
	m := map[int]int64{}
	w.statuses.Range(func(k, v any) bool { m[k.(int)] = v.(*atomic.Int64).Load(); return true })
	return m
}

// exportedValues reads every sample of the series matching match from VictoriaMetrics, keyed by the value of
// label, as sets of sample values.
func exportedValues(t testing.TB, vmURL, match, label string) map[string]map[int64]bool {
	t.Helper()
	resp, err := http.Get(vmURL + "/api/v1/export?match[]=" + match)
	if err != nil {
		t.Fatalf("export: %s", err)
	}
	defer resp.Body.Close()
	out := map[string]map[int64]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Metric map[string]string `json:"metric"`
			Values []float64         `json:"values"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export line %q: %s", sc.Text(), err)
		}
		set := out[line.Metric[label]]
		if set == nil {
			set = map[int64]bool{}
			out[line.Metric[label]] = set
		}
		for _, v := range line.Values {
			set[int64(v)] = true
		}
	}
	return out
}

// TestRollingRestartLosesNoWrite restarts two gateways one after the other with SIGTERM while writers send
// sequence-numbered samples through them into a real VictoriaMetrics, retrying only refused connections. Every
// write acknowledged with 2xx must be stored.
func TestRollingRestartLosesNoWrite(t *testing.T) {
	vm := vmtest.Start(t)
	flags := []string{"-read.url=" + vm.URL, "-write.url=" + vm.URL, "-http.shutdownDelay=300ms", "-http.maxGracefulShutdownDuration=5s", "-loggerLevel=WARN"}
	gws := []*gw{startGatewayAt(t, "", flags...), startGatewayAt(t, "", flags...)}
	addrs := []string{strings.TrimPrefix(gws[0].URL, "http://"), strings.TrimPrefix(gws[1].URL, "http://")}
	w := newRetryingWriter(gws[0].URL, gws[1].URL)

	const writers = 4
	base := time.Now().Add(-time.Hour).UnixMilli()
	var seq atomic.Int64
	acked := make([][]int64, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := seq.Add(1)
				if w.write("/api/v1/import/prometheus", fmt.Sprintf("rolling_seq{writer=\"%d\"} %d %d\n", i, n, base+n)) {
					acked[i] = append(acked[i], n)
				}
			}
		}(i)
	}

	// Writes are flowing when a restart begins: wait until a few more were acknowledged since the last one.
	flowing := func() {
		from := w.acked.Load()
		vmtest.Eventually(t, func() (bool, string) {
			n := w.acked.Load()
			return n >= from+20, fmt.Sprintf("%d writes acknowledged since the last restart, want 20", n-from)
		})
	}
	restarts := 0
	for round := 0; round < 2; round++ {
		for i := range gws {
			flowing()
			before := w.acked.Load()
			_ = gws[i].Signal(syscall.SIGTERM)
			select {
			case <-gws[i].Done():
			case <-time.After(20 * time.Second):
				t.Fatalf("gateway %d did not exit after SIGTERM", i)
			}
			if gws[i].Err() != nil {
				t.Fatalf("gateway %d exited with %v; logs:\n%s", i, gws[i].Err(), gws[i].logs.String())
			}
			if w.acked.Load() == before {
				t.Fatalf("no write was acknowledged while gateway %d shut down: the other one should have taken them", i)
			}
			gws[i] = startGatewayAt(t, addrs[i], flags...)
			restarts++
		}
	}
	flowing()
	close(stop)
	wg.Wait()

	statuses := w.statusCounts()
	t.Logf("%d restarts; %d writes sent, %d acknowledged, %d connections refused and retried, %d failed otherwise; statuses %v",
		restarts, seq.Load(), w.acked.Load(), w.refused.Load(), w.failed.Load(), statuses)
	if w.refused.Load() == 0 {
		t.Errorf("no connection was refused: the restarts did not happen under load")
	}
	for code, n := range statuses {
		if code/100 != 2 {
			t.Errorf("%d writes answered %d, e.g. %v: a rolling restart must not fail requests", n, code, w.firstStatus.Load())
		}
	}
	if f := w.failed.Load(); f > 0 {
		// Not a loss (never acknowledged), but a graceful restart should leave nothing but refused connections.
		t.Logf("%d writes failed without a refused connection, e.g. %v", f, w.firstFailure.Load())
	}

	vm.Flush(t)
	var missing []string
	vmtest.Eventually(t, func() (bool, string) {
		stored := exportedValues(t, vm.URL, "rolling_seq", "writer")
		missing = missing[:0]
		for i, seqs := range acked {
			for _, n := range seqs {
				if !stored[fmt.Sprint(i)][n] {
					missing = append(missing, fmt.Sprintf("writer %d seq %d", i, n))
				}
			}
		}
		return len(missing) == 0, fmt.Sprintf("%d acknowledged writes are not stored, e.g. %v", len(missing), head(missing, 5))
	})
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
