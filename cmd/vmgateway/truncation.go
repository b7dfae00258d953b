package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/redact"
)

// Write isolation rests on VictoriaMetrics applying the token's extra_label arguments over the body's labels. Before
// v1.108.0 it appends them after the body's labels and then truncates a series to -maxLabelsPerTimeseries labels,
// so a series that fills the limit itself (team="ops" among 30 labels) loses the gateway's team="dev" and is stored
// as team ops'. v1.108.0 drops such a series instead. The gateway asks each write backend which kind it is: the
// metrics that count the event name it (vm_metrics_with_dropped_labels_total before, vm_rows_ignored_total{reason=
// "too_many_labels"} since), where the version label is often empty (a Debian or `go install` build), and its flag
// metric gives the limit. While one truncates, writes through tokens with extra labels go through the label guard,
// which drops such series as v1.108.0 does (internal/labelguard).
//
// It also rests on the backend keeping the last of two labels of one name, which it does by a stable sort in its
// storage. With -sortLabels (vminsert's too) it sorts each series' labels first with sort.Sort, which is not stable
// past 12 labels: team dev's series of 13 labels or more with its own team="ops" among them was stored as team ops',
// on 1.79.5 and v1.151 alike; so does v1.151's stream aggregation (-streamAggr.dedupInterval, -streamAggr.config),
// whose outputs carried team="ops" (two attackers' reviews). Writes through tokens with extra labels are refused while
// a write backend's /metrics lists one of those flags set. The check is a poll: a backend restarted with one is
// found at the next look, a minute apart by default (it was 10 minutes; a page of 1-2 MiB a minute is little beside
// the scrapes every backend has).
var (
	labelTruncationCheckInterval = flag.Duration("write.labelTruncationCheckInterval", time.Minute,
		"How often the gateway reads each -write.url's /metrics (with -discoverBackendIPs, each address found, a new one at once) to learn whether it truncates series with more labels than its "+
			"-maxLabelsPerTimeseries (VictoriaMetrics before v1.108.0) instead of dropping them, and that limit. On such a backend a token's "+
			"extra_labels could be cut off a series the client wrote, so the gateway then counts the labels of every series written through "+
			"a token with extra_labels and drops those over the limit, as v1.108.0 does; formats it cannot count are refused for such tokens "+
			"(see docs/security-model.md). A backend it cannot read is asked again sooner (at most a minute apart, and at once when such a "+
			"write comes), and those writes are refused with 503 meanwhile. The same look reads whether the backend runs with -sortLabels or stream aggregation, "+
			"whose unstable sort may keep a series' own label over the token's: such writes get 503 while one does. 0 disables the check, "+
			"the guard and the -sortLabels refusal")
	writeMaxLabels = flag.Int("write.maxLabelsPerTimeseries", 0,
		"When above 0, writes through tokens with extra_labels always go through the label guard, with this as the write backend's "+
			"-maxLabelsPerTimeseries, whatever -write.labelTruncationCheckInterval finds: for a backend before v1.108.0 the check cannot "+
			"read (behind a relay, or with its /metrics out of reach)")
)

// truncatingMetric is the metric only the releases that truncate series over the label limit have (before v1.108.0);
// the write slots tell the releases that hold an insert slot for a whole body by it too (insertCapacityOf).
const truncatingMetric = "vm_metrics_with_dropped_labels_total"

// firstCheckWait bounds how long a write through a token with extra labels waits for the first look at the write
// backends, and the first check's requests with it.
const firstCheckWait = 10 * time.Second

// fallbackLabelLimit is the limit assumed of a backend that truncates and does not say its own: the lowest default
// VictoriaMetrics has had.
const fallbackLabelLimit = 30

// recheckFirst is the wait before a backend the check could not read is asked again; it doubles up to the interval.
var recheckFirst = 5 * time.Second

