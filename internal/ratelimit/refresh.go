package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"

	"github.com/vmgateway/vmgateway/internal/confsource"
)

// poll refreshes usage once, logging and counting a failure; the last snapshot stays in force until
// markStale retires it.
func (g *Gate) poll(ctx context.Context) {
	if err := g.refresh(ctx); err != nil && ctx.Err() == nil {
		g.metrics.refreshErrors.Inc()
		slog.Error("cannot refresh rate-limit usage; the last usage stays in force until -ratelimit.maxUsageAge",
			"err", err, "maxUsageAge", g.rules.maxUsageAge, "lastSuccess", g.snap.Load().fetchedAt)
	}
}

// refresh queries the usage of every meter the limits name and publishes a snapshot with it. A failed query
// fails the whole refresh: a snapshot never mixes fresh and old usage.
func (g *Gate) refresh(ctx context.Context) error {
	start := time.Now()
	lim := g.snap.Load().limits
	usage := map[usageKey]float64{}
	g.writers.share(ctx, g.tally.store)
	filters := g.filters
	if w := g.writers.filters(); w != "" {
		filters = strings.TrimPrefix(filters+","+w, ",")
	}
	for _, m := range metersOf(lim.All()) {
		samples, err := g.ds.Query(ctx, usageQuery(m, filters), start)
		if err != nil {
			return err
		}
		for _, s := range samples {
			id, err := tenant.Parse(s.Labels["accountID"] + ":" + s.Labels["projectID"])
			if err != nil || math.IsNaN(s.Value) {
				// A series without tenant labels (a component without per-tenant statistics) limits nobody.
				continue
			}
			usage[usageKey{id, m}] += s.Value
		}
	}
	g.metrics.refreshDuration.UpdateDuration(start)

	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.snap.Load()
	if cur.stale {
		slog.Info("rate-limit usage data is fresh again", "datasource", g.ds.URL())
	}
	// The limits may have been reloaded meanwhile: the new ones apply at once, a meter they add counts
	// zero usage until the next refresh.
	g.publish(&snapshot{limits: cur.limits, usage: usage, fetchedAt: start, fetched: true})
	return nil
}

// reload re-reads the limits config; without force, content equal to the last one tried is not parsed again,
// so a broken file is reported once rather than at every check.
func (g *Gate) reload(force bool) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := limitfile.ReadConfig(ctx, g.configPath)
	if err != nil {
		// Read again next time, even if the content then equals the last one tried.
		g.lastConfig = nil
		return g.reloadFailed(err)
	}
	if !force && bytes.Equal(data, g.lastConfig) {
		return nil
	}
	g.lastConfig = data
	lim, err := limitfile.Parse(data, g.source)
	if err != nil {
		return g.reloadFailed(err)
	}
	g.mu.Lock()
	next := *g.snap.Load()
	next.limits = lim
	g.publish(&next)
	g.mu.Unlock()
	g.inForce = data
	g.metrics.reloaded(true)
	slog.Info("loaded the rate limits config", "config", g.source, "limits", len(lim.All()), "lifted", len(lim.Lifts()))
	return nil
}

func (g *Gate) reloadFailed(err error) error {
	g.metrics.reloaded(false)
	slog.Error("cannot reload the rate limits config; the previous limits stay in force", "config", g.source, "err", err)
	return fmt.Errorf("cannot reload the rate limits config; the previous limits stay in force: %w", err)
}
