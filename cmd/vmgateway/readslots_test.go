package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/gateway"
)

// TestReadSlotsLearned: the gateway's read limit is the sum of the backends' vm_concurrent_select_capacity; an
// address that cannot be read counts as what it was last, or as the mean of the others; none read, no limit.
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
	w := newReadSlotsWatch(http.DefaultTransport)
	var got int
	w.set = func(n int) { got = n }
	for _, step := range []struct {
		name  string
		pages map[string]string
		addrs []string
		want  int
	}{
		{"two backends", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8"}, []string{"a", "b"}, 12},
		{"one down: as it was", map[string]string{"a": "vm_concurrent_select_capacity 4"}, []string{"a", "b"}, 12},
		{"a new one down: the mean", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8"}, []string{"a", "b", "c"}, 18},
		{"a page without it", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "up 1"}, []string{"a", "b", "c"}, 18},
		{"not a count", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "vm_concurrent_select_capacity -3"}, []string{"a", "b", "c"}, 18},
		{"NaN", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "vm_concurrent_select_capacity NaN"}, []string{"a", "b", "c"}, 18},
		{"+Inf", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 8", "c": "vm_concurrent_select_capacity +Inf"}, []string{"a", "b", "c"}, 18},
		{"gone from discovery", map[string]string{"a": "vm_concurrent_select_capacity 4", "b": "vm_concurrent_select_capacity 2"}, []string{"a", "b"}, 6},
		{"none read: no limit", map[string]string{}, []string{"x", "y"}, 0},
	} {
		capacity = step.pages
		var addrs []gateway.BackendAddr
		for _, h := range step.addrs {
			addrs = append(addrs, addr(h))
		}
		w.setAddrs(addrs)
		w.readAll(context.Background())
		if got != step.want {
			t.Errorf("%s: the gateway's read slots are %d; want %d", step.name, got, step.want)
		}
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
		if got := replicaPart(tc.capacity, tc.replicas); got != tc.want {
			t.Errorf("capacity %d between %d replicas: %d each; want %d", tc.capacity, tc.replicas, got, tc.want)
		}
	}
}
