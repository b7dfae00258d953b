package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestReadSlotsLearned: the gateway is given each backend's vm_concurrent_select_capacity; an address that cannot be
// read keeps what it was last, and one never read is left out (the gateway counts it as the smallest known); none
// read, no limit.
func TestReadSlotsLearned(t *testing.T) {
	capacity := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" && !strings.HasSuffix(r.URL.Path, "/metrics") {
			http.NotFound(w, r)
			return
		}
		page, ok := capacity[r.Host]
		if !ok {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "vm_concurrent_select_current 0\n%s\nvm_http_requests_total 5\n", page)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	addr := func(host string) gateway.BackendAddr { return gateway.BackendAddr{URL: u, Host: host} }
	w := newSlotsWatch(readSlots, http.DefaultTransport)
	var got map[string]int
	w.set = func(m map[string]gateway.BackendCapacity) { got = slotsOf(m) }
	braces, linear := false, false
	w.braces = func(b bool) { braces = b }
	w.linearCountValues = func(b bool) { linear = b }
	key := func(host string) string { return addr(host).Key() }
	for _, step := range []struct {
		name  string
		pages map[string]string
		addrs []string
		want  map[string]int
	}{
		{"two backends", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8"}, []string{"a", "b"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"one down: as it was", map[string]string{"a": "vm_concurrent_select_capacity 4"}, []string{"a", "b"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"a new one down: left out", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8"}, []string{"a", "b", "c"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"a page without it", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "up 1"}, []string{"a", "b", "c"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"not a count", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "vm_concurrent_select_capacity -3"}, []string{"a", "b", "c"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"NaN", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "vm_concurrent_select_capacity NaN"}, []string{"a", "b", "c"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"+Inf", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "vm_concurrent_select_capacity +Inf"}, []string{"a", "b", "c"}, map[string]int{key("a"): 4, key("b"): 8}},
		{"gone from discovery", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 2"}, []string{"a", "b"}, map[string]int{key("a"): 4, key("b"): 2}},
		{"none read: no limit", map[string]string{}, []string{"x", "y"}, nil},
	} {
		capacity = step.pages
		var addrs []gateway.BackendAddr
		for _, h := range step.addrs {
			addrs = append(addrs, addr(h))
		}
		w.setAddrs(addrs)
		w.readAll(context.Background())
		if !maps.Equal(got, step.want) || (got == nil) != (step.want == nil) {
			t.Errorf("%s: the gateway is given %v; want %v", step.name, got, step.want)
		}
	}
	// `or` inside the braces, and a linear count_values: while every backend is known to have them, and not from the
	// moment one not read yet comes.
	newer := "vm_concurrent_select_capacity 4\nflag{name=\"search.maxDeleteDuration\", value=\"5m0s\"} 1\n" +
		"flag{name=\"search.maxSeriesPerAggrFunc\", value=\"1000000\", is_set=\"false\"} 1"
	capacity = map[string]string{"a": newer, "b": newer}
	w.setAddrs([]gateway.BackendAddr{addr("a"), addr("b")})
	if w.readAll(context.Background()); !braces || !linear {
		t.Errorf("two v1.151 backends: braces %v, linear count_values %v; want both", braces, linear)
	}
	capacity["c"] = "vm_concurrent_select_capacity 4"
	if w.setAddrs([]gateway.BackendAddr{addr("a"), addr("b"), addr("c")}); braces || linear {
		t.Errorf("a new backend not read yet: braces %v, linear count_values %v; want neither", braces, linear)
	}
	if w.readAll(context.Background()); braces || linear {
		t.Errorf("a new backend of an older release: braces %v, linear count_values %v; want neither", braces, linear)
	}
	w.setAddrs([]gateway.BackendAddr{addr("a"), addr("b")})
	if w.readAll(context.Background()); !braces || !linear {
		t.Errorf("the older one gone: braces %v, linear count_values %v; want both", braces, linear)
	}
	// A release between v1.88.0 and v1.110.0: linear, braces not told apart.
	capacity["b"] = "vm_concurrent_select_capacity 4\nflag{name=\"search.maxSeriesPerAggrFunc\", value=\"1000000\"} 1"
	if w.readAll(context.Background()); braces || !linear {
		t.Errorf("a v1.9x backend: braces %v, linear count_values %v; want linear alone", braces, linear)
	}
}

