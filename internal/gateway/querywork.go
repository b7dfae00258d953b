package gateway

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
)

// -search.maxSubqueryWindowPoints bounds what a query's rollups read of each series, and VictoriaMetrics bounds the
// series a query selects, but neither bounds the product: `count(max_over_time(m[3h:1s]))` at step=1s over 3 hours is
// 5.8×10^7 points a series, within the first, and over a team's 2,000 series it took v1.151 74.5 s of CPU, past its
// 30 s -search.maxQueryDuration, which does not stop a rollup midway (an attacker's review; three at once, the team's
// share of the read slots, ran 215 s each and slowed every other team's queries five times). -search.maxQueryWindowPoints
// bounds that product (querylimits.Work): each subquery's points times the points of its window, times the series
// its query makes, bounded from the series its selectors read (an aggregation by nothing makes one: a 30-day SLO panel
// over a metric of 10,000 series rolls up one series of each side of its ratio); and each window over raw samples of
// a function that reads its every sample, the samples all its series hold; each point and sample weighed by what it
// costs the function on VictoriaMetrics. The read backends count those series and samples, in the team's tenant and
// through its restriction, as the fan-out counts are asked (fanout.go): one count of each selector over the span the
// query reads it, which costs them a read of what the query reads of it. A query is counted only where its work per
// series is past uncountedWork and its selectors could together select enough series to pass the bound: a read
// backend selects at most its -search.maxUniqueTimeseries of each (SetBackendMaxSeries).
//
// The same counts bound what a query of many arms holds at once (-search.maxQueryPoints, querylimits.Load.Held): no
// limit of VictoriaMetrics adds up its arms, and 300 arms of one selector took v1.151 to 6 GB (an attacker's review).
// Only a query of more than querylimits.UncountedArms arms is counted, on up to -search.maxQuerySelectors selectors,
// which bounds the arms of any query; its numbers need no count and are judged at once.

var (
	workAdmitted = metrics.NewCounter(`vmgateway_query_work_measured_total{result="admitted"}`)
	workRefused  = metrics.NewCounter(`vmgateway_query_work_measured_total{result="refused"}`)
	workFailed   = metrics.NewCounter(`vmgateway_query_work_measured_total{result="failed"}`)
	heldRefused  = metrics.NewCounter(`vmgateway_query_work_measured_total{result="refused_points"}`)
)

// workMaxCounts is the most counts asked for one query: its selectors under subqueries and its weighed windows over
// raw samples, each over the span it is read.
const workMaxCounts = 2 * measureMax

// uncountedWork is the most points a query's rollups may read of each series, weighed as over all of them (a window over
// raw samples at one sample per interval), for it not to be counted: 10^5, as many as a rollup over a window of 20
// samples at the 11,000 points a range query may ask (-search.maxPointsPerTimeseries), some 0.1 ms of v1.151's CPU a
// series. Past the bound, such a query selects over 10^5 series, whose plain range
// queries cost VictoriaMetrics as much, and which the gateway does not count either; a dashboard's subquery,
// `max_over_time(rate(x[5m])[1h:1m])` over 3 hours at 15 s (2.2×10^4), is not counted (an attacker's review: counted,
// a dashboard's twelve such panels waited for each other's counts in the team's one count slot).
const uncountedWork = 1e5

