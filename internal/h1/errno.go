package h1

import "syscall"

// errTooManyFiles: out of file descriptors is passing, like a timeout: accepting resumes after a pause.
var errTooManyFiles error = syscall.EMFILE
