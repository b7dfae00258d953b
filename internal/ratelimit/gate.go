// Package ratelimit enforces per-tenant limits on the usage a VictoriaMetrics cluster reports about its
// tenants (vm_tenant_* metrics, read from a datasource). A background poller publishes an immutable snapshot
// of usage and limits; requests are checked against it without locks.
//
// The datasource lags: usage reaches it only after the cluster's metrics are scraped, stored and polled. So the
// gate also counts the read requests it admits itself, per tenant and per value of a limit's key (a token claim
// or extra label), in sliding windows of a minute (61 buckets of 1 s) and an hour (61 buckets of 1 min): a count
// stays in its window for 60 to 61 bucket widths. Queries limits are enforced on the largest of the datasource's
// figure and the gate's own count, so a burst is cut at the limit. Counting first and checking after makes
// concurrent requests see each other: a limit of 50 admits 50, whatever the concurrency. Rows, new series and
// active series cannot be counted by a gateway that streams write bodies unread: the datasource alone decides
// those limits.
//
// With Redis, replicas share their counts. A replica takes units of a limit from Redis in leases (at most
// -ratelimit.redis.batchSize at once and at most a quarter of what is left, so near the limit one at a time) and
// admits requests against them without asking Redis; every admission spends a unit Redis granted atomically, so
// replicas together never admit more than the limit (to bucket precision). The cost is the other way: units a
// replica holds and does not use within the second are given back only then, so another replica may be refused
// for up to a second while they are held. When Redis fails, each replica counts alone (then the replicas together
// admit at most their number times the limit) until Redis answers again.
//
// Who owns what: package limitfile reads the limits config and picks a tenant's limits; rules turn limits and
// usage into a snapshot's decisions; the tally holds the gate's own counts (counters of series, each with its
// windows) and a counterStore (Redis) that shares them; the status page and the rate-limit headers are made from
// values read at one instant (report, figures), never from the counters or leases themselves.
//
// Cost limits (series_fetched, query_time_ms) are counted by the gate alone, after the fact: Spend adds what an
// answered query cost, from the stats VictoriaMetrics ends the answer with, and Admit refuses a caller whose
// costs already reached a limit.
package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"

	"github.com/vmgateway/vmgateway/internal/confsource"
)

// Config is what the -ratelimit.* and -datasource.* flags set.
type Config struct {
	// ConfigPath is the limits config: a file path or an http(s) URL.
	ConfigPath string
	// ConfigCheckInterval is how often the limits config is re-read; zero re-reads it only on Reload.
	ConfigCheckInterval time.Duration
	// RefreshInterval is how often usage is queried from the datasource. Zero means 5s.
	RefreshInterval time.Duration
	// ExtraLabels are label filters added to every usage query, e.g. job="vmcluster".
	ExtraLabels []string
	// MaxUsageAge is how long the last usage stays in force while refreshes fail. Zero means 1m.
	MaxUsageAge time.Duration
	// FailClosed rejects requests to limited APIs with 503 once usage is older than MaxUsageAge;
	// by default they are allowed.
	FailClosed bool
	// Datasource is where the vm_tenant_* usage metrics are queried.
	Datasource datasource.Config
	// Redis, with a URL, shares the gate's own counts between replicas.
	Redis RedisConfig
	// Headers selects the rate-limit response headers Admit sets; none by default.
	Headers Headers
	// DryRun evaluates, logs and counts the limits but rejects nothing.
	DryRun bool
}

// Gate decides whether a tenant's request is within its limits.
type Gate struct {
	ds            *datasource.Client
	configPath    string
	source        string // configPath as messages show it
	checkInterval time.Duration
	rules         rules
	filters       string // rendered -ratelimit.extraLabels
	writers       *writerLabels
	metrics       *gateMetrics
	headers       Headers
	dryRun        bool
	dryRunLog     rareLog

	// tally holds the gate's own counts of the requests and query costs it admitted.
	tally tally
	// now is the clock of the counts: coarseNow, which tests replace. clock is the time Start's ticker last stored
	// (Unix ns), read instead of asking the system on every request.
	now   func() time.Time
	clock atomic.Int64

	snap atomic.Pointer[snapshot]
	// mu serialises publishing snapshots (refresh, staleness, reload); checks never take it.
	mu sync.Mutex
	// reloadMu serialises reloads; lastConfig is the content last tried, so an unchanged file is not re-parsed;
	// inForce is the content of the limits in force, whichever reload applied it.
	reloadMu   sync.Mutex
	lastConfig []byte
	inForce    []byte

	stop func()
	wg   sync.WaitGroup
}

