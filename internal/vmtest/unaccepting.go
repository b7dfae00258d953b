package vmtest

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Unaccepting returns the address of a real TCP listener that never accepts and whose accept queue is full, so
// that a connection attempt to it hangs until the dialer's timeout, as to a backend behind a firewall that drops
// packets. It is closed when t ends.
func Unaccepting(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	// A backlog of 0: the queue holds one connection; the kernel drops the SYNs of the next ones.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue until a connection attempt hangs.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				return addr
			}
			t.Fatalf("filling the accept queue of %s: %s", addr, err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatalf("connection attempts to %s still succeed with its accept queue full", addr)
	return ""
}
