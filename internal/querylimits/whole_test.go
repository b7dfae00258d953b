package querylimits

import (
	"testing"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// FuzzWholeFastPath: the number a request's split read (enforce.Known.Whole) gives times and durations what
// parseTimeRange and parseDurationArg give for the same value, so the check's fast path judges as the full reading.
func FuzzWholeFastPath(f *testing.F) {
	for _, s := range []string{"1781517600", "60", "2026", "12345", "99999999999", "0", "00060", "1700000000000", "1e9", " 1"} {
		f.Add(s)
	}
	now := checkNow.UnixMilli()
	f.Fuzz(func(t *testing.T, s string) {
		var known enforce.Known
		known.Add(enforce.ArgStart, enforce.FromURL, s)
		known.Add(enforce.ArgStep, enforce.FromURL, s)
		ck := checker{now: now, known: &known}
		lo, hi, err := ck.times(enforce.ArgStart, 0)
		wlo, whi, werr := parseTimeRange(s, now)
		if s == "" {
			wlo, whi, werr = 0, 0, nil // an empty value is the default
		}
		if lo != wlo || hi != whi || (err == nil) != (werr == nil) {
			t.Fatalf("times(%q) = %d..%d, %v; parseTimeRange: %d..%d, %v", s, lo, hi, err, wlo, whi, werr)
		}
		d, _, err := ck.durations(enforce.ArgStep, 0)
		wd, werr := parseDurationArg(s)
		if s == "" {
			wd, werr = 0, nil
		}
		if d != wd || (err == nil) != (werr == nil) {
			t.Fatalf("durations(%q) = %d, %v; parseDurationArg: %d, %v", s, d, err, wd, werr)
		}
	})
}
