//go:build !unix

package proxyclient

import "net"

// peeker cannot peek at a socket here; a dead idle connection is found by the request that meets it, which is
// then resent on a new one when it can be.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (*peeker) quiet() bool { return true }
