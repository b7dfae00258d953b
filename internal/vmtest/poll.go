package vmtest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"time"
)

// PollHealth asks for /health on c, a kept-alive connection read through br, every interval and reads each answer
// whole, as a well-behaved monitor does, until stop is closed or the connection fails: a client without a token that
// holds its connection between requests.
func PollHealth(c net.Conn, br *bufio.Reader, every time.Duration, stop <-chan struct{}) {
	for {
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
	}
}
