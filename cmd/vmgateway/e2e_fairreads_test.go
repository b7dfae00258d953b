package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// heavySeries imports n series of an hour of samples every 10s, half of team dev and half of team ops, so that a
// rollup over all of them takes VictoriaMetrics a good part of a second.
func heavySeries(t *testing.T, vm *vmtest.VM, n int) { importSeries(t, vm, "heavy", n, 360) }

// importSeries imports n series of name, half of team dev and half of team ops (label i numbers them), of samples
// random values every 10s up to now, streamed.
func importSeries(t *testing.T, vm *vmtest.VM, name string, n, samples int) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<20)
		now := time.Now().Truncate(time.Second).UnixMilli()
		var ts, vals []byte
		for i := range samples {
			if i > 0 {
				ts = append(ts, ',')
			}
			ts = strconv.AppendInt(ts, now-int64(samples-i)*10_000, 10)
		}
		for s := range n {
			vals = vals[:0]
			for i := range samples {
				if i > 0 {
					vals = append(vals, ',')
				}
				vals = strconv.AppendFloat(vals, rand.Float64(), 'f', 6, 64)
			}
			team := []string{"ops", "dev"}[s%2]
			fmt.Fprintf(bw, `{"metric":{"__name__":%q,"team":%q,"i":"%d"},"values":[%s],"timestamps":[%s]}`+"\n", name, team, s, vals, ts)
		}
		pw.CloseWithError(bw.Flush())
	}()
	if code, _, body := do(t, "POST", vm.URL+"/api/v1/import", pr); code != 204 {
		t.Fatalf("import: %d %s", code, body)
	}
	vm.Flush(t)
}

// TestSlowQueriesDoNotStarveOtherTeams: VictoriaMetrics runs -search.maxConcurrentRequests queries at once (4 on two
// cores; 2 here) and queues the rest first come first served, so one team's flood of slow queries held up every
// other team's queries for as long as the flood's queue: -maxConcurrentPerTenantRequests (300) bounds a team's
// requests, not its share of a backend that runs two. The gateway now learns the backend's capacity from its
// /metrics, forwards no more than that, and gives a freed slot to the waiting team with the fewest queries running.
// Team ops' quick queries, sent while dev floods slow ones on 8 connections, are measured straight to
// VictoriaMetrics and through the gateway; through the gateway they wait for one slot to free, not for dev's queue,
// and every one of dev's queries is still answered.
func TestSlowQueriesDoNotStarveOtherTeams(t *testing.T) {
	vm := vmtest.Start(t, "-search.maxConcurrentRequests=4", "-search.maxQueueDuration=60s")
	heavySeries(t, vm, 1000)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, "-read.maxConcurrentRequests=0")
	dev := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	ops := mint(t, priv, "-mode=read", "-extraLabels=team=ops")
	waitMetric(t, g, "vmgateway_read_backend_slots", "the backend's 4 query slots, learned", is(4))

	end := time.Now().Unix()
	slow := func(base string, seq int64) string {
		// Distinct, so that VictoriaMetrics' rollup cache answers none of them.
		return fmt.Sprintf("%s/api/v1/query_range?start=%d&end=%d&step=60&query=%s", base, end-3600, end, url.QueryEscape(fmt.Sprintf("sum(quantile_over_time(0.%d, heavy[1h]))", 10+seq%89)))
	}
	// measure sends ops' quick queries one after another while dev floods slow ones on 12 connections, and returns
	// the median wait of ops' queries and the slowest of dev's. With hangUp, dev's client goes away that long after
	// sending each query, which VictoriaMetrics still runs to its end.
	measure := func(name, base string, devHeader, opsHeader []string, quick string, hangUp time.Duration) (opsMedian, devSlowest time.Duration) {
		var seq, devDone atomic.Int64
		var mu sync.Mutex
		stop := flood(12, func(client *http.Client) bool {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if hangUp > 0 {
				ctx, cancel = context.WithTimeout(ctx, hangUp)
			}
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", slow(base, seq.Add(1)), nil)
			req.Header.Set(devHeader[0], devHeader[1])
			start := time.Now()
			resp, err := client.Do(req)
			if hangUp > 0 {
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				devDone.Add(1)
				return true
			}
			if err != nil {
				t.Errorf("%s: dev's slow query: %s", name, err)
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s: dev's slow query: %d %s; want every one answered", name, resp.StatusCode, b)
				return false
			}
			mu.Lock()
			devSlowest = max(devSlowest, time.Since(start))
			mu.Unlock()
			devDone.Add(1)
			return true
		})
		time.Sleep(time.Second) // dev's queue builds up
		var waits []time.Duration
		for i := range 5 {
			start := time.Now()
			code, _, body := do(t, "GET", base+"/api/v1/query?query="+url.QueryEscape(fmt.Sprintf(quick, 2*i)), nil, opsHeader...) // ops has the even ones
			waits = append(waits, time.Since(start))
			if code != 200 || !strings.Contains(body, `"team":"ops"`) || strings.Contains(body, `"team":"dev"`) {
				t.Errorf("%s: ops' query %d: %d %s; want ops' series alone", name, i, code, body)
			}
		}
		stop()
		slices.Sort(waits)
		t.Logf("%s: ops' quick queries beside dev's flood (%d slow queries done, the slowest answered in %s): %v", name, devDone.Load(), devSlowest, waits)
		return waits[len(waits)/2], devSlowest
	}
	direct, _ := measure("straight to VictoriaMetrics", vm.URL, []string{"X-Dev", "1"}, nil, `heavy{team="ops",i="%d"}`, 0)
	gated, devSlowest := measure("through the gateway", g.URL, bearer(dev), bearer(ops), `heavy{i="%d"}`, 0)
	if gated*3 > direct {
		t.Errorf("through the gateway ops' queries waited %s (median) beside dev's flood, straight to VictoriaMetrics %s; want a third or less", gated, direct)
	}
	if gated > devSlowest {
		t.Errorf("through the gateway ops' queries waited %s (median), longer than dev's slowest query (%s): they should wait for one slot to free", gated, devSlowest)
	}
	// A client that goes away does not stop VictoriaMetrics' query: had the gateway freed the slot with the client, dev
	// hanging up 150ms into each query would fill VictoriaMetrics' own queue again (ops waited 10-30s that way).
	hungUp, _ := measure("through the gateway, dev hanging up", g.URL, bearer(dev), bearer(ops), `heavy{i="%d"}`, 150*time.Millisecond)
	if hungUp*3 > direct {
		t.Errorf("with dev hanging up on its slow queries, ops' queries waited %s (median) through the gateway, straight to VictoriaMetrics %s with dev waiting; want a third or less", hungUp, direct)
	}
	if v := metricValue(t, g, `vmgateway_concurrency_rejected_total{scope="backend"}`); v != 0 {
		t.Errorf("%v reads refused for the backends' slots; want none within -read.maxQueueDuration", v)
	}
}

