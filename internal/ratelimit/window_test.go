package ratelimit

import (
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// t0 is a Unix second at the start of a minute, so that tests can reason about minute buckets.
const t0 = int64(1_800_000_000 - 1_800_000_000%60)

func at(sec int64) time.Time { return time.Unix(sec, 0) }

func TestCounts(t *testing.T) {
	type step struct {
		sec        int64 // seconds after t0
		add        int64
		minute     int64 // counts after the step
		hour       int64
		untilBelow time.Duration // of the minute window below 1 (every count gone), at sec
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"counts stay a minute, then the rest of the hour", []step{
			{0, 3, 3, 3, 61 * time.Second},
			{30, 2, 5, 5, 61 * time.Second},
			{60, 0, 5, 5, 31 * time.Second}, // 60 s old: still in (a window is 60 to 61 s)
			{61, 0, 2, 5, 30 * time.Second},
			{91, 0, 0, 5, 0},
			{3600, 0, 0, 5, 0}, // the hour: the first minute's bucket is counted until t0+61min
			{3659, 0, 0, 5, 0},
			{3660, 0, 0, 0, 0},
		}},
		{"a long gap empties both", []step{
			{0, 7, 7, 7, 61 * time.Second},
			{100000, 1, 1, 1, 61 * time.Second},
		}},
		{"taking back", []step{
			{5, 2, 2, 2, 61 * time.Second},
			{5, -1, 1, 1, 61 * time.Second},
			{70, 0, 0, 1, 0},
			{70, 1, 1, 2, 61 * time.Second},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c counts
			for _, s := range tc.steps {
				sec := t0 + s.sec
				if s.add != 0 {
					c.add(sec, s.add)
				}
				if m, h := c.count(winMinute, sec), c.count(winHour, sec); m != s.minute || h != s.hour {
					t.Fatalf("at +%ds: minute %d hour %d, want %d and %d", s.sec, m, h, s.minute, s.hour)
				}
				if d := c.untilBelow(winMinute, at(sec), 1); d != s.untilBelow {
					t.Fatalf("at +%ds: minute below 1 in %s, want %s", s.sec, d, s.untilBelow)
				}
			}
		})
	}
}

func TestCountsScan(t *testing.T) {
	var c counts
	// One request a second for 10 s, from t0+10.
	for s := int64(10); s < 20; s++ {
		c.add(t0+s, 1)
	}
	now := at(t0 + 30).Add(300 * time.Millisecond)
	for _, tc := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		// 10 counted; below 8 once the 3 oldest (t0+10..12) have left: at t0+12+61.
		{"minute below 8", c.untilBelow(winMinute, now, 8), at(t0 + 73).Sub(now)},
		{"minute oldest leaves", c.untilOldestLeaves(winMinute, now), at(t0 + 71).Sub(now)},
		// In the hour, the minute t0..t0+59 leaves at t0+61min.
		{"hour below 8", c.untilBelow(winHour, now, 8), at(t0 + 61*60).Sub(now)},
		{"under already", c.untilBelow(winMinute, now, 11), 0},
		{"empty hour", new(counts).untilOldestLeaves(winHour, now), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}

func TestCounters(t *testing.T) {
	c := newCounters()
	k := seriesKey{tenant: tid(1, 2), key: intern(limitfile.Key{Claim: "sub"}), value: "alice"}
	s := c.get(k, t0)
	if c.get(k, t0+5) != s || c.lookup(k) != s || c.size.Load() != 1 {
		t.Fatal("a second get made another series")
	}
	if c.lookup(seriesKey{tenant: tid(1, 2)}) != nil {
		t.Fatal("lookup made a series")
	}
	// Many series: the read maps take them over, and all stay found.
	for i := uint32(0); i < 5000; i++ {
		c.get(seriesKey{tenant: tid(i, 0)}, t0)
	}
	for i := uint32(0); i < 5000; i++ {
		if c.lookup(seriesKey{tenant: tid(i, 0)}) == nil {
			t.Fatalf("series of tenant %d:0 lost", i)
		}
	}
	if n := c.evict(t0 + 5 + idleAfter); n != 1 || c.size.Load() != 1 {
		t.Fatalf("after evicting the idle series %d remain (size %d), want 1: the one used at +5s", n, c.size.Load())
	}
	if c.evict(t0+6+idleAfter) != 0 || c.lookup(k) != nil {
		t.Fatal("the last series was not evicted")
	}
	// A check holding an evicted series takes a fresh one instead of counting into it.
	if s.touch(t0 + 7 + idleAfter) {
		t.Fatal("an evicted series can still be used")
	}
	if s2 := c.get(k, t0+7+idleAfter); s2 == s || c.size.Load() != 1 {
		t.Fatal("get returned the evicted series")
	}
}
