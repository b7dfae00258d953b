package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/redact"
)

func TestTruncationOf(t *testing.T) {
	for _, tc := range []struct {
		name, page string
		want       int64
		limit      int
	}{
		{"1.79.5", "vm_rows_ignored_total{reason=\"big_timestamp\"} 0\nvm_metrics_with_dropped_labels_total 0\n", truncationCuts, 0},
		{"1.79.5 with its flags", "vm_metrics_with_dropped_labels_total 0\nflag{name=\"maxLabelValueLen\", value=\"16384\", is_set=\"false\"} 1\n" +
			"flag{name=\"maxLabelsPerTimeseries\", value=\"24\", is_set=\"true\"} 1\n", truncationCuts, 24},
		{"a limit that is not a number", "vm_metrics_with_dropped_labels_total 0\nflag{name=\"maxLabelsPerTimeseries\", value=\"x\"} 1\n", truncationCuts, 0},
		{"v1.108+", "vm_rows_ignored_total{reason=\"too_long_label_name\"} 0\nvm_rows_ignored_total{reason=\"too_many_labels\"} 3\n", truncationDrops, 0},
		{"neither", "go_goroutines 12\nvm_rows_ignored_total{reason=\"big_timestamp\"} 0\n", truncationUnknown, 0},
		{"a name that only starts alike", "vm_metrics_with_dropped_labels_total_x 0\n", truncationUnknown, 0},
		{"other labels beside the reason", "vm_rows_ignored_total{job=\"vm\",reason=\"too_many_labels\",x=\"y\"} 0\n", truncationDrops, 0},
		{"the reason only in the value's place", "vm_rows_ignored_total{reason=\"big_timestamp\"} 0 # too_many_labels\n", truncationUnknown, 0},
		{"a HELP line", "# HELP vm_metrics_with_dropped_labels_total x\n", truncationUnknown, 0},
		{"empty", "", truncationUnknown, 0},
	} {
		got, limit, _, err := truncationOf(strings.NewReader(tc.page))
		if got != tc.want || limit != tc.limit || (got == truncationUnknown) != (err != nil) {
			t.Errorf("%s: %d, limit %d, %v; want %d, limit %d", tc.name, got, limit, err, tc.want, tc.limit)
		}
	}
}

// The check asks the backend's own /metrics, below the -write.url's path, with the URL's credentials; its gauge
// and logs name the backend without them.
func TestTruncationCheckRequest(t *testing.T) {
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		_, _ = w.Write([]byte("vm_metrics_with_dropped_labels_total 0\n"))
	}))
	defer srv.Close()
	u, _ := url.Parse(strings.Replace(srv.URL, "http://", "http://user:secret@", 1) + "/v%2Fm/?authKey=k&extra_label=team=dev")
	w := newTruncationWatch([]*url.URL{u}, http.DefaultTransport)
	w.checkAll(context.Background())
	if got == nil || got.URL.EscapedPath() != "/v%2Fm/metrics" || got.URL.RawQuery != "authKey=k" {
		t.Fatalf("the check asked %v; want /v%%2Fm/metrics (the write URL's path as written) with its authKey only (-metricsAuthKey)", got.URL)
	}
	if user, pw, ok := got.BasicAuth(); !ok || user != "user" || pw != "secret" {
		t.Errorf("basic auth %q %q %v; want the URL's", user, pw, ok)
	}
	tg := w.current()[0]
	if strings.Contains(tg.key.name, "secret") || strings.Contains(tg.key.name, "authKey") {
		t.Errorf("the backend is named %q: credentials shown", tg.key.name)
	}
	if s := tg.state.Load(); s != truncationCuts {
		t.Errorf("state %d; want %d", s, truncationCuts)
	}
	// A discovered address is asked with the name it was found under, as the writes are.
	w.setAddrs([]gateway.BackendAddr{{URL: u, Host: "vminsert.example:8480"}})
	got = nil
	w.checkAll(context.Background())
	if got == nil {
		t.Fatal("the discovered address was not asked")
	}
	if got.Host != "vminsert.example:8480" {
		t.Fatalf("a discovered address was asked with Host %q; want vminsert.example:8480", got.Host)
	}
}

