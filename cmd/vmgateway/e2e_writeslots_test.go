package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestSlowWriteBodiesDoNotStarveOtherTeams: VictoriaMetrics before v1.86.0 (Debian's 1.79.5) holds one of its
// -maxConcurrentInserts for a whole request body, so one team's imports sent a line at a time held every insert slot,
// and another team's one-line write queued behind them until -insert.maxQueueDuration, then failed. The gateway now
// learns the backend's insert capacity and forwards no more writes at once, a team at most its share: ops' write goes
// through while dev's six imports trickle, and every line of dev's arrives once they end.
func TestSlowWriteBodiesDoNotStarveOtherTeams(t *testing.T) {
	vm := vmtest.Start(t, "-maxConcurrentInserts=4", "-insert.maxQueueDuration=5s")
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-write.maxConcurrentRequests=0")
	dev := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	ops := mint(t, priv, "-mode=write", "-extraLabels=team=ops")
	waitMetric(t, g, "vmgateway_write_backend_slots", "1.79.5's 4 insert slots, learned", is(4))

	trickleAgainstQuickWrite(t, g, dev, ops)

	// 1.79.5 makes series just written searchable within a few seconds, flushed or not.
	for _, q := range []struct {
		match string
		want  int
	}{{`trickle{team="dev"}`, 6 * 20}, {`quick{team="ops"}`, 1}} {
		got := 0
		for deadline := time.Now().Add(15 * time.Second); got != q.want && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			vm.Flush(t)
			_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(q.match), nil)
			got = strings.Count(body, "\n")
		}
		if got != q.want {
			t.Errorf("%s in VictoriaMetrics: %d series; want %d", q.match, got, q.want)
		}
	}
}

