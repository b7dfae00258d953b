//go:build unix && (!linux || 386)

package proxyclient

import "syscall"

// peekEmpty is a non-blocking recv(MSG_PEEK) of one byte.
func peekEmpty(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