// TestReplicasSplitTheReadSlots: two gateway replicas in front of one VictoriaMetrics that runs 4 queries at once
// each took all 4, so that a team flooding slow queries through both filled VictoriaMetrics' own queue, first come
// first served, behind the gateways' backs. With -read.replicas=2 each forwards 2, and VictoriaMetrics never queues
// a query (vm_concurrent_select_limit_reached_total stays put); the replicas without it are the control.
func TestReplicasSplitTheReadSlots(t *testing.T) {
	vm := vmtest.Start(t, "-search.maxConcurrentRequests=4", "-search.maxQueueDuration=60s")
	heavySeries(t, vm, 1000)
	priv, pub := keyPair(t, "ec")
	dev := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	end := time.Now().Unix()
	floodThrough := func(replicas ...*gw) (queuedInVM float64, answered int64) {
		t.Helper()
		before, err := readMetric(vm.URL+"/metrics", "vm_concurrent_select_limit_reached_total")
		if err != nil {
			t.Fatal(err)
		}
		var seq, ok, failed atomic.Int64
		stop := flood(8, func(client *http.Client) bool {
			n := seq.Add(1)
			q := url.QueryEscape(fmt.Sprintf("sum(quantile_over_time(0.%d, heavy[1h]))", 10+n%89))
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/query_range?start=%d&end=%d&step=60&query=%s", replicas[n%int64(len(replicas))].URL, end-3600, end, q), nil)
			req.Header.Set("Authorization", "Bearer "+dev)
			resp, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
				return false
			}
			ok.Add(1)
			return true
		})
		time.Sleep(3 * time.Second)
		stop()
		if failed.Load() > 0 {
			t.Fatalf("%d of dev's queries failed", failed.Load())
		}
		after, err := readMetric(vm.URL+"/metrics", "vm_concurrent_select_limit_reached_total")
		if err != nil {
			t.Fatal(err)
		}
		return after - before, ok.Load()
	}
	start := func(flags ...string) *gw {
		g := startGateway(t, append([]string{"-read.url=" + vm.URL, "-write.url=" + vm.URL, "-enable.auth", "-auth.publicKeyFiles=" + pub, "-read.maxConcurrentRequests=0"}, flags...)...)
		want := 4.0
		if len(flags) > 0 {
			want = 2
		}
		waitMetric(t, g, "vmgateway_read_backend_slots", fmt.Sprintf("%v with %v", want, flags), is(want))
		return g
	}

	a, b := start(), start()
	queued, answered := floodThrough(a, b)
	t.Logf("each replica with all 4 slots: %v of dev's queries queued in VictoriaMetrics, %d answered", queued, answered)
	if queued == 0 {
		t.Fatalf("the control is void: two replicas of 4 slots each queued none of dev's queries in VictoriaMetrics")
	}
	a.stop(syscall.SIGTERM)
	b.stop(syscall.SIGTERM)

	a, b = start("-read.replicas=2"), start("-read.replicas=2")
	queued, answered = floodThrough(a, b)
	t.Logf("-read.replicas=2: %v of dev's queries queued in VictoriaMetrics, %d answered", queued, answered)
	if queued != 0 || answered == 0 {
		t.Fatalf("with -read.replicas=2, %v of dev's queries queued in VictoriaMetrics and %d were answered; want none queued and some answered", queued, answered)
	}
}

