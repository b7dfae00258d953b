//go:build linux && race

package sockio

import (
	"syscall"
	"unsafe"
)

// Under the race detector, syscall.Read and syscall.Write: they tell the detector that a write to any descriptor
// happens before a read of what it wrote, which tests that hand data over a socket rely on; raw syscalls would
// make those reports false races. The rest of the path (RawConn, its callbacks, errors) is the same.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}

// sysWritev under the race detector is writev(2) as net's own gathered write issues it (syscall.Syscall, which
// the detector does not annotate either).
func sysWritev(fd uintptr, iov []syscall.Iovec) (int, syscall.Errno) {
	n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}
