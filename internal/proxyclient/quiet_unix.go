//go:build unix

package proxyclient

import (
	"crypto/tls"
	"net"
	"syscall"
)

// quiet peeks at an idle connection's socket before it is reused: nothing there means the upstream has neither
// closed it nor said anything since its last answer. An EOF or a reset is an upstream that closed it (an idle
// timeout, a restart); bytes are an answer nobody asked for (an upstream that read one request as two), which
// the next request, perhaps another tenant's, would otherwise read as its own. The peek neither blocks nor waits
// on the poller, so a read deadline left on the connection does not matter to it.
func quiet(nc net.Conn) bool {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	empty := false
	err = rc.Control(func(fd uintptr) { empty = peekEmpty(fd) })
	return err == nil && empty
}
