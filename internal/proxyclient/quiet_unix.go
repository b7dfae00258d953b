//go:build unix

package proxyclient

import (
	"net"
	"syscall"

	"github.com/vmgateway/vmgateway/internal/sockio"
)

// peeker is a connection's socket, prepared once when the connection is made, for quiet's peek before each reuse:
// the peek then allocates nothing.
type peeker struct {
	raw   syscall.RawConn
	fn    func(fd uintptr)
	empty bool
}

// newPeeker prepares nc's socket; nil for a connection that has none, which is then never pooled.
func newPeeker(nc net.Conn) *peeker {
	raw, err := sockio.RawConn(nc)
	switch {
	case err != nil:
		// Closed already: never quiet.
		return &peeker{}
	case raw == nil:
		return nil
	}
	p := &peeker{raw: raw}
	p.fn = func(fd uintptr) { p.empty = sockio.PeekEmpty(fd) }
	return p
}

// quiet peeks at an idle connection's socket before it is reused: nothing there means the upstream has neither
// closed it nor said anything since its last answer. An EOF or a reset is an upstream that closed it (an idle
// timeout, a restart); bytes are an answer nobody asked for (an upstream that read one request as two), which
// the next request, perhaps another tenant's, would otherwise read as its own. The peek neither blocks nor waits
// on the poller, so a read deadline left on the connection does not matter to it.
func (p *peeker) quiet() bool {
	if p == nil || p.raw == nil {
		return false
	}
	p.empty = false
	return p.raw.Control(p.fn) == nil && p.empty
}
