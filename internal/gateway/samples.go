package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
)

// The functions that sort or count a window over raw samples (quantile_over_time, distinct_over_time, ...) cost
// VictoriaMetrics per sample of each window, and how many samples a series holds only the data knows: the limits
// assume one per -search.minSampleInterval (1 s), which kept a team's own 1 s samples from stopping VictoriaMetrics, but
// refused the day-long p99 panels of every team that scrapes at 15 s (a legitimate user's review, where VictoriaMetrics
// answered them in seconds). So a query refused only for its windows over raw samples is measured: the gateway asks
// the read backends, in the team's tenant and through the team's restriction, how many samples its windows read, and
// judges it on that (judgeMeasured, over the windows querylimits.Range.Windows lists).
//
// A window's count is what its function reads of each series: `sum_over_time(count_over_time(sel[w])[range:step])`,
// the samples a series has in all the windows the query evaluates, counted so that it is never less whatever the
// alignment of the points (probeQuery); the query is judged on the series that reads most in all its windows.
// count_over_time reads each sample once and sums nothing, so the count costs a read of the data, not the sort the
// limit is for. Only a query that would pass at one sample a minute (measureSparsest) is measured, at most measureMax
// windows of it, one query's at a time per team, in one of the team's read slots, and a caller with cost limits is
// charged the count: a query refused for being costly at any density costs the backends nothing more, and a refused
// one costs them what the team could read with count_over_time itself. Counts are not kept: a team that had a window counted over no data, then wrote a day of
// samples a second into it, had its costly query admitted on the count kept (an attacker's review: 27 CPU-seconds of
// v1.151 for one series), and VictoriaMetrics' own cache of rollup results is left out of them (nocache) for the
// same reason.

const (
	// measureSparsest: a query refused even at one sample a minute (vmagent's and Prometheus' default scrape
	// interval) is not measured.
	measureSparsest = time.Minute
	// measureMax is the most windows measured for one query.
	measureMax = 8
)

// measureTimeout bounds the wait for the counts of one query.
var measureTimeout = 10 * time.Second

var (
	measuredAdmitted = metrics.NewCounter(`vmgateway_query_samples_measured_total{result="admitted"}`)
	measuredRefused  = metrics.NewCounter(`vmgateway_query_samples_measured_total{result="refused"}`)
	measuredFailed   = metrics.NewCounter(`vmgateway_query_samples_measured_total{result="failed"}`)
)

// measurer counts the samples of a query's windows over raw samples for one request: nil when the gateway does not
// measure (-search.measureSamples=false).
type measurer func(ws []querylimits.Window) (map[countKey]seriesCounts, error)

// countKey is what a count of a window depends on.
type countKey struct {
	selector               string
	from, to, step, window int64
}

func keyOf(w querylimits.Window) countKey {
	return countKey{w.Selector, w.From, w.To, w.Step, w.Window}
}

// seriesCounts is what a window reads of each series of its selector, by the series' labels, and rest, what it
// reads at most of any series beside that: a part of the count too large to read series by series is read as one
// number, its most, which every series is then taken to read.
type seriesCounts struct {
	bySeries map[string]int64
	rest     int64
}

// of is what the window reads of the series of labels key ("": one it does not list); each part at most 2^62.
func (c seriesCounts) of(key string) int64 { return min(c.bySeries[key], 1<<62) + min(c.rest, 1<<62) }

// measurerFor is the measurer of a's request, or nil. The request's parse slot, if it holds one, is given back
// while it counts: the team's other new queries would wait for it.
func (g *Gateway) measurerFor(ctx context.Context, a *auth.Access, gate *parseGate) measurer {
	if !g.limits.MeasureSamples || g.read == nil {
		return nil
	}
	return func(ws []querylimits.Window) (map[countKey]seriesCounts, error) {
		gate.yield()
		return g.measureWindows(ctx, a, ws)
	}
}