// TestNewerBackendsPaceWriteTurns: v1.151 frees its insert slot while it waits on a body but still runs only
// -maxConcurrentInserts parse-and-insert steps at once, queueing the rest first come first served, so one team's bulk
// imports made another team's one-line writes wait behind them (65-180 times slower, an attacker's review;
// BenchmarkWriteTurns gives the figures). The gateway learns its capacity and writes take turns there too, but hold
// their turn only while their body comes:
//   - dev's six imports trickling a line every 300 ms all reach the backend at once (turns held for a whole body would
//     let three through, dev's share of four), and ops' write goes through meanwhile;
//   - dev's bulk imports, sent as fast as they go, wait their turns at the gateway past dev's share, and ops' write
//     goes through meanwhile; every body is stored whole.
func TestNewerBackendsPaceWriteTurns(t *testing.T) {
	vm := vmtest.StartCurrent(t, "-maxConcurrentInserts=4")
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-write.maxConcurrentRequests=0", "-write.maxQueueDuration=1m")
	dev := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	ops := mint(t, priv, "-mode=write", "-extraLabels=team=ops")
	waitMetric(t, g, "vmgateway_write_backend_slots", "v1.151's 4 insert slots, learned", is(4))
	if !g.logged("free their slot while they wait on a request's body: writes past what those the balancer sends to run wait") {
		t.Error("the gateway never said that writes take turns, given up while a client is slow")
	}
	export := func(match string) string {
		vm.Flush(t)
		_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(match), nil)
		return body
	}

	t.Run("trickling imports hold no turn", func(t *testing.T) {
		paused := metricValue(t, g, "vmgateway_write_backend_paused_total")
		const imports, lines = 6, 20
		var wg sync.WaitGroup
		for i := range imports {
			pr := trickle(t, &wg, "paced", i, lines)
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", pr, "Authorization", "Bearer "+dev)
				if code != http.StatusNoContent {
					t.Errorf("dev's import %d: %d %s; want 204", i, code, body)
				}
			}()
		}
		// Every import has lines stored well before the first ends (6 s).
		started, seen := time.Now(), 0
		for ; seen < imports && time.Since(started) < 4*time.Second; time.Sleep(200 * time.Millisecond) {
			seen = 0
			for i := range imports {
				if strings.Contains(export(`paced{team="dev"}`), fmt.Sprintf(`"i":"%d"`, i)) {
					seen++
				}
			}
		}
		if seen < imports {
			t.Errorf("%d of dev's %d trickling imports reached the backend within %s; want all: turns held while their clients wait",
				seen, imports, time.Since(started).Round(time.Millisecond))
		}
		code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("quick 1\n"), "Authorization", "Bearer "+ops)
		if code != http.StatusNoContent {
			t.Errorf("ops' write while dev's imports trickle: %d %s; want 204", code, body)
		}
		wg.Wait()
		if got := metricValue(t, g, "vmgateway_write_backend_paused_total"); got < paused+imports {
			t.Errorf("vmgateway_write_backend_paused_total went from %v to %v; want each of the %d imports paused", paused, got, imports)
		}
		// v1.151 makes the last lines searchable within a few seconds.
		got := 0
		for deadline := time.Now().Add(15 * time.Second); got != imports*lines && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			got = strings.Count(export(`paced{team="dev"}`), "\n")
		}
		if got != imports*lines {
			t.Errorf("dev's imports stored %d series; want %d", got, imports*lines)
		}
	})

	t.Run("dribbling imports pass their turns on", func(t *testing.T) {
		// One turn (a replica's part of the four), and the one reserved for a team holding none, taken by dev's and
		// qa's imports sending a byte every millisecond, within the grace a read of a body waits before it gives the
		// turn up: their turns pass on to ops' writes.
		g1 := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
			"-write.maxConcurrentRequests=0", "-write.replicas=4")
		waitMetric(t, g1, "vmgateway_write_backend_slots", "a fourth of v1.151's 4 insert slots", is(1))
		qa := mint(t, priv, "-mode=write", "-extraLabels=team=qa")
		stop := make(chan struct{})
		var dribbling sync.WaitGroup
		dribbled := make(chan struct{}, 2)
		for _, token := range []string{dev, qa} {
			pr, pw := io.Pipe()
			dribbling.Add(2)
			go func() {
				defer dribbling.Done()
				code, _, body := do(t, http.MethodPost, g1.URL+"/api/v1/import/prometheus", pr, "Authorization", "Bearer "+token)
				if code != http.StatusNoContent {
					t.Errorf("a dribbling import: %d %s; want 204", code, body)
				}
				dribbled <- struct{}{}
			}()
			go func() {
				defer dribbling.Done()
				defer pw.Close()
				for l := 0; ; l++ {
					for _, c := range []byte(fmt.Sprintf("dribble{l=\"%d\"} 1\n", l)) {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := pw.Write([]byte{c}); err != nil {
							t.Errorf("a dribble: %s", err)
							return
						}
						time.Sleep(time.Millisecond)
					}
				}
			}()
		}
		waitMetric(t, g1, "vmgateway_write_backend_requests", "the dribbles holding the turn and the reserve", is(2))
		for i := range 10 {
			code, _, body := do(t, http.MethodPost, g1.URL+"/api/v1/import/prometheus", strings.NewReader("between 1\n"), "Authorization", "Bearer "+ops)
			if code != http.StatusNoContent {
				t.Fatalf("ops' write %d during the dribbles: %d %s; want 204", i, code, body)
			}
		}
		select {
		case <-dribbled:
			t.Fatal("a dribble ended before ops' writes were done: they waited for it")
		default:
		}
		close(stop)
		dribbling.Wait()
		if n := metricValue(t, g1, "vmgateway_write_backend_yielded_total") + metricValue(t, g1, "vmgateway_write_backend_paused_total"); n < 1 {
			t.Errorf("the dribbles never gave a turn up (yielded and paused: %v)", n)
		}
		waitMetric(t, g1, "vmgateway_write_backend_requests", "no write in flight once the dribbles end", is(0))
	})

	t.Run("bulk imports take turns", func(t *testing.T) {
		var big bytes.Buffer
		const rows = 50000
		for i := range rows {
			fmt.Fprintf(&big, "bulk{i=\"%d\",pod=\"pod-%d\"} %d\n", i, i%100, i)
		}
		var sent, failed atomic.Int64
		stop := flood(8, func(c *http.Client) bool {
			req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/v1/import/prometheus", bytes.NewReader(big.Bytes()))
			req.Header.Set("Authorization", "Bearer "+dev)
			resp, err := c.Do(req)
			if err != nil {
				failed.Add(1)
				t.Errorf("dev's bulk import: %s", err)
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				failed.Add(1)
				t.Errorf("dev's bulk import: %d; want 204", resp.StatusCode)
				return false
			}
			sent.Add(1)
			return true
		})
		// Dev's imports past its share of the 4 turns wait at the gateway, not in the backend's queue.
		waitMetric(t, g, "vmgateway_write_backend_requests_queued", "dev's bulk imports waiting for their turn", func(v float64) bool { return v >= 1 })
		if got := metricValue(t, g, "vmgateway_write_backend_requests"); got > 4 {
			t.Errorf("vmgateway_write_backend_requests is %v during dev's flood; want at most the 4 turns", got)
		}
		code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("during 1\n"), "Authorization", "Bearer "+ops)
		stop()
		if code != http.StatusNoContent {
			t.Fatalf("ops' write during dev's flood: %d %s; want 204", code, body)
		}
		if sent.Load() == 0 || failed.Load() > 0 {
			t.Fatalf("dev's bulk imports: %d stored, %d failed", sent.Load(), failed.Load())
		}
		got := 0
		for deadline := time.Now().Add(15 * time.Second); got != rows/100 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			got = strings.Count(export(`bulk{team="dev",pod="pod-7"}`), "\n")
		}
		if got != rows/100 {
			t.Errorf("dev's bulk series of one pod: %d; want %d", got, rows/100)
		}
		waitMetric(t, g, "vmgateway_write_backend_requests", "no write in flight once the flood ends", is(0))
		waitMetric(t, g, "vmgateway_write_backend_requests_queued", "no write waiting once the flood ends", is(0))
	})
}