// truncation values of vmgateway_write_backend_truncates_labels.
const (
	truncationUnknown = -1 // the backend's /metrics names neither behaviour (not VictoriaMetrics, or a relay)
	truncationDrops   = 0
	truncationCuts    = 1
	// truncationUnchecked is the state before the first look, shown as unknown: the first result is always logged.
	truncationUnchecked = -2
	// truncationUnreachable: no connection to it (down, not up yet), shown as unknown. Writes cannot reach it either;
	// when it comes up it may be an old release whose limit is not known.
	truncationUnreachable = -3
	// truncationUnreadable: it is there but its /metrics was not read (an error status, a -metricsAuthKey the
	// gateway lacks, a page slower than the first look may wait), shown as unknown. It may take writes meanwhile.
	truncationUnreadable = -4
)

// lookSpacing is the least time between two looks at the backends.
var lookSpacing = time.Second

// recheckMost bounds the wait between looks at a backend that could not be told, however long it stays so.
const recheckMost = time.Minute

// maxMetricsPage bounds what the check reads of a backend's /metrics (VictoriaMetrics' is 1-2 MiB).
const maxMetricsPage = 32 << 20

// maxGone bounds the addresses gone from discovery whose verdict is kept for their return.
const maxGone = 1024

// leaveGrace is how long an address gone from discovery still counts for the guard: a write may have been routed on
// the list it was in (its guard waits at most firstCheckWait).
const leaveGrace = 30 * time.Second

// truncationWatch checks the write backends now and then; its gauges say what it found last. With
// -discoverBackendIPs it checks every address found, since a rolling upgrade or a rollback puts releases of both
// kinds behind one name: the gateway tells it of an address before writes can reach it (gateway.Config.WriteAddrs),
// the address is looked at at once, and narrowed writes wait for that look.
type truncationWatch struct {
	client *http.Client
	stop   context.CancelFunc
	done   sync.WaitGroup
	// targets is the current list, replaced whole by setAddrs; leaving is those gone from it within leaveGrace.
	targets, leaving atomic.Pointer[[]*truncationTarget]
	// again asks for a look before the timer's: a write found a backend not read.
	again chan struct{}

	mu sync.Mutex // guards what follows, and the replacement of targets
	// ctx is the running watch's, nil before start: a new address's first look runs under it.
	ctx context.Context
	// gone keeps what was found of addresses discovery dropped: one that drops out of DNS for a round (a readiness
	// flap) comes back as what it was, not as an address never read.
	gone map[targetKey]*truncationTarget
}

// targetKey tells backends apart: a name and the Host header it is asked with (virtual hosts behind one address).
type targetKey struct{ name, host string }

type truncationTarget struct {
	key   targetKey
	url   *url.URL // the backend's /metrics, credentials kept for the request
	state atomic.Int64
	limit atomic.Int64 // its -maxLabelsPerTimeseries, 0 when not known
	// sorts is the flag its /metrics listed set when last read that sorts a series' labels (sortingFlag), "" for none;
	// nil before the first look (sortFlag).
	sorts atomic.Pointer[string]
	// failing: the last look failed, and state is what an earlier one found.
	failing atomic.Bool
	// goneAt is when discovery dropped it (unix nanoseconds), 0 while it is in the list.
	goneAt atomic.Int64
	// looking keeps one look at a time; first is closed once the first look has ended, whatever it found.
	looking   sync.Mutex
	first     chan struct{}
	firstOnce sync.Once
}

// newTruncationWatch prepares the check of urls through rt; nil when the check is off. Discovery replaces urls with
// the addresses behind them through setAddrs.
func newTruncationWatch(urls []*url.URL, rt http.RoundTripper) *truncationWatch {
	if *labelTruncationCheckInterval <= 0 {
		return nil
	}
	w := &truncationWatch{client: metricsClient(rt, 30*time.Second), again: make(chan struct{}, 1), gone: map[targetKey]*truncationTarget{}}
	w.targets.Store(&[]*truncationTarget{})
	w.leaving.Store(&[]*truncationTarget{})
	addrs := make([]gateway.BackendAddr, len(urls))
	for i, u := range urls {
		addrs[i] = gateway.BackendAddr{URL: u}
	}
	w.setAddrs(addrs)
	return w
}

