//go:build linux

package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a TCP connection whose Read and Write are raw read(2) and write(2) on its non-blocking socket. Every
// other method is the *net.TCPConn's (SyscallConn, CloseWrite, deadlines, ReadFrom's splice).
type Conn struct {
	*net.TCPConn
	raw syscall.RawConn

	// One Read and one Write may run at a time, as on any net.Conn used by one reader and one writer; the mutexes
	// make a second concurrent caller wait instead of sharing the fields the pre-built callbacks use (a callback
	// built per call would be an allocation per call).
	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	wzero   bool // a write took nothing and said no error
	writeFn func(uintptr) bool
	// WriteAwait's state: check asks for the peek before the write, which found something when notQuiet; called
	// says the callback ran; sent that the write went out whole, and the callback is now woken by readability.
	check, called, sent, notQuiet bool
	writeAwaitFn                  func(uintptr) bool
	// Writev's state: the pieces left and their iovecs, built in place so a gathered write allocates nothing.
	wv       [][]byte
	wvn      int64
	iov      [maxIovecs]syscall.Iovec
	writevFn func(uintptr) bool
}

// Wrap returns c reading and writing through sockio when it is a *net.TCPConn, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{TCPConn: tc, raw: raw}
	sc.readFn = sc.read
	sc.writeFn = sc.write
	sc.writevFn = sc.writev
	sc.writeAwaitFn = sc.writeAwait
	return sc
}

// NetConn is the wrapped connection, as tls.Conn names its own.
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

func (c *Conn) read(fd uintptr) bool {
	for {
		n, errno := sysRead(fd, c.rbuf)
		switch errno {
		case 0:
			c.rn, c.rerrno = n, 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rn, c.rerrno = 0, errno
		return true
	}
}

// Read reads as net.Conn's Read: io.EOF at the peer's end of stream, net.OpError for the rest.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	// read(2) of more than 1 GiB is refused by some systems; net's own Read caps it the same way.
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rbuf = p
	err := c.raw.Read(c.readFn)
	c.rbuf = nil
	if err != nil {
		return 0, c.opError("read", err)
	}
	if c.rerrno != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", c.rerrno))
	}
	if c.rn == 0 {
		return 0, io.EOF
	}
	return c.rn, nil
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		chunk := c.wbuf[c.wn:]
		if len(chunk) > maxRW {
			chunk = chunk[:maxRW]
		}
		n, errno := sysWrite(fd, chunk)
		switch errno {
		case 0:
			if n == 0 {
				// Never on a socket; poll.FD's answer, so that it cannot spin.
				c.wzero = true
				return true
			}
			c.wn += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werrno = errno
		return true
	}
	return true
}

// Write writes all of p, as net.Conn's Write, waiting for the socket to drain when its buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werrno, c.wzero = p, 0, 0, false
	err := c.raw.Write(c.writeFn)
	n := c.wn
	c.wbuf = nil
	return n, c.writeErr("write", err)
}

const maxRW = 1 << 30

// WriteAwait writes all of p as Write does, then waits until the socket has something to read, is closed, or its
// read deadline passes, so that the Read after it finds the answer to p instead of costing a read(2) that finds
// nothing yet (one syscall of three per request to an upstream that takes any time to answer). What the wait met
// is left for that Read to report; WriteAwait's error is the write's. A write the socket cannot take whole is
// finished as Write finishes it, and then nothing is waited for.
//
// The write is issued from inside RawConn's Read, after the poller's readiness was reset and before the wait:
// whatever arrives after that (an answer to p, a reset, an end) wakes the wait. What came before the reset is not
// seen by the wait, so a connection that may hold something already is checked first: with quiet, a socket that
// holds bytes or the peer's end gets ErrNotQuiet and nothing is written (a peek, where the caller would otherwise
// peek before calling). WriteAwait is a read and a write at once: it must not run beside a Read, a Write or a
// ReadFrom on c.
func (c *Conn) WriteAwait(p []byte, quiet bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werrno, c.wzero = p, 0, 0, false
	c.check, c.called, c.sent, c.notQuiet = quiet, false, false, false
	rerr := c.raw.Read(c.writeAwaitFn)
	var err error
	switch {
	case c.notQuiet:
		err = ErrNotQuiet
	case !c.called:
		// The poller refused before the write: the connection is closed, or its read deadline has passed already.
		err = rerr
	case c.wn < len(p) && c.werrno == 0 && !c.wzero:
		// The socket's buffer was full: the rest goes out as Write sends it, and the answer is read as usual.
		err = c.raw.Write(c.writeFn)
	}
	n := c.wn
	c.wbuf = nil
	return n, c.writeErr("write", err)
}

// writeAwait is WriteAwait's callback: it writes on its first call and asks to wait for readability if all went
// out; called again, the socket is readable.
func (c *Conn) writeAwait(fd uintptr) bool {
	if c.sent {
		return true
	}
	c.called = true
	if c.check && !PeekEmpty(fd) {
		c.notQuiet = true
		return true
	}
	if !c.write(fd) || c.werrno != 0 || c.wzero {
		return true
	}
	c.sent = true
	return false
}

func (c *Conn) writev(fd uintptr) bool {
	for len(c.wv) > 0 {
		n := 0
		for _, b := range c.wv {
			if n == maxIovecs {
				break
			}
			if len(b) == 0 {
				continue
			}
			c.iov[n].Base = &b[0]
			c.iov[n].SetLen(len(b))
			n++
		}
		if n == 0 {
			c.wv = nil
			break
		}
		w, errno := sysWritev(fd, c.iov[:n])
		clear(c.iov[:n])
		switch errno {
		case 0:
			if w == 0 {
				c.wzero = true
				return true
			}
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = errno
			return true
		}
		c.wvn += int64(w)
		// Drop what went out: whole pieces, then the written part of the first one left. Empty pieces left are
		// skipped above.
		for w > 0 && len(c.wv) > 0 {
			if w < len(c.wv[0]) {
				c.wv[0] = c.wv[0][w:]
				break
			}
			w -= len(c.wv[0])
			c.wv = c.wv[1:]
		}
	}
	return true
}

// Writev writes the pieces of bufs in order, as one writev(2) where the socket takes them all, and returns how
// many bytes went out. The slice bufs is consumed (its headers are advanced), not the bytes.
func (c *Conn) Writev(bufs [][]byte) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wv, c.wvn, c.werrno, c.wzero = bufs, 0, 0, false
	err := c.raw.Write(c.writevFn)
	n := c.wvn
	c.wv = nil
	return n, c.writeErr("writev", err)
}

// writeErr is what a Write or Writev that ended with RawConn's err returns: its error, a write that took nothing,
// or the write's errno; nil when all went out.
func (c *Conn) writeErr(op string, err error) error {
	switch {
	case err != nil:
		return c.opError(op, err)
	case c.wzero:
		return c.opError(op, io.ErrUnexpectedEOF)
	case c.werrno != 0:
		return c.opError(op, os.NewSyscallError(op, c.werrno))
	}
	return nil
}

// opError shapes err as net.Conn's own errors: errors.Is(err, net.ErrClosed), os.ErrDeadlineExceeded and
// syscall.ECONNRESET hold through it, and it reads "read tcp a->b: ...". RawConn's errors are already OpErrors
// (Op "raw-read"); their cause is taken out of them.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
