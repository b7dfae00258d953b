package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// The functions that sort or count a window over raw samples (quantile_over_time, distinct_over_time, ...) cost
// VictoriaMetrics per sample of each window, and how many samples a series holds only the data knows: the limits
// assume one per -search.minSampleInterval (1 s), which kept a team's own 1 s samples from stopping VictoriaMetrics, but
// refused the day-long p99 panels of every team that scrapes at 15 s (a legitimate user's review, where VictoriaMetrics
// answered them in seconds). So a query refused only for its windows over raw samples is measured: the gateway asks
// the read backends, in the team's tenant and through the team's restriction, how many samples its windows read, and
// judges it on that (querylimits.Range.Measured).
//
// A window's count is what its function reads per series: `max(sum_over_time(count_over_time(sel[w])[range:step]))`,
// the most samples one series has in all the windows the query evaluates, counted so that it is never less whatever the
// alignment of the points (probeQuery). count_over_time reads each sample once and sums nothing, so the count costs a
// read of the data, not the sort the limit is for. Only a query that would pass at one sample a minute
// (measureSparsest) is measured, at most measureMax windows of it, one query's at a time per team, in one of the
// team's read slots, and a caller with cost limits is charged the count: a query refused for being costly at any
// density costs the backends nothing more, and a refused one costs them what the team could read with
// count_over_time itself. Counts are not kept: a team that had a window counted over no data, then wrote a day of
// samples a second into it, had its costly query admitted on the count kept (an attacker's review: 27 CPU-seconds of
// v1.151 for one series), and VictoriaMetrics' own cache of rollup results is left out of them (nocache) for the
// same reason.

const (
	// measureSparsest: a query refused even at one sample a minute (vmagent's and Prometheus' default scrape
	// interval) is not measured.
	measureSparsest = time.Minute
	// measureMax is the most windows measured for one query.
	measureMax = 8
	// measureTimeout bounds the measuring of one query.
	measureTimeout = 10 * time.Second
	// maxProbeLen is VictoriaMetrics' default -search.maxQueryLen: a count longer than that is asked in its two parts.
	maxProbeLen = 16 << 10
)

var (
	measuredAdmitted = metrics.NewCounter(`vmgateway_query_samples_measured_total{result="admitted"}`)
	measuredRefused  = metrics.NewCounter(`vmgateway_query_samples_measured_total{result="refused"}`)
	measuredFailed   = metrics.NewCounter(`vmgateway_query_samples_measured_total{result="failed"}`)
)

// measurer counts the samples of a query's windows over raw samples for one request: nil when the gateway does not
// measure (-search.measureSamples=false).
type measurer func(ws []querylimits.Window) (func(querylimits.Window) (int64, bool), error)

// measurerFor is the measurer of a's request, or nil. The request's parse slot, if it holds one, is given back
// while it counts: the team's other new queries would wait for it.
func (g *Gateway) measurerFor(ctx context.Context, a *auth.Access, gate *parseGate) measurer {
	if !g.limits.MeasureSamples || g.read == nil {
		return nil
	}
	return func(ws []querylimits.Window) (func(querylimits.Window) (int64, bool), error) {
		gate.yield()
		return g.measureWindows(ctx, a, a.Tenant, ws)
	}
}

// measureWindows counts the samples of ws, in one read slot of the team.
func (g *Gateway) measureWindows(ctx context.Context, a *auth.Access, t tenant.ID, ws []querylimits.Window) (func(querylimits.Window) (int64, bool), error) {
	u := unitOf(t, a.Enforcer)
	release, err := g.countSlot(ctx, u, a)
	if err != nil {
		return nil, err
	}
	defer release()
	h, err := g.reads.acquire(ctx, u)
	if err != nil {
		return nil, err
	}
	defer g.reads.release(h)
	ctx, cancel := context.WithTimeout(ctx, measureTimeout)
	defer cancel()
	got := make(map[querylimits.Window]int64, len(ws))
	for _, w := range ws {
		n, err := g.countSamples(ctx, a, t, w)
		if err != nil {
			return nil, err
		}
		got[w] = n
	}
	return func(w querylimits.Window) (int64, bool) {
		n, ok := got[w]
		return n, ok
	}, nil
}

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

