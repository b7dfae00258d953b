package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// vmProc is one process of the cluster, restartable on the same ports.
type vmProc struct {
	name, URL string
	args      []string
	dir       string
	proc      *vmtest.Process
	starts    int
}

func (p *vmProc) start(t testing.TB) {
	t.Helper()
	p.starts++
	logf, err := os.Create(filepath.Join(p.dir, fmt.Sprintf("%s-%d.log", p.name, p.starts)))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.proc, err = vmtest.StartProcess(cmd, logf); err != nil {
		t.Fatal(err)
	}
	if err := p.proc.WaitReadyAt(30*time.Second, strings.TrimPrefix(p.URL, "http://"), vmtest.HTTPOK(p.URL+"/health")); err != nil {
		p.proc.Stop(syscall.SIGKILL, 0)
		log, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s on %s: %s:\n%s", p.name, p.URL, err, tailLines(string(log), 20))
	}
}

// signal sends sig and waits for the process to exit.
func (p *vmProc) signal(sig syscall.Signal) { p.proc.Stop(sig, 20*time.Second) }

// metric sums the samples of name (with every label pair in labels) on the process's own /metrics.
func (p *vmProc) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return scrapeSum(t, p.URL+"/metrics", name, labels...)
}

func scrapeSum(t testing.TB, u, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("scrape %s: %s", u, err)
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, lp := range labels {
			ok = ok && strings.Contains(l, lp)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %s", l, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		t.Fatalf("%s has no %s%v", u, name, labels)
	}
	return sum
}

// testCluster is one vmstorage, two vminserts and two vmselects on loopback.
type testCluster struct {
	storage *vmProc
	inserts []*vmProc
	selects []*vmProc
}

func startTestCluster(t *testing.T) *testCluster {
	t.Helper()
	bin := vmtest.RequireCluster(t)
	dir := t.TempDir()
	proc := func(name string, args ...string) *vmProc {
		addr := vmtest.FreePort(t)
		p := &vmProc{name: name, URL: "http://" + addr, dir: dir,
			args: append([]string{filepath.Join(bin, strings.TrimRight(name, "0123456789")), "-httpListenAddr=" + addr, "-loggerLevel=ERROR"}, args...)}
		p.start(t)
		t.Cleanup(func() { p.signal(syscall.SIGKILL) })
		return p
	}
	insAddr, selAddr := vmtest.FreePort(t), vmtest.FreePort(t)
	c := &testCluster{storage: proc("vmstorage", "-storageDataPath="+filepath.Join(dir, "s"), "-retentionPeriod=100y",
		"-vminsertAddr="+insAddr, "-vmselectAddr="+selAddr)}
	for i := range 2 {
		c.inserts = append(c.inserts, proc(fmt.Sprintf("vminsert%d", i), "-storageNode="+insAddr))
		c.selects = append(c.selects, proc(fmt.Sprintf("vmselect%d", i), "-storageNode="+selAddr, "-search.latencyOffset=0s", "-search.disableCache"))
	}
	return c
}

func (c *testCluster) gateway(t *testing.T, flags ...string) *gw {
	t.Helper()
	args := []string{"-clusterMode"}
	for _, p := range c.selects {
		args = append(args, "-read.url="+p.URL)
	}
	for _, p := range c.inserts {
		args = append(args, "-write.url="+p.URL)
	}
	return startGateway(t, append(args, flags...)...)
}

// selectRequests is how many queries a vmselect has served, by its own count.
func selectRequests(t testing.TB, p *vmProc) float64 {
	return p.metric(t, "vm_http_requests_total", `path="/select/{}/prometheus/api/v1/query"`)
}

// readLoad sends n instant queries through the gateway, conc at a time, and counts the statuses; after is called
// once, when the first quarter is answered.
func readLoad(t *testing.T, g *gw, n, conc int, after func()) (codes map[int]int, firstBad string) {
	t.Helper()
	var (
		mu     sync.Mutex
		next   atomic.Int64
		done   atomic.Int64
		once   sync.Once
		wg     sync.WaitGroup
		client = &http.Client{Timeout: 30 * time.Second}
	)
	codes = map[int]int{}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				code, body := 0, ""
				resp, err := client.Get(g.URL + "/select/0/prometheus/api/v1/query?query=" + url.QueryEscape("sum(bk_up)"))
				if err != nil {
					body = err.Error()
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					code, body = resp.StatusCode, string(b)
				}
				mu.Lock()
				codes[code]++
				if code != 200 && firstBad == "" {
					firstBad = fmt.Sprintf("%d %s", code, body)
				}
				mu.Unlock()
				if done.Add(1) == int64(n/4) && after != nil {
					once.Do(after)
				}
			}
		}()
	}
	wg.Wait()
	return codes, firstBad
}