// trickleAgainstQuickWrite sends six imports of dev through g, each a line every 300 ms, and once they hold what
// they may of the backends, one line of ops: it must be answered 204 within 3 s, and dev's imports 204 once they end.
func trickleAgainstQuickWrite(t *testing.T, g *gw, dev, ops string) {
	t.Helper()
	const imports, lines = 6, 20
	// On their own connections.
	var wg sync.WaitGroup
	codes := make(chan string, imports)
	for i := range imports {
		pr := trickle(t, &wg, "trickle", i, lines)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/v1/import/prometheus", pr)
			req.Header.Set("Authorization", "Bearer "+dev)
			resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				codes <- err.Error()
				return
			}
			resp.Body.Close()
			codes <- fmt.Sprint(resp.StatusCode)
		}()
	}
	// Once dev's imports hold what they may of the backend, ops writes one line.
	waitMetric(t, g, "vmgateway_write_backend_requests", "dev's imports at the backend, at least 3", func(v float64) bool { return v >= 3 })
	start := time.Now()
	code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("quick 1\n"), "Authorization", "Bearer "+ops)
	took := time.Since(start)
	if code != http.StatusNoContent {
		t.Fatalf("ops' write while dev's imports trickle: %d %s after %s; want 204", code, body, took.Round(time.Millisecond))
	}
	t.Logf("ops' write took %s while dev's %d imports trickled", took.Round(time.Millisecond), imports)
	if took > 3*time.Second {
		t.Errorf("ops' write took %s: it waited behind dev's imports", took.Round(time.Millisecond))
	}
	if got := metricValue(t, g, "vmgateway_write_backend_requests_queued"); got < 1 {
		t.Errorf("vmgateway_write_backend_requests_queued is %v while dev's imports past its share wait; want at least 1", got)
	}

	wg.Wait()
	close(codes)
	for c := range codes {
		if c != "204" {
			t.Errorf("one of dev's imports: %s; want 204", c)
		}
	}
}

// TestWriteSlotsFollowTheBackendsReached: the slots are what the backends the balancer sends to can take, not the sum
// of every backend's (found by an attacker's review): under first_available every write goes to the first backend, and
// with least_loaded a backend down (a rolling restart) takes none, so the sum let one team's trickling imports hold all
// of the backend that takes the writes, and ops' write got its 503.
func TestWriteSlotsFollowTheBackendsReached(t *testing.T) {
	priv, pub := keyPair(t, "ec")
	dev := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	ops := mint(t, priv, "-mode=write", "-extraLabels=team=ops")
	t.Run("first_available", func(t *testing.T) {
		vm1 := vmtest.Start(t, "-maxConcurrentInserts=4", "-insert.maxQueueDuration=5s")
		vm2 := vmtest.Start(t, "-maxConcurrentInserts=4", "-insert.maxQueueDuration=5s")
		g := startGateway(t, "-read.url="+vm1.URL, "-write.url="+vm1.URL, "-write.url="+vm2.URL, "-loadBalancingPolicy=first_available",
			"-enable.auth", "-auth.publicKeyFiles="+pub, "-write.maxConcurrentRequests=0")
		waitMetric(t, g, "vmgateway_write_backend_slots", "4: the first backend's", is(4))
		trickleAgainstQuickWrite(t, g, dev, ops)
	})
	t.Run("least_loaded, one backend down", func(t *testing.T) {
		vm1 := vmtest.Start(t, "-maxConcurrentInserts=4", "-insert.maxQueueDuration=5s")
		vm2 := vmtest.Start(t, "-maxConcurrentInserts=4", "-insert.maxQueueDuration=5s")
		g := startGateway(t, "-read.url="+vm1.URL, "-write.url="+vm1.URL, "-write.url="+vm2.URL,
			"-enable.auth", "-auth.publicKeyFiles="+pub, "-write.maxConcurrentRequests=0")
		waitMetric(t, g, "vmgateway_write_backend_slots", "8: both backends'", is(8))
		vm2.Stop()
		// A write finds it down (502: its body had begun, so it goes to no other): it is marked broken, and its
		// slots go.
		for i := 0; metricValue(t, g, "vmgateway_write_backend_slots") != 4; i++ {
			if i == 20 {
				t.Fatalf("vmgateway_write_backend_slots is %v with one of the two backends down; want 4", metricValue(t, g, "vmgateway_write_backend_slots"))
			}
			if code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("probe 1\n"), "Authorization", "Bearer "+ops); code != http.StatusNoContent && code != http.StatusBadGateway {
				t.Fatalf("a write with one backend down: %d %s", code, body)
			}
		}
		trickleAgainstQuickWrite(t, g, dev, ops)
	})
}