// checkQueryWork refuses a query whose rollups would read more than l.MaxQueryWindowPoints points over all the series
// they read, or whose many arms would make series of more than l.MaxQueryPoints points in all, judged on the query as
// it goes upstream, as count counts its series (nil: not counted).
func checkQueryWork(rt route.Route, q, form url.Values, parsed *enforce.Parsed, l Limits, now time.Time, count fanCounter) error {
	if !rt.Evaluates() || (l.MaxQueryWindowPoints <= 0 && l.MaxQueryPoints <= 0 && l.MaxQuerySelectors <= 0) {
		return nil
	}
	instant := rt.API == "query"
	for _, vs := range [2]url.Values{form, q} {
		for _, text := range vs["query"] {
			// What the walks read of the request is read here: the counts run on apart from it (counting), and the
			// request's parse is reused once it ends. The range is read only for a query with what they count.
			wk, err := querylimits.PrepareWork(text, parsed, instant, func() (int64, int64, int64, error) {
				return evalSpan(rt.API, q, form, now)
			}, l.MinSampleInterval.Milliseconds(), now.UnixMilli())
			if wk == nil {
				if err != nil {
					return err
				}
				continue
			}
			if n := wk.Selectors(); l.MaxQuerySelectors > 0 && n > l.MaxQuerySelectors {
				return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query has %d selectors, each of which VictoriaMetrics "+
					"reads apart and holds at once; at most %d are accepted (-search.maxQuerySelectors): send the arms as queries "+
					"of their own, or select several series with one selector (a regexp)", n, l.MaxQuerySelectors))
			}
			if l.MaxQueryPoints > 0 && wk.Numbers() {
				// The series of no selector, numbers and calls such as time(), need no count.
				if none, err := wk.Total(&noneEach); err != nil || none.Held > float64(l.MaxQueryPoints) {
					if err != nil {
						return err
					}
					heldRefused.Inc()
					return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query's numbers and calls of no selector would "+
						"make series of %.3g points in all, a series of each at every point, which VictoriaMetrics holds at once; "+
						"at most %d are accepted (%s): use fewer of them, a coarser step or a shorter range", none.Held, l.MaxQueryPoints, heldFlag))
				}
			}
			if count == nil {
				continue // nothing can be counted
			}
			// Over one series of each selector, at one sample per interval.
			per, err := wk.Total(&oneEach)
			if err != nil {
				return err
			}
			j := judged{work: l.MaxQueryWindowPoints > 0 && per.Work > uncountedWork, held: l.MaxQueryPoints > 0 && wk.ManyArms()}
			if !j.work && !j.held {
				continue
			}
			// At the most series the read backends select of each selector: most queries are within the bounds so. The
			// counts it would ask are listed: a query of more than the gateway asks is refused before any.
			most := math.Inf(1)
			if l.maxSeries > 0 {
				most = float64(l.maxSeries)
			}
			counts := map[string]bool{}
			bound, err := wk.Total(&querylimits.Counts{
				Series: func(sel string, from, to int64) (float64, error) {
					if q, at, ok := seriesCount(sel, from, to); ok {
						counts[at+" "+q] = true
					}
					return most, nil
				},
				Samples: func(w querylimits.Window) (float64, error) {
					if j.work { // a query judged for its arms alone asks no samples
						q, at := samplesCount(w)
						counts[at+" "+q] = true
					}
					return math.Inf(1), nil
				},
			})
			if err != nil {
				return err
			}
			j.work = j.work && bound.Work > float64(l.MaxQueryWindowPoints)
			j.held = j.held && bound.Held > float64(l.MaxQueryPoints)
			// A query counted for its arms alone has at most -search.maxQuerySelectors of them, each counted once: a
			// count reads what its arm reads, once more (a token's three filter branches make a dashboard's six
			// selectors 18 where the gateway copies each for them, on a backend that does not read `or` in braces).
			asks := workMaxCounts
			if !j.work && l.MaxQuerySelectors > asks {
				asks = l.MaxQuerySelectors
			}
			switch {
			case !j.work && !j.held:
				continue
			case len(counts) > asks:
				how := "split the query into queries of fewer arms"
				if j.work {
					how = "split the query, or aggregate before the subqueries"
				}
				return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query has %d selectors, at the spans it reads them, whose "+
					"series the gateway would count (%s); at most %d are counted for one query: %s", len(counts), j.flags(), asks, how))
			}
			if err := judgeQueryWork(wk, j, l, count); err != nil {
				return err
			}
		}
	}
	return nil
}

// judged says which of the limits a query is counted for: its rollups' work (-search.maxQueryWindowPoints), the
// points its many arms hold (-search.maxQueryPoints), or both.
type judged struct{ work, held bool }

func (j judged) flags() string {
	switch {
	case j.work && j.held:
		return workFlag + " and " + heldFlag
	case j.held:
		return heldFlag
	}
	return workFlag
}

const (
	workFlag = "-search.maxQueryWindowPoints"
	heldFlag = "-search.maxQueryPoints"
)

// oneEach counts one series of each selector, and the samples assumed in each window; noneEach no series at all.
var (
	oneEach = querylimits.Counts{
		Series:  func(string, int64, int64) (float64, error) { return 1, nil },
		Samples: func(querylimits.Window) (float64, error) { return math.Inf(1), nil },
	}
	noneEach = querylimits.Counts{
		Series:  func(string, int64, int64) (float64, error) { return 0, nil },
		Samples: func(querylimits.Window) (float64, error) { return 0, nil },
	}
)