// TestBackendsReadBalanceAndFailover runs reads through a gateway in front of two vmselects: the load is spread,
// a vmselect killed under load costs no read, a restarted one serves again within -failTimeout, and with both
// down the client gets a JSON 502 that says how many were tried and names none.
func TestBackendsReadBalanceAndFailover(t *testing.T) {
	c := startTestCluster(t)
	const failTimeout = time.Second
	g := c.gateway(t, "-failTimeout="+failTimeout.String())
	if code, _, body := do(t, http.MethodPost, g.URL+"/insert/0/prometheus/api/v1/import/prometheus", strings.NewReader("bk_up 1\n")); code != http.StatusNoContent {
		t.Fatalf("write: %d %s", code, body)
	}

	// Load spread, from the vmselects' own counts.
	before := []float64{selectRequests(t, c.selects[0]), selectRequests(t, c.selects[1])}
	codes, bad := readLoad(t, g, 200, 4, nil)
	if codes[200] != 200 {
		t.Fatalf("200 reads with both vmselects up: %v (first: %s)", codes, bad)
	}
	var gwCounts [2]float64
	for i, p := range c.selects {
		gwCounts[i] = scrapeSum(t, g.URL+"/metrics", "vmgateway_backend_requests_total", `upstream="read"`, `backend="`+p.URL+`"`)
	}
	// A vmselect's /metrics page is computed at most about once a second: wait for the 200 reads to show.
	var served [2]float64
	vmtest.Eventually(t, func() (bool, string) {
		for i, p := range c.selects {
			served[i] = selectRequests(t, p) - before[i]
		}
		return served[0]+served[1] == 200, fmt.Sprintf("the vmselects count %v of the 200 reads", served)
	})
	for i := range c.selects {
		t.Logf("vmselect%d served %.0f of 200 reads", i, served[i])
		if served[i] < 40 {
			t.Errorf("vmselect%d served %.0f of 200 reads, want at least 20%%", i, served[i])
		}
		if gwCounts[i] != served[i] {
			t.Errorf("vmgateway_backend_requests_total for vmselect%d = %.0f, but it served %.0f", i, gwCounts[i], served[i])
		}
	}

	// SIGKILL of a vmselect under read load at concurrency 8: every read is answered.
	g = c.gateway(t, "-failTimeout="+failTimeout.String())
	codes, bad = readLoad(t, g, 600, 8, func() {
		c.selects[0].signal(syscall.SIGKILL)
	})
	if codes[200] != 600 {
		t.Fatalf("600 reads with vmselect0 killed after 150: %v (first failure: %s)", codes, bad)
	}
	if !g.logged("backend marked broken") {
		t.Error("no log line marked the killed vmselect broken")
	}

	retries := scrapeSum(t, g.URL+"/metrics", "vmgateway_upstream_retries_total", `upstream="read"`)
	t.Logf("vmselect0 SIGKILLed under load: %d of 600 reads answered 200, %.0f attempts retried on vmselect1", codes[200], retries)

	// The restarted vmselect serves again within -failTimeout plus a little. Reads while it is down keep its
	// broken mark fresh (each expiry sends one read to it, refused and retried), so the restart finds it marked.
	readsUntil := time.Now().Add(failTimeout + 200*time.Millisecond)
	for time.Now().Before(readsUntil) {
		if codes, bad := readLoad(t, g, 4, 2, nil); codes[200] != 4 {
			t.Fatalf("reads with one vmselect down: %v (first failure: %s)", codes, bad)
		}
	}
	c.selects[0].start(t)
	restarted := time.Now()
	brokenGauge := func() float64 {
		return scrapeSum(t, g.URL+"/metrics", "vmgateway_backend_broken", `upstream="read"`, `backend="`+c.selects[0].URL+`"`)
	}
	if brokenGauge() != 1 {
		t.Fatal("vmgateway_backend_broken is not 1 for the killed vmselect")
	}
	var back time.Duration
	for time.Since(restarted) < failTimeout+2*time.Second {
		readLoad(t, g, 4, 2, nil)
		if brokenGauge() == 0 {
			back = time.Since(restarted)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if back == 0 {
		t.Fatalf("the restarted vmselect was not used again within %s", failTimeout+2*time.Second)
	}
	vmtest.Eventually(t, func() (bool, string) {
		n := selectRequests(t, c.selects[0])
		return n > 0, fmt.Sprintf("the restarted vmselect counts %.0f queries", n)
	})
	if !g.logged("backend is back") {
		t.Error("no log line says the restarted vmselect is back")
	}
	t.Logf("the restarted vmselect served again %s after it was up (-failTimeout=%s)", back.Round(time.Millisecond), failTimeout)

	// Both vmselects down: a JSON 502 at once, naming how many backends were tried, not where they are.
	for _, p := range c.selects {
		p.signal(syscall.SIGKILL)
	}
	start := time.Now()
	code, _, body := do(t, http.MethodGet, g.URL+"/select/0/prometheus/api/v1/query?query=up", nil)
	took := time.Since(start)
	var e struct{ Status, ErrorType, Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || code != http.StatusBadGateway || e.Status != "error" {
		t.Fatalf("all vmselects down: %d %s, want a JSON 502", code, body)
	}
	if !regexp.MustCompile(`[12] of 2 read backends tried`).MatchString(e.Error) || strings.Contains(e.Error, "127.0.0.1") {
		t.Fatalf("all vmselects down: error %q, want the count of read backends tried and no address", e.Error)
	}
	// The connect timeout is 10s; a refused connection is known at once.
	if took > 10*time.Second {
		t.Fatalf("all vmselects down: the 502 took %s, longer than the connect timeout", took)
	}
	if !g.logged(c.selects[1].URL) {
		t.Fatal("the gateway's log does not name the vmselects that failed")
	}
	t.Logf("all vmselects down: %d in %s: %s", code, took.Round(time.Millisecond), e.Error)
}

// TestBackendsWriteFailover: a vminsert stopped with SIGTERM (a rolling restart) under write load. Every write the
// gateway acknowledged is stored whole; the few refused are counted; none is stored in part.
func TestBackendsWriteFailover(t *testing.T) {
	c := startTestCluster(t)
	g := c.gateway(t)
	const (
		writers  = 4
		perW     = 100
		rowsEach = 10
	)
	var (
		acked   [writers][perW]bool
		refused atomic.Int64
		done    atomic.Int64
		once    sync.Once
		wg      sync.WaitGroup
		firstNo atomic.Value
	)
	client := &http.Client{Timeout: 30 * time.Second}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perW {
				var b strings.Builder
				for r := range rowsEach {
					fmt.Fprintf(&b, "bk_seq{w=\"%d\",r=\"%d\"} %d\n", w, r, n)
				}
				resp, err := client.Post(g.URL+"/insert/0/prometheus/api/v1/import/prometheus", "text/plain", strings.NewReader(b.String()))
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusNoContent {
						acked[w][n] = true
					} else {
						refused.Add(1)
						firstNo.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, body))
					}
				} else {
					refused.Add(1)
					firstNo.CompareAndSwap(nil, err.Error())
				}
				if done.Add(1) == writers*perW/4 {
					once.Do(func() { go c.inserts[0].signal(syscall.SIGTERM) })
				}
			}
		}()
	}
	wg.Wait()
	c.inserts[0].signal(syscall.SIGTERM)

	if _, err := http.Get(c.storage.URL + "/internal/force_flush"); err != nil {
		t.Fatal(err)
	}
	// rows[w][n] counts the stored rows of write n of writer w.
	var rows [writers][perW]int
	stored := 0
	vmtest.Eventually(t, func() (bool, string) {
		rows, stored = [writers][perW]int{}, 0
		resp, err := http.Get(c.selects[0].URL + "/select/0/prometheus/api/v1/export?match[]=bk_seq")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 16<<20), 16<<20)
		for sc.Scan() {
			var l struct {
				Metric map[string]string `json:"metric"`
				Values []float64         `json:"values"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return false, err.Error()
			}
			w, _ := strconv.Atoi(l.Metric["w"])
			seen := map[int]bool{}
			for _, v := range l.Values {
				if n := int(v); n >= 0 && n < perW && w >= 0 && w < writers && !seen[n] {
					seen[n] = true
					rows[w][n]++
				}
			}
		}
		missing := 0
		for w := range writers {
			for n := range perW {
				if rows[w][n] == rowsEach {
					stored++
				}
				if acked[w][n] && rows[w][n] != rowsEach {
					missing++
				}
			}
		}
		return missing == 0, fmt.Sprintf("%d acknowledged writes not stored whole", missing)
	})
	ackedN := 0
	for w := range writers {
		for n := range perW {
			if acked[w][n] {
				ackedN++
			}
			if r := rows[w][n]; r != 0 && r != rowsEach {
				t.Errorf("write %d of writer %d is stored in part: %d of %d rows", n, w, r, rowsEach)
			}
		}
	}
	// The stop fell under load: writes met vminsert0 gone and went to vminsert1.
	gone := scrapeSum(t, g.URL+"/metrics", "vmgateway_backend_errors_total", `upstream="write"`, `backend="`+c.inserts[0].URL+`"`)
	retried := scrapeSum(t, g.URL+"/metrics", "vmgateway_upstream_retries_total", `upstream="write"`)
	t.Logf("vminsert0 SIGTERMed under write load: %d writes sent, %d acknowledged, %d stored whole, %d refused (first: %v); %.0f attempts failed on vminsert0, %.0f retried on vminsert1",
		writers*perW, ackedN, stored, refused.Load(), firstNo.Load(), gone, retried)
	if ackedN+int(refused.Load()) != writers*perW {
		t.Fatalf("%d acknowledged + %d refused != %d sent", ackedN, refused.Load(), writers*perW)
	}
	if refused.Load() > 2*writers {
		t.Fatalf("%d writes refused; a SIGTERMed vminsert should cost at most the few in flight", refused.Load())
	}
}

// TestBackendsPerURLPrefixAndCredentials: each -read.url carries its own path prefix and credentials to its
// backend, a refused one is skipped, and no password reaches the metrics or the log.
func TestBackendsPerURLPrefixAndCredentials(t *testing.T) {
	closed := vmtest.FreePort(t)
	rec1, rec2 := vmtest.NewRecorder(t), vmtest.NewRecorder(t)
	withUser := func(u, user, prefix string) string {
		return strings.Replace(u, "http://", "http://"+user+"@", 1) + prefix
	}
	g := startGateway(t, "-clusterMode", "-loadBalancingPolicy=first_available", "-retryStatusCodes=503",
		"-read.url="+withUser("http://"+closed, "x:closedsecret", "/dead"),
		"-read.url="+withUser(rec1.URL, "a:secret1", "/p1"),
		"-read.url="+rec2.URL+"/p2",
		"-write.url="+rec2.URL)
	q := "/select/7/prometheus/api/v1/query?query=up"
	if code, _, body := do(t, http.MethodGet, g.URL+q, nil); code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	r1 := rec1.Requests()
	if len(r1) != 1 || r1[0].Path != "/p1/select/7:0/prometheus/api/v1/query" || r1[0].Header.Get("Authorization") != "Basic YTpzZWNyZXQx" {
		t.Fatalf("first available after the refused one: %+v, want /p1/... with a:secret1", r1)
	}
	// The second answers 503: the read goes on to the third, with its prefix and without credentials.
	rec1.Respond(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	if code, _, body := do(t, http.MethodGet, g.URL+q, nil); code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	r2 := rec2.Requests()
	if len(r2) != 1 || r2[0].Path != "/p2/select/7:0/prometheus/api/v1/query" || r2[0].Header.Get("Authorization") != "" {
		t.Fatalf("after a 503: %+v, want /p2/... without credentials", r2)
	}
	resp, err := http.Get(g.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`vmgateway_backend_errors_total{upstream="read",backend="http://` + closed + `/dead",reason="dial"} 1`,
		`vmgateway_backend_errors_total{upstream="read",backend="` + rec1.URL + `/p1",reason="status_503"} 1`,
		`vmgateway_backend_broken{upstream="read",backend="` + rec1.URL + `/p1"} 1`,
		`vmgateway_backend_requests_in_flight{upstream="read",backend="` + rec2.URL + `/p2"} 0`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for where, s := range map[string]string{"/metrics": string(m), "the log": g.logs.String()} {
		if strings.Contains(s, "secret") {
			t.Errorf("%s shows a backend's password", where)
		}
	}
}

func TestBackendsFlagErrors(t *testing.T) {
	base := []string{"-read.url=http://x", "-write.url=http://x"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-loadBalancingPolicy=round_robin"}, `-loadBalancingPolicy: unknown load balancing policy "round_robin"`},
		{[]string{"-retryStatusCodes=50x"}, `-retryStatusCodes: "50x" is not an HTTP status code`},
		{[]string{"-retryStatusCodes=200"}, `-retryStatusCodes: 200 is not an error status`},
		{[]string{"-failTimeout=-1s"}, `-failTimeout=-1s must not be negative`},
		{[]string{"-discoverBackendIPs", "-discoverBackendIPsInterval=0s"}, `-discoverBackendIPsInterval=0s must be positive`},
		{[]string{"-read.url=http://y,ftp://z"}, `invalid -read.url="ftp://z"`},
		{[]string{"-read.replicas=0"}, `-read.replicas=0: want how many gateway replicas forward reads to the same backends, at least 1`},
		{[]string{"-search.maxQuerySelectors=5"}, `-search.maxQuerySelectors=5: want 0 (no limit) or more than 10`},
		{[]string{"-search.maxQueryPoints=-1"}, `-search.maxQueryPoints=-1 must not be negative`},
	} {
		cmd := exec.Command(gatewayBin, append(append([]string{}, base...), tc.args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: want a failed start mentioning %q, got err=%v:\n%s", tc.args, tc.want, err, out)
		}
	}
}

// TestBackendsDiscoverIPs: with -discoverBackendIPs a URL's host name stands for its addresses; requests go to an
// address with the name in the Host header, and the metrics name the address.
func TestBackendsDiscoverIPs(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	port := rec.URL[strings.LastIndexByte(rec.URL, ':')+1:]
	named := "http://localhost:" + port + "/p"
	g := startGateway(t, "-clusterMode", "-discoverBackendIPs", "-discoverBackendIPsInterval=100ms",
		"-read.url="+named, "-write.url="+named, "-write.labelTruncationCheckInterval=1h")
	for range 4 {
		if code, _, body := do(t, http.MethodGet, g.URL+"/select/0/prometheus/api/v1/labels", nil); code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
	}
	var got []vmtest.Recorded
	for _, r := range rec.Requests() {
		if r.Path != "/p/metrics" { // the truncation check's
			got = append(got, r)
		}
	}
	if len(got) != 4 {
		t.Fatalf("the recorder got %d requests, want 4", len(got))
	}
	for _, r := range got {
		if r.Host != "localhost:"+port || r.Path != "/p/select/0:0/prometheus/api/v1/labels" {
			t.Fatalf("forwarded with Host %q to %s, want Host localhost:%s and the URL's prefix", r.Host, r.Path, port)
		}
	}
	if n := scrapeSum(t, g.URL+"/metrics", "vmgateway_backend_requests_total", `upstream="read"`, `backend="http://127.0.0.1:`+port+`/p"`); n < 4 {
		t.Fatalf("vmgateway_backend_requests_total for the discovered 127.0.0.1 = %.0f, want at least 4", n)
	}
	if !g.logged("backends discovered") {
		t.Fatal("no log line lists the discovered backends")
	}
	// The write backend's label truncation is checked at each address found (the recorder is not VictoriaMetrics:
	// -1), not at the name.
	want := `vmgateway_write_backend_truncates_labels{backend="http://127.0.0.1:` + port + `/p",host="localhost:` + port + `"} -1`
	_, _, m := do(t, http.MethodGet, g.URL+"/metrics", nil)
	if !strings.Contains(m, want) {
		t.Fatalf("/metrics lacks %s", want)
	}
	if strings.Contains(m, `vmgateway_write_backend_truncates_labels{backend="http://localhost:`) {
		t.Fatal("the truncation check is shown for the name, not only the address")
	}
}