func metricsPage(t *testing.T, page func() (int, string)) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, body := page()
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

const (
	pageCuts24 = "vm_metrics_with_dropped_labels_total 0\nflag{name=\"maxLabelsPerTimeseries\", value=\"24\", is_set=\"true\"} 1\n"
	pageCuts   = "vm_metrics_with_dropped_labels_total 0\n"
	pageDrops  = "vm_rows_ignored_total{reason=\"too_many_labels\"} 0\nflag{name=\"maxLabelsPerTimeseries\", value=\"40\", is_set=\"false\"} 1\n"
)

// The label guard's limit: the least of the backends that truncate (30 for one that does not say), 0 when none
// does, and nothing before the first check has looked.
func TestLabelLimit(t *testing.T) {
	fixed := func(s string) func() (int, string) { return func() (int, string) { return 200, s } }
	for _, tc := range []struct {
		name  string
		pages []string
		want  int
	}{
		{"one truncates at 24", []string{pageCuts24, pageDrops}, 24},
		{"one truncates without saying its limit", []string{pageDrops, pageCuts}, fallbackLabelLimit},
		{"the least of two", []string{pageCuts, pageCuts24}, 24},
		{"none truncates", []string{pageDrops, pageDrops}, 0},
		{"one names neither behaviour", []string{pageDrops, "go_goroutines 1\n"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var urls []*url.URL
			for _, p := range tc.pages {
				urls = append(urls, metricsPage(t, fixed(p)))
			}
			w := newTruncationWatch(urls, http.DefaultTransport)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := w.labelLimit(ctx); err == nil {
				t.Fatal("the limit was given before the first check")
			}
			w.start()
			defer w.close()
			got, err := w.labelLimit(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("labelLimit = %d, %v; want %d", got, err, tc.want)
			}
		})
	}

	// A backend whose /metrics cannot be read may be an old release with any limit that came up since: with no
	// other backend read, narrowed writes are refused, and it is looked at again at once. Beside backends read, one
	// that answers but not its page may take writes: guarded at the lowest default limit (30); one the gateway cannot
	// connect to cannot, and is taken to be of their release, so that one vminsert down does not change the writes.
	defer func(s time.Duration) { lookSpacing = s }(lookSpacing)
	lookSpacing = 10 * time.Millisecond
	var looks atomic.Int64
	unreadable := func() (int, string) { looks.Add(1); return http.StatusServiceUnavailable, "" }
	down := newTruncationWatch([]*url.URL{metricsPage(t, unreadable)}, http.DefaultTransport)
	down.start()
	if _, err := down.labelLimit(context.Background()); err == nil {
		t.Error("the only backend cannot be read: no error")
	}
	waitFor(t, "a write did not have the backend looked at again", func() bool { return looks.Load() >= 2 })
	down.close()
	for _, tc := range []struct {
		page string
		want int
	}{{pageDrops, fallbackLabelLimit}, {pageCuts24, 24}} {
		w := newTruncationWatch([]*url.URL{metricsPage(t, unreadable), metricsPage(t, fixed(tc.page))}, http.DefaultTransport)
		w.start()
		if got, err := w.labelLimit(context.Background()); got != tc.want || err != nil {
			t.Errorf("one backend unreadable beside one read (%q): %d, %v; want %d", tc.page, got, err, tc.want)
		}
		w.close()
	}
	closed := metricsPage(t, fixed(pageCuts))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Host = ln.Addr().String()
	ln.Close() // refused from now on
	for _, tc := range []struct {
		page string
		want int
	}{{pageDrops, 0}, {pageCuts24, 24}} {
		w := newTruncationWatch([]*url.URL{closed, metricsPage(t, fixed(tc.page))}, http.DefaultTransport)
		w.start()
		if got, err := w.labelLimit(context.Background()); got != tc.want || err != nil {
			t.Errorf("one backend refusing connections beside one read (%q): %d, %v; want %d", tc.page, got, err, tc.want)
		}
		if st := w.current()[0].state.Load(); st != truncationUnreachable {
			t.Errorf("a backend refusing connections: state %d; want %d", st, truncationUnreachable)
		}
		w.close()
	}

	*writeMaxLabels = 12
	defer func() { *writeMaxLabels = 0 }()
	w := newTruncationWatch([]*url.URL{metricsPage(t, fixed(pageDrops))}, http.DefaultTransport)
	w.checkAll(context.Background())
	if got, err := w.labelLimit(context.Background()); got != 12 || err != nil {
		t.Errorf("with -write.maxLabelsPerTimeseries=12: %d, %v", got, err)
	}
	if got, _ := labelLimitOf(nil)(context.Background()); got != 12 {
		t.Errorf("with the check off and -write.maxLabelsPerTimeseries=12: %d", got)
	}
}

