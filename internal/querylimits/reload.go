package querylimits

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/route"
)

var (
	reloadsOK        = metrics.NewCounter(`vmgateway_querylimits_config_reloads_total{status="success"}`)
	reloadsErr       = metrics.NewCounter(`vmgateway_querylimits_config_reloads_total{status="error"}`)
	lastReloadOK     = metrics.NewGauge("vmgateway_querylimits_config_last_reload_successful", nil)
	lastReloadOKTime = metrics.NewGauge("vmgateway_querylimits_config_last_reload_success_timestamp_seconds", nil)
)

// Limiter holds the query limits of -querylimits.config and re-reads them: on Reload (SIGHUP) and every check
// interval. An invalid config is logged and counted, and the limits in force stay.
type Limiter struct {
	path, source string
	interval     time.Duration
	cur          atomic.Pointer[config]

	mu   sync.Mutex // serialises reloads
	last []byte     // the content last tried, so that an unchanged file is not parsed again
	// inForce is the content of the limits in force, whichever reload applied it.
	inForce []byte

	stop chan struct{}
	wg   sync.WaitGroup
}

// New reads the config at pathOrURL (a file or an http(s) URL); an invalid one is an error.
func New(pathOrURL string, checkInterval time.Duration) (*Limiter, error) {
	if checkInterval < 0 {
		return nil, fmt.Errorf("-querylimits.configCheckInterval=%s is negative", checkInterval)
	}
	l := &Limiter{path: pathOrURL, source: confsource.Show(pathOrURL), interval: checkInterval}
	c, data, err := load(pathOrURL)
	if err != nil {
		return nil, err
	}
	l.cur.Store(c)
	l.last, l.inForce = data, data
	reloaded(true)
	return l, nil
}

// ValidateFile checks a config and returns every problem in it, each with its line; nil means valid.
func ValidateFile(pathOrURL string) error {
	_, _, err := load(pathOrURL)
	return err
}

func load(pathOrURL string) (*config, []byte, error) {
	if pathOrURL == "" {
		return nil, nil, fmt.Errorf("no query limits config: set -querylimits.config to a file path or an http(s) URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := confsource.Read(ctx, pathOrURL, "the query limits config")
	if err != nil {
		return nil, nil, err
	}
	c, err := parseConfig(data, confsource.Show(pathOrURL))
	return c, data, err
}

// Start re-reads the config every check interval, when there is one.
func (l *Limiter) Start() {
	if l.interval <= 0 || l.stop != nil {
		return
	}
	l.stop = make(chan struct{})
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(l.interval)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				_ = l.reload(false)
			}
		}
	}()
}

// Stop ends the periodic re-reads.
func (l *Limiter) Stop() {
	if l.stop != nil {
		close(l.stop)
		l.wg.Wait()
		l.stop = nil
	}
}

// Reload re-reads the config now, even when it has not changed (SIGHUP).
func (l *Limiter) Reload() error { return l.reload(true) }

// Config is the content of the config in force, applied at the start or by the last successful reload, periodic
// or not, and its number of entries: what /-/reload compares to tell what changed.
func (l *Limiter) Config() (data []byte, entries int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inForce, len(l.cur.Load().entries)
}

func (l *Limiter) reload(force bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := confsource.Read(ctx, l.path, "the query limits config")
	if err != nil {
		l.last = nil
		return l.failed(err)
	}
	if !force && bytes.Equal(data, l.last) {
		return nil
	}
	l.last = data
	c, err := parseConfig(data, l.source)
	if err != nil {
		return l.failed(err)
	}
	l.cur.Store(c)
	l.inForce = data
	reloaded(true)
	slog.Info("loaded the query limits config", "config", l.source, "entries", len(c.entries))
	return nil
}

func (l *Limiter) failed(err error) error {
	reloaded(false)
	slog.Error("cannot reload the query limits config; the previous limits stay in force", "config", l.source, "err", err)
	return fmt.Errorf("cannot reload the query limits config; the previous limits stay in force: %w", err)
}

func reloaded(ok bool) {
	if !ok {
		reloadsErr.Inc()
		lastReloadOK.Set(0)
		return
	}
	reloadsOK.Inc()
	lastReloadOK.Set(1)
	lastReloadOKTime.Set(float64(time.Now().Unix()))
}

// Applies is config.Applies with the limits in force.
func (l *Limiter) Applies(a *auth.Access, rt route.Route) bool { return l.cur.Load().Applies(a, rt) }

// Check is config.Check with the limits in force.
func (l *Limiter) Check(a *auth.Access, rt route.Route, in enforce.Args, now time.Time) (string, error) {
	return l.cur.Load().Check(a, rt, in, now)
}