// TestReadFlagsWithFixedSlots: with -read.maxConcurrentRequests fixed, the read backends' flags and release are still
// learnt, and their capacity is not given (the flag's stands); -read.learnBackendFlags=false reads nothing.
func TestReadFlagsWithFixedSlots(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "vm_concurrent_select_capacity 4\nflag{name=\"search.maxDeleteDuration\", value=\"5m0s\"} 1\n"+
			"flag{name=\"dedup.minScrapeInterval\", value=\"30s\"} 1\n")
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	defer func(was int, learn bool) { *readMaxConcurrentRequests, *readLearnBackendFlags = was, learn }(*readMaxConcurrentRequests, *readLearnBackendFlags)
	*readMaxConcurrentRequests = 16
	if *readLearnBackendFlags = false; newSlotsWatch(readSlots, http.DefaultTransport) != nil {
		t.Errorf("-read.learnBackendFlags=false: a watch of the read backends")
	}
	*readLearnBackendFlags = true
	w := newSlotsWatch(readSlots, http.DefaultTransport)
	if w == nil || !w.factsOnly {
		t.Fatalf("a fixed -read.maxConcurrentRequests: watch %+v; want one of the flags only", w)
	}
	given, braces, dedup := false, false, time.Duration(0)
	w.set = func(map[string]gateway.BackendCapacity) { given = true }
	w.braces, w.dedup, w.maxQueryLen = func(b bool) { braces = b }, func(d time.Duration) { dedup = d }, func(int) {}
	w.setAddrs([]gateway.BackendAddr{{URL: u}})
	if !w.readAll(context.Background()) || given || !braces || dedup != 30*time.Second {
		t.Errorf("capacity given %v, braces %v, dedup %s; want none given, braces, 30s", given, braces, dedup)
	}
}

// TestReadSlotsSplitBetweenReplicas: each of -read.replicas forwards its part of the capacity, rounded down so that
// together they never pass it, and at least one read.
func TestReadSlotsSplitBetweenReplicas(t *testing.T) {
	for _, tc := range []struct{ capacity, replicas, want int }{
		{12, 1, 12},
		{12, 2, 6},
		{12, 5, 2},
		{4, 3, 1},
		{1, 2, 1},
		{0, 3, 0}, // no limit stays none
	} {
		if got := gateway.ReplicaPart(tc.capacity, tc.replicas); got != tc.want {
			t.Errorf("capacity %d between %d replicas: %d each; want %d", tc.capacity, tc.replicas, got, tc.want)
		}
	}
}

// TestWriteSlotsLearned: the gateway is given the write backends' vm_concurrent_insert_capacity, each paced unless
// it is a release that holds an insert slot for a whole body (it names vm_metrics_with_dropped_labels_total).
func TestWriteSlotsLearned(t *testing.T) {
	const (
		old = "vm_concurrent_insert_capacity 8\nvm_metrics_with_dropped_labels_total 0\n"
		cur = "vm_concurrent_insert_capacity 4\nvm_rows_ignored_total{reason=\"too_many_labels\"} 0\n"
	)
	pages := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, ok := pages[r.Host]
		if !ok || r.URL.Path != "/metrics" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "vm_concurrent_insert_current 0\n%svm_http_requests_total 5\n", page)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	w := newSlotsWatch(writeSlots, http.DefaultTransport)
	got, paced := map[string]int{"not": -1}, map[string]bool{}
	w.set = func(m map[string]gateway.BackendCapacity) {
		got, paced = slotsOf(m), map[string]bool{}
		for k, c := range m {
			paced[k] = c.Paced
		}
	}
	a, b := gateway.BackendAddr{URL: u, Host: "a"}.Key(), gateway.BackendAddr{URL: u, Host: "b"}.Key()
	for _, step := range []struct {
		name  string
		pages map[string]string
		addrs []string
		want  map[string]int
		paced map[string]bool
	}{
		{"one old release", map[string]string{"a": old}, []string{"a"}, map[string]int{a: 8}, map[string]bool{a: false}},
		{"newer releases: at their capacity, paced", map[string]string{"a": cur, "b": cur}, []string{"a", "b"}, map[string]int{a: 4, b: 4}, map[string]bool{a: true, b: true}},
		{"a fleet being upgraded counts whole", map[string]string{"a": old, "b": cur}, []string{"a", "b"}, map[string]int{a: 8, b: 4}, map[string]bool{a: false, b: true}},
		{"the old one down: as it was", map[string]string{"b": cur}, []string{"a", "b"}, map[string]int{a: 8, b: 4}, map[string]bool{a: false, b: true}},
		{"a page without the capacity", map[string]string{"a": "vm_metrics_with_dropped_labels_total 0\n", "b": cur}, []string{"a", "b"}, map[string]int{a: 8, b: 4}, map[string]bool{a: false, b: true}},
	} {
		pages = step.pages
		var addrs []gateway.BackendAddr
		for _, h := range step.addrs {
			addrs = append(addrs, gateway.BackendAddr{URL: u, Host: h})
		}
		w.setAddrs(addrs)
		w.readAll(context.Background())
		if !maps.Equal(got, step.want) || (got == nil) != (step.want == nil) || !maps.Equal(paced, step.paced) {
			t.Errorf("%s: the gateway is given %v, paced %v; want %v, %v", step.name, got, paced, step.want, step.paced)
		}
	}
}