// A backend that cannot be read at first (not up yet) is asked again soon, not at the next interval.
func TestTruncationRecheckedSoon(t *testing.T) {
	defer func(d, s time.Duration) { recheckFirst, lookSpacing = d, s }(recheckFirst, lookSpacing)
	recheckFirst, lookSpacing = 20*time.Millisecond, time.Millisecond
	var up atomic.Bool
	u := metricsPage(t, func() (int, string) {
		if !up.Load() {
			return http.StatusServiceUnavailable, ""
		}
		return 200, pageCuts24
	})
	w := newTruncationWatch([]*url.URL{u}, http.DefaultTransport)
	w.start()
	defer w.close()
	// Not up yet: it may come up before the next look with any limit, so narrowed writes are refused meanwhile.
	if _, err := w.labelLimit(context.Background()); err == nil || w.current()[0].state.Load() != truncationUnreadable {
		t.Fatalf("a backend not up: %v, state %d; want an error", err, w.current()[0].state.Load())
	}
	up.Store(true)
	waitFor(t, "the backend was not asked again", func() bool { return w.current()[0].state.Load() == truncationCuts })
	if got, _ := w.labelLimit(context.Background()); got != 24 {
		t.Errorf("limit %d once the backend answered; want 24", got)
	}
}

// A backend found truncating stays guarded while its /metrics cannot be read (a restart, a slow page): a failed
// look must not turn the guard off.
func TestTruncationKeptThroughFailedLooks(t *testing.T) {
	defer func(d, i, s time.Duration) { recheckFirst, *labelTruncationCheckInterval, lookSpacing = d, i, s }(recheckFirst, *labelTruncationCheckInterval, lookSpacing)
	recheckFirst, *labelTruncationCheckInterval, lookSpacing = 10*time.Millisecond, 50*time.Millisecond, time.Millisecond
	var page atomic.Value
	page.Store(pageCuts24)
	var looks atomic.Int64
	u := metricsPage(t, func() (int, string) {
		looks.Add(1)
		if p := page.Load().(string); p != "" {
			return 200, p
		}
		return http.StatusServiceUnavailable, ""
	})
	w := newTruncationWatch([]*url.URL{u}, http.DefaultTransport)
	w.start()
	defer w.close()
	if got, _ := w.labelLimit(context.Background()); got != 24 {
		t.Fatalf("limit %d; want 24", got)
	}
	page.Store("")
	// A failed look keeps the backend asked soon: wait for a few.
	n := looks.Load()
	waitFor(t, "the backend was not looked at again", func() bool { return looks.Load() >= n+3 })
	if got, _ := w.labelLimit(context.Background()); got != 24 || w.current()[0].state.Load() != truncationCuts {
		t.Fatalf("while /metrics fails: limit %d, state %d; want the guard kept at 24", got, w.current()[0].state.Load())
	}
	page.Store(pageDrops)
	waitFor(t, "the backend was not looked at again once it could be read", func() bool { return w.current()[0].state.Load() == truncationDrops })
	if got, _ := w.labelLimit(context.Background()); got != 0 {
		t.Errorf("limit %d once the backend drops; want 0", got)
	}
}

// waitFor polls cond for up to 5 s: the watch looks at the backends on its own timer.
func waitFor(t *testing.T, failure string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(failure)
		}
	}
}

