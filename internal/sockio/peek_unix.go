//go:build unix && (!linux || 386)

package sockio

import "syscall"

// PeekEmpty tells whether the socket fd holds nothing to read, neither bytes nor its peer's end, by a non-blocking
// recv(MSG_PEEK) of one byte.
func PeekEmpty(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