// setAddrs makes addrs the backends checked: an address already known, or known before it went, keeps what was
// found of it; a new one is looked at at once, and narrowed writes wait for that look (labelLimit).
func (w *truncationWatch) setAddrs(addrs []gateway.BackendAddr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := make(map[targetKey]*truncationTarget, len(addrs))
	for _, t := range *w.targets.Load() {
		old[t.key] = t
	}
	list := make([]*truncationTarget, 0, len(addrs))
	for _, a := range addrs {
		k := targetKey{name: redact.URL(a.URL), host: a.Host}
		if slices.ContainsFunc(list, func(t *truncationTarget) bool { return t.key == k }) {
			continue // a -write.url given twice is one backend
		}
		if t := old[k]; t != nil {
			list = append(list, t)
			delete(old, k)
			continue
		}
		t := w.gone[k]
		if t != nil {
			delete(w.gone, k)
			t.goneAt.Store(0)
			// Back after a round away: what it was until a look says otherwise, and that look now.
			slog.Info("a write backend address is back; it is taken to be what it was found to be until it is looked at again",
				"backend", k.name, "truncates_labels", t.state.Load())
		} else {
			t = newTarget(k, a.URL)
		}
		truncationGauges.add(t)
		list = append(list, t)
		if w.ctx != nil {
			w.done.Add(1)
			go func() {
				defer w.done.Done()
				w.checkOne(w.ctx, t)
			}()
		}
	}
	w.targets.Store(&list)
	now := time.Now().UnixNano()
	var leaving []*truncationTarget
	for _, t := range *w.leaving.Load() {
		if t.leftWithinGrace(now) {
			leaving = append(leaving, t)
		}
	}
	for k, t := range old {
		t.goneAt.Store(now)
		leaving = append(leaving, t)
		truncationGauges.remove(t)
		if len(w.gone) >= maxGone {
			for g := range w.gone {
				delete(w.gone, g)
				break
			}
		}
		w.gone[k] = t
		if t.state.Load() == truncationCuts {
			slog.Info("a write backend address that truncates series over its label limit is gone", "backend", k.name)
		}
	}
	w.leaving.Store(&leaving)
}

// leftWithinGrace says whether discovery dropped t less than leaveGrace before now (unix nanoseconds).
func (t *truncationTarget) leftWithinGrace(now int64) bool {
	at := t.goneAt.Load()
	return at != 0 && now-at < int64(leaveGrace)
}

func newTarget(k targetKey, u *url.URL) *truncationTarget {
	t := &truncationTarget{key: k, url: metricsURLOf(u), first: make(chan struct{})}
	t.state.Store(truncationUnchecked)
	return t
}

// metricsURLOf is the /metrics of the backend at u (a -read.url or -write.url, or an address found behind one).
func metricsURLOf(u *url.URL) *url.URL {
	m := *u
	m.Path = strings.TrimSuffix(u.Path, "/") + "/metrics"
	m.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + "/metrics"
	// Of the URL's args only the key VictoriaMetrics' -metricsAuthKey asks for: without it a careful operator's
	// backend would always read as unknown.
	m.RawQuery, m.Fragment = "", ""
	if key := u.Query().Get("authKey"); key != "" {
		m.RawQuery = url.Values{"authKey": {key}}.Encode()
	}
	return &m
}

// metricsClient is the client that reads backends' /metrics pages through rt: the backend's own page or nothing, since
// a redirect elsewhere would say nothing about the backend.
func metricsClient(rt http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Transport: rt, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// getMetrics GETs page (metricsURLOf a backend), with host as the Host header when set (an address found behind a
// name). http.Client sends the URL's userinfo as basic auth.
func getMetrics(ctx context.Context, c *http.Client, page *url.URL, host string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, page.String(), nil)
	if err != nil {
		return nil, err
	}
	if host != "" {
		req.Host = host
	}
	return c.Do(req)
}

