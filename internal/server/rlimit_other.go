//go:build !unix

package server

// openFilesLimit is 0 where the limit is not read: no automatic bound on client connections.
func openFilesLimit() int { return 0 }
