package querylimits

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// The time and duration args are read as VictoriaMetrics reads them (lib/httputil GetTime and GetDuration): a
// value the gateway cannot read is refused rather than guessed, since VictoriaMetrics might read it.

var (
	// Prometheus' clients send its min and max times for "no bound" (prometheus/client_golang#614).
	promMinTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC().Format(time.RFC3339Nano)
	promMaxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC().Format(time.RFC3339Nano)
)

// zoneEast and zoneWest are the farthest any time zone is ahead of UTC (Kiribati, +14) and behind it (-12), in
// milliseconds: a time without a zone is that much earlier or later than read as UTC.
const (
	zoneEast = 14 * 3600 * 1000
	zoneWest = 12 * 3600 * 1000
)

// partialTimeLayouts are the layouts VictoriaMetrics reads besides numbers and durations: the first with a zone, the
// rest without (parseTime).
var partialTimeLayouts = []string{
	time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02T15", "2006-01-02", "2006-01", "2006",
}

// maxSeconds is the largest number current VictoriaMetrics reads as Unix seconds (lib/timeutil): past it a number
// is milliseconds, then microseconds, then nanoseconds, by the size of its integer part whatever its form
// (1700000000000.0 and 1.7e12 are milliseconds there).
const maxSeconds = math.MaxInt64 / 1_000_000_000

// parseTime reads a time arg in milliseconds: Unix seconds, RFC3339 (whole or partial), now, or a duration
// before now (1h, -1h, now-1h). Some numbers read differently across VictoriaMetrics versions (v1.79 reads
// 2026 and 1700000000000 as seconds, current versions as a year and as milliseconds): lo and hi are the earliest
// and the latest reading, so that neither end of a range is under-counted.
func parseTimeRange(s string, now int64) (lo, hi int64, err error) {
	if n, ok := enforce.WholeNumber(s); ok && n <= maxSeconds && len(s) != 4 {
		// Whole Unix seconds, what Grafana sends: one reading in every version.
		return n * 1000, n * 1000, nil
	}
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		if secs, err := strconv.ParseFloat(rest, 64); err == nil && !math.IsNaN(secs) && !math.IsInf(secs, 0) && secs >= 0 {
			// A negative number: current releases read a leading minus as a duration before now (-5 is 5s ago),
			// v1.79 as seconds before 1970, which is 1970.
			return 0, atLeastZero(sub(now, clampF(secs*1e3))), nil
		}
	}
	secs, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil {
		t, zoneless, err := parseTime(s, now)
		if zoneless {
			return atLeastZero(t - zoneEast), clamp(t + zoneWest), err
		}
		return t, t, err
	}
	if math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, 0, errors.New("not a time")
	}
	lo = atLeastZero(clampF(secs * 1e3))
	hi = lo
	if math.Abs(secs*1e3) >= math.MaxInt64 {
		// v1.79 converts the milliseconds to int64 unchecked: out of its range that is its least value on amd64,
		// read as 1970 (found by TestArgsAsVictoriaMetricsReadsThem: start=1e19 read from 1970, not 2286).
		lo = 0
	}
	// Current releases: the unit by the integer part's size.
	alt := lo
	switch whole := math.Trunc(math.Abs(secs)); {
	case whole <= maxSeconds:
	case whole <= math.MaxInt64/1_000_000:
		alt = atLeastZero(clampF(secs))
	case whole <= math.MaxInt64/1_000:
		alt = atLeastZero(clampF(secs / 1e3))
	default:
		alt = atLeastZero(clampF(secs / 1e6))
	}
	lo, hi = min(lo, alt), max(hi, alt)
	// Releases between: whole numbers of 12 digits and more were milliseconds, 15 microseconds, 18 nanoseconds.
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		alt := lo
		switch {
		case len(s) == 4:
			if err := yearReadable(int(n)); err != nil {
				return 0, 0, err
			}
			alt = time.Date(int(n), 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() // in UTC whatever the backend's zone
		case n >= 1e17:
			alt = n / 1e6 // nanoseconds
		case n >= 1e14:
			alt = n / 1e3 // microseconds
		case n >= 1e11:
			alt = n // milliseconds
		}
		lo, hi = min(lo, alt), max(hi, alt)
	}
	return lo, hi, nil
}

// parseTime also says whether s is a time without a zone (2026-12-07T18:00), which current releases read in their own
// time zone (timeutil.ParseTimeAt): the gateway, which does not know it, read it as UTC, and a review put a range
// 7 hours past max_query_lookback, and a fan-out count 14 hours beside the query's window, through a v1.151 running in
// UTC+14. parseTimeRange widens such a time by every zone's offset.
func parseTime(s string, now int64) (int64, bool, error) {
	if s == promMinTime {
		return 0, false, nil
	}
	if s == promMaxTime {
		return limit, false, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, false, errors.New("not a time")
		}
		return atLeastZero(clampF(secs * 1e3)), false, nil
	}
	for i, l := range partialTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			if err := yearReadable(t.Year()); err != nil {
				return 0, false, err
			}
			return atLeastZero(clamp(t.UnixMilli())), i > 0, nil
		}
	}
	rel := s
	if r, ok := strings.CutPrefix(s, "now"); ok {
		if r == "" {
			return now, false, nil
		}
		rel = r
	}
	d, err := metricsql.DurationValue(rel, 0)
	if err != nil || strings.ContainsAny(rel, "iI") {
		return 0, false, errors.New("want Unix seconds, RFC3339, now, or a duration before now such as 1h")
	}
	if d > 0 {
		d = -d
	}
	return atLeastZero(clamp(now + d)), false, nil
}

