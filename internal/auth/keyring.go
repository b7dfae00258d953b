package auth

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// remote is one JWKS or OIDC discovery endpoint with the last key list it served successfully.
type remote struct {
	url  string
	oidc bool

	keys      []*key // last good keys; guarded by keyring.mu
	fetchedAt time.Time
	err       string // why the last fetch failed; empty after a good one

	fetches, errors *metrics.Counter
	lastSuccess     *metrics.Gauge
}

// keyring holds the current key set and refreshes the remote sources in the background. Requests read the set with
// one atomic load; a refresh builds a new set and swaps it in whole.
type keyring struct {
	set atomic.Pointer[keySet]
	// inline are the keys of -auth.publicKeys; files those of the key files, read again when they change.
	inline  []*key
	files   []*keyFile
	remotes []*remote
	// sources describes every source for KeySources, rebuilt whenever one changes.
	sources       atomic.Pointer[[]KeySource]
	started       time.Time
	filesInterval time.Duration
	filesDone     chan struct{}
	client        *http.Client // for the remotes
	now           func() time.Time

	refreshInterval, minRefetch time.Duration
	// lostKey is called when a refresh drops a key, so that tokens verified with it are verified again.
	lostKey func()

	mu        sync.Mutex // one fetch round at a time
	lastFetch time.Time

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func (kr *keyring) keys() *keySet { return kr.set.Load() }

// fetchAll fetches every remote source once, concurrently, and publishes the new key set. A source that fails keeps
// the keys it served last.
func (kr *keyring) fetchAll() {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	kr.fetchLocked()
}

// refetch fetches again unless a fetch ran within minRefetch: an unknown kid may be a freshly rotated key, but
// tokens with made-up kids must not turn the gateway into a load generator for the identity provider.
func (kr *keyring) refetch() {
	if len(kr.remotes) == 0 {
		return
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	// Requests that waited for the lock while another one fetched find lastFetch fresh and use its result.
	if kr.now().Sub(kr.lastFetch) < kr.minRefetch {
		return
	}
	kr.fetchLocked()
}

func (kr *keyring) fetchLocked() {
	kr.lastFetch = kr.now()
	var wg sync.WaitGroup
	for _, r := range kr.remotes {
		wg.Go(func() { kr.fetchOne(r) })
	}
	wg.Wait()
	kr.publish()
}

func (kr *keyring) fetchOne(r *remote) {
	r.fetches.Inc()
	keys, skipped, err := fetchJWKS(kr.ctx, kr.client, r.url, r.oidc)
	if err != nil {
		r.errors.Inc()
		r.err = err.Error()
		if r.keys == nil {
			slog.Error("cannot fetch JWT verification keys; tokens signed with them are rejected until a fetch succeeds",
				"url", r.url, "error", err)
		} else {
			slog.Error("cannot fetch JWT verification keys; keeping the keys fetched before",
				"url", r.url, "keys", len(r.keys), "fetched_at", r.fetchedAt.Format(time.RFC3339), "error", err)
		}
		return
	}
	if !sameKeys(r.keys, keys) {
		kids := make([]string, len(keys))
		for i, k := range keys {
			kids[i] = k.kid + " (" + k.kind + ")"
		}
		slog.Info("loaded JWT verification keys", "url", r.url, "keys", strings.Join(kids, ", "))
		for _, s := range skipped {
			slog.Warn("skipped a JWKS key", "url", r.url, "reason", s)
		}
	}
	r.keys, r.fetchedAt, r.err = keys, kr.now(), ""
	r.lastSuccess.Set(float64(r.fetchedAt.Unix()))
}

func (kr *keyring) publish() {
	all := append([]*key(nil), kr.inline...)
	for _, f := range kr.files {
		all = append(all, f.keys...)
	}
	for _, r := range kr.remotes {
		all = append(all, r.keys...)
	}
	next := newKeySet(all)
	prev := kr.set.Swap(next)
	keysLoaded.Set(float64(len(all)))
	kr.describe()
	if prev != nil && prev.lost(next) && kr.lostKey != nil {
		kr.lostKey()
	}
}

// run refreshes the remote sources every refreshInterval; a source that has never served keys is retried every
// minRefetch instead.
func (kr *keyring) run() {
	defer close(kr.done)
	for {
		wait := kr.refreshInterval
		if kr.missingKeys() {
			wait = kr.minRefetch
		}
		t := time.NewTimer(wait)
		select {
		case <-kr.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		kr.fetchAll()
	}
}

func (kr *keyring) missingKeys() bool {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return slices.ContainsFunc(kr.remotes, func(r *remote) bool { return r.keys == nil })
}

func (kr *keyring) stop() {
	kr.cancel()
	if kr.done != nil {
		<-kr.done
	}
	if kr.filesDone != nil {
		<-kr.filesDone
	}
}

func sameKeys(a, b []*key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].fp != b[i].fp {
			return false
		}
	}
	return true
}

// newKeyring reads the keys of -auth.publicKeys and the key files, and sets up the remote sources of cfg; start
// loads the remote keys.
func newKeyring(cfg Config, now func() time.Time, lostKey func()) (*keyring, error) {
	kr := &keyring{now: now, refreshInterval: cfg.KeysRefreshInterval, minRefetch: cfg.KeysRefetchMinInterval, lostKey: lostKey,
		started: now(), filesInterval: cfg.KeyFilesCheckInterval}
	var err error
	if kr.inline, kr.files, err = loadStaticKeys(cfg, kr.started); err != nil {
		return nil, err
	}
	if len(cfg.JWKSEndpoints)+len(cfg.OIDCDiscoveryEndpoints) == 0 {
		return kr, nil
	}
	if kr.client, err = keysClient(cfg.KeysTimeout, cfg.KeysTLSCAFile); err != nil {
		return nil, err
	}
	add := func(flag string, urls []string, oidc bool) error {
		for _, u := range urls {
			if err := checkURL(u); err != nil {
				return fmt.Errorf("%s: %w", flag, err)
			}
			kr.remotes = append(kr.remotes, &remote{url: u, oidc: oidc,
				fetches: keyFetches(u), errors: keyFetchErrors(u), lastSuccess: keyFetchLastSuccess(u)})
		}
		return nil
	}
	if err := add("-auth.jwksEndpoints", cfg.JWKSEndpoints, false); err != nil {
		return nil, err
	}
	if err := add("-auth.oidcDiscoveryEndpoints", cfg.OIDCDiscoveryEndpoints, true); err != nil {
		return nil, err
	}
	return kr, nil
}

// start publishes the static keys, fetches the remote ones once and then refreshes them in the background.
func (kr *keyring) start() {
	kr.ctx, kr.cancel = context.WithCancel(context.Background())
	kr.publish()
	if len(kr.files) > 0 && kr.filesInterval > 0 {
		kr.filesDone = make(chan struct{})
		go kr.watchFiles(kr.filesInterval)
	}
	if len(kr.remotes) > 0 {
		kr.fetchAll()
		kr.done = make(chan struct{})
		go kr.run()
	}
}

func keysClient(timeout time.Duration, caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pool, err := tlsclient.LoadCA("auth.keysTLSCAFile", caFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}