// readTeams starts a gateway in front of vm that learns its query slots (want them to be slots) and lets a read wait
// queue for one, and mints read tokens of three isolation units: team dev, qa (team ops' label with a filter of its
// own) and team ops.
func readTeams(t *testing.T, vm *vmtest.VM, slots int, queue string) (g *gw, dev, qa, ops string) {
	t.Helper()
	priv, pub := keyPair(t, "ec")
	g = startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-read.maxConcurrentRequests=0", "-read.maxQueueDuration="+queue)
	dev = mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	qa = mint(t, priv, "-mode=read", "-extraLabels=team=ops", "-subject=qa", "-extraFilters={i!=\"x\"}")
	ops = mint(t, priv, "-mode=read", "-extraLabels=team=ops")
	waitMetric(t, g, "vmgateway_read_backend_slots", "the backend's query slots, learned", is(float64(slots)))
	return g, dev, qa, ops
}

// TestSlowExportsArePreempted: VictoriaMetrics holds a query slot for as long as it streams an export, which a client
// that stops reading makes as long as it likes. Team dev holds three of the backend's four slots with exports it does
// not read and team qa the fourth, so that team ops' quick query finds none free and, slots not being taken back,
// would wait out -read.maxQueueDuration and get 429. Halfway through that wait the gateway cuts dev's oldest export
// (dev holds more than its part of the slots), and ops' query is answered.
func TestSlowExportsArePreempted(t *testing.T) {
	vm := vmtest.Start(t, "-search.maxConcurrentRequests=4", "-search.maxQueueDuration=60s")
	heavySeries(t, vm, 8000)
	g, dev, qa, ops := readTeams(t, vm, 4, "4s")
	// stalled opens an export and reads its first bytes, then nothing: VictoriaMetrics blocks once the sockets'
	// buffers are full, and keeps its slot.
	stalled := func(token string) net.Conn {
		c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /api/v1/export?match[]=heavy HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer %s\r\n\r\n", token)
		head := make([]byte, 1024)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(head); err != nil || !strings.HasPrefix(string(head[:n]), "HTTP/1.1 200") {
			t.Fatalf("an export: %v %q", err, head[:n])
		}
		return c
	}
	var devs []net.Conn
	for range 3 {
		devs = append(devs, stalled(dev))
	}
	stalled(qa)
	vmtest.Eventually(t, func() (bool, string) {
		n, err := readMetric(vm.URL+"/metrics", "vm_concurrent_select_current")
		return err == nil && n == 4, fmt.Sprintf("VictoriaMetrics runs %v queries (%v); want the 4 stalled exports", n, err)
	})
	start := time.Now()
	q := g.URL + "/api/v1/query?query=" + url.QueryEscape("count(heavy)")
	code, _, body := do(t, "GET", q, nil, "Authorization", "Bearer "+ops)
	waited := time.Since(start)
	t.Logf("ops' query beside the stalled exports: %d after %s", code, waited)
	if code != http.StatusOK || waited < 2*time.Second || waited > 4*time.Second {
		t.Fatalf("ops' query: %d after %s (%s); want 200 once dev's oldest export is cut, half of -read.maxQueueDuration=4s in", code, waited, body)
	}
	if n := metricValue(t, g, "vmgateway_read_backend_preempted_total"); n != 1 {
		t.Errorf("vmgateway_read_backend_preempted_total is %v; want 1", n)
	}
	// VictoriaMetrics freed the cut export's slot (its write to the closed connection failed), and the cut export's
	// client sees its answer broken off, without the last chunk, while the others stream on to their end.
	vmtest.Eventually(t, func() (bool, string) {
		n, err := readMetric(vm.URL+"/metrics", "vm_concurrent_select_current")
		return err == nil && n == 3, fmt.Sprintf("VictoriaMetrics runs %v queries (%v); want the 3 exports not cut", n, err)
	})
	var broken, complete atomic.Int32
	var wg sync.WaitGroup
	for _, c := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			rest, err := io.ReadAll(c)
			switch {
			case err != nil:
				t.Errorf("an export of dev's: %v after %d more bytes", err, len(rest))
			case bytes.HasSuffix(rest, []byte("\r\n0\r\n\r\n")):
				complete.Add(1)
			default:
				broken.Add(1)
			}
		}()
	}
	wg.Wait()
	if broken.Load() != 1 || complete.Load() != 2 {
		t.Errorf("of dev's exports %d ended broken off and %d whole; want the one cut broken off, the others whole", broken.Load(), complete.Load())
	}
}

