//go:build !unix

package proxyclient

import "net"

// peeker cannot peek at a socket here, so no connection is known to be quiet before reuse, and none is pooled
// (Client.put): each request has a connection of its own.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (*peeker) quiet() bool { return false }
