//go:build unix

package server

import "syscall"

// openFilesLimit is the soft limit on the process's open files, 0 when it cannot be read.
func openFilesLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 0
	}
	return int(l.Cur)
}