// probeQuery is the query that counts what w reads per series, in its two parts, and the time to ask it at (seconds).
// VictoriaMetrics may align a range's points to its step or not, and evaluates an instant query at its own now when
// the request has no time: the windows are counted at the step's whole times from a step before w's first point to a
// step after its last, and the samples those cover are added. Each sample the query's windows read, at any points
// within that span, is read by at most one of these windows fewer (or vector(0): a part may have no window with a
// sample), so the count is at least what the query reads.
func probeQuery(w querylimits.Window) (windows, covered, at string) {
	span := w.To - w.From + 2*w.Step
	windows = fmt.Sprintf("(max(sum_over_time(count_over_time(%s[%dms])[%dms:%dms])) or vector(0))", w.Selector, w.Window, span, w.Step)
	covered = fmt.Sprintf("(max(count_over_time(%s[%dms])) or vector(0))", w.Selector, span+w.Window)
	return windows, covered, strconv.FormatFloat(float64(w.To+w.Step)/1e3, 'f', 3, 64)
}

// countSamples asks the read backends, in tenant t through a's restriction, how many samples the series of w's
// selector that has the most holds in all of w's windows together: in one query, or in its two parts where one would
// be longer than VictoriaMetrics reads.
func (g *Gateway) countSamples(ctx context.Context, a *auth.Access, t tenant.ID, w querylimits.Window) (int64, error) {
	windows, covered, at := probeQuery(w)
	if q := windows + " + " + covered; len(q) <= maxProbeLen {
		return g.count(ctx, a, t, q, at)
	}
	n, err := g.count(ctx, a, t, windows, at)
	if err != nil {
		return 0, err
	}
	m, err := g.count(ctx, a, t, covered, at)
	return min(n, 1<<62-m) + m, err // each at most 2^62
}

// countError is a count the read backends refused (4xx): the query is refused as it was before it was counted.
// Any other failure is theirs, and the client may send the query again.
type countError struct{ error }

// count asks the read backends, in tenant t through a's restriction, the count q at time at.
func (g *Gateway) count(ctx context.Context, a *auth.Access, t tenant.ID, q, at string) (int64, error) {
	rt, err := route.Lookup("/api/v1/query")
	if err != nil {
		return 0, err
	}
	// The selector is the query's as it goes upstream, restricted already (rewritten again, a selector of several
	// filters would be counted once per filter); the token's args go with it, as with every read, so that
	// VictoriaMetrics enforces them a second time.
	args := url.Values{"query": {q}, "time": {at}, "nocache": {"1"}}
	a.Enforcer.EnforceArgs(args)
	u := &url.URL{RawQuery: args.Encode()}
	u.Path, u.RawPath = rt.UpstreamPath(g.cluster, t)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.URL = u
	req.Header.Set("User-Agent", "vmgateway")
	start := time.Now()
	resp, err := g.read.rt.RoundTrip(req)
	if err != nil {
		g.chargeCount(a, 0, time.Since(start))
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
		Stats struct {
			SeriesFetched     json.Number `json:"seriesFetched"`
			ExecutionTimeMsec json.Number `json:"executionTimeMsec"`
		} `json:"stats"`
	}
	jerr := json.Unmarshal(body, &ans)
	// The count is the team's read, as the query's would be: a caller with cost limits is charged it (the time it took
	// here where VictoriaMetrics does not say).
	series, _ := ans.Stats.SeriesFetched.Int64()
	took := time.Since(start)
	if ms, err := ans.Stats.ExecutionTimeMsec.Float64(); err == nil && ms >= 0 {
		took = time.Duration(ms * float64(time.Millisecond))
	}
	g.chargeCount(a, series, took)
	if err != nil {
		return 0, err
	}
	if jerr != nil || resp.StatusCode != http.StatusOK || ans.Status != "success" {
		msg := ans.Error
		if msg == "" {
			msg = fmt.Sprintf("status %d", resp.StatusCode)
		}
		err := fmt.Errorf("the read backend did not count them: %s", msg)
		if resp.StatusCode/100 == 4 {
			return 0, countError{err}
		}
		return 0, err
	}
	if len(ans.Data.Result) == 0 {
		return 0, nil // no series
	}
	s, _ := ans.Data.Result[0].Value[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0) {
		// NaN too, which would count as less than nothing.
		return 0, fmt.Errorf("the read backend counted %q", s)
	}
	return int64(min(f, 1<<62)), nil
}