// TestQueuedWriteOfAGoneClientIsDropped: a write waiting for its turn at the write backends whose client leaves with
// its whole body sent leaves the queue at once and is never forwarded (it was, when its turn came: its client had
// given up on it and would send it again, and its place in the queue was another write's); a write waiting whose
// client stays goes through.
func TestQueuedWriteOfAGoneClientIsDropped(t *testing.T) {
	vm := vmtest.Start(t, "-maxConcurrentInserts=1")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-write.maxConcurrentRequests=0")
	waitMetric(t, g, "vmgateway_write_backend_slots", "1.79.5's one insert slot, learned", is(1))

	// An import that trickles holds the one slot until pw closes.
	pr, pw := io.Pipe()
	held := make(chan string, 1)
	go func() {
		code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", pr)
		held <- fmt.Sprint(code, " ", body)
	}()
	if _, err := io.WriteString(pw, "held 1\n"); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, g, "vmgateway_write_backend_requests", "the trickling import at the backend", is(1))

	// A whole write on a connection of its own, which closes while it waits.
	c := sendWholeImport(t, g, "gone 1\n")
	waitMetric(t, g, "vmgateway_write_backend_requests_queued", "the second write waiting", is(1))
	// And one whose client stays.
	stays := make(chan string, 1)
	go func() {
		code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("stays 1\n"))
		stays <- fmt.Sprint(code, " ", body)
	}()
	waitMetric(t, g, "vmgateway_write_backend_requests_queued", "two writes waiting", is(2))
	c.Close()
	waitMetric(t, g, "vmgateway_write_backend_requests_queued", "the gone client's write out of the queue", is(1))

	pw.Close()
	for name, ch := range map[string]chan string{"the trickling import": held, "the write whose client stayed": stays} {
		if got := <-ch; !strings.HasPrefix(got, "204 ") {
			t.Errorf("%s: %s; want 204", name, got)
		}
	}
	// 1.79.5 makes series just written searchable within a few seconds, flushed or not.
	series := func(name string) int {
		vm.Flush(t)
		_, _, b := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+name, nil)
		return strings.Count(b, "\n")
	}
	for deadline := time.Now().Add(15 * time.Second); series("held")+series("stays") != 2; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("VictoriaMetrics holds %d series held and %d stays; want 1 of each", series("held"), series("stays"))
		}
	}
	if n := series("gone"); n != 0 {
		t.Errorf("the write whose client left while it waited reached VictoriaMetrics: %d series gone", n)
	}
}

// TestWriteOfAGoneClientGoesWhole: without write slots, a write whose client leaves with its whole body sent while
// the gateway still forwards it goes to the backend whole: the server cancels the client's request as soon as the
// client leaves, and that must not cut the body where the cancel found it.
func TestWriteOfAGoneClientGoesWhole(t *testing.T) {
	got := make(chan int64, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Slower than the client: the rest of the body waits at the gateway when the client leaves.
		var n int64
		buf := make([]byte, 64<<10)
		for {
			time.Sleep(time.Millisecond)
			k, err := r.Body.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		got <- n
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	g := startGateway(t, "-read.url="+up.URL, "-write.url="+up.URL)
	body := strings.Repeat("whole 1\n", 1<<20)
	c := sendWholeImport(t, g, body)
	c.Close()
	select {
	case n := <-got:
		if n != int64(len(body)) {
			t.Fatalf("the backend got %d bytes of the %d-byte write whose client left; want all", n, len(body))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the write never reached the backend")
	}
}

// sendWholeImport sends a Prometheus text import with its Content-Length and whole body through g, on a connection
// of its own, and returns the connection without reading the answer.
func sendWholeImport(t *testing.T, g *gw, body string) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(g.URL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", addr, len(body), body); err != nil {
		t.Fatal(err)
	}
	return c
}

// trickle is the body of dev's import i: lines of metric, one every 300 ms, as a slow client sends them; wg is done
// once it is sent.
func trickle(t *testing.T, wg *sync.WaitGroup, metric string, i, lines int) io.Reader {
	pr, pw := io.Pipe()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer pw.Close()
		for l := range lines {
			if _, err := fmt.Fprintf(pw, "%s{i=\"%d\",l=\"%d\"} 1\n", metric, i, l); err != nil {
				t.Errorf("dev's import %d could not send line %d: %s", i, l, err)
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	return pr
}
