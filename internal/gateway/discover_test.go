package gateway

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDiscoveryFollowsDNS: a URL with a host name stands for every address it resolves to, in a stable order, with
// its prefix, credentials and Host header; a backend keeps its state while its address stays; a failed lookup
// keeps the last addresses.
func TestDiscoveryFollowsDNS(t *testing.T) {
	svc, _ := url.Parse("http://u:pw@vmselect.disc.test:8481/pre")
	ip, _ := url.Parse("http://127.0.0.9:8481")
	bs := []*backend{newBackend("read", svc, ""), newBackend("read", ip, "")}
	set := newBackendSet("read", LeastLoaded, time.Minute, bs)
	var answer []string
	var lookupErr error
	d := &discoverer{set: set, urls: []*url.URL{svc, ip}, prev: make([][]*backend, 2),
		lookup: func(_ context.Context, host string) ([]net.IPAddr, error) {
			if host != "vmselect.disc.test" {
				t.Fatalf("lookup of %q: an IP address must not be resolved", host)
			}
			var as []net.IPAddr
			for _, a := range answer {
				as = append(as, net.IPAddr{IP: net.ParseIP(a)})
			}
			return as, lookupErr
		}}
	// Whoever checks the addresses hears of a list before requests can go to it.
	var heard []string
	d.addrs = func(as []BackendAddr) {
		heard = heard[:0]
		for _, a := range as {
			heard = append(heard, a.URL.Host+"@"+a.Host)
		}
		if slices.EqualFunc(set.backends(), as, func(b *backend, a BackendAddr) bool { return b.target == a.URL }) {
			t.Error("told of the addresses after requests could go to them")
		}
	}
	names := func() string {
		var s []string
		for _, b := range set.backends() {
			s = append(s, b.name)
		}
		return strings.Join(s, " ")
	}

	lookupErr = errors.New("no such host")
	d.refresh(context.Background())
	if got := names(); got != "http://vmselect.disc.test:8481/pre http://127.0.0.9:8481" {
		t.Fatalf("nothing resolved yet: backends %s, want the URLs as given", got)
	}

	lookupErr, answer = nil, []string{"10.0.0.2", "10.0.0.1", "10.0.0.2"}
	d.refresh(context.Background())
	if got := names(); got != "http://10.0.0.1:8481/pre http://10.0.0.2:8481/pre http://127.0.0.9:8481" {
		t.Fatalf("backends %s", got)
	}
	if got := strings.Join(heard, " "); got != "10.0.0.1:8481@vmselect.disc.test:8481 10.0.0.2:8481@vmselect.disc.test:8481 127.0.0.9:8481@" {
		t.Fatalf("told of %s", got)
	}
	first := set.backends()[0]
	req := httptest.NewRequest("GET", "/select/0/prometheus/api/v1/query", nil)
	out := copyRequest(req)
	first.aim(out)
	if out.URL.Host != "10.0.0.1:8481" || out.Host != "vmselect.disc.test:8481" || out.URL.Path != "/pre/select/0/prometheus/api/v1/query" || out.Header.Get("Authorization") != "Basic dTpwdw==" {
		t.Fatalf("request to a discovered address: host %s, Host header %s, path %s, auth %q", out.URL.Host, out.Host, out.URL.Path, out.Header.Get("Authorization"))
	}
	set.markBroken(first, "test")

	answer = []string{"10.0.0.3", "10.0.0.1"}
	d.refresh(context.Background())
	if got := names(); got != "http://10.0.0.1:8481/pre http://10.0.0.3:8481/pre http://127.0.0.9:8481" {
		t.Fatalf("after a change: backends %s", got)
	}
	if set.backends()[0] != first || first.brokenUntil.Load() == 0 {
		t.Fatal("an address that stayed must keep its backend and its broken mark")
	}

	lookupErr = errors.New("timeout")
	d.refresh(context.Background())
	if got := names(); got != "http://10.0.0.1:8481/pre http://10.0.0.3:8481/pre http://127.0.0.9:8481" {
		t.Fatalf("after a failed lookup: backends %s, want the last ones", got)
	}
}
