package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// upgradingUpstream answers every request with a 101 to protocol, and reports what it read after the request's
// headers: nothing may follow, since the gateway must not pass the client's bytes on as an upgraded connection's.
func upgradingUpstream(t *testing.T, protocol string) (addr string, after chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	after = make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+protocol+"\r\n\r\n")
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				rest, _ := io.ReadAll(br)
				after <- string(rest)
			}()
		}
	}()
	return ln.Addr().String(), after
}

// TestUpgradeRefused: an upstream that switches protocols gets the client a 502 saying so, counted as an upgrade,
// and the upstream reads nothing after the request: the client's connection is never joined to it.
func TestUpgradeRefused(t *testing.T) {
	for _, tc := range []struct{ answered, want string }{
		{"websocket", `the read upstream switched protocols (101) to "websocket"; the gateway passes no protocol upgrade on`},
		{"h2c", `switched protocols (101) to "h2c", which the client did not ask for (it asked for "websocket")`},
	} {
		addr, after := upgradingUpstream(t, tc.answered)
		srv := serveGateway(t, "http://"+addr, tlsclient.Options{}, nil)
		before := counter(`vmgateway_upstream_errors_total{upstream="read",reason="upgrade"}`)
		code, _, e, body := get(t, srv.URL+"/api/v1/query?query=up", "Connection", "Upgrade", "Upgrade", "websocket")
		if code != http.StatusBadGateway || e.Status != "error" || !strings.Contains(e.Error, tc.want) {
			t.Errorf("answered %s: %d %s; want a 502 with %q", tc.answered, code, body, tc.want)
		}
		if got := counter(`vmgateway_upstream_errors_total{upstream="read",reason="upgrade"}`); got != before+1 {
			t.Errorf("answered %s: vmgateway_upstream_errors_total{reason=\"upgrade\"} went from %d to %d", tc.answered, before, got)
		}
		select {
		case rest := <-after:
			if rest != "" {
				t.Errorf("answered %s: the upstream read %q after the request", tc.answered, rest)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("answered %s: the request never reached the upstream", tc.answered)
		}
	}
}