// TestInsertCapacityOf reads the real pages of the two kinds of release.
func TestInsertCapacityOf(t *testing.T) {
	for _, tc := range []struct {
		page  string
		n     int
		paced bool
		err   string
	}{
		{"vm_concurrent_insert_capacity 8\nvm_metrics_with_dropped_labels_total 3\n", 8, false, ""},
		{"vm_metrics_with_dropped_labels_total 3\nvm_concurrent_insert_capacity 16\n", 16, false, ""},
		{"vm_concurrent_insert_capacity 4\nvm_rows_ignored_total{reason=\"too_many_labels\"} 0\n", 4, true, ""},
		{"vm_concurrent_insert_capacity 0\n", 0, false, "not a count"},
		{"vm_concurrent_insert_capacity NaN\n", 0, false, "not a count"},
		{"up 1\n", 0, false, "has no vm_concurrent_insert_capacity"},
	} {
		c, err := insertCapacityOf(strings.NewReader(tc.page))
		if c.n != tc.n || c.paced != tc.paced || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %d, paced %v, %v; want %d, %v, error with %q", tc.page, c.n, c.paced, err, tc.n, tc.paced, tc.err)
		}
	}
}

// slotsOf is the slots of what the gateway is given (nil: no limit).
func slotsOf(m map[string]gateway.BackendCapacity) map[string]int {
	if m == nil {
		return nil
	}
	out := make(map[string]int, len(m))
	for k, c := range m {
		out[k] = c.Slots
	}
	return out
}

// TestSelectCapacityOf: a release without the flag of v1.110.0 (Debian's 1.79.5 among them) goes on with an export
// whose connection is closed; v1.110.0 and later stop it. The pages are the real releases' lines.
func TestSelectCapacityOf(t *testing.T) {
	for _, tc := range []struct {
		page   string
		n      int
		runsOn bool
		err    string
	}{
		{"vm_concurrent_select_capacity 4\nflag{name=\"search.maxConcurrentRequests\", value=\"4\", is_set=\"false\"} 1\n", 4, true, ""},
		{"vm_concurrent_select_capacity 8\nflag{name=\"search.maxDeleteDuration\", value=\"5m0s\", is_set=\"false\"} 1\n", 8, false, ""},
		{"flag{name=\"search.maxDeleteDuration\", value=\"5m0s\", is_set=\"true\"} 1\nvm_concurrent_select_capacity 2\n", 2, false, ""},
		{"vm_concurrent_select_capacity 4\n# flag{name=\"search.maxDeleteDuration\"} 1\n", 4, true, ""},
		{"up 1\n", 0, true, "has no vm_concurrent_select_capacity"},
	} {
		c, err := selectCapacityOf(strings.NewReader(tc.page))
		if c.n != tc.n || c.paced || c.runsOn != tc.runsOn || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %+v, %v; want %d slots, runs on %v, error with %q", tc.page, c, err, tc.n, tc.runsOn, tc.err)
		}
		// The releases that stop an abandoned export (v1.110.0 on) read `or` inside a selector's braces too (v1.92.0 on).
		if c.braces == tc.runsOn && err == nil {
			t.Errorf("%q: reads `or` inside the braces: %v; want %v", tc.page, c.braces, !tc.runsOn)
		}
	}
	// -search.maxBinaryOpPushdownLabelValues, as v1.151 lists it; a release without it (1.79.5) copies every value.
	for page, want := range map[string]int{
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxBinaryOpPushdownLabelValues\", value=\"100\", is_set=\"false\"} 1\n": 100,
		"flag{name=\"search.maxBinaryOpPushdownLabelValues\", value=\"10\", is_set=\"true\"} 1\nvm_concurrent_select_capacity 4\n":   10,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxBinaryOpPushdownLabelValuesX\", value=\"3\"} 1\n":                    unboundedPushdown,
		"vm_concurrent_select_capacity 4\n": unboundedPushdown,
	} {
		if c, err := selectCapacityOf(strings.NewReader(page)); err != nil || c.pushdown != want {
			t.Errorf("%q: pushdown %d, %v; want %d", page, c.pushdown, err, want)
		}
	}
}

