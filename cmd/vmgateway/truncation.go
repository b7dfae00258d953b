package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/redact"
)

// Write isolation rests on VictoriaMetrics applying the token's extra_label arguments over the body's labels. Before
// v1.108.0 it appends them after the body's labels and then truncates a series to -maxLabelsPerTimeseries labels,
// so a series that fills the limit itself (team="ops" among 30 labels) loses the gateway's team="dev" and is stored
// as team ops'. v1.108.0 drops such a series instead. The gateway cannot see this in a body it never parses, so it
// asks each write backend which kind it is: the metrics that count the event name it (vm_metrics_with_dropped_labels_total
// before, vm_rows_ignored_total{reason="too_many_labels"} since), where the version label is often empty (a Debian or
// `go install` build).
var labelTruncationCheckInterval = flag.Duration("write.labelTruncationCheckInterval", 10*time.Minute,
	"How often the gateway reads each -write.url's /metrics to learn whether it truncates series with more labels than its "+
		"-maxLabelsPerTimeseries (VictoriaMetrics before v1.108.0) instead of dropping them. On such a backend a token's extra_labels "+
		"can be cut off a series the client wrote, so writes are not isolated: the gateway logs an error and exports "+
		"vmgateway_write_backend_truncates_labels 1 (see docs/security-model.md). 0 disables the check")

// truncation values of vmgateway_write_backend_truncates_labels.
const (
	truncationUnknown = -1 // the check failed, or the backend's metrics name neither behaviour
	truncationDrops   = 0
	truncationCuts    = 1
	// truncationUnchecked is the state before the first check, shown as unknown: the first result is always logged.
	truncationUnchecked = -2
)

// maxMetricsPage bounds what the check reads of a backend's /metrics (VictoriaMetrics' is 1-2 MiB).
const maxMetricsPage = 32 << 20

// truncationWatch checks the write backends now and then; its gauges say what it found last.
type truncationWatch struct {
	client  *http.Client
	targets []truncationTarget
	stop    context.CancelFunc
	done    sync.WaitGroup
}

type truncationTarget struct {
	url   *url.URL // the backend's /metrics, credentials kept for the request
	name  string   // redacted, for logs and the metric's label
	state *atomic.Int64
}

// truncationStates holds each backend's state behind its gauge, which is registered once per process: an app built
// again (a test) takes the gauge over.
var truncationStates sync.Map // backend name → *atomic.Int64

// newTruncationWatch prepares the check of urls through rt; nil when the check is off.
func newTruncationWatch(urls []*url.URL, rt http.RoundTripper) *truncationWatch {
	if *labelTruncationCheckInterval <= 0 {
		return nil
	}
	client := &http.Client{Transport: rt, Timeout: 30 * time.Second,
		// The backend's own page or nothing: a redirect elsewhere would say nothing about the backend.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	w := &truncationWatch{client: client, targets: make([]truncationTarget, len(urls))}
	for i, u := range urls {
		m := *u
		m.Path = strings.TrimSuffix(u.Path, "/") + "/metrics"
		m.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + "/metrics"
		// Of the write URL's args only the key VictoriaMetrics' -metricsAuthKey asks for: without it a careful
		// operator's backend would always read as unknown.
		m.RawQuery, m.Fragment = "", ""
		if k := u.Query().Get("authKey"); k != "" {
			m.RawQuery = url.Values{"authKey": {k}}.Encode()
		}
		t := &w.targets[i]
		t.url, t.name = &m, redact.URL(u)
		st, loaded := truncationStates.LoadOrStore(t.name, new(atomic.Int64))
		t.state = st.(*atomic.Int64)
		t.state.Store(truncationUnchecked)
		if !loaded {
			metrics.NewGauge(fmt.Sprintf(`vmgateway_write_backend_truncates_labels{backend=%q}`, t.name), func() float64 {
				return float64(max(t.state.Load(), truncationUnknown))
			})
		}
	}
	return w
}

// start checks every backend at once, in the background, and then every -write.labelTruncationCheckInterval.
func (w *truncationWatch) start() {
	if w == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		t := time.NewTicker(*labelTruncationCheckInterval)
		defer t.Stop()
		for {
			w.checkAll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (w *truncationWatch) close() {
	if w == nil || w.stop == nil {
		return
	}
	w.stop()
	w.done.Wait()
}

func (w *truncationWatch) checkAll(ctx context.Context) {
	for i := range w.targets {
		t := &w.targets[i]
		state, err := w.check(ctx, t.url)
		if ctx.Err() != nil {
			return
		}
		if prev := t.state.Swap(state); prev == state {
			continue
		}
		switch state {
		case truncationCuts:
			slog.Error("the write backend truncates series that have more labels than its -maxLabelsPerTimeseries instead of "+
				"dropping them (VictoriaMetrics before v1.108.0): a token's extra_labels can be cut off a series the client "+
				"wrote with that many labels, so a token narrowed to one team's labels can write series carrying another's. "+
				"Upgrade the write backend to v1.108.0 or later", "backend", t.name)
		case truncationDrops:
			slog.Info("the write backend drops series over its label limit, as write isolation needs", "backend", t.name)
		default:
			slog.Warn("cannot tell whether the write backend truncates series over its label limit (VictoriaMetrics before "+
				"v1.108.0 does, which breaks write isolation); check its version", "backend", t.name, "err", err)
		}
	}
}

// check reads the backend's /metrics for the metric that counts series over the label limit.
func (w *truncationWatch) check(ctx context.Context, u *url.URL) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return truncationUnknown, redact.URLError(err)
	}
	// http.Client sends the URL's userinfo as basic auth.
	resp, err := w.client.Do(req)
	if err != nil {
		return truncationUnknown, redact.URLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return truncationUnknown, fmt.Errorf("GET /metrics answered %d", resp.StatusCode)
	}
	return truncationOf(io.LimitReader(resp.Body, maxMetricsPage))
}

// truncationOf reads a VictoriaMetrics /metrics page for the behaviour its label-limit metrics name.
func truncationOf(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		labels, _, _ := strings.Cut(rest, "}")
		switch {
		case name == "vm_metrics_with_dropped_labels_total":
			return truncationCuts, nil
		case name == "vm_rows_ignored_total" && strings.Contains(labels, `reason="too_many_labels"`):
			return truncationDrops, nil
		}
	}
	if err := sc.Err(); err != nil {
		return truncationUnknown, fmt.Errorf("reading /metrics: %w", err)
	}
	return truncationUnknown, fmt.Errorf("its /metrics has neither vm_metrics_with_dropped_labels_total nor vm_rows_ignored_total{reason=\"too_many_labels\"}")
}
