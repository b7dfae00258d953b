//go:build linux && !386

package proxyclient

import (
	"syscall"
	"unsafe"
)

// peekEmpty is a non-blocking recv(MSG_PEEK) of one byte, issued raw as internal/sockio issues reads: it runs
// once per reused connection, and a syscall entered through the scheduler wakes its monitor thread when the
// gateway is mostly idle (sockio's package doc).
func peekEmpty(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno == syscall.EAGAIN
}