// yearReadable refuses a date VictoriaMetrics cannot read as itself: it takes a date's nanoseconds since 1970 in an
// int64, which wraps outside 1678-2262 (2610-08-29 reads as 2026-02-07 there).
func yearReadable(y int) error {
	if y < 1678 || y > 2261 {
		return fmt.Errorf("the year %d is outside the years VictoriaMetrics reads (1678 to 2261)", y)
	}
	return nil
}

// VictoriaMetrics reads times before 1970 as 1970.
func atLeastZero(ms int64) int64 { return max(ms, 0) }

// parseDurationArg reads a duration arg (step, timeout, max_lookback) in milliseconds: seconds or a duration.
func parseDurationArg(s string) (int64, error) {
	if n, ok := enforce.WholeNumber(s); ok {
		return n * 1000, nil // whole seconds, what Grafana sends as step
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, errors.New("not a duration")
		}
		return clampF(secs * 1e3), nil
	}
	if strings.ContainsAny(s, "iI") {
		return 0, errors.New("want seconds or a duration such as 30s")
	}
	d, err := metricsql.DurationValue(s, 0)
	if err != nil {
		return 0, errors.New("want seconds or a duration such as 30s")
	}
	return clamp(d), nil
}

// fmtDuration writes milliseconds the way the config writes durations: 30d, 1h30m, 15s, 250ms.
func fmtDuration(ms int64) string {
	if ms == 0 {
		return "0s"
	}
	var b []byte
	if ms < 0 {
		b = append(b, '-')
		ms = -ms
	}
	if ms >= limit {
		return string(append(b, "forever"...))
	}
	for _, u := range []struct {
		n    int64
		name string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}} {
		if ms >= u.n {
			b = strconv.AppendInt(b, ms/u.n, 10)
			b = append(b, u.name...)
			ms %= u.n
		}
	}
	return string(b)
}

func fmtTime(ms int64) string {
	if ms >= limit {
		return "the end of time"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// EvalSpan reads the args that say when a query of api ("query_range" or "query") is evaluated, as VictoriaMetrics
// may read them, from the form and the URL: over [a, b] at step, in milliseconds, the widest range and the finest step
// of all their values, with VictoriaMetrics' defaults for absent ones. An instant query's range is its time (a
// single point unless versions read the time differently); without a step it runs at its max_lookback's. An arg it
// cannot read gets 400 naming it. The gateway bounds the points of every query with it, limits or none.
func EvalSpan(api string, form, args url.Values, now time.Time) (a, b, step int64, err error) {
	kind := apiRange
	if api == "query" {
		kind = apiQuery
	}
	var known enforce.Known
	gather(&known, kind, form, args)
	ck := checker{now: now.UnixMilli(), known: &known}
	if step, _, err = ck.durations(enforce.ArgStep, defaultStep); err != nil {
		return 0, 0, 0, err
	}
	if kind == apiQuery {
		if a, b, err = ck.times(enforce.ArgTime, ck.now); err != nil {
			return 0, 0, 0, err
		}
		if ck.first(enforce.ArgStep) == "" {
			for _, k := range []enforce.Arg{enforce.ArgMaxLookback, enforce.ArgLookbackDelta} {
				lo, _, err := ck.durations(k, defaultStep)
				if err != nil {
					return 0, 0, 0, err
				}
				step = min(step, lo)
			}
		}
		return a, b, step, nil
	}
	if a, _, err = ck.times(enforce.ArgStart, ck.now-defaultStep); err != nil {
		return 0, 0, 0, err
	}
	if _, b, err = ck.times(enforce.ArgEnd, ck.now); err != nil {
		return 0, 0, 0, err
	}
	return a, b, step, nil
}

// AmbiguousTime is the first time arg of a query (time, or start and end) that VictoriaMetrics may read as more than
// one instant, by release or by its time zone (a time without a zone, 2026-06-15; a number of 12 digits and more), as
// "name=value"; "" when none is. The span of such a query covers every reading, but the gateway cannot set it to the
// one the backend would take.
func AmbiguousTime(api string, form, args url.Values, now time.Time) string {
	kind, keys := apiRange, []enforce.Arg{enforce.ArgStart, enforce.ArgEnd}
	if api == "query" {
		kind, keys = apiQuery, []enforce.Arg{enforce.ArgTime}
	}
	var known enforce.Known
	gather(&known, kind, form, args)
	ck := checker{now: now.UnixMilli(), known: &known}
	for _, k := range keys {
		if lo, hi, err := ck.times(k, 0); err == nil && lo != hi {
			return k.String() + "=" + ck.first(k)
		}
	}
	return ""
}