// A backend that answers /metrics with an error may be an old release not answering now (guarded); one that has no
// such page is not VictoriaMetrics, or is behind a proxy (not guarded, alerted).
func TestTruncationStatuses(t *testing.T) {
	for code, want := range map[int]int64{
		http.StatusServiceUnavailable: truncationUnreadable, http.StatusInternalServerError: truncationUnreadable,
		http.StatusUnauthorized: truncationUnreadable, http.StatusForbidden: truncationUnreadable,
		http.StatusNotFound: truncationUnknown, http.StatusFound: truncationUnknown,
	} {
		w := newTruncationWatch([]*url.URL{metricsPage(t, func() (int, string) { return code, "" })}, http.DefaultTransport)
		if got, _, _, _ := w.check(context.Background(), w.current()[0]); got != want {
			t.Errorf("GET /metrics answered %d: state %d; want %d", code, got, want)
		}
	}
}

// discovered is an address found behind a name, asked with that name.
func discovered(u *url.URL) gateway.BackendAddr {
	return gateway.BackendAddr{URL: u, Host: "vminsert.example:8480"}
}

// truncationGaugeValue is the gauge of k as the process exports it, "absent" when it has none.
func truncationGaugeValue(k targetKey) string { return exportedValue(truncationGauge(k)) }

// exportedValue is the value of the series the process exports, "absent" when it has none.
func exportedValue(series string) string {
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	for _, l := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return "absent"
}

// An address found truncating that drops out of discovery for a round (a readiness flap, likeliest when it is
// overloaded and its /metrics fails) comes back as what it was, not as an address never read.
func TestTruncationVerdictSurvivesFlap(t *testing.T) {
	defer func(i, s time.Duration) { *labelTruncationCheckInterval, lookSpacing = i, s }(*labelTruncationCheckInterval, lookSpacing)
	*labelTruncationCheckInterval, lookSpacing = time.Hour, time.Millisecond
	cur := metricsPage(t, func() (int, string) { return 200, pageDrops })
	var oldUp atomic.Bool
	oldUp.Store(true)
	var oldLooks atomic.Int64
	old := metricsPage(t, func() (int, string) {
		oldLooks.Add(1)
		if oldUp.Load() {
			return 200, pageCuts24
		}
		return http.StatusServiceUnavailable, "" // overloaded: its /metrics fails, its writes still go in
	})
	w := newTruncationWatch(nil, http.DefaultTransport)
	w.setAddrs([]gateway.BackendAddr{discovered(cur), discovered(old)})
	w.start()
	defer w.close()
	if got, err := w.labelLimit(context.Background()); got != 24 || err != nil {
		t.Fatalf("limit %d, %v; want 24", got, err)
	}
	oldUp.Store(false)
	n := oldLooks.Load()
	w.setAddrs([]gateway.BackendAddr{discovered(cur)})
	w.setAddrs([]gateway.BackendAddr{discovered(cur), discovered(old)})
	waitFor(t, "the address back was not looked at again", func() bool { return oldLooks.Load() > n })
	if got, err := w.labelLimit(context.Background()); got != 24 || err != nil {
		t.Fatalf("after the truncating address flapped: limit %d, %v; want 24", got, err)
	}
}

// A new address is looked at as soon as it is found, whatever the other backends' looks are doing: a known backend
// whose /metrics hangs does not hide a new address that truncates.
func TestTruncationNewAddressLookedAtOnce(t *testing.T) {
	defer func(i, s time.Duration) { *labelTruncationCheckInterval, lookSpacing = i, s }(*labelTruncationCheckInterval, lookSpacing)
	*labelTruncationCheckInterval, lookSpacing = 100*time.Millisecond, time.Millisecond
	var hang atomic.Bool
	release := make(chan struct{})
	defer close(release)
	var curLooks atomic.Int64
	cur := metricsPage(t, func() (int, string) {
		curLooks.Add(1)
		if hang.Load() {
			<-release // a wedged vminsert: it takes writes, its /metrics answers late
		}
		return 200, pageDrops
	})
	old := metricsPage(t, func() (int, string) { return 200, pageCuts24 })
	w := newTruncationWatch(nil, http.DefaultTransport)
	w.setAddrs([]gateway.BackendAddr{discovered(cur)})
	w.start()
	defer w.close()
	if got, err := w.labelLimit(context.Background()); got != 0 || err != nil {
		t.Fatalf("limit %d, %v; want 0", got, err)
	}
	hang.Store(true)
	n := curLooks.Load()
	waitFor(t, "no look at the known backend began", func() bool { return curLooks.Load() > n })
	w.setAddrs([]gateway.BackendAddr{discovered(cur), discovered(old)})
	if got, err := w.labelLimit(context.Background()); got != 24 || err != nil {
		t.Fatalf("a truncating address came while a look hung on another: limit %d, %v; want 24", got, err)
	}
}

