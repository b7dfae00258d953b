package h1

import (
	"errors"
	"net"
	"time"
)

// A client going away cancels its request's context: seen by the client watcher (watch_linux.go) where it runs,
// otherwise by a background read as in net/http. The background read starts once the request's body is read; the
// watcher also sees a client that leaves before, with all of its body sent (peerGone).

// peerGone is the watcher's news that the client closed or reset the connection. A request whose body is read is
// cancelled unless another request follows it; one whose body is not read yet is cancelled when the client sent all
// of the body it will (body.allSent): a handler that waits before it reads, as a write waits for a slot, then learns
// that nobody is there for the answer, where net/http only learns it once the body is read.
func (c *conn) peerGone() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	c.peerClosed = true
	if c.cancelFn == nil {
		return
	}
	if c.watching {
		if !c.moreFollows() {
			c.cancelFn()
		}
		return
	}
	if b := c.unread; b != nil && b.allSent() {
		c.cancelFn()
	}
}

// moreFollows says the client sent bytes past the request in flight (a pipelined request): like net/http, whose
// background read then finds those bytes instead of the end, the server takes a client that half-closed after them
// as still there for this request, and for the last one it sent as gone.
func (c *conn) moreFollows() bool {
	return c.pipelined || c.unreadBytes() > 0
}

// Read is what the request reader reads: the bytes the background read got first, then the connection.
func (c *conn) Read(p []byte) (int, error) {
	c.bgMu.Lock()
	if c.inRead {
		c.bgMu.Unlock()
		return 0, errors.New("h1: read of the connection while its background read runs")
	}
	if len(c.bgData) > 0 {
		n := copy(p, c.bgData)
		c.bgData = c.bgData[n:]
		c.bgMu.Unlock()
		return n, nil
	}
	if err := c.readErr; err != nil {
		c.bgMu.Unlock()
		return 0, err
	}
	c.bgMu.Unlock()
	n, err := c.rwc.Read(p)
	if err != nil {
		c.bgMu.Lock()
		c.readFailedLocked(err)
		c.bgMu.Unlock()
	}
	return n, err
}

// readFailedLocked cancels the running request: its client is gone or too slow, as net/http does.
func (c *conn) readFailedLocked(err error) {
	if c.readErr == nil {
		c.readErr = err
	}
	if c.cancelFn != nil {
		c.cancelFn()
	}
}

// startBackgroundRead starts watching the client once the request is read. Bytes already buffered (a pipelined
// request) say the client is still there: nothing to watch then.
func (c *conn) startBackgroundRead() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.watched {
		if c.cancelFn != nil {
			c.watching = true
			c.pipelined = c.br.Buffered() > 0
			if c.peerClosed && !c.moreFollows() {
				c.cancelFn()
			}
		}
		return
	}
	if c.inRead || len(c.bgData) > 0 || c.readErr != nil || c.cancelFn == nil || c.br.Buffered() > 0 {
		return
	}
	c.inRead = true
	_ = c.setOtherReadDeadline(time.Time{})
	if c.bgBuf == nil {
		c.bgBuf = make([]byte, 4<<10)
	}
	go c.backgroundRead()
}

func (c *conn) backgroundRead() {
	n, err := c.rwc.Read(c.bgBuf)
	c.bgMu.Lock()
	c.bgData = c.bgBuf[:n]
	if ne, ok := err.(net.Error); ok && c.aborted && ne.Timeout() {
		// Stopped by abortBackgroundRead: nothing happened to the client.
	} else if err != nil {
		c.readFailedLocked(err)
	}
	c.aborted = false
	c.inRead = false
	c.bgMu.Unlock()
	c.bgCond.Broadcast()
}

var aLongTimeAgo = time.Unix(1, 0)

// watchClients turns the client watcher on; tests turn it off to run the background read where both exist.
var watchClients = true

// abortBackgroundRead stops the background read, before the connection closes.
func (c *conn) abortBackgroundRead() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	c.cancelFn = nil
	if !c.inRead {
		return
	}
	c.aborted = true
	_ = c.setOtherReadDeadline(aLongTimeAgo)
	for c.inRead {
		c.bgCond.Wait()
	}
	_ = c.setOtherReadDeadline(time.Time{})
}

// awaitNext waits for the first bytes of the next request, through the background read if it runs, from since
// (when the wait began); false when the connection ended (idle timeout, client gone, Shutdown).
func (c *conn) awaitNext(since time.Time) bool {
	c.renewIdleDeadline(since)
	c.bgMu.Lock()
	if c.inRead {
		for c.inRead {
			c.bgCond.Wait()
		}
		ok := c.readErr == nil && len(c.bgData) > 0
		c.bgMu.Unlock()
		return ok
	}
	c.bgMu.Unlock()
	_, err := c.br.Peek(1)
	return err == nil
}

// idleSlack is the share of IdleTimeout by which the idle deadline may run late: it is renewed only once it is
// that stale, not at every request of a busy connection (a deadline change costs a timer update in the runtime).
const idleSlack = 16

// renewIdleDeadline makes the read deadline end the wait for the next request between IdleTimeout and
// IdleTimeout*(1+1/idleSlack) from since, when the wait began (the clock read once for it and waitingSince); none
// without an IdleTimeout.
func (c *conn) renewIdleDeadline(since time.Time) {
	d := c.srv.IdleTimeout
	if d <= 0 {
		c.clearReadDeadline()
		return
	}
	known := c.deadlineKnown.Load()
	earliest := since.Add(d)
	latest := earliest.Add(d / idleSlack)
	if known && !c.readDeadline.Before(earliest) && !c.readDeadline.After(latest) {
		return
	}
	c.setReadDeadline(latest)
}