// TestBackendDedup: -dedup.minScrapeInterval as v1.151 lists it, and the least of the read backends' (none when one
// has none or is not known), which the query limits assume above -search.minSampleInterval.
func TestBackendDedup(t *testing.T) {
	for page, want := range map[string]time.Duration{
		"vm_concurrent_select_capacity 4\nflag{name=\"dedup.minScrapeInterval\", value=\"30s\", is_set=\"true\"} 1\n": 30 * time.Second,
		"vm_concurrent_select_capacity 4\nflag{name=\"dedup.minScrapeInterval\", value=\"0s\", is_set=\"false\"} 1\n": 0,
		"vm_concurrent_select_capacity 4\nflag{name=\"dedup.minScrapeInterval\", value=\"junk\"} 1\n":                 0,
		"vm_concurrent_select_capacity 4\n": 0,
	} {
		if c, err := selectCapacityOf(strings.NewReader(page)); err != nil || c.dedup != want {
			t.Errorf("%q: dedup %s, %v; want %s", page, c.dedup, err, want)
		}
	}
	both := map[string]capacity{"a": {dedup: 30 * time.Second}, "b": {dedup: 15 * time.Second}}
	if got := least(both, 0, dedupOf); got != 15*time.Second {
		t.Errorf("least of 30s and 15s: %s", got)
	}
	if got := least(both, 1, dedupOf); got != 0 {
		t.Errorf("with a backend not known: %s, want 0", got)
	}
	if got := least(map[string]capacity{"a": {dedup: 30 * time.Second}, "b": {}}, 0, dedupOf); got != 0 {
		t.Errorf("with a backend without dedup: %s, want 0", got)
	}
}

// TestBackendMaxQueryLen: -search.maxQueryLen as 1.79.5 and v1.151 list it (bytes, or the size as set), and the least
// of the read backends' (none when one does not list it or is not known).
func TestBackendMaxQueryLen(t *testing.T) {
	for page, want := range map[string]int{
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"16384\", is_set=\"false\"} 1\n": 16384,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"2KiB\", is_set=\"true\"} 1\n":   2048,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"1.5MB\", is_set=\"true\"} 1\n":  1500000,
		// VictoriaMetrics multiplies by 1000 twice: 1025000, where 1.025 times 1e6 is 1024999.99.
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"1.025MB\", is_set=\"true\"} 1\n": 1025000,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"0.5KB\", is_set=\"true\"} 1\n":   500,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"-1\", is_set=\"true\"} 1\n":      0,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"5GiB\", is_set=\"true\"} 1\n":    0,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLen\", value=\"junk\"} 1\n":                     0,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxQueryLenX\", value=\"10\"} 1\n":                      0,
		"vm_concurrent_select_capacity 4\n": 0,
	} {
		if c, err := selectCapacityOf(strings.NewReader(page)); err != nil || c.maxQueryLen != want {
			t.Errorf("%q: maxQueryLen %d, %v; want %d", page, c.maxQueryLen, err, want)
		}
	}
	both := map[string]capacity{"a": {maxQueryLen: 16384}, "b": {maxQueryLen: 4096}}
	if got := least(both, 0, maxQueryLenOf); got != 4096 {
		t.Errorf("least of 16384 and 4096: %d", got)
	}
	if got := least(both, 1, maxQueryLenOf); got != 0 {
		t.Errorf("with a backend not known: %d, want 0", got)
	}
	if got := least(map[string]capacity{"a": {maxQueryLen: 16384}, "b": {}}, 0, maxQueryLenOf); got != 0 {
		t.Errorf("with a backend that lists none: %d, want 0", got)
	}
}