// Two names behind one address (virtual hosts) are two backends, each with its own verdict and gauge.
func TestTruncationHostsApart(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "vminsert-old.example:8480" {
			_, _ = w.Write([]byte(pageCuts24))
			return
		}
		_, _ = w.Write([]byte(pageDrops))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	w := newTruncationWatch(nil, http.DefaultTransport)
	w.setAddrs([]gateway.BackendAddr{{URL: u, Host: "vminsert-old.example:8480"}, {URL: u, Host: "vminsert-new.example:8480"}})
	w.checkAll(context.Background())
	if got, err := w.labelLimit(context.Background()); got != 24 || err != nil {
		t.Fatalf("limit %d, %v; want 24 (the old release behind one of the names)", got, err)
	}
	for host, want := range map[string]string{"vminsert-old.example:8480": "1", "vminsert-new.example:8480": "0"} {
		if got := truncationGaugeValue(targetKey{name: redact.URL(u), host: host}); got != want {
			t.Errorf("the gauge of %s is %s; want %s", host, got, want)
		}
	}
}

// A -write.url given twice is one backend, and its gauge stays.
func TestTruncationDuplicateURL(t *testing.T) {
	u := metricsPage(t, func() (int, string) { return 200, pageCuts24 })
	w := newTruncationWatch([]*url.URL{u, u}, http.DefaultTransport)
	w.setAddrs([]gateway.BackendAddr{{URL: u}, {URL: u}}) // what gateway.New hands over
	w.checkAll(context.Background())
	if n := len(w.current()); n != 1 {
		t.Fatalf("%d backends checked; want 1", n)
	}
	if got := truncationGaugeValue(targetKey{name: redact.URL(u)}); got != "1" {
		t.Fatalf("the gauge is %s; want 1", got)
	}
}

// Gauges are registered once per process however many watches (apps in one test binary) come and go.
func TestTruncationGaugesOfManyWatches(t *testing.T) {
	u, _ := url.Parse("http://10.99.0.1:8480")
	other, _ := url.Parse("http://10.99.0.2:8480")
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newTruncationWatch(nil, http.DefaultTransport)
			for range 2000 {
				w.setAddrs([]gateway.BackendAddr{{URL: u}})
				w.setAddrs([]gateway.BackendAddr{{URL: other}})
			}
		}()
	}
	wg.Wait() // a second registration panics
}

// The check costs a write nothing it need not: no allocation while every backend is known.
func TestTruncationLabelLimitAllocs(t *testing.T) {
	var addrs []gateway.BackendAddr
	for range 8 {
		addrs = append(addrs, gateway.BackendAddr{URL: metricsPage(t, func() (int, string) { return 200, pageDrops })})
	}
	w := newTruncationWatch(nil, http.DefaultTransport)
	w.setAddrs(addrs)
	w.checkAll(context.Background())
	if n := testing.AllocsPerRun(1000, func() { _, _ = w.labelLimit(context.Background()) }); n != 0 {
		t.Fatalf("%v allocations per labelLimit with 8 known backends; want 0", n)
	}
}

// An address gone from discovery still counts for leaveGrace: a write routed on the list it was in may reach it.
func TestTruncationLeavingAddressCounts(t *testing.T) {
	cur := metricsPage(t, func() (int, string) { return 200, pageDrops })
	old := metricsPage(t, func() (int, string) { return 200, pageCuts24 })
	w := newTruncationWatch(nil, http.DefaultTransport)
	w.setAddrs([]gateway.BackendAddr{discovered(cur), discovered(old)})
	w.checkAll(context.Background())
	w.setAddrs([]gateway.BackendAddr{discovered(cur)})
	if got, err := w.labelLimit(context.Background()); got != 24 || err != nil {
		t.Fatalf("just after the truncating address went: limit %d, %v; want 24", got, err)
	}
	for _, t := range *w.leaving.Load() {
		t.goneAt.Add(-int64(leaveGrace))
	}
	if got, err := w.labelLimit(context.Background()); got != 0 || err != nil {
		t.Fatalf("leaveGrace after it went: limit %d, %v; want 0", got, err)
	}
}

