package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestQueryMemoryPoolWaits: VictoriaMetrics admits every rollup through one memory pool (a quarter of its allowed
// memory) and refuses with 422 a query that does not fit while others hold it. Team dev loops a range query that
// reserves almost the whole pool (series × points × 16 bytes); asked directly meanwhile, team ops' dashboard query is
// refused most of the time. Through the gateway (half of them as POST forms), a read refused for the pool waits (with
// its slot) until another query is answered, and is handed the memory that query frees, the longest waiting first, so
// every one of ops' queries is answered, in a few sends. On Debian's 1.79.5, the current single-node release and the
// v1.150 cluster (vmselect's pool).
func TestQueryMemoryPoolWaits(t *testing.T) {
	// A pool of 50 MB: dev's query reserves 1,000 series × 3,001 points × 16 bytes = 48 MB of it (and 1 MB more on
	// current releases), ops' 500 × 721 × 16 = 5.8 MB. Twice that, dev's queries took 1.79.5 so long on a fresh
	// machine that ops, third in line behind two of them, waited past -read.maxQueueDuration.
	const allowed = "-memory.allowedBytes=200MB"
	// dev's query is past -search.maxQueryWindowPoints at a sample a second, and would be counted each time, one at a
	// time: its loops would then fill the pool less of the time on a busy machine (the test's floor below).
	const noWorkCounts = "-search.maxQueryWindowPoints=0"
	type setup struct {
		importURL, directURL string
		flush                func()
		g                    *gw
		dev, ops             string
		// opsSends counts the sends of ops' query that reach the read backend.
		opsSends *atomic.Int64
	}
	single := func(start func(testing.TB, ...string) *vmtest.VM) func(t *testing.T) setup {
		return func(t *testing.T) setup {
			vm := start(t, allowed, "-search.latencyOffset=0s")
			priv, pub := keyPair(t, "ec")
			readURL, opsSends := opsSendCounter(t, vm.URL)
			return setup{importURL: vm.URL + "/api/v1/import/prometheus", directURL: vm.URL + "/api/v1/query_range",
				flush: func() {
					if code, _, body := do(t, "GET", vm.URL+"/internal/force_flush", nil); code != http.StatusOK {
						t.Fatalf("force_flush: %d %s", code, body)
					}
				},
				g: startGateway(t, "-read.url="+readURL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
					noWorkCounts),
				dev: mint(t, priv, "-mode=read", "-extraLabels=team=dev"), ops: mint(t, priv, "-mode=read", "-extraLabels=team=ops"),
				opsSends: opsSends}
		}
	}
	cluster := func(t *testing.T) setup {
		c := vmtest.StartCluster(t, allowed)
		readURL, opsSends := opsSendCounter(t, c.Select.URL)
		g := startGateway(t, "-read.url="+readURL, "-write.url="+c.Insert.URL, "-clusterMode", "-enable.auth",
			"-auth.publicKeyFiles="+clusterPublicKeyFile(t), noWorkCounts)
		token := func(team string) string {
			return clusterToken(t, auth.VMAccess{Mode: auth.ModeRead, Tenant: tenant.ID{AccountID: 1}, ExtraLabels: map[string]string{"team": team}})
		}
		return setup{importURL: c.Insert.URL + "/insert/1:0/prometheus/api/v1/import/prometheus",
			directURL: c.Select.URL + "/select/1:0/prometheus/api/v1/query_range", flush: func() { c.Flush(t) },
			g: g, dev: token("dev"), ops: token("ops"), opsSends: opsSends}
	}
	for _, v := range []struct {
		name  string
		start func(t *testing.T) setup
	}{{"1.79.5", single(vmtest.Start)}, {"current", single(vmtest.StartCurrent)}, {"cluster", cluster}} {
		t.Run(v.name, func(t *testing.T) {
			su := v.start(t)
			g, dev, ops := su.g, su.dev, su.ops
			const end = 1_700_000_000
			var b strings.Builder
			for i := range 1000 {
				for s := 0; s < 10; s++ {
					fmt.Fprintf(&b, "big{i=\"%d\",team=\"dev\"} %d %d\n", i, s, (int64(end)-3000+300*int64(s))*1000)
				}
			}
			for i := range 500 {
				fmt.Fprintf(&b, "m{i=\"%d\",team=\"ops\"} 1 %d\n", i, (int64(end)-60)*1000)
			}
			if code, _, body := do(t, "POST", su.importURL, strings.NewReader(b.String()), "Content-Type", "text/plain"); code/100 != 2 {
				t.Fatalf("import: %d %s", code, body)
			}
			su.flush()
			// New series take a moment to be searchable (vmstorage's index).
			for _, c := range []struct {
				metric string
				n      int
			}{{"big", 1000}, {"m", 500}} {
				q := url.Values{"query": {"count(last_over_time(" + c.metric + "[1h]))"}, "start": {strconv.Itoa(end)}, "end": {strconv.Itoa(end)}, "step": {"60"}}
				want := fmt.Sprintf(`"%d"]`, c.n)
				for deadline := time.Now().Add(30 * time.Second); ; {
					code, _, body := do(t, "GET", su.directURL+"?"+q.Encode(), nil)
					if code == http.StatusOK && strings.Contains(body, want) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d series of %s not searchable after 30s: %d %.300s", c.n, c.metric, code, body)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}

			heavy := url.Values{"query": {`quantile(0.5, quantile_over_time(0.9, big[30m]))`},
				"start": {strconv.Itoa(end - 3000)}, "end": {strconv.Itoa(end)}, "step": {"1"}}
			dashboard := func(extra bool) url.Values {
				q := url.Values{"query": {`max_over_time(m[5m])`}, "start": {strconv.Itoa(end - 3600)}, "end": {strconv.Itoa(end)}, "step": {"5"}}
				if extra {
					// What the gateway adds for ops, sent directly.
					q.Set("extra_label", "team=ops")
				}
				return q
			}
			if code, _, body := do(t, "GET", g.URL+"/api/v1/query_range?"+heavy.Encode(), nil, bearer(dev)...); code != http.StatusOK {
				t.Fatalf("dev's query alone: %d %.300s; want it answered (it fits the pool)", code, body)
			}

			// dev's three loops keep the pool full until stop.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var devRuns atomic.Int64
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						req, _ := http.NewRequest("GET", g.URL+"/api/v1/query_range?"+heavy.Encode(), nil)
						req.Header.Set("Authorization", "Bearer "+dev)
						if resp, err := http.DefaultClient.Do(req); err == nil {
							resp.Body.Close()
							if resp.StatusCode == http.StatusOK {
								devRuns.Add(1)
							}
						}
					}
				}()
			}
			defer func() { close(stop); wg.Wait() }()
			time.Sleep(500 * time.Millisecond)

			const tries = 20
			refusedDirect := 0
			for range tries {
				code, _, body := do(t, "GET", su.directURL+"?"+dashboard(true).Encode(), nil)
				switch {
				case code == http.StatusUnprocessableEntity && strings.Contains(body, "not enough memory"):
					refusedDirect++
				case code != http.StatusOK:
					t.Fatalf("ops asking VictoriaMetrics directly: %d %.300s", code, body)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Without the waits, the gateway would pass all of ops' queries with a chance of 0.75^20 (0.3%) at this
			// floor; a busy machine makes dev's query hold the pool for less of the time.
			if refusedDirect < tries/4 {
				t.Fatalf("asked directly while dev's query runs, VictoriaMetrics refused %d of ops' %d queries for memory; "+
					"want at least a quarter, or the test does not fill the pool", refusedDirect, tries)
			}
			waitsBefore := scrapeSum(t, g.URL+"/metrics", "vmgateway_upstream_memory_waits_total", `upstream="read"`)
			var slowest time.Duration
			slowestSends, mostSends, mostWoken := int64(0), int64(0), int64(0)
			for i := range tries {
				began := time.Now()
				sendsBefore := su.opsSends.Load()
				// Every other one as Grafana sends it, a form in a POST body, which the gateway sends again from the
				// body it read.
				var code int
				var body string
				if i%2 == 0 {
					code, _, body = do(t, "GET", g.URL+"/api/v1/query_range?"+dashboard(false).Encode(), nil, bearer(ops)...)
				} else {
					code, _, body = do(t, "POST", g.URL+"/api/v1/query_range", strings.NewReader(dashboard(false).Encode()), bearer(ops)...)
				}
				if code != http.StatusOK {
					t.Fatalf("ops' query %d through the gateway while dev's runs: %d after %s and %d sends, %v waits (both teams'): %.600s; want it "+
						"answered after a wait", i, code, time.Since(began), su.opsSends.Load()-sendsBefore,
						scrapeSum(t, g.URL+"/metrics", "vmgateway_upstream_memory_waits_total", `upstream="read"`)-waitsBefore, body)
				}
				took, sends := time.Since(began), su.opsSends.Load()-sendsBefore
				if took > slowest {
					slowest, slowestSends = took, sends
				}
				mostSends = max(mostSends, sends)
				mostWoken = max(mostWoken, sends-1-pollsWithin(took))
				time.Sleep(50 * time.Millisecond)
			}
			waits := scrapeSum(t, g.URL+"/metrics", "vmgateway_upstream_memory_waits_total", `upstream="read"`) - waitsBefore
			// A read woken gets the memory a query freed: its sends are its polls and one per wake, of which few are in
			// vain. Before the hand-off, ops' read spent 16 sends in 2.3 s on v1.151, 11 past its polls.
			if mostWoken > 6 {
				t.Errorf("an ops query was sent %d times past its polls; want at most 6: its wakes went in vain", mostWoken)
			}
			if waits < 1 {
				t.Errorf("vmgateway_upstream_memory_waits_total grew by %v while ops' queries went through; want the waits counted", waits)
			}
			t.Logf("directly %d of %d of ops' queries refused for memory; through the gateway all %d answered, the slowest in %s after %d sends "+
				"(at most %d sends, at most %d past its polls), %v waits (both teams'); dev's query answered %d times meanwhile", refusedDirect,
				tries, tries, slowest, slowestSends, mostSends, mostWoken, waits, devRuns.Load())
		})
	}
}

// opsSendCounter puts a recorder in front of the read backend at backend, which passes every request on as it came
// and counts those of ops' query (max_over_time, which dev's does not use): how often the gateway sent it.
func opsSendCounter(t *testing.T, backend string) (string, *atomic.Int64) {
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if strings.Contains(r.URL.RawQuery, "max_over_time") || bytes.Contains(body, []byte("max_over_time")) {
			n.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// pollsWithin is how many of a read's waits for memory can end at their poll within d: its polls come after 100 ms,
// doubling to a second, and a wait that a wake ends is shorter. So a read answered after d was sent again at most that
// many times for its polls; the rest of its sends were wakes.
func pollsWithin(d time.Duration) int64 {
	n, poll := int64(0), 100*time.Millisecond
	for ; d >= poll; n++ {
		d -= poll
		poll = min(2*poll, time.Second)
	}
	return n
}