// New reads the limits config and checks the whole configuration. Until Start has fetched usage, every tenant
// counts as having none.
func New(cfg Config) (*Gate, error) {
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 5 * time.Second
	}
	if cfg.MaxUsageAge <= 0 {
		cfg.MaxUsageAge = time.Minute
	}
	if cfg.MaxUsageAge < cfg.RefreshInterval {
		return nil, fmt.Errorf("-ratelimit.maxUsageAge=%s is shorter than -ratelimit.refreshInterval=%s: usage would be stale between two refreshes",
			cfg.MaxUsageAge, cfg.RefreshInterval)
	}
	if cfg.ConfigCheckInterval < 0 {
		return nil, fmt.Errorf("-ratelimit.configCheckInterval=%s is negative", cfg.ConfigCheckInterval)
	}
	filters, err := parseExtraLabels(cfg.ExtraLabels)
	if err != nil {
		return nil, err
	}
	ds, err := datasource.New(cfg.Datasource)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := limitfile.ReadConfig(ctx, cfg.ConfigPath)
	if err != nil {
		return nil, err
	}
	lim, err := limitfile.Parse(data, confsource.Show(cfg.ConfigPath))
	if err != nil {
		return nil, err
	}
	if cfg.Headers > HeadersBoth {
		return nil, fmt.Errorf("unknown rate-limit headers setting %d", cfg.Headers)
	}
	g := &Gate{
		ds:            ds,
		configPath:    cfg.ConfigPath,
		source:        confsource.Show(cfg.ConfigPath),
		checkInterval: cfg.ConfigCheckInterval,
		rules:         rules{refreshInterval: cfg.RefreshInterval, maxUsageAge: cfg.MaxUsageAge, failClosed: cfg.FailClosed},
		filters:       filters,
		writers:       newWriterLabels(filters),
		lastConfig:    data,
		inForce:       data,
		headers:       cfg.Headers,
		dryRun:        cfg.DryRun,
		dryRunLog:     rareLog{every: 10 * time.Second},
	}
	g.now = g.coarseNow
	g.metrics = newGateMetrics(g)
	g.rules.metrics = g.metrics
	g.tally = tally{counters: newCounters(), rules: &g.rules}
	if cfg.Redis.URL != "" {
		if g.tally.store, err = newRedisStore(cfg.Redis, g.metrics.set); err != nil {
			return nil, err
		}
	}
	g.metrics.reloaded(true)
	g.publish(&snapshot{limits: lim, fetchedAt: time.Now()})
	return g, nil
}

// Start begins polling the datasource, watching staleness and, with a ConfigCheckInterval, re-reading the
// limits config; it also exports the gate's metrics. Call it once.
func (g *Gate) Start() {
	metrics.RegisterSet(g.metrics.set)
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	g.every(ctx, clockTick, true, func() { g.clock.Store(time.Now().UnixNano()) })
	g.every(ctx, g.rules.refreshInterval, true, func() { g.poll(ctx) })
	// Staleness has its own ticker: a refresh hanging until the datasource timeout must not delay the policy.
	g.every(ctx, g.rules.refreshInterval, false, func() { g.markStale(time.Now()) })
	if g.checkInterval > 0 {
		g.every(ctx, g.checkInterval, false, func() { _ = g.reload(false) })
	}
	g.every(ctx, time.Minute, false, func() { g.tally.counters.evict(g.now().Unix()) })
	if g.tally.store != nil {
		// Finds Redis (at once, then again after a failure) and gives back the units of leases whose second ended.
		g.every(ctx, 250*time.Millisecond, true, func() { g.tally.store.maintain(g.tally.counters, g.now()) })
	}
}

