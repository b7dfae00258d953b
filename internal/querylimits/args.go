package querylimits

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metricsql"
)

// The time and duration args are read as VictoriaMetrics reads them (lib/httputil GetTime and GetDuration): a
// value the gateway cannot read is refused rather than guessed, since VictoriaMetrics might read it.

var (
	// Prometheus' clients send its min and max times for "no bound" (prometheus/client_golang#614).
	promMinTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC().Format(time.RFC3339Nano)
	promMaxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC().Format(time.RFC3339Nano)
)

var partialTimeLayouts = []string{
	time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02T15", "2006-01-02", "2006-01", "2006",
}

// parseTime reads a time arg in milliseconds: Unix seconds, RFC3339 (whole or partial), now, or a duration
// before now (1h, -1h, now-1h). Some integers read differently across VictoriaMetrics versions (v1.79 reads
// 2026 and 1700000000000 as seconds, current versions as a year and as milliseconds): lo and hi are the earliest
// and the latest reading, so that neither end of a range is under-counted.
func parseTimeRange(s string, now int64) (lo, hi int64, err error) {
	if n, ok := smallUint(s); ok && n < 1e11 && len(s) != 4 {
		// Whole Unix seconds, what Grafana sends: one reading in every version.
		return n * 1000, n * 1000, nil
	}
	secs, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil {
		t, err := parseTime(s, now)
		return t, t, err
	}
	if math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, 0, errors.New("not a time")
	}
	lo = atLeastZero(clampF(secs * 1e3))
	hi = lo
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		alt := lo
		switch {
		case len(s) == 4:
			alt = time.Date(int(n), 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
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

func parseTime(s string, now int64) (int64, error) {
	if s == promMinTime {
		return 0, nil
	}
	if s == promMaxTime {
		return limit, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, errors.New("not a time")
		}
		return atLeastZero(clampF(secs * 1e3)), nil
	}
	for _, l := range partialTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return atLeastZero(clamp(t.UnixMilli())), nil
		}
	}
	rel := s
	if r, ok := strings.CutPrefix(s, "now"); ok {
		if r == "" {
			return now, nil
		}
		rel = r
	}
	d, err := metricsql.DurationValue(rel, 0)
	if err != nil || strings.ContainsAny(rel, "iI") {
		return 0, errors.New("want Unix seconds, RFC3339, now, or a duration before now such as 1h")
	}
	if d > 0 {
		d = -d
	}
	return atLeastZero(clamp(now + d)), nil
}

// smallUint reads a number of at most 11 decimal digits and nothing else (no sign, no point): the seconds of
// the time and step args of almost every request, read here without strconv's generality. A digit at a time, each
// step waits on the multiplication of the last; the last 8 digits are read at once (eightDigits), so a Unix time
// of 10 digits costs 2 steps and a few multiplications.
func smallUint(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 11 {
		return 0, false
	}
	head := max(len(s)-8, 0)
	var n int64
	for i := 0; i < head; i++ {
		c := s[i] - '0'
		if c > 9 {
			return 0, false
		}
		n = n*10 + int64(c)
	}
	if len(s) < 8 {
		for i := head; i < len(s); i++ {
			c := s[i] - '0'
			if c > 9 {
				return 0, false
			}
			n = n*10 + int64(c)
		}
		return n, true
	}
	low, ok := eightDigits(binary.LittleEndian.Uint64([]byte(s[head:])))
	if !ok {
		return 0, false
	}
	return n*1e8 + int64(low), true
}

// eightDigits reads 8 ASCII decimal digits packed in a word, the first in the lowest byte: each byte must be '0'
// to '9'; pairs, then quads, then the halves are combined by a multiplication each.
func eightDigits(w uint64) (uint64, bool) {
	const ones = 0x0101010101010101
	if w&(0xf0*ones) != 0x30*ones || (w+0x06*ones)&(0xf0*ones) != 0x30*ones {
		return 0, false // a byte outside 0x30..0x39
	}
	w -= 0x30 * ones
	w = (w * (1 + 10<<8)) >> 8                           // each byte pair: 10*first + second, in the even bytes
	w = ((w & 0x00ff00ff00ff00ff) * (1 + 100<<16)) >> 16 // each quad, in the low 16 bits of each half
	w = ((w & 0x0000ffff0000ffff) * (1 + 10000<<32)) >> 32
	return w, true
}

// VictoriaMetrics reads times before 1970 as 1970.
func atLeastZero(ms int64) int64 { return max(ms, 0) }

// parseDurationArg reads a duration arg (step, timeout, max_lookback) in milliseconds: seconds or a duration.
func parseDurationArg(s string) (int64, error) {
	if n, ok := smallUint(s); ok {
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