// measureWindows counts the samples of ws, each window once.
func (g *Gateway) measureWindows(ctx context.Context, a *auth.Access, ws []querylimits.Window) (map[countKey]seriesCounts, error) {
	got := make(map[countKey]seriesCounts, len(ws))
	err := g.counting(ctx, a, func(ctx context.Context) error {
		listed := maxListed
		for _, w := range ws {
			k := keyOf(w)
			if _, ok := got[k]; ok {
				continue
			}
			c, err := g.countSamples(ctx, a, w, &listed)
			if err != nil {
				return err
			}
			got[k] = c
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return got, nil
}

// counting runs count, the counts of one query, in the team's one count at a time and one of its read slots, and for
// a caller with cost limits what its queries are expected to cost held (ratelimit.Gate.Reserve), and waits for it
// measureTimeout at most. The counts go on when the client leaves or the wait ends, and hold all three until the count
// in flight has its answer: VictoriaMetrics computes a query to its end whether anyone reads the answer or not, and
// counts cut short left it computing for 35 s past the gateway's wait while the team's slots were free again, eight
// such filled its slots, and a burst of queries refused on their counts charged their team 65 times its budget, none
// of it held (an attacker's review). No count begins once the wait has ended (ask); the one in flight is cut at
// lateCountWaits times measureTimeout, and asks VictoriaMetrics to stop at measureTimeout.
func (g *Gateway) counting(ctx context.Context, a *auth.Access, count func(ctx context.Context) error) error {
	u := unitOf(a.Tenant, a.Enforcer)
	release, err := g.countSlot(ctx, u, a)
	if err != nil {
		return err
	}
	unreserve := nothingReserved
	if g.costs != nil && g.costs.Costed(a) {
		if unreserve, err = g.costs.Reserve(ctx, a, g.reads.queue); err != nil {
			release()
			return err
		}
	}
	h, err := g.reads.acquire(ctx, u)
	if err != nil {
		unreserve()
		release()
		return err
	}
	ended := new(atomic.Bool)
	// The counts are sent with the read slot taken, not with its context: the balancer is told their unit (memUnitOf).
	cctx := context.WithValue(withMemUnit(context.WithoutCancel(ctx), u), countEndedKey{}, ended)
	cctx, cancel := context.WithTimeout(cctx, lateCountWaits*measureTimeout)
	done := make(chan error, 1)
	go func() {
		err := countRecovered(cctx, count)
		cancel()
		g.reads.release(h)
		unreserve() // after the counts' charges (ask)
		release()
		done <- err // once all is given back: the query that waits for it takes the same slots next
	}()
	timer := time.NewTimer(measureTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		ended.Store(true)
		return context.DeadlineExceeded
	case <-ctx.Done():
		ended.Store(true)
		return ctx.Err()
	}
}

// countRecovered runs count on a goroutine of its own, where a panic would end the process: logged as the request's
// handler logs one, and the count's error (503).
func countRecovered(ctx context.Context, count func(ctx context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			panicsTotal.Inc()
			slog.Error("panic while counting what a query reads", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error while counting; it has been logged")
		}
	}()
	return count(ctx)
}

// lateCountWaits bounds a count's wait for its answer past the end of the gateway's, in measureTimeouts.
const lateCountWaits = 6

// countEndedKey is the context key of a count whose wait has ended (counting): its next ask is not sent.
type countEndedKey struct{}

// errCountEnded is ask's error for a count asked after the wait for its query's counts ended.
var errCountEnded = errors.New("the wait for the counts ended")

func nothingReserved() {}

// countSlot takes the unit's one count at a time, waiting as long as a read waits for the read backends: the read
// slots alone do not bound a team's counts where the backends' capacity is not known, and its parse slots are given
// back meanwhile.
func (g *Gateway) countSlot(ctx context.Context, u unit, a *auth.Access) (func(), error) {
	ts := g.conc.ref(u)
	select {
	case ts.count <- struct{}{}:
	default:
		timer := time.NewTimer(g.reads.queue)
		defer timer.Stop()
		select {
		case ts.count <- struct{}{}:
		case <-timer.C:
			g.conc.unref(ts)
			rejectedCount.Inc()
			return nil, &overloadError{scope: "count", tenant: u.tenant, restriction: a.Enforcer, limit: 1, queue: g.reads.queue}
		case <-ctx.Done():
			g.conc.unref(ts)
			return nil, errGoneInQueue
		}
	}
	return func() {
		<-ts.count
		g.conc.unref(ts)
	}, nil
}

// chargeCount charges a caller with cost limits a count of its samples.
func (g *Gateway) chargeCount(a *auth.Access, series int64, took time.Duration) {
	if g.costs != nil && g.costs.Costed(a) {
		g.costs.Spend(a, max(series, 0), float64(took)/float64(time.Millisecond))
	}
}

// probeQuery is the query that counts what w reads of each series, in its two parts, and the time to ask it at
// (seconds). VictoriaMetrics may align a range's points to its step or not, and evaluates an instant query at its own
// now when the request has no time: the windows are counted at the step's whole times from a step before w's first
// point to a step after its last (windows), and each sample those cover is added once (covered). Each sample the
// query's windows read, at any points within that span, is read by at most one of these windows fewer, so a series'
// two parts together are at least what the query reads of it.
//
// An instant evaluation (one point, whose time may be VictoriaMetrics' own now, within a step of w's) reads each
// sample of its one window once: the samples covered alone count it (windows is "").
func probeQuery(w querylimits.Window) (windows, covered, at string) {
	span := w.To - w.From + 2*w.Step
	if w.To > w.From {
		windows = fmt.Sprintf("sum_over_time(count_over_time(%s[%dms])[%dms:%dms])", w.Selector, w.Window, span, w.Step)
	}
	covered = fmt.Sprintf("count_over_time(%s[%dms])", w.Selector, span+w.Window)
	return windows, covered, strconv.FormatFloat(float64(w.To+w.Step)/1e3, 'f', 3, 64)
}

// countSamples asks the read backends, in a's tenant through its restriction, what w reads of each series of its
// selector: the two parts of probeQuery, series by series while *listed allows.
func (g *Gateway) countSamples(ctx context.Context, a *auth.Access, w querylimits.Window, listed *int) (seriesCounts, error) {
	windows, covered, at := probeQuery(w)
	c := seriesCounts{bySeries: map[string]int64{}}
	for _, q := range [2]string{windows, covered} {
		if q == "" {
			continue
		}
		if err := g.count(ctx, a, q, at, &c, listed); err != nil {
			return c, err
		}
	}
	return c, nil
}

// countError is a count the read backends refused (4xx): the query is refused as it was before it was counted.
// Any other failure is theirs, and the client may send the query again.
type countError struct{ error }

// countFailed is the error of a query whose counts failed with err: the team's full slots (429) and a client gone as
// they are; a count the backends refused is the query's, 400 with refusedMsg of their error; any other failure (a
// timeout, a 5xx, no connection) is theirs, 503 with failedMsg of it, to be sent again.
func countFailed(err error, refusedMsg, failedMsg func(error) string) error {
	var refused countError
	switch {
	case httperr.Status(err) == http.StatusTooManyRequests || errors.Is(err, errGoneInQueue):
		return err
	case errors.Is(err, context.Canceled):
		return errGoneInQueue // the client went away while the gateway counted
	case errors.As(err, &refused):
		return httperr.New(http.StatusBadRequest, refusedMsg(refused.error))
	}
	return httperr.New(http.StatusServiceUnavailable, failedMsg(err))
}

// maxCountAnswer bounds the answer of a count read series by series (about 30,000 series), and maxListed the series
// one query's counts list in all (what the gateway holds of them, a key of 16 bytes and a count each): past either, a
// count is asked again as its most.
var (
	maxCountAnswer int64 = 4 << 20
	maxListed            = 100_000
)

// count asks the read backends, in a's tenant through its restriction, the count q at time at, and adds it to c:
// series by series, taken from *listed, or, for an answer past maxCountAnswer, more series than *listed or a count
// VictoriaMetrics refuses series by series, its most to c.rest.
func (g *Gateway) count(ctx context.Context, a *auth.Access, q, at string, c *seriesCounts, listed *int) error {
	ans, err := g.ask(ctx, a, q, at, maxCountAnswer)
	if err == nil && len(ans) > *listed {
		err = errLongAnswer
	}
	var refused countError
	if err == errLongAnswer || errors.As(err, &refused) {
		// Too long to list, or refused series by series: count_over_time drops the metric name, so the series of
		// several metrics that share their other labels are duplicates to VictoriaMetrics (422), where the query's
		// function (quantile_over_time keeps the name) is not; their most is one number (a review).
		if ans, err = g.ask(ctx, a, "max("+q+")", at, 64<<10); err == nil {
			for _, r := range ans {
				c.rest = min(c.rest, 1<<62-r.n) + r.n // each at most 2^62
			}
		}
		return err
	}
	if err != nil {
		return err
	}
	*listed -= len(ans)
	for _, r := range ans {
		c.bySeries[r.key] = min(c.bySeries[r.key], 1<<62-r.n) + r.n
	}
	return nil
}

// errLongAnswer is an answer past the bound ask was given.
var errLongAnswer = errors.New("the answer is too long")

// counted is one series of a count's answer: its labels, canonical, and its number.
type counted struct {
	key string
	n   int64
}

// ask sends the instant query q at time at to the read backends, in a's tenant through its restriction, and reads its
// answer's series, of at most limit bytes (errLongAnswer past it). An at of start:end:step asks a range query, each
// series' values added up, its answer bounded by limit and 48 bytes a point; one followed by "&" and encoded args
// sends its max_lookback and lookback_delta too.
func (g *Gateway) ask(ctx context.Context, a *auth.Access, q, at string, limit int64) ([]counted, error) {
	at, extra, _ := strings.Cut(at, "&")
	lookback, _ := url.ParseQuery(extra)
	args := url.Values{"query": {q}, "time": {at}}
	path := "/api/v1/query"
	if start, rest, ranged := strings.Cut(at, ":"); ranged {
		end, step, _ := strings.Cut(rest, ":")
		args = url.Values{"query": {q}, "start": {start}, "end": {end}, "step": {step}}
		lo, _ := strconv.ParseFloat(start, 64)
		hi, _ := strconv.ParseFloat(end, 64)
		st, _ := strconv.ParseFloat(step, 64)
		if points := (hi - lo) / st; points >= 0 && points < 1e9 {
			limit += int64(points+1) * 48
		}
		path = "/api/v1/query_range"
	}
	rt, err := route.Lookup(path)
	if err != nil {
		return nil, err
	}
	// The selector is the query's as it goes upstream, restricted already (rewritten again, a selector of several
	// filters would be counted once per filter); the token's args go with it, as with every read, so that
	// VictoriaMetrics enforces them a second time.
	if ended, _ := ctx.Value(countEndedKey{}).(*atomic.Bool); ended != nil && ended.Load() {
		return nil, errCountEnded
	}
	// VictoriaMetrics is asked to stop at the gateway's wait (it looks at the time now and then, not in every loop).
	for _, k := range [...]string{"max_lookback", "lookback_delta", "step"} {
		if v := lookback.Get(k); v != "" && (k != "step" || path == "/api/v1/query") {
			args.Set(k, v)
		}
	}
	args.Set("nocache", "1")
	args.Set("timeout", measureTimeout.String())
	a.Enforcer.EnforceArgs(args)
	u := &url.URL{RawQuery: args.Encode()}
	u.Path, u.RawPath = rt.UpstreamPath(g.cluster, a.Tenant)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.URL = u
	req.Header.Set("User-Agent", "vmgateway")
	start := time.Now()
	resp, err := g.read.rt.RoundTrip(req)
	if err != nil {
		g.chargeCount(a, 0, time.Since(start))
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
		Stats struct {
			SeriesFetched     json.Number `json:"seriesFetched"`
			ExecutionTimeMsec json.Number `json:"executionTimeMsec"`
		} `json:"stats"`
	}
	long := int64(len(body)) > limit
	jerr := errLongAnswer
	if !long {
		jerr = json.Unmarshal(body, &ans)
	}
	// The count is the team's read, as the query's would be: a caller with cost limits is charged it (the time it took
	// here where VictoriaMetrics does not say).
	series, _ := ans.Stats.SeriesFetched.Int64()
	took := time.Since(start)
	if ms, err := ans.Stats.ExecutionTimeMsec.Float64(); err == nil && ms >= 0 {
		took = time.Duration(ms * float64(time.Millisecond))
	}
	g.chargeCount(a, series, took)
	switch {
	case err != nil:
		return nil, err
	case long && resp.StatusCode == http.StatusOK:
		return nil, errLongAnswer
	case jerr != nil || resp.StatusCode != http.StatusOK || ans.Status != "success":
		msg := ans.Error
		if msg == "" {
			msg = fmt.Sprintf("status %d", resp.StatusCode)
		}
		err := fmt.Errorf("the read backend did not count them: %s", msg)
		if (resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity) && !strings.Contains(msg, "timeout exceeded") {
			// VictoriaMetrics' refusals of a query; any other status (a proxy's 429, 401, 408) is not the query's, nor is
			// its own timeout, which it answers 422 too (an attacker's review: the count's timeout, or a
			// -search.maxQueryDuration below it, refused the query for good, 400, and the count was asked again as its
			// most, as heavy).
			return nil, countError{err}
		}
		return nil, err
	}
	out := make([]counted, 0, len(ans.Data.Result))
	for _, r := range ans.Data.Result {
		values := r.Values
		if args.Has("time") {
			values = [][2]any{r.Value}
		}
		n := 0.0
		for _, v := range values {
			s, _ := v[1].(string)
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || !(f >= 0) {
				// NaN too, which would count as less than nothing.
				return nil, fmt.Errorf("the read backend counted %q", s)
			}
			n += f
		}
		out = append(out, counted{labelsKey(r.Metric), int64(min(n, 1<<62))})
	}
	return out, nil
}

// labelsKey is a series' labels as 16 bytes of the SHA-256 of them, the same whatever their order: what the gateway
// holds of a count's series does not grow with their labels, and two series that share a key (which no one can
// choose) are only counted together, more than either.
func labelsKey(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	h := sha256.New()
	for _, k := range keys {
		_, _ = io.WriteString(h, strconv.Quote(k))
		_, _ = io.WriteString(h, "=")
		_, _ = io.WriteString(h, strconv.Quote(m[k]))
		_, _ = io.WriteString(h, ",")
	}
	return string(h.Sum(nil)[:16])
}
