package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// VictoriaMetrics admits every rollup of every query through one memory pool (a quarter of its allowed memory),
// reserving series × points × 16 bytes until the rollup ends, and refuses a query that does not fit with 422 "not
// enough memory for processing ...; total available memory for concurrent requests: X bytes; requested memory: Y
// bytes". So one team's query that reserves most of the pool made every other team's range queries fail for as long
// as it ran, again and again (an attacker's review: 53 of 53 refused in a minute, through one read slot). The
// gateway cannot see a query's series before VictoriaMetrics does; what it can do is what VictoriaMetrics' own queue
// would: a read refused for the pool being full, which would fit in an empty one, waits at the gateway (keeping its
// slot) until another read at the backends ends, and is sent again, within -read.maxQueueDuration. Waiters go
// again one per read that ends, the longest waiting first, so the refused team goes before the next query of the
// team that filled the pool, which that team's client sends only after its answer.

// maxMemWaits bounds how often one read is sent again for the pool. The refusal is known by its text, and a 422
// of another kind can end with text a client wrote (a label value in "duplicate output timeseries"), so a client
// can have its failing query sent again: at most this many times, within its own slot, like as many requests of
// its own one after another. A read refused for real goes again on every poll and every wake-up it gets; under
// three queries that fill the pool in turn the slowest went through after 4.4 s: at least 6 attempts by its polls
// alone.
const maxMemWaits = 16

// memRefusalPrefix bounds what is read of a 422 to tell the pool's refusal from others: VictoriaMetrics' message
// is a few hundred bytes.
const memRefusalPrefix = 4 << 10

// memPoolRefusal reads the start of a 422 answer and says whether it is the pool's refusal of a query that would fit
// in the empty pool. Either way resp keeps its whole body.
func memPoolRefusal(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnprocessableEntity {
		return false
	}
	msg, ok := answerStart(resp, memRefusalPrefix)
	if !ok {
		return false
	}
	// The counts are read where VictoriaMetrics writes them, after the query it echoes, whose text is the client's:
	// from the last "total available memory" on, ending with what VictoriaMetrics suggests.
	i := bytes.LastIndex(msg, []byte(poolLabel))
	if i < 0 || !bytes.Contains(msg[:i], []byte("not enough memory for processing")) {
		return false
	}
	pool, rest, ok1 := bytesAfter(msg[i:], poolLabel)
	asked, rest, ok2 := bytesAfter(rest, "; requested memory: ")
	return ok1 && ok2 && bytes.HasPrefix(rest, []byte("; possible solutions are: ")) && asked <= pool
}

const poolLabel = "total available memory for concurrent requests: "

// bytesAfter reads the count of bytes that msg starts with after label ("N bytes"), and what follows it.
func bytesAfter(msg []byte, label string) (int64, []byte, bool) {
	rest, ok := bytes.CutPrefix(msg, []byte(label))
	if !ok {
		return 0, nil, false
	}
	n := 0
	for n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	v, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	rest, ok = bytes.CutPrefix(rest[n:], []byte(" bytes"))
	return v, rest, err == nil && ok
}

type prefixedBody struct {
	io.Reader
	c io.Closer
}

func (b *prefixedBody) Close() error { return b.c.Close() }

// memQueue is the reads waiting for the backends' memory: freed wakes the one that waited longest. waiting is
// len(q), kept apart so that freed, told of every read's end, looks at it without the lock.
type memQueue struct {
	waiting atomic.Int32
	mu      sync.Mutex
	q       []*memWaiter
}

type memWaiter struct {
	ch chan struct{}
	// since is when its request was first refused: the queue is in that order.
	since time.Time
	woken bool // under memQueue.mu
}

// freed is told that a read at the backends ended, and with it whatever memory it held there.
func (m *memQueue) freed() {
	if m.waiting.Load() == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.q) == 0 {
		return
	}
	w := m.q[0]
	m.q[0] = nil
	m.q = m.q[1:]
	m.waiting.Add(-1)
	w.woken = true
	close(w.ch)
}

// wait waits for a read to end, or for poll (a backend's memory may free without a read ending here: another
// gateway's reads, a query of the backend's own), or until the context ends, in the order of since, the time the
// request was first refused. It says whether to send the request again.
func (m *memQueue) wait(ctx context.Context, poll time.Duration, since time.Time) bool {
	w := &memWaiter{ch: make(chan struct{}), since: since}
	m.mu.Lock()
	i := len(m.q)
	for i > 0 && m.q[i-1].since.After(since) {
		i--
	}
	m.q = append(m.q, nil)
	copy(m.q[i+1:], m.q[i:])
	m.q[i] = w
	m.waiting.Add(1)
	m.mu.Unlock()
	t := time.NewTimer(poll)
	defer t.Stop()
	select {
	case <-w.ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !w.woken {
		for i, x := range m.q {
			if x == w {
				m.q = append(m.q[:i], m.q[i+1:]...)
				m.waiting.Add(-1)
				break
			}
		}
	}
	return ctx.Err() == nil
}
