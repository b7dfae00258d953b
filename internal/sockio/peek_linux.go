//go:build linux && !386

package sockio

import (
	"syscall"
	"unsafe"
)

// PeekEmpty tells whether the socket fd holds nothing to read, neither bytes nor its peer's end, by a non-blocking
// recv(MSG_PEEK) of one byte, issued raw as this package issues reads: it runs once per reused connection, and a
// syscall entered through the scheduler wakes its monitor thread when the gateway is mostly idle (the package doc).
func PeekEmpty(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno == syscall.EAGAIN
}