// gaugeRegistry registers one gauge per backend, which the metrics package allows once per process: the newest
// target of a key is the one shown (an app built again in a test takes it over), and the gauge goes with the last.
type gaugeRegistry struct {
	mu sync.Mutex
	m  map[targetKey]*gaugeEntry
}

type gaugeEntry struct {
	target atomic.Pointer[truncationTarget]
	refs   int
}

var truncationGauges = gaugeRegistry{m: map[targetKey]*gaugeEntry{}}

func (r *gaugeRegistry) add(t *truncationTarget) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[t.key]
	if e == nil {
		e = &gaugeEntry{}
		r.m[t.key] = e
		metrics.NewGauge(truncationGauge(t.key), func() float64 { return float64(max(e.target.Load().state.Load(), truncationUnknown)) })
		metrics.NewGauge(sortsGauge(t.key), func() float64 {
			if e.target.Load().sortFlag() != "" {
				return 1
			}
			return 0
		})
	}
	e.target.Store(t)
	e.refs++
}

func (r *gaugeRegistry) remove(t *truncationTarget) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[t.key]
	if e == nil {
		return
	}
	if e.refs--; e.refs > 0 {
		return
	}
	// An address gone: its series would stay at its last value for good.
	delete(r.m, t.key)
	metrics.UnregisterMetric(truncationGauge(t.key))
	metrics.UnregisterMetric(sortsGauge(t.key))
}

func truncationGauge(k targetKey) string {
	return backendGauge("vmgateway_write_backend_truncates_labels", k)
}

func sortsGauge(k targetKey) string { return backendGauge("vmgateway_write_backend_sorts_labels", k) }

func backendGauge(name string, k targetKey) string {
	if k.host != "" {
		return fmt.Sprintf(`%s{backend=%q,host=%q}`, name, k.name, k.host)
	}
	return fmt.Sprintf(`%s{backend=%q}`, name, k.name)
}

func (w *truncationWatch) current() []*truncationTarget { return *w.targets.Load() }

// lookSoon asks for a look before the timer's; at most one is pending.
func (w *truncationWatch) lookSoon() {
	select {
	case w.again <- struct{}{}:
	default:
	}
}

// start checks every backend at once, in the background, and then every -write.labelTruncationCheckInterval, sooner
// while one could not be read.
func (w *truncationWatch) start() {
	if w == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.mu.Lock()
	w.stop, w.ctx = cancel, ctx
	w.mu.Unlock()
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		retry := recheckFirst
		for {
			w.checkAll(ctx)
			wait := *labelTruncationCheckInterval
			if w.unknown() {
				wait, retry = min(retry, wait, recheckMost), min(2*retry, wait, recheckMost)
			} else {
				retry = recheckFirst
			}
			// At most one look a second however many writes ask.
			if !sleepUnless(ctx, lookSpacing, nil) || !sleepUnless(ctx, max(wait-lookSpacing, 0), w.again) {
				return
			}
		}
	}()
}