// TestRewritePastMaxQueryLen: a query that fits the read backend's -search.maxQueryLen as sent, and not once the
// rewrite has copied its selectors for a token's three filter branches, gets the gateway's 422 naming both lengths,
// not the backend's refusal of a length the client never sent; on 1.79.5 (which refuses with 422) and v1.151 (400).
// One too long as sent is the backend's to refuse; one that fits either way is answered.
func TestRewritePastMaxQueryLen(t *testing.T) {
	for _, tc := range []struct {
		name string
		vm   func() *vmtest.VM
	}{
		{"1.79.5", func() *vmtest.VM { return vmtest.Start(t, "-search.maxQueryLen=1KiB") }},
		{"v1.151", func() *vmtest.VM { return vmtest.StartCurrent(t, "-search.maxQueryLen=1KiB") }},
	} {
		vm := tc.vm()
		priv, pub := keyPair(t, "ec")
		// The arms' limits are off: their selectors, copied for each branch, would be refused first (TestQueryArmsBounded).
		g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-read.maxConcurrentRequests=0", "-enable.auth", "-auth.publicKeyFiles="+pub,
			"-search.maxQuerySelectors=0", "-search.maxQueryPoints=0")
		tok := mint(t, priv, "-mode=read", "-extraLabels=team=dev", `-extraFilters={env="prod"}`, `-extraFilters={env="stage"}`, `-extraFilters={tier="gold"}`)
		vmtest.Eventually(t, func() (bool, string) {
			return strings.Contains(g.logs.String(), "the read backends run this many requests at once"), tc.name + ": capacity not read yet"
		})
		// n selectors of 20 bytes each: 600 bytes as sent, about four times as long rewritten.
		query := func(n int) string {
			parts := make([]string, n)
			for i := range parts {
				parts[i] = fmt.Sprintf(`sum(m%02d{job="api"})`, i)
			}
			return strings.Join(parts, "+")
		}
		for _, q := range []struct {
			query string
			want  int
			says  string
		}{
			{query(30), http.StatusUnprocessableEntity, "once limited to the token's series (each selector gets the token's extra labels, and is copied for each of its 3 extra filter branches), past the read backend's -search.maxQueryLen=1024"},
			{query(60), 0, "too long query"},
			{query(2), http.StatusOK, `"status":"success"`},
		} {
			code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/query", strings.NewReader(url.Values{"query": {q.query}}.Encode()),
				"Authorization", "Bearer "+tok, "Content-Type", "application/x-www-form-urlencoded")
			if q.want != 0 && code != q.want || q.want == 0 && code/100 != 4 || !strings.Contains(body, q.says) {
				t.Errorf("%s: a query of %d bytes: %d %.400s; want %d saying %q", tc.name, len(q.query), code, body, q.want, q.says)
			}
			if q.want == http.StatusUnprocessableEntity && !strings.Contains(body, fmt.Sprintf("the query is %d bytes as sent", len(q.query))) {
				t.Errorf("%s: the refusal does not name the length sent: %s", tc.name, body)
			}
		}
	}
}

// TestDedupRelaxesSampleInterval: behind a v1.151 that deduplicates at 30 s, a p99 of day windows over a week at 5
// minutes (2,017 points of 86,400 samples at one a second, refused) is judged at one sample per 30 s and passes; behind
// one without dedup it is refused (an attacker's review of the bound found such dashboards refused). The gateway does
// not count the samples here (-search.measureSamples=false, TestMeasuredSamples): the interval alone decides.
func TestDedupRelaxesSampleInterval(t *testing.T) {
	end := time.Now().Unix()
	query := fmt.Sprintf("/api/v1/query_range?query=%s&start=%d&end=%d&step=300", url.QueryEscape(`quantile_over_time(0.99, x[1d])`), end-7*86400, end)
	for _, tc := range []struct {
		name  string
		flags []string
		want  int
	}{
		{"without dedup", nil, http.StatusBadRequest},
		{"dedup at 30s", []string{"-dedup.minScrapeInterval=30s"}, http.StatusOK},
	} {
		vm := vmtest.StartCurrent(t, tc.flags...)
		g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-read.maxConcurrentRequests=0", "-search.measureSamples=false")
		vmtest.Eventually(t, func() (bool, string) {
			return strings.Contains(g.logs.String(), "the read backends run this many requests at once"), tc.name + ": capacity not read yet"
		})
		code, _, body := do(t, http.MethodGet, g.URL+query, nil)
		if code != tc.want {
			t.Errorf("%s: %d %.300s; want %d", tc.name, code, body, tc.want)
		}
		if tc.want == http.StatusBadRequest && !strings.Contains(body, "-search.minSampleInterval=1s") {
			t.Errorf("%s: the refusal does not name the interval: %s", tc.name, body)
		}
	}
}

