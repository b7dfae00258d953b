package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// ringSize is the number of buckets of a sliding window: the 60 complete buckets before the current one, and the
// current one. The minute has 1-second buckets, the hour 1-minute buckets, so a count stays in its window for
// between 60 and 61 bucket widths: never less than the nominal window, at most 1/60 more (1 s for the minute,
// 1 min for the hour). Bucket epochs are Unix seconds divided by the bucket width: the same on every replica and
// in Redis.
const ringSize = 61

// windows: the index of a window.
const (
	winMinute = iota
	winHour
	numWindows
)

// bucketWidth is the width of one bucket of each window, in seconds.
var bucketWidth = [numWindows]int64{winMinute: 1, winHour: 60}

// windowOf is the window a resolution counts in.
func windowOf(r limitfile.Resolution) int {
	if r == limitfile.Hour {
		return winHour
	}
	return winMinute
}

// ring is a ring of buckets and their total. At rest total is the sum of the buckets; every change to a bucket
// changes total by as much, so a count racing with an advance may land one bucket late but is never lost.
type ring struct {
	head    atomic.Int64 // the newest bucket's epoch
	total   atomic.Int64
	buckets [ringSize]atomic.Int64
}

// counts are the requests of one series over the last minute and the last hour. A request is counted once, in the
// minute ring; when its second leaves the minute, its bucket moves into the hour ring, which holds the rest of the
// hour. So counting costs two atomic adds after two atomic loads, and only the first count of a new second takes
// the mutex, to move what left the minute.
type counts struct {
	mu     sync.Mutex
	minute ring // 1-second buckets
	hour   ring // 1-minute buckets, of the counts older than the minute ring
}

// advance moves the rings to Unix second sec.
func (c *counts) advance(sec int64) {
	if c.minute.head.Load() >= sec && c.hour.head.Load() >= sec/60 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	he := sec / 60
	if hh := c.hour.head.Load(); hh < he {
		for e := hh + 1; e <= min(he, hh+ringSize); e++ {
			c.hour.total.Add(-c.hour.buckets[e%ringSize].Swap(0))
		}
		c.hour.head.Store(he)
	}
	mh := c.minute.head.Load()
	if mh >= sec {
		return
	}
	// Second e takes the bucket of second e-ringSize, which moves into the hour if it is still within it.
	for e := mh + 1; e <= min(sec, mh+ringSize); e++ {
		v := c.minute.buckets[e%ringSize].Swap(0)
		if v == 0 {
			continue
		}
		c.minute.total.Add(-v)
		if old := (e - ringSize) / 60; old > he-ringSize {
			c.hour.buckets[old%ringSize].Add(v)
			c.hour.total.Add(v)
		}
	}
	c.minute.head.Store(sec)
}

// add counts d at Unix second sec and returns the minute's new count.
func (c *counts) add(sec, d int64) int64 {
	c.advance(sec)
	c.minute.buckets[sec%ringSize].Add(d)
	return c.minute.total.Add(d)
}

// count is the count of window w at Unix second sec.
func (c *counts) count(w int, sec int64) int64 {
	c.advance(sec)
	n := c.minute.total.Load()
	if w == winHour {
		n += c.hour.total.Load()
	}
	return n
}

// older is what the hour holds besides the minute, at a second add or count has advanced to.
func (c *counts) older() int64 { return c.hour.total.Load() }

// untilBelow is how long from now until the count of window w drops below value as its oldest counts leave the
// window, if nothing more is counted; zero when it is below already.
func (c *counts) untilBelow(w int, now time.Time, value int64) time.Duration {
	return c.scan(w, now, c.count(w, now.Unix())-value+1)
}

// untilOldestLeaves is how long from now until the oldest count leaves window w; zero when w is empty.
func (c *counts) untilOldestLeaves(w int, now time.Time) time.Duration {
	return c.scan(w, now, 1)
}

// scan finds, oldest bucket first, when `need` counts will have left window w.
func (c *counts) scan(w int, now time.Time, need int64) time.Duration {
	if need <= 0 {
		return 0
	}
	sec := now.Unix()
	var freed int64
	leaves := func(b *atomic.Int64, at int64) (time.Duration, bool) {
		if freed += b.Load(); freed >= need {
			return time.Unix(at, 0).Sub(now), true
		}
		return 0, false
	}
	if w == winHour {
		he := sec / 60
		for e := he - ringSize + 1; e <= he; e++ {
			if d, ok := leaves(&c.hour.buckets[e%ringSize], (e+ringSize)*60); ok {
				return d
			}
		}
	}
	for e := sec - ringSize + 1; e <= sec; e++ {
		at := e + ringSize // a second leaves the minute window...
		if w == winHour {
			at = (e/60 + ringSize) * 60 // ...and the hour window with its minute's bucket
		}
		if d, ok := leaves(&c.minute.buckets[e%ringSize], at); ok {
			return d
		}
	}
	return 0 // fewer counts than needed: a count that raced the scan
}