// sleepUnless waits d, or until wake has a value; false when ctx ended first.
func sleepUnless(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

func (w *truncationWatch) unknown() bool {
	for _, t := range w.current() {
		if t.state.Load() < truncationDrops || t.failing.Load() {
			return true
		}
	}
	return false
}

// labelLimitOf is the gateway's LabelLimit: nil when neither the check nor -write.maxLabelsPerTimeseries is on.
func labelLimitOf(w *truncationWatch) func(context.Context) (int, error) {
	switch {
	case w != nil:
		return w.labelLimit
	case *writeMaxLabels > 0:
		return func(context.Context) (int, error) { return *writeMaxLabels, nil }
	}
	return nil
}

// labelLimit is the label limit of the write backends that truncate, the least of them, or 0 when none does; the
// gateway's label guard applies while it is not 0. A backend not looked at yet (at the start, or an address just
// discovered) is waited for, up to firstCheckWait or ctx. Of one that could not be read:
//   - with no backend read at all there is nothing to go by: the write is refused, to be sent again;
//   - one there but unreadable (an error status, a page too slow) may be an old release taking writes: the guard
//     applies at no more than the lowest default limit VictoriaMetrics has had;
//   - one the gateway cannot connect to cannot take the write either, and is taken to be of the release of those read
//     (one fleet), so that one vminsert down does not change the writes that go to the others.
//
// Each asks for a look at once.
//
// While a backend sorts labels (-sortLabels, stream aggregation), the write is refused with 503: the guard cannot help, and a client such
// as vmagent keeps the data and sends it again once the operator has taken the flag off.
func (w *truncationWatch) labelLimit(ctx context.Context) (int, error) {
	ts := w.current()
	var timeout *time.Timer
	for _, t := range ts {
		if t.state.Load() != truncationUnchecked {
			continue
		}
		if timeout == nil {
			timeout = time.NewTimer(firstCheckWait)
			defer timeout.Stop()
			w.lookSoon() // before start, or a first look not begun
		}
		select {
		case <-t.first:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-timeout.C:
			// Out of time: the rest are read as they are.
			timeout.Reset(0)
		}
	}
	least, known, failing := 0, false, false
	var unread, unreadable []string
	if l := *w.leaving.Load(); len(l) > 0 {
		// Writes routed on a list from before an address went still reach it.
		now := time.Now().UnixNano()
		for _, t := range l {
			if t.leftWithinGrace(now) {
				ts = append(ts[:len(ts):len(ts)], t)
			}
		}
	}
	if err := sortingBackends(ts); err != nil {
		return 0, err
	}
	if *writeMaxLabels > 0 {
		return *writeMaxLabels, nil
	}
	for _, t := range ts {
		failing = failing || t.failing.Load()
		switch t.state.Load() {
		case truncationCuts:
			l := fallbackLabelLimit
			if n := int(t.limit.Load()); n > 0 {
				l = n
			}
			if least == 0 || l < least {
				least = l
			}
			known = true
		case truncationDrops:
			known = true
		case truncationUnreachable:
			unread = append(unread, t.key.name)
		case truncationUnreadable, truncationUnchecked:
			unreadable = append(unreadable, t.key.name)
		}
	}
	if len(unread)+len(unreadable) > 0 || failing {
		w.lookSoon()
	}
	if len(unread)+len(unreadable) > 0 && !known {
		return 0, fmt.Errorf("the /metrics of the write backend %s could not be read (down, starting, or refusing the gateway: "+
			"give its -metricsAuthKey as authKey in -write.url), so it may be an old release that truncates series at a limit not known; "+
			"-write.maxLabelsPerTimeseries sets one", strings.Join(append(unread, unreadable...), ", "))
	}
	if len(unreadable) > 0 && (least == 0 || least > fallbackLabelLimit) {
		least = fallbackLabelLimit
	}
	return least, nil
}

// sortFlag is what the last look found t's sorting flag to be: "" for none, or before the first look.
func (t *truncationTarget) sortFlag() string {
	if f := t.sorts.Load(); f != nil {
		return *f
	}
	return ""
}

// sortingBackends is the refusal of a write through a token with extra labels while one of ts sorts labels, or nil.
func sortingBackends(ts []*truncationTarget) error {
	var names []string
	for _, t := range ts {
		if f := t.sortFlag(); f != "" {
			names = append(names, t.key.name+" runs with "+f)
		}
	}
	if names == nil {
		return nil
	}
	return httperr.New(http.StatusServiceUnavailable, fmt.Sprintf("the write backend %s, which sorts a series' labels in a way "+
		"that may keep its own label over the token's extra_labels (a series of more than 12 labels), so writes through tokens "+
		"with extra_labels are refused until the operator removes the flag; send the request again then",
		strings.Join(names, ", ")))
}

func (w *truncationWatch) close() {
	if w == nil || w.stop == nil {
		return
	}
	w.stop()
	w.done.Wait()
}

// checkAll looks at every backend at once, so that one slow to answer does not hold back the others.
func (w *truncationWatch) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range w.current() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.checkOne(ctx, t)
		}()
	}
	wg.Wait()
}

