package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
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
		got, limit, err := truncationOf(strings.NewReader(tc.page))
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
	if strings.Contains(tg.name, "secret") || strings.Contains(tg.name, "authKey") {
		t.Errorf("the backend is named %q: credentials shown", tg.name)
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
	// other backend read, narrowed writes are refused, and it is looked at again at once. Beside backends read, it is
	// taken to be of their release, so that one vminsert down does not stop the writes.
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
	}{{pageDrops, 0}, {pageCuts24, 24}} {
		w := newTruncationWatch([]*url.URL{metricsPage(t, unreadable), metricsPage(t, fixed(tc.page))}, http.DefaultTransport)
		w.start()
		if got, err := w.labelLimit(context.Background()); got != tc.want || err != nil {
			t.Errorf("one backend down beside one read (%q): %d, %v; want %d", tc.page, got, err, tc.want)
		}
		w.close()
	}

	*writeMaxLabels = 12
	defer func() { *writeMaxLabels = 0 }()
	w := newTruncationWatch([]*url.URL{metricsPage(t, fixed(pageDrops))}, http.DefaultTransport)
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
	if _, err := w.labelLimit(context.Background()); err == nil || w.current()[0].state.Load() != truncationUnreachable {
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
		http.StatusServiceUnavailable: truncationUnreachable, http.StatusInternalServerError: truncationUnreachable,
		http.StatusUnauthorized: truncationUnreachable, http.StatusForbidden: truncationUnreachable,
		http.StatusNotFound: truncationUnknown, http.StatusFound: truncationUnknown,
	} {
		w := newTruncationWatch([]*url.URL{metricsPage(t, func() (int, string) { return code, "" })}, http.DefaultTransport)
		if got, _, _ := w.check(context.Background(), w.current()[0]); got != want {
			t.Errorf("GET /metrics answered %d: state %d; want %d", code, got, want)
		}
	}
}
