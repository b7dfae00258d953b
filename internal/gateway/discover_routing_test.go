package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
)

type bodySink struct {
	mu     sync.Mutex
	bodies []string
}

func (s *bodySink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(b))
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *bodySink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bodies)
}

// serveOn listens on ip:port (port 0: any) and serves h.
func serveOn(t *testing.T, ip string, port int, h http.Handler) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen %s:%d: %v", ip, port, err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// TestGuardDecidedOnRoutedList: a write goes to a backend of the list its label guard was decided for. A discovery
// refresh right after the decision (the rollback's old release replacing the new one) must not send a write judged
// "no backend truncates" to the new address: the balancer picks among the list forward read before the decision.
func TestGuardDecidedOnRoutedList(t *testing.T) {
	newRel, oldRel := &bodySink{}, &bodySink{}
	port := serveOn(t, "127.0.0.2", 0, oldRel)
	serveOn(t, "127.0.0.1", port, newRel)

	u, _ := url.Parse("http://vminsert.disc.test:" + strconv.Itoa(port))
	e, _ := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: fixedAuth{a: &auth.Access{Mode: auth.ModeWrite, Enforcer: e, Subject: "dev-agent"}}, LabelLimit: limitOf(0)})
	if err != nil {
		t.Fatal(err)
	}
	g.discovering = true // as with Backends.DiscoverInterval, whose discoverer is driven by hand below
	// The check's view, as the truncation watch keeps it: told of each list before requests can reach it.
	var mu sync.Mutex
	known := map[string]bool{}
	told := func(as []BackendAddr) {
		mu.Lock()
		defer mu.Unlock()
		known = map[string]bool{}
		for _, a := range as {
			known[a.URL.Host] = true
		}
	}
	checkLimit := func(context.Context) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if known["127.0.0.2:"+strconv.Itoa(port)] { // the old release truncates at 30
			return 30, nil
		}
		return 0, nil
	}
	answer := []string{"127.0.0.1"}
	d := &discoverer{set: g.write.set, urls: []*url.URL{u}, prev: make([][]*backend, 1), addrs: told,
		lookup: func(_ context.Context, host string) ([]net.IPAddr, error) {
			var as []net.IPAddr
			for _, a := range answer {
				as = append(as, net.IPAddr{IP: net.ParseIP(a)})
			}
			return as, nil
		}}
	d.refresh(context.Background())

	// The rollback: the old release's pod replaces the new one; discovery runs just after this write's check.
	g.labelLimit = func(ctx context.Context) (int, error) {
		l, err := checkLimit(ctx)
		answer = []string{"127.0.0.2"}
		d.refresh(context.Background())
		return l, err
	}
	var b strings.Builder
	b.WriteString(`injected{team="ops"`)
	for i := 1; i < 40; i++ {
		b.WriteString(`,l` + strconv.Itoa(i) + `="x"`)
	}
	b.WriteString("} 1\n")
	rec := postBody(g, "/api/v1/import/prometheus", []byte(b.String()))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("the write: %d %s", rec.Code, rec.Body)
	}
	if got := oldRel.got(); len(got) != 0 {
		t.Fatalf("a write judged for the new release reached the old one, which truncates: %q", got)
	}
	if got := newRel.got(); len(got) != 1 {
		t.Fatalf("the new release got %d writes; want the one", len(got))
	}
}

// TestDiscoveryKeepsVirtualHostsApart: two names behind one address (virtual hosts) stay two backends, each asked
// with its own Host, refresh after refresh.
func TestDiscoveryKeepsVirtualHostsApart(t *testing.T) {
	a, _ := url.Parse("http://old.disc.test:8480")
	b, _ := url.Parse("http://new.disc.test:8480")
	set := newBackendSet("write", LeastLoaded, time.Minute, []*backend{newBackend("write", a, ""), newBackend("write", b, "")})
	var heard [][]BackendAddr
	d := &discoverer{set: set, urls: []*url.URL{a, b}, prev: make([][]*backend, 2),
		addrs: func(as []BackendAddr) { heard = append(heard, as) },
		lookup: func(context.Context, string) ([]net.IPAddr, error) {
			return []net.IPAddr{{IP: net.ParseIP("10.0.0.5")}}, nil
		}}
	d.refresh(context.Background())
	hosts := func() string {
		var s []string
		for _, x := range set.backends() {
			s = append(s, x.host)
		}
		return strings.Join(s, " ")
	}
	first := hosts()
	d.refresh(context.Background())
	if first != "old.disc.test:8480 new.disc.test:8480" || hosts() != first {
		t.Errorf("Host headers after the first refresh %q, after the second %q; want old.disc.test:8480 new.disc.test:8480 both times", first, hosts())
	}
	if len(heard) != 1 {
		t.Errorf("told of the addresses %d times; want once (the second refresh changed nothing)", len(heard))
	}

	// Each name's backend counts its own requests, and keeps its series when the other name's address goes.
	bs := set.backends()
	bs[0].start()
	bs[0].done()
	if bs[0].requests == bs[1].requests || bs[1].requests.Get() != 0 {
		t.Fatalf("the two names behind 10.0.0.5 share their request counter")
	}
	d.lookup = func(_ context.Context, host string) ([]net.IPAddr, error) {
		if host == "new.disc.test" {
			return []net.IPAddr{{IP: net.ParseIP("10.0.0.6")}}, nil
		}
		return []net.IPAddr{{IP: net.ParseIP("10.0.0.5")}}, nil
	}
	d.refresh(context.Background())
	var out bytes.Buffer
	metrics.WritePrometheus(&out, false)
	kept := `vmgateway_backend_requests_total{upstream="write",backend="http://10.0.0.5:8480",host="old.disc.test:8480"} 1`
	gone := `backend="http://10.0.0.5:8480",host="new.disc.test:8480"`
	if !strings.Contains(out.String(), kept) || strings.Contains(out.String(), gone) {
		t.Errorf("after new.disc.test moved to 10.0.0.6, /metrics should keep %s and drop the series with %s:\n%s", kept, gone, out.String())
	}
}
