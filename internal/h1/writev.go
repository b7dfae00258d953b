package h1

import (
	"bufio"
	"net"
	"sync/atomic"
	"time"
)

// connWriter is what the connection's bufio.Writer writes to. On a plain TCP connection a body write larger than
// the writer's free space goes out with what the writer holds (the head, a chunk's size line) in one writev: a
// bufio.Writer alone would send a full buffer, then the rest of the body, then a chunk's closing CRLF with the
// next flush, three writes where one does. TLS connections write through the buffer as before: a record per
// piece would cost more than the copy.
type connWriter struct {
	conn net.Conn
	// gather is the connection's own gathered write: sockio's, or net.Buffers' on a bare *net.TCPConn; nil on TLS.
	gather func([][]byte) (int64, error)
	// tail is written right behind the buffered bytes by the next Write (the writer's Flush), when hasTail; arr
	// backs bufs, so a writev allocates nothing.
	tail    [3][]byte
	hasTail bool
	arr     [4][]byte
	bufs    net.Buffers
	// idle is Server.WriteIdleTimeout; handler is the write deadline the handler set, which then rules instead.
	// armed is the deadline arm set last, zero once another may be in force.
	idle    time.Duration
	handler *handlerDeadline
	armed   time.Time
	// wait is the connection's writes' wait for the client.
	wait *writeWait
}

// writeWait is how long a connection's writes have waited for its client: since when the write under way has (unix
// nanoseconds; 0: none), and how long those before it waited in all, counting those that waited at least waitedAtLeast.
// Summed over the connection's life: a client that pipelines requests and takes their answers a little at a time waits
// out no single write, yet holds the connection (an attacker's review of the first version, which looked at the write
// under way only, would have let it).
type writeWait struct{ since, waited atomic.Int64 }

const waitedAtLeast = int64(time.Millisecond)

// beginAt notes a write that starts at now (the time arm took: one reading of the clock for both), and returns
// when, for end.
func (w *writeWait) beginAt(now time.Time) int64 {
	t := now.UnixNano()
	w.since.Store(t)
	return t
}

func (w *writeWait) end(began int64) {
	w.since.Store(0)
	if d := time.Now().UnixNano() - began; d >= waitedAtLeast {
		w.waited.Add(d)
	}
}

// held is how long the client has held the connection's writes, at now.
func (w *writeWait) held(now int64) int64 {
	h := w.waited.Load()
	if s := w.since.Load(); s != 0 && now > s {
		h += now - s
	}
	return h
}

var crlf = []byte("\r\n")

func (o *connWriter) reset(c net.Conn, idle time.Duration, handler *handlerDeadline, wait *writeWait) {
	o.conn, o.idle, o.handler, o.armed, o.wait = c, idle, handler, time.Time{}, wait
	o.gather = nil
	switch t := c.(type) {
	case interface{ Writev([][]byte) (int64, error) }:
		o.gather = t.Writev
	case *net.TCPConn:
		o.gather = func(b [][]byte) (int64, error) { o.bufs = b; return o.bufs.WriteTo(t) }
	}
}

// arm gives the write about to start between WriteIdleTimeout and a sixteenth more (idleSlack, as the idle read
// deadline): a client that takes nothing of the answer for that long fails it, which ends the handler's copy and
// frees the slot and upstream request the answer holds. The deadline is renewed only once it is that stale, not
// at every answer of a busy connection. now is the write's start, which beginAt notes too.
func (o *connWriter) arm(now time.Time) {
	if o.idle <= 0 || o.handler.set.Load() {
		return
	}
	if earliest := now.Add(o.idle); o.armed.Before(earliest) {
		o.armed = earliest.Add(o.idle / idleSlack)
		_ = o.conn.SetWriteDeadline(o.armed)
		// Another goroutine may have set the handler's deadline (one past, to break this write) between the check
		// above and this one's: it rules.
		if t, set := o.handler.load(); set {
			_ = o.conn.SetWriteDeadline(t)
		}
	}
}

func (o *connWriter) Write(b []byte) (int, error) {
	now := time.Now()
	o.arm(now)
	defer o.wait.end(o.wait.beginAt(now))
	if !o.hasTail {
		return o.conn.Write(b)
	}
	o.hasTail = false
	if err := o.writev(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// writev writes first, then the tail, in one system call where the kernel takes it all at once.
func (o *connWriter) writev(first []byte) error {
	o.arr = [4][]byte{first, o.tail[0], o.tail[1], o.tail[2]}
	_, err := o.gather(o.arr[:])
	o.arr, o.tail, o.bufs = [4][]byte{}, [3][]byte{}, nil
	return err
}

// canWritev says whether a write of n bytes goes out by writeAround: on plain TCP, when it does not fit in bw.
func (o *connWriter) canWritev(bw *bufio.Writer, n int) bool {
	return o.gather != nil && n > bw.Available()
}

// writeAround sends what bw holds and then a, b and c (any may be empty), in one writev.
func (o *connWriter) writeAround(bw *bufio.Writer, a, b, c []byte) error {
	o.tail = [3][]byte{a, b, c}
	if bw.Buffered() == 0 {
		now := time.Now()
		o.arm(now)
		defer o.wait.end(o.wait.beginAt(now))
		return o.writev(nil)
	}
	o.hasTail = true
	err := bw.Flush()
	o.hasTail = false
	o.tail = [3][]byte{}
	return err
}
