package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestTruncationOf(t *testing.T) {
	for _, tc := range []struct {
		name, page string
		want       int64
	}{
		{"1.79.5", "vm_rows_ignored_total{reason=\"big_timestamp\"} 0\nvm_metrics_with_dropped_labels_total 0\n", truncationCuts},
		{"v1.108+", "vm_rows_ignored_total{reason=\"too_long_label_name\"} 0\nvm_rows_ignored_total{reason=\"too_many_labels\"} 3\n", truncationDrops},
		{"neither", "go_goroutines 12\nvm_rows_ignored_total{reason=\"big_timestamp\"} 0\n", truncationUnknown},
		{"a name that only starts alike", "vm_metrics_with_dropped_labels_total_x 0\n", truncationUnknown},
		{"other labels beside the reason", "vm_rows_ignored_total{job=\"vm\",reason=\"too_many_labels\",x=\"y\"} 0\n", truncationDrops},
		{"the reason only in the value's place", "vm_rows_ignored_total{reason=\"big_timestamp\"} 0 # too_many_labels\n", truncationUnknown},
		{"a HELP line", "# HELP vm_metrics_with_dropped_labels_total x\n", truncationUnknown},
		{"empty", "", truncationUnknown},
	} {
		got, err := truncationOf(strings.NewReader(tc.page))
		if got != tc.want || (got == truncationUnknown) != (err != nil) {
			t.Errorf("%s: %d, %v; want %d", tc.name, got, err, tc.want)
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
	tg := &w.targets[0]
	if strings.Contains(tg.name, "secret") || strings.Contains(tg.name, "authKey") {
		t.Errorf("the backend is named %q: credentials shown", tg.name)
	}
	if s := tg.state.Load(); s != truncationCuts {
		t.Errorf("state %d; want %d", s, truncationCuts)
	}
}
