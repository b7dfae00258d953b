//go:build !linux

package sockio

import "net"

// Wrap returns c: outside Linux the gateway's sockets read and write through net.Conn itself.
func Wrap(c net.Conn) net.Conn { return c }