// TestQuickTeamIsLentTheReserve: held to three quarters of VictoriaMetrics' query slots, a team alone left the rest
// idle. With -read.slotLending, team dev alone, with quick queries on 8 connections, is lent the reserve and a spare
// (against a 1.79.5 running 4 at once), while team ops, coming beside it, is still answered; dev's first burst of
// slow queries, with no quick ones behind it, gets no loan.
func TestQuickTeamIsLentTheReserve(t *testing.T) {
	vm := vmtest.Start(t, "-search.maxConcurrentRequests=4", "-search.maxQueueDuration=60s")
	heavySeries(t, vm, 1000)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, "-read.maxConcurrentRequests=0", "-read.slotLending")
	dev := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	ops := mint(t, priv, "-mode=read", "-extraLabels=team=ops")
	waitMetric(t, g, "vmgateway_read_backend_slots", "the backend's 4 query slots, learned", is(4))

	var seq atomic.Int64
	quickFlood := func() (stop func() int64) {
		var answered atomic.Int64
		stopFlood := flood(8, func(client *http.Client) bool {
			req, _ := http.NewRequest("GET", g.URL+"/api/v1/query?query="+url.QueryEscape(fmt.Sprintf(`heavy{i="%d"}`, 1+2*(seq.Add(1)%400))), nil)
			req.Header.Set("Authorization", "Bearer "+dev)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("dev's quick query: %s", err)
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"team":"dev"`) {
				t.Errorf("dev's quick query: %d %.300s; want dev's series", resp.StatusCode, b)
				return false
			}
			answered.Add(1)
			return true
		})
		return func() int64 { stopFlood(); return answered.Load() }
	}
	lent := func() float64 { return metricValue(t, g, "vmgateway_read_backend_lent_total") }
	slow := func() float64 { return metricValue(t, g, "vmgateway_read_backend_slow_loans_total") }

	// A burst of slow queries, with no quick ones behind it: a flood's first gets no loan.
	end := time.Now().Unix()
	var wg sync.WaitGroup
	burst := func() {
		for k := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := fmt.Sprintf("%s/api/v1/query_range?start=%d&end=%d&step=60&query=%s", g.URL, end-3600, end,
					url.QueryEscape(fmt.Sprintf("sum(quantile_over_time(0.%d, heavy[1h]))", 10+k)))
				if code, _, body := do(t, "GET", q, nil, bearer(dev)...); code != 200 {
					t.Errorf("dev's slow query: %d %.300s", code, body)
				}
			}()
		}
		wg.Wait()
	}
	burst()
	if v := metricValue(t, g, "vmgateway_read_backend_lent_total"); v != 0 {
		t.Fatalf("%v of dev's first slow queries lent, with no quick ones behind them; want none", v)
	}

	stop := quickFlood()
	waitMetric(t, g, "vmgateway_read_backend_lent_total", "reads lent to dev, alone with quick queries", func(v float64) bool { return v > 0 })
	// ops comes beside it: nothing is lent while it waits, and it waits for a quick read or two.
	var waits []time.Duration
	for i := range 5 {
		start := time.Now()
		code, _, body := do(t, "GET", g.URL+"/api/v1/query?query="+url.QueryEscape(fmt.Sprintf(`heavy{i="%d"}`, 2*i)), nil, bearer(ops)...)
		waits = append(waits, time.Since(start))
		if code != 200 || !strings.Contains(body, `"team":"ops"`) || strings.Contains(body, `"team":"dev"`) {
			t.Fatalf("ops' query %d beside dev's quick ones: %d %.300s; want ops' series alone", i, code, body)
		}
	}
	n := stop()
	lentQuick := lent()
	if s := slow(); s != 0 {
		t.Fatalf("%v of dev's loans were slow with quick queries alone", s)
	}
	t.Logf("dev alone with quick queries: %d answered, %v lent; ops' queries beside them took %v", n, lentQuick, waits)

	// A burst's loans turning out slow, and the penalty that follows, are in TestFairSlotsSlowLoan: here, on a busy
	// machine, a burst's sends are spread past the lending's 100 ms often enough to make a test of it flaky.
}