// TestPushdownWarning: the gateway warns of a read backend that copies more than 10 label values of a binary
// operator's first side into its other side (v1.151 by default, 100), or every value (1.79.5, which has no flag for
// it), and not of one set to 10: a team's long label values copied at every level of a chain of operators ran v1.151
// out of memory with a 462-byte query.
func TestPushdownWarning(t *testing.T) {
	const warning = "the read backend copies "
	for _, tc := range []struct {
		name string
		vm   func() *vmtest.VM
		want string
	}{
		{"v1.151 by default", func() *vmtest.VM { return vmtest.StartCurrent(t) }, "up to 100 values (-search.maxBinaryOpPushdownLabelValues=100)"},
		{"1.79.5", func() *vmtest.VM { return vmtest.Start(t) }, "every value (this release has no -search.maxBinaryOpPushdownLabelValues)"},
		{"v1.151 at 10", func() *vmtest.VM { return vmtest.StartCurrent(t, "-search.maxBinaryOpPushdownLabelValues=10") }, ""},
	} {
		vm := tc.vm()
		g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-read.maxConcurrentRequests=0")
		vmtest.Eventually(t, func() (bool, string) {
			return strings.Contains(g.logs.String(), "the read backends run this many requests at once"), tc.name + ": capacity not read yet"
		})
		logs := g.logs.String()
		if tc.want == "" {
			if strings.Contains(logs, warning) {
				t.Errorf("%s: warned: %s", tc.name, logs)
			}
			continue
		}
		if !strings.Contains(logs, warning+tc.want) || !strings.Contains(logs, "-search.maxBinaryOpPushdownLabelValues=10 on it") {
			t.Errorf("%s: no warning with %q: %s", tc.name, tc.want, logs)
		}
	}
}

// TestBackendWorkers: the workers a read backend runs one query on, as 1.79.5 (its GOMAXPROCS) and v1.151
// (-search.maxWorkersPerQuery, at most its GOMAXPROCS) list them, and the most of the read backends' (none when one
// does not list them or is not known), which -search.maxFanOutPoints counts each aggregation's groups in.
func TestBackendWorkers(t *testing.T) {
	for page, want := range map[string]int{
		// 1.79.5 at GOMAXPROCS=32, and v1.151 as it prints its flag worked out.
		"vm_concurrent_select_capacity 4\ngo_gomaxprocs 32\n":                                                                             32,
		"vm_concurrent_select_capacity 4\ngo_gomaxprocs 48\nflag{name=\"search.maxWorkersPerQuery\", value=\"32\", is_set=\"false\"} 1\n": 32,
		"vm_concurrent_select_capacity 4\ngo_gomaxprocs 8\nflag{name=\"search.maxWorkersPerQuery\", value=\"4\", is_set=\"true\"} 1\n":    4,
		// Set above its GOMAXPROCS: VictoriaMetrics runs no more.
		"vm_concurrent_select_capacity 4\ngo_gomaxprocs 2\nflag{name=\"search.maxWorkersPerQuery\", value=\"16\", is_set=\"true\"} 1\n": 2,
		"vm_concurrent_select_capacity 4\ngo_gomaxprocs 2\nflag{name=\"search.maxWorkersPerQuery\", value=\"junk\"} 1\n":                2,
		"vm_concurrent_select_capacity 4\ngo_gomaxprocs junk\n":                                                                         0,
		"vm_concurrent_select_capacity 4\n": 0,
	} {
		if c, err := selectCapacityOf(strings.NewReader(page)); err != nil || c.workers != want {
			t.Errorf("%q: workers %d, %v; want %d", page, c.workers, err, want)
		}
	}
	w, read := pageReads(t)
	workers := -1
	w.workers = func(n int) { workers = n }
	for _, step := range []struct {
		name  string
		pages map[string]string
		want  int
	}{
		{"2 and 32", map[string]string{"a": "vm_concurrent_select_capacity 4\ngo_gomaxprocs 2", "b": "vm_concurrent_select_capacity 4\ngo_gomaxprocs 32"}, 32},
		{"one without them", map[string]string{"a": "vm_concurrent_select_capacity 4\ngo_gomaxprocs 2", "b": "vm_concurrent_select_capacity 4"}, 0},
		{"one never read", map[string]string{"a": "vm_concurrent_select_capacity 4\ngo_gomaxprocs 2"}, 0},
	} {
		read(step.pages)
		if workers != step.want {
			t.Errorf("%s: workers %d; want %d", step.name, workers, step.want)
		}
	}
}

