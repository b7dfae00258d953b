package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/redact"
)

// BackendOptions says how the gateway spreads requests over several URLs of one kind. The zero value balances
// least_loaded, never marks a backend broken and retries no status.
type BackendOptions struct {
	Policy Policy
	// FailTimeout is how long a backend that refused a connection or answered a RetryStatusCodes status is skipped.
	FailTimeout time.Duration
	// RetryStatusCodes are the backend statuses after which a request is tried on another backend when it can be.
	RetryStatusCodes []int
	// DiscoverInterval, when positive, resolves each backend host that is a name this often and balances over the
	// addresses found (headless services).
	DiscoverInterval time.Duration
}

// BackendAddr is one address requests of a kind go to.
type BackendAddr struct {
	// URL is a -read.url or -write.url, with a discovered IP address in place of its host name.
	URL *url.URL
	// Host is the Host header sent to a discovered address, "" otherwise.
	Host string
}

// newBackendUpstream builds one kind's upstream over urls; stop ends its DNS discovery, if any. addrs, when set,
// is told the addresses now and before each change discovery makes.
func newBackendUpstream(kind string, urls []*url.URL, rt http.RoundTripper, o BackendOptions, addrs func([]BackendAddr)) (u *upstream, stop func()) {
	bs := make([]*backend, len(urls))
	for i, t := range urls {
		bs[i] = newBackend(kind, t, "")
	}
	set := newBackendSet(kind, o.Policy, o.FailTimeout, bs)
	stop = func() {}
	if addrs != nil {
		addrs(addrsOf(bs))
	}
	if o.DiscoverInterval > 0 {
		d := &discoverer{set: set, urls: urls, lookup: net.DefaultResolver.LookupIPAddr, prev: make([][]*backend, len(urls)), addrs: addrs}
		ctx, cancel := context.WithCancel(context.Background())
		d.refresh(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.run(ctx, o.DiscoverInterval)
		}()
		stop = func() { cancel(); wg.Wait() }
	}
	return newUpstream(kind, set, rt, o.RetryStatusCodes), stop
}

// discoverer keeps a backend set in step with DNS: each URL whose host is a name stands for every address the
// name resolves to. A backend keeps its state (in-flight count, broken mark) while its address stays.
type discoverer struct {
	set    *backendSet
	urls   []*url.URL
	lookup func(ctx context.Context, host string) ([]net.IPAddr, error)
	// prev is each URL's backends from the last refresh, kept when a lookup fails.
	prev [][]*backend
	// addrs, when set, hears of a new list before requests can go to it.
	addrs func([]BackendAddr)
}

func addrsOf(bs []*backend) []BackendAddr {
	as := make([]BackendAddr, len(bs))
	for i, b := range bs {
		as[i] = BackendAddr{URL: b.target, Host: b.host}
	}
	return as
}

func (d *discoverer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.refresh(ctx)
		}
	}
}

func (d *discoverer) refresh(ctx context.Context) {
	old := d.set.backends()
	// A backend is its address and the Host it is asked with: two names behind one address (virtual hosts) are two.
	type key struct{ target, host string }
	known := make(map[key]*backend, len(old))
	for _, b := range old {
		known[key{b.target.String(), b.host}] = b
	}
	var list []*backend
	use := func(t *url.URL, host string) *backend {
		if b, ok := known[key{t.String(), host}]; ok {
			return b
		}
		return newBackend(d.set.kind, t, host)
	}
	for i, u := range d.urls {
		host := u.Hostname()
		if net.ParseIP(host) != nil {
			list = append(list, use(u, ""))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := d.lookup(lctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			if ctx.Err() != nil {
				return
			}
			if d.prev[i] == nil {
				// Nothing resolved yet: the URL itself, resolved by each connection, is better than no backend.
				d.prev[i] = []*backend{use(u, "")}
			}
			slog.Warn("cannot discover backend addresses; keeping the previous ones", "upstream", d.set.kind,
				"url", redact.URL(u), "addresses", len(d.prev[i]), "err", fmt.Sprint(err))
			list = append(list, d.prev[i]...)
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		ips := make([]string, len(addrs))
		for j, a := range addrs {
			ips[j] = a.IP.String()
		}
		slices.Sort(ips)
		ips = slices.Compact(ips)
		var mine []*backend
		for _, ip := range ips {
			t := *u
			t.Host = net.JoinHostPort(ip, port)
			mine = append(mine, use(&t, u.Host))
		}
		d.prev[i] = mine
		list = append(list, mine...)
	}
	if slices.Equal(list, old) {
		return
	}
	if d.addrs != nil {
		d.addrs(addrsOf(list))
	}
	d.set.list.Store(&list)
	d.set.refreshSlots()
	names := make([]string, len(list))
	for i, b := range list {
		names[i] = b.name
	}
	slog.Info("backends discovered", "upstream", d.set.kind, "backends", names)
	for _, b := range old {
		if !slices.Contains(list, b) {
			b.unregister()
		}
	}
}

// unregister drops the metrics of a backend whose address went away, so a churning service does not leave a
// series per address it ever had. Requests still on it finish; their counts go nowhere.
func (b *backend) unregister() {
	l := "{" + b.labels + "}"
	for _, m := range []string{`vmgateway_backend_requests_total`, `vmgateway_backend_requests_in_flight`, `vmgateway_backend_broken`} {
		metrics.UnregisterMetric(m + l)
	}
}