// Stop ends the background work started by Start, waits for it, and withdraws the gate's metrics. It also closes
// the Redis client, which New opened: a gate that was never started is stopped too when a later step of the start fails.
func (g *Gate) Stop() {
	if g.stop != nil {
		g.stop()
		g.wg.Wait()
		g.clock.Store(0)
		metrics.UnregisterSet(g.metrics.set, false)
	}
	if g.tally.store != nil {
		g.tally.store.close(g.tally.counters, g.now())
	}
}

// clockTick is how often the counts' clock is read from the system while the gate runs: a request is counted in
// the bucket of a time up to this much earlier (so it stays in its window up to this much longer), and it saves
// the time.Now call on each request, which costs more than the counting itself on some virtual machines.
const clockTick = 25 * time.Millisecond

func (g *Gate) coarseNow() time.Time {
	if ns := g.clock.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Now()
}

// Reload re-reads the limits config now (on SIGHUP). An invalid config is logged and counted and the limits
// in force stay; the error is returned as well.
func (g *Gate) Reload() error { return g.reload(true) }

// Config is the content of the limits config in force, applied at the start or by the last successful reload,
// periodic or not, and its number of limits: what /-/reload compares to tell what changed.
func (g *Gate) Config() (data []byte, limits int) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	return g.inForce, len(g.snap.Load().limits.All())
}

func (g *Gate) every(ctx context.Context, interval time.Duration, now bool, f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		if now {
			f()
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	}()
}

// decision names the limit a request is refused on and the caller's usage against it: what a rejection is made from.
type decision struct {
	Limit limitfile.Limit
	// Usage is the caller's usage against Limit: the largest of the datasource's figure, the gate's own count and,
	// with Redis, the count shared by all replicas.
	Usage float64
	// Reset is how long until a request can pass again.
	Reset time.Duration
	// InFlight is, for a cost limit, what the caller's queries in flight are expected to cost: on this gateway, or
	// with Redis on every gateway sharing it.
	InFlight int64
}

// Usage sources: where the figure that decided came from.
const (
	fromDatasource = "datasource"
	fromLocal      = "local"
	fromShared     = "shared"
)

// limitError is the error for a request over a limit (HTTP 429), or for a request the gate cannot judge because
// its usage data is stale under -ratelimit.failClosed (HTTP 503). Both carry a Retry-After.
type limitError struct {
	// Tenant and Limit are zero for a stale-data rejection.
	Tenant tenant.ID
	Limit  limitfile.Limit
	Usage  float64
	// KeyValue is the caller's value of Limit.Key, when the limit has one.
	KeyValue string
	inFlight int64
	source   string
	status   int
	retry    time.Duration
	msg      string // set for the rejections made ahead in a snapshot; the others are formatted when asked
	count    *metrics.Counter
	dryCount *metrics.Counter
}

func (r *limitError) Error() string {
	if r.msg != "" {
		return r.msg
	}
	return r.message()
}

// sharedRefusal is a refusal, for a caller narrowed within its tenant, by a count it shares with the tenant's other
// teams: it names the limit, not the usage seen, which sums the other teams' requests, rows or series.
type sharedRefusal struct{ *limitError }

func (r sharedRefusal) Error() string { return r.text(false) }

// HTTPStatus is 429 for a tenant over a limit and 503 when the gate has no fresh usage data.
func (r *limitError) HTTPStatus() int { return r.status }

// RetryAfter is for the Retry-After header: when the request can plausibly pass.
func (r *limitError) RetryAfter() time.Duration { return r.retry }

func (p *rules) rejection(id tenant.ID, d decision, keyValue, source string) *limitError {
	return &limitError{
		Tenant:   id,
		Limit:    d.Limit,
		Usage:    d.Usage,
		KeyValue: keyValue,
		inFlight: d.InFlight,
		source:   source,
		status:   http.StatusTooManyRequests,
		retry:    roundUpSeconds(d.Reset),
		count:    p.metrics.rejected[meterOf(d.Limit)],
		dryCount: p.metrics.dryRunRejected[meterOf(d.Limit)],
	}
}

func (r *limitError) message() string { return r.text(true) }

