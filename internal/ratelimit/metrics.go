package ratelimit

import (
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// gateMetrics live in a set of their own, so that each Gate (one per process, several in tests) exports
// its own and Stop withdraws them.
type gateMetrics struct {
	set              *metrics.Set
	refreshDuration  *metrics.Histogram
	refreshErrors    *metrics.Counter
	rejected         map[meter]*metrics.Counter
	staleRejected    *metrics.Counter
	dryRunRejected   map[meter]*metrics.Counter
	dryRunStale      *metrics.Counter
	reloadsOK        *metrics.Counter
	reloadsErr       *metrics.Counter
	lastReloadOK     *metrics.Gauge
	lastReloadOKTime *metrics.Gauge
}

// allMeters are the meters a valid config can name.
var allMeters = []meter{
	{limitfile.Queries, limitfile.Minute}, {limitfile.Queries, limitfile.Hour},
	{limitfile.RowsInserted, limitfile.Minute}, {limitfile.RowsInserted, limitfile.Hour},
	{limitfile.NewSeries, limitfile.Minute}, {limitfile.NewSeries, limitfile.Hour},
	{limitfile.ActiveSeries, 0},
	{limitfile.SeriesFetched, limitfile.Minute}, {limitfile.SeriesFetched, limitfile.Hour},
	{limitfile.QueryTimeMs, limitfile.Minute}, {limitfile.QueryTimeMs, limitfile.Hour},
}

func newGateMetrics(g *Gate) *gateMetrics {
	s := metrics.NewSet()
	m := &gateMetrics{
		set:              s,
		refreshDuration:  s.NewHistogram("vmgateway_ratelimit_refresh_duration_seconds"),
		refreshErrors:    s.NewCounter("vmgateway_ratelimit_refresh_errors_total"),
		rejected:         map[meter]*metrics.Counter{},
		staleRejected:    s.NewCounter("vmgateway_ratelimit_stale_rejected_total"),
		dryRunRejected:   map[meter]*metrics.Counter{},
		dryRunStale:      s.NewCounter("vmgateway_ratelimit_dryrun_stale_would_reject_total"),
		reloadsOK:        s.NewCounter(`vmgateway_ratelimit_config_reloads_total{status="success"}`),
		reloadsErr:       s.NewCounter(`vmgateway_ratelimit_config_reloads_total{status="error"}`),
		lastReloadOK:     s.NewGauge("vmgateway_ratelimit_config_last_reload_successful", nil),
		lastReloadOKTime: s.NewGauge("vmgateway_ratelimit_config_last_reload_success_timestamp_seconds", nil),
	}
	for _, mt := range allMeters {
		labels := `{type="` + mt.typ.String() + `"`
		if mt.res != 0 {
			labels += `,resolution="` + mt.res.String() + `"`
		}
		m.rejected[mt] = s.NewCounter("vmgateway_ratelimit_rejected_total" + labels + "}")
		m.dryRunRejected[mt] = s.NewCounter("vmgateway_ratelimit_dryrun_would_reject_total" + labels + "}")
	}
	s.NewGauge("vmgateway_ratelimit_snapshot_age_seconds", func() float64 {
		return time.Since(g.snap.Load().fetchedAt).Seconds()
	})
	s.NewGauge("vmgateway_ratelimit_usage_stale", func() float64 {
		if g.snap.Load().stale {
			return 1
		}
		return 0
	})
	s.NewGauge("vmgateway_ratelimit_limits", func() float64 {
		return float64(len(g.snap.Load().limits.All()))
	})
	s.NewGauge("vmgateway_ratelimit_counted_series", func() float64 {
		return float64(g.tally.counters.size.Load())
	})
	return m
}

func (m *gateMetrics) reloaded(ok bool) {
	if !ok {
		m.reloadsErr.Inc()
		m.lastReloadOK.Set(0)
		return
	}
	m.reloadsOK.Inc()
	m.lastReloadOK.Set(1)
	m.lastReloadOKTime.Set(float64(time.Now().Unix()))
}