// TestBackendMaxSeries: the most series a read backend selects of a selector, as 1.79.5 (its
// -search.maxUniqueTimeseries) and v1.151 (the flag, or when 0 the value it works out) list it, and the most of the
// read backends' (none when one does not list it or is not known), under which -search.maxQueryWindowPoints counts no
// query whose work over that many series of each selector is within it.
func TestBackendMaxSeries(t *testing.T) {
	for page, want := range map[string]int64{
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxUniqueTimeseries\", value=\"300000\", is_set=\"false\"} 1\n": 300_000,
		// v1.151 at 0: the value it works out from its memory, listed before or after the flag.
		"vm_concurrent_select_capacity 4\nvm_search_max_unique_timeseries 12638078\nflag{name=\"search.maxUniqueTimeseries\", value=\"0\", is_set=\"false\"} 1\n":   12_638_078,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxUniqueTimeseries\", value=\"0\", is_set=\"false\"} 1\nvm_search_max_unique_timeseries 5\n":          5,
		"vm_concurrent_select_capacity 4\nvm_search_max_unique_timeseries 12638078\nflag{name=\"search.maxUniqueTimeseries\", value=\"1000\", is_set=\"true\"} 1\n": 1000,
		// A vmselect's 0 leaves it to vmstorage, whose value its page does not list: not known.
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxUniqueTimeseries\", value=\"0\", is_set=\"false\"} 1\n":   0,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxUniqueTimeseries\", value=\"junk\", is_set=\"true\"} 1\n": 0,
		"vm_concurrent_select_capacity 4\nflag{name=\"search.maxUniqueTimeseriesX\", value=\"7\"} 1\n":                    0,
		"vm_concurrent_select_capacity 4\n": 0,
	} {
		if c, err := selectCapacityOf(strings.NewReader(page)); err != nil || c.maxSeries != want {
			t.Errorf("%q: most series %d, %v; want %d", page, c.maxSeries, err, want)
		}
	}
	w, read := pageReads(t)
	most := int64(-1)
	w.maxSeries = func(n int64) { most = n }
	const flag = "vm_concurrent_select_capacity 4\nflag{name=\"search.maxUniqueTimeseries\", value=\"%d\", is_set=\"true\"} 1"
	for _, step := range []struct {
		name  string
		pages map[string]string
		want  int64
	}{
		{"300,000 and 10^6", map[string]string{"a": fmt.Sprintf(flag, 300_000), "b": fmt.Sprintf(flag, 1_000_000)}, 1_000_000},
		{"one without it", map[string]string{"a": fmt.Sprintf(flag, 300_000), "b": "vm_concurrent_select_capacity 4"}, 0},
		{"one never read", map[string]string{"a": fmt.Sprintf(flag, 300_000)}, 0},
	} {
		read(step.pages)
		if most != step.want {
			t.Errorf("%s: most series %d; want %d", step.name, most, step.want)
		}
	}
}

// pageReads is a watch of two read backends, a and b, and a read of them whose /metrics pages it is given (a host
// without a page is down), each read as if from a fresh start.
func pageReads(t *testing.T) (*slotsWatch, func(pages map[string]string)) {
	var pages map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, ok := pages[r.Host]
		if !ok {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, page)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	w := &slotsWatch{kind: readSlots, client: srv.Client(), again: make(chan struct{}, 1), known: map[string]capacity{}, failed: map[string]bool{}}
	w.set = func(map[string]gateway.BackendCapacity) {}
	return w, func(p map[string]string) {
		pages = p
		w.known = map[string]capacity{}
		w.setAddrs([]gateway.BackendAddr{{URL: u, Host: "a"}, {URL: u, Host: "b"}})
		w.readAll(context.Background())
	}
}