// text says which limit refused whom and, withUsage, what usage it saw.
func (r *limitError) text(withUsage bool) string {
	whose := "the tenant's own limit"
	if !r.Limit.HasTenant {
		whose = "the default limit for all tenants"
	}
	var limit, seen string
	if r.Limit.Resolution == 0 {
		limit = fmt.Sprintf("type=%s value=%d", r.Limit.Type, r.Limit.Value)
		seen = formatUsage(r.Usage) + " active series"
	} else {
		limit = fmt.Sprintf("type=%s resolution=%s value=%d", r.Limit.Type, r.Limit.Resolution, r.Limit.Value)
		seen = formatUsage(r.Usage) + " in the last " + r.Limit.Resolution.String()
	}
	who := "tenant " + r.Tenant.String()
	if !r.Limit.Key.IsZero() {
		limit += " key=" + r.Limit.Key.String()
		who += " and " + r.Limit.Key.String() + "=" + strconv.Quote(r.KeyValue)
	}
	if !withUsage {
		// One text whether it is used up or held: which one it is would tell a team whether the others have
		// queries in flight.
		return fmt.Sprintf("rate limit exceeded for %s: limit %s (%s) is used up or held by the queries in flight "+
			"of all who share it; retry after %s", who, limit, whose, r.retry)
	}
	usage := seen
	switch r.source {
	case fromLocal:
		usage += " counted by this gateway"
	case fromShared:
		usage += " counted by all gateways sharing Redis"
	}
	switch r.Limit.Type {
	case limitfile.SeriesFetched:
		usage += " from the seriesFetched stats of the tenant's query answers (the series of one without them)"
	case limitfile.QueryTimeMs:
		usage += " (milliseconds) from the executionTimeMsec stats of the tenant's query answers (the time the gateway measured of one without them)"
	}
	if r.inFlight > 0 {
		where := "this gateway"
		if r.source == fromShared {
			where = "all gateways sharing Redis"
		}
		usage += fmt.Sprintf(", and %d expected of its queries in flight on %s", r.inFlight, where)
	}
	return fmt.Sprintf("rate limit exceeded for %s: limit %s (%s), usage seen %s; retry after %s",
		who, limit, whose, usage, r.retry)
}

func (p *rules) staleRejection(s *snapshot) *limitError {
	last := "no refresh from the datasource has succeeded since the gateway started at " + s.fetchedAt.UTC().Format(time.RFC3339)
	if s.fetched {
		last = "the last successful refresh from the datasource was at " + s.fetchedAt.UTC().Format(time.RFC3339)
	}
	retry := roundUpSeconds(p.refreshInterval)
	return &limitError{
		status: http.StatusServiceUnavailable,
		retry:  retry,
		msg: fmt.Sprintf("the rate limiter has no fresh usage data: %s, more than -ratelimit.maxUsageAge=%s ago; "+
			"with -ratelimit.failClosed, requests under rate limits are rejected until usage data is fresh again; retry after %s",
			last, p.maxUsageAge, retry),
		count:    p.metrics.staleRejected,
		dryCount: p.metrics.dryRunStale,
	}
}

// publish derives the decisions of s and makes it the current snapshot. Callers hold g.mu, except New.
func (g *Gate) publish(s *snapshot) {
	g.rules.index(s)
	g.snap.Store(s)
}

// markStale switches to the stale policy once the usage is older than MaxUsageAge.
func (g *Gate) markStale(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.snap.Load()
	if cur.stale || now.Sub(cur.fetchedAt) <= g.rules.maxUsageAge {
		return
	}
	next := *cur
	next.stale = true
	g.publish(&next)
	policy := "ignoring the datasource's usage (fail open); the gateway's own counts still apply"
	if g.rules.failClosed {
		policy = "rejecting requests under rate limits with 503 (-ratelimit.failClosed)"
	}
	slog.Error("rate-limit usage data is stale: no successful refresh from the datasource within -ratelimit.maxUsageAge; "+policy,
		"datasource", g.ds.URL(), "maxUsageAge", g.rules.maxUsageAge, "lastSuccess", cur.fetchedAt)
}