func (w *truncationWatch) checkOne(ctx context.Context, t *truncationTarget) {
	t.looking.Lock()
	defer t.looking.Unlock()
	defer t.firstOnce.Do(func() { close(t.first) })
	prev := t.state.Load()
	lctx := ctx
	if prev == truncationUnchecked {
		// Writes wait for this look: a backend that does not answer in time is taken to be unreadable.
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, firstCheckWait)
		defer cancel()
	}
	state, limit, sorts, err := w.check(lctx, t)
	if ctx.Err() != nil {
		return // stopped mid-look: nothing learned
	}
	if state < truncationDrops && prev >= truncationDrops {
		// A backend already known stays what it was found to be until a look says otherwise: a failed look (a
		// restart, a slow /metrics) tells nothing new, and forgetting a backend that truncates would turn the
		// guard off while it still does.
		if !t.failing.Swap(true) {
			slog.Warn("cannot read the write backend's /metrics; it is taken to be what it was found to be until it can be read",
				"backend", t.key.name, "truncates_labels", prev, "err", err)
		}
		return
	}
	t.failing.Store(false)
	t.limit.Store(int64(limit))
	name := t.key.name
	if was := t.sortFlag(); was != sorts {
		t.sorts.Store(&sorts)
		if sorts != "" {
			slog.Error("the write backend sorts a series' labels, with a sort that is not stable past 12 labels: a series a "+
				"client writes with its own copy of a token's extra label may keep it over the token's, and be stored as another "+
				"team's. Writes through tokens with extra_labels are refused with 503 until the flag is removed from it",
				"backend", name, "flag", sorts)
		} else {
			slog.Info("the write backend no longer sorts a series' labels; writes through tokens with extra_labels are taken again", "backend", name)
		}
	}
	if prev := t.state.Swap(state); prev == state {
		return
	}
	switch state {
	case truncationCuts:
		slog.Error("the write backend truncates series that have more labels than its -maxLabelsPerTimeseries instead of "+
			"dropping them (VictoriaMetrics before v1.108.0): a token's extra_labels could be cut off a series the client "+
			"wrote with that many labels. The gateway now counts the labels of each series written through a token with "+
			"extra_labels and drops those over the limit, and refuses such writes in formats it cannot count. "+
			"Upgrade the write backend to v1.108.0 or later", "backend", name, "maxLabelsPerTimeseries", limit)
	case truncationDrops:
		slog.Info("the write backend drops series over its label limit, as write isolation needs", "backend", name)
	case truncationUnreachable:
		slog.Warn("cannot connect to the write backend to read its /metrics and tell whether it truncates series over its "+
			"label limit; writes through tokens with extra_labels are refused until it can be read, unless another write "+
			"backend was read", "backend", name, "err", err)
	case truncationUnreadable:
		slog.Warn("cannot read the write backend's /metrics to tell whether it truncates series over its label limit; "+
			"writes through tokens with extra_labels are guarded at the lowest default limit meanwhile, or refused when no "+
			"write backend was read", "backend", name, "maxLabelsPerTimeseries", fallbackLabelLimit, "err", err)
	default:
		slog.Warn("cannot tell whether the write backend truncates series over its label limit (VictoriaMetrics before "+
			"v1.108.0 does, which breaks write isolation); check its version", "backend", name, "err", err)
	}
}

