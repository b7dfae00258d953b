//go:build !linux

package h1

// Without epoll, the background read watches for clients going away (conn.startBackgroundRead).
func (c *conn) watch() bool { return false }

func (c *conn) unwatch() {}

func (c *conn) unreadBytes() int { return 0 }
