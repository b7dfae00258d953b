package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// ringSize is the number of buckets of a sliding window: the 60 complete buckets before the current one, and the
// current one. A minute has 1-second buckets, an hour 1-minute buckets, so a count stays in its window for between
// 60 and 61 bucket widths: never less than the nominal window, at most 1/60 more (1 s for a minute, 1 min for an
// hour). The bucket epochs are Unix time divided by the bucket width, the same on every replica (and in Redis).
const ringSize = 61

// windows: the index of a window in a series.
const (
	winMinute = iota
	winHour
	numWindows
)

// bucketWidth is the width of one bucket of each window, in seconds.
var bucketWidth = [numWindows]int64{winMinute: 1, winHour: 60}

// windowOf is the window a resolution counts in.
func windowOf(r Resolution) int {
	if r == Hour {
		return winHour
	}
	return winMinute
}

// window is a sliding-window counter. Counting is two atomic adds (the current bucket and the total) after one
// atomic load; only the first count in a new bucket takes the mutex, to empty the buckets that left the window.
// total is the sum of the buckets at rest; a count racing with an advance may land one bucket late, never lost.
type window struct {
	width   int64
	head    atomic.Int64 // the newest bucket's epoch
	total   atomic.Int64
	mu      sync.Mutex
	buckets [ringSize]atomic.Int64
}

// advance makes epoch the newest bucket, emptying the buckets that left the window.
func (w *window) advance(epoch int64) {
	if w.head.Load() >= epoch {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	head := w.head.Load()
	if head >= epoch {
		return
	}
	first := max(head+1, epoch-ringSize+1)
	for e := first; e <= epoch; e++ {
		w.total.Add(-w.buckets[e%ringSize].Swap(0))
	}
	w.head.Store(epoch)
}

// add counts d at Unix second sec and returns the window's new total.
func (w *window) add(sec, d int64) int64 {
	epoch := sec / w.width
	w.advance(epoch)
	w.buckets[epoch%ringSize].Add(d)
	return w.total.Add(d)
}

// count is the window's total at Unix second sec.
func (w *window) count(sec int64) int64 {
	w.advance(sec / w.width)
	return w.total.Load()
}

// untilBelow is how long from now until the count drops below value as its oldest buckets leave the window, if
// nothing more is counted; zero when it is below already.
func (w *window) untilBelow(now time.Time, value int64) time.Duration {
	return w.scan(now, w.count(now.Unix())-value+1)
}

// untilOldestLeaves is how long from now until the oldest count leaves the window; zero when the window is empty.
func (w *window) untilOldestLeaves(now time.Time) time.Duration {
	return w.scan(now, 1)
}

// scan finds, oldest bucket first, when `need` counts will have left the window.
func (w *window) scan(now time.Time, need int64) time.Duration {
	if need <= 0 {
		return 0
	}
	epoch := now.Unix() / w.width
	var freed int64
	for e := epoch - ringSize + 1; e <= epoch; e++ {
		if freed += w.buckets[e%ringSize].Load(); freed >= need {
			// Bucket e is counted while the newest epoch is below e+ringSize.
			return time.Unix((e+ringSize)*w.width, 0).Sub(now)
		}
	}
	return time.Duration(ringSize*w.width) * time.Second
}