// A write backend whose /metrics lists -sortLabels set refuses writes through tokens with extra labels with 503, the
// guard's limit or none, -write.maxLabelsPerTimeseries too, until a look finds it off; a flag listed false, or a
// flag of another name, refuses nothing.
func TestSortLabelsRefused(t *testing.T) {
	for _, tc := range []struct {
		name, line, sorts string
	}{
		{"set", `flag{name="sortLabels", value="true", is_set="true"} 1`, "-sortLabels=true"},
		{"off", `flag{name="sortLabels", value="false", is_set="false"} 1`, ""},
		{"another flag", `flag{name="sortLabelsX", value="true", is_set="true"} 1`, ""},
		{"a label beside the name", `flag{name="x", value="true"} 1 # sortLabels`, ""},
		{"deduplication of stream aggregation", `flag{name="streamAggr.dedupInterval", value="2s", is_set="true"} 1`, "-streamAggr.dedupInterval=2s"},
		{"its default", `flag{name="streamAggr.dedupInterval", value="0s", is_set="false"} 1`, ""},
		{"stream aggregation", `flag{name="streamAggr.config", value="/etc/aggr.yml", is_set="true"} 1`, "-streamAggr.config=/etc/aggr.yml"},
		{"none", `flag{name="streamAggr.config", value="", is_set="false"} 1`, ""},
		{"1.79.5 without a value label", `flag{name="sortLabels"} 1`, ""},
		{"a vmagent's stream aggregation of one remote storage", `flag{name="remoteWrite.streamAggr.config", value=",/etc/aggr.yml", is_set="true"} 1`,
			"-remoteWrite.streamAggr.config=,/etc/aggr.yml"},
		{"of none", `flag{name="remoteWrite.streamAggr.config", value=",", is_set="false"} 1`, ""},
		{"a vmagent's deduplication of one", `flag{name="remoteWrite.streamAggr.dedupInterval", value="0s,30s", is_set="true"} 1`,
			"-remoteWrite.streamAggr.dedupInterval=0s,30s"},
		{"of none", `flag{name="remoteWrite.streamAggr.dedupInterval", value="0s,0s", is_set="true"} 1`, ""},
	} {
		for _, base := range []string{pageCuts24, pageDrops} {
			if _, _, got, _ := truncationOf(strings.NewReader(base + tc.line + "\n")); got != tc.sorts {
				t.Errorf("%s: sorts %q; want %q", tc.name, got, tc.sorts)
			}
		}
	}
	var page atomic.Pointer[string]
	set := pageDrops + `flag{name="sortLabels", value="true", is_set="true"}` + " 1\n"
	page.Store(&set)
	u := metricsPage(t, func() (int, string) { return http.StatusOK, *page.Load() })
	w := newTruncationWatch([]*url.URL{u}, http.DefaultTransport)
	w.checkAll(context.Background())
	_, err := w.labelLimit(context.Background())
	var he *httperr.Error
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || !strings.Contains(he.Error(), "runs with -sortLabels=true") {
		t.Fatalf("a backend with -sortLabels: %v; want 503 naming the flag", err)
	}
	if got := exportedValue(sortsGauge(w.current()[0].key)); got != "1" {
		t.Errorf("vmgateway_write_backend_sorts_labels = %s; want 1", got)
	}
	*writeMaxLabels = 12
	_, err = w.labelLimit(context.Background())
	*writeMaxLabels = 0
	if err == nil {
		t.Error("-write.maxLabelsPerTimeseries took writes to a backend with -sortLabels")
	}
	off := pageCuts24
	page.Store(&off)
	w.checkAll(context.Background())
	if got, err := w.labelLimit(context.Background()); got != 24 || err != nil {
		t.Errorf("the flag taken off: %d %v; want 24", got, err)
	}
	if got := exportedValue(sortsGauge(w.current()[0].key)); got != "0" {
		t.Errorf("vmgateway_write_backend_sorts_labels = %s; want 0", got)
	}
}