// check reads the backend's /metrics for the metric that counts series over the label limit, the limit, and
// whether it sorts labels.
func (w *truncationWatch) check(ctx context.Context, t *truncationTarget) (int64, int, string, error) {
	resp, err := getMetrics(ctx, w.client, t.url, t.key.host)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" && !oe.Timeout() {
			// Refused or unroutable: writes cannot reach it either.
			return truncationUnreachable, 0, "", redact.URLError(err)
		}
		// Connected, or may have: a page too slow, a connection cut, a TLS failure.
		return truncationUnreadable, 0, "", redact.URLError(err)
	}
	defer resp.Body.Close()
	switch c := resp.StatusCode; {
	case c == http.StatusOK:
	case c >= 500 || c == http.StatusUnauthorized || c == http.StatusForbidden || c == http.StatusTooManyRequests:
		// There, but not answering now, or not to the gateway (a -metricsAuthKey it lacks): it may be an old release.
		return truncationUnreadable, 0, "", fmt.Errorf("GET /metrics answered %d", c)
	default:
		// No page of its own (404, a redirect): not VictoriaMetrics, or a proxy in front of it.
		return truncationUnknown, 0, "", fmt.Errorf("GET /metrics answered %d", c)
	}
	return truncationOf(io.LimitReader(resp.Body, maxMetricsPage))
}

// truncationOf reads a VictoriaMetrics /metrics page for the behaviour its label-limit metrics name, the
// -maxLabelsPerTimeseries its flag metric gives (0 if none does), and the flag set that sorts a series' labels, if
// one is (sortingFlag).
func truncationOf(r io.Reader) (int64, int, string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	state, limit, sorts := int64(truncationUnknown), 0, ""
	for sc.Scan() {
		line := sc.Text()
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		labels, _, _ := strings.Cut(rest, "}")
		switch {
		case name == truncatingMetric:
			state = truncationCuts
		case name == "vm_rows_ignored_total" && strings.Contains(labels, `reason="too_many_labels"`):
			state = truncationDrops
		case name == "flag":
			if v, ok := strings.CutPrefix(labels, `{name="maxLabelsPerTimeseries", value="`); ok {
				v, _, _ = strings.Cut(v, `"`)
				if n, err := strconv.Atoi(v); err == nil && n > 0 {
					limit = n
				}
			} else if sorts == "" {
				sorts = sortingFlag(labels)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return truncationUnreadable, 0, "", fmt.Errorf("reading /metrics: %w", err)
	}
	if state == truncationUnknown {
		return state, 0, sorts, fmt.Errorf("its /metrics has neither vm_metrics_with_dropped_labels_total nor vm_rows_ignored_total{reason=\"too_many_labels\"}")
	}
	return state, limit, sorts, nil
}

// sortingFlag is the flag the labels of a flag metric name, as it is set, when it makes the backend sort a series'
// labels with an unstable sort before it keeps the last of two of one name: -sortLabels, and stream aggregation,
// whose deduplicator and aggregators sort the labels of their input (lib/streamaggr), in the single-node and in a
// vmagent a -write.url may name (its -remoteWrite.* flags are lists, one value per remote storage). Else "".
func sortingFlag(labels string) string {
	rest, ok := strings.CutPrefix(labels, `{name="`)
	if !ok {
		return ""
	}
	name, rest, _ := strings.Cut(rest, `"`)
	value, ok := strings.CutPrefix(rest, `, value="`)
	if !ok {
		return ""
	}
	value, _, _ = strings.Cut(value, `"`)
	set := false
	switch name {
	case "sortLabels":
		set = value == "true"
	case "streamAggr.config", "remoteWrite.streamAggr.config":
		set = strings.Trim(value, ",") != ""
	case "streamAggr.dedupInterval", "remoteWrite.streamAggr.dedupInterval":
		for v := range strings.SplitSeq(value, ",") {
			set = set || v != "" && v != "0s" && v != "0"
		}
	}
	if set {
		return "-" + name + "=" + value
	}
	return ""
}
