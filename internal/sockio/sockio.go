// Package sockio reads and writes the gateway's TCP sockets without telling the Go scheduler a syscall may block.
//
// Why: net.Conn's Read and Write enter every read(2) and write(2) through entersyscall, which, whenever all of the
// process's Ps were idle long enough for the runtime's monitor thread (sysmon) to park, wakes that thread with a
// futex. A gateway in front of a VictoriaMetrics that takes milliseconds per query is idle between most events, so
// it paid a futex wake and a thread switch on nearly every socket operation: 17 % of its CPU on the dashboard mix
// of `make bench` (runtime.entersyscallWakeSysmon). Go's sockets are non-blocking, so read(2) and write(2) on them
// return at once (EAGAIN when they would block); sockio issues them as raw syscalls inside syscall.RawConn's
// Read and Write, which wait on the runtime's poller for readiness and honour deadlines and Close as net.Conn
// does. Nothing else changes: the Conn is the *net.TCPConn with Read and Write replaced.
//
// No library does this (fasthttp and gnet replace the poller itself); the runtime issue is golang/go#18236's
// family of sysmon costs.
package sockio

import (
	"errors"
	"net"
	"syscall"
)

// ErrNotQuiet is WriteAwait's error for a connection that held bytes or its peer's end before anything was written.
var ErrNotQuiet = errors.New("the connection was not quiet: its peer had sent bytes or closed it")

// Listener wraps ln so that every TCP connection it accepts reads and writes through sockio.
func Listener(ln net.Listener) net.Listener { return &listener{Listener: ln} }

type listener struct{ net.Listener }

// RawConn is the socket under c, through the wrappers that expose theirs (TLS, this package's Conn), for a syscall
// of another kind than a read or a write: nil and no error when c has none (a pipe).
func RawConn(c net.Conn) (syscall.RawConn, error) {
	for i := 0; i < 4; i++ {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	return sc.SyscallConn()
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// maxIovecs bounds the pieces one writev(2) takes; the rest go in the next.
const maxIovecs = 8