// seriesCount is the count of the series of the selector sel that have samples in [from, to] (ms), and the time to ask
// it at; not ok for a span before 1970, where nothing is stored (a span back past it is counted from there).
func seriesCount(sel string, from, to int64) (q, at string, ok bool) {
	if to < 0 {
		return "", "", false
	}
	from = max(from, 0)
	return fmt.Sprintf("count(last_over_time(%s[%dms]))", sel, to-from+1), vmSeconds(to), true
}

// samplesCount is the count of the samples the window w may read of all its series, at most its span's each (probeQuery).
func samplesCount(w querylimits.Window) (q, at string) {
	_, covered, at := probeQuery(w)
	return "sum(" + covered + ")", at
}

// judgeQueryWork counts the load of the query wk over the series its selectors read, as count asks the read backends,
// and refuses it past l.MaxQueryWindowPoints or l.MaxQueryPoints, each where j says it is counted for it. Its windows
// over raw samples are taken first to hold a sample per l.MinSampleInterval; where that is past the bound, the samples
// their series hold are counted: each window's samples over its span, each read at most by as many of the window's
// points as cover it (win/step+1), an instant count of the team's own data that holds no subquery (counted as a
// subquery, it took the memory the query would).
func judgeQueryWork(wk *querylimits.Work, j judged, l Limits, count fanCounter) error {
	var load querylimits.Load
	err := count(func(ask func(q, at string) (float64, error)) error {
		raw, counted := false, false
		c := &querylimits.Counts{
			Series: func(sel string, from, to int64) (float64, error) {
				q, at, ok := seriesCount(sel, from, to)
				if !ok {
					return 0, nil
				}
				return ask(q, at)
			},
			Samples: func(w querylimits.Window) (float64, error) {
				if raw = true; !counted || !j.work {
					return math.Inf(1), nil // at one sample per interval, as assumed
				}
				n, err := ask(samplesCount(w))
				points := (w.To-w.From)/w.Step + 1
				return n * float64(min(points, w.Window/w.Step+1)), err
			},
		}
		var err error
		if load, err = wk.Total(c); err != nil || !j.work || !raw || load.Work <= float64(l.MaxQueryWindowPoints) {
			return err
		}
		counted = true
		load, err = wk.Total(c)
		return err
	})
	switch {
	case err != nil:
		workFailed.Inc()
		return countFailed(err, func(refused error) string {
			return fmt.Sprintf("the gateway could not count the series the query reads (%s): %s", j.flags(), refused)
		}, func(err error) string {
			return fmt.Sprintf("the read backends did not count the series the query reads (%s): %s; send the query again", j.flags(), err)
		})
	case j.work && load.Work > float64(l.MaxQueryWindowPoints):
		workRefused.Inc()
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the rollup functions of the query would read %.3g points over all the "+
			"series they read (over each subquery, the points it is evaluated at times the points of its window, times the series "+
			"its query makes, as the read backends counted the series of its selectors; over raw samples, for the functions that "+
			"read every sample of a window, the samples its series hold there, as counted; each weighed by what it costs the "+
			"function, as over unsorted values for those that sort); at most %d are accepted (%s): aggregate before the "+
			"subquery, select fewer series, or use coarser steps, shorter windows or a shorter range", load.Work, l.MaxQueryWindowPoints, workFlag))
	case j.held && load.Held > float64(l.MaxQueryPoints):
		heldRefused.Inc()
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query's arms would make series of %.3g points in all (each "+
			"selector's series, as the read backends counted them, at the points each is evaluated at and 128 more each for "+
			"its labels, what its rollups, subqueries and phis make of them, and its numbers, added up over every arm of its "+
			"unions and operators, which VictoriaMetrics holds at once); at most %d are accepted for a query of more than %d "+
			"arms (%s): send the arms as queries of their own, select several series with one selector (a regexp), ask "+
			"fewer phis, or use a coarser step or a shorter range", load.Held, l.MaxQueryPoints, querylimits.UncountedArms, heldFlag))
	}
	workAdmitted.Inc()
	return nil
}
