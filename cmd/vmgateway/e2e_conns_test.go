package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestIdleConnectionsDoNotLockClientsOut: connections that send nothing need no token, and enough of them ran the
// gateway out of file descriptors (20,600 on a machine whose limit is 20,000, in an attacker's review): every other
// client was locked out until -http.readHeaderTimeout. The gateway now holds at most -http.maxConnections (by default
// three quarters of its open-files limit), and at the bound a new connection takes the place of one waiting for a
// request's head, or for the body of a request it answered without reading it. Here the gateway runs with 256 files and
// gets 400 connections of each kind in turn; a query with a token is still answered, and with no bound it is not.
func TestIdleConnectionsDoNotLockClientsOut(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	tok := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	// What each of the 400 connections sends: nothing; a byte of a request's head (an attacker's review: a connection
	// reading a head could not be evicted, and these locked clients out as silent ones had); a whole head without a
	// token that announces a body, never sent, whose refusal waits for the body (another review: nor could these).
	sends := map[string]string{"silent": "", "a byte of a head": "G",
		"a body never sent": "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"}
	for _, tc := range []struct{ bound, kind string }{
		{"0", "silent"}, {"0", "a byte of a head"}, {"0", "a body never sent"}, {"-1", "a byte of a head"},
	} {
		bound := tc.bound
		t.Run("-http.maxConnections="+bound+", "+tc.kind, func(t *testing.T) {
			addr := vmtest.FreePort(t)
			cmd := exec.Command("sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, gatewayBin, "-httpListenAddr="+addr, "-read.url="+vm.URL,
				"-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, "-http.maxConnections="+bound, "-http.readHeaderTimeout=30s",
				"-write.labelTruncationCheckInterval=0", "-read.maxConcurrentRequests=-1", "-read.learnBackendFlags=false", "-write.maxConcurrentRequests=-1")
			cmd.Env = os.Environ()
			g := runGateway(t, "http://"+addr, cmd)
			t.Cleanup(func() { g.stop(syscall.SIGKILL) })
			if !g.waitHealthy("") {
				t.Fatalf("the gateway did not start:\n%s", g.logs.String())
			}
			var silent []net.Conn
			defer func() {
				for _, c := range silent {
					c.Close()
				}
			}()
			for range 400 {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					t.Fatalf("dialing a silent connection: %s", err)
				}
				if send := sends[tc.kind]; send != "" {
					_, _ = c.Write([]byte(send))
				}
				silent = append(silent, c)
			}
			time.Sleep(1500 * time.Millisecond) // the gateway accepts what it can, and their grace runs out
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.Pid()))
			client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			code := 0
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			t.Logf("-http.maxConnections=%s, %s: %d files open in the gateway with 400 connections; a query: %d %v", bound, tc.kind, len(fds), code, err)
			if bound == "0" {
				if code != http.StatusOK {
					t.Fatalf("a query with 400 connections open (%s): %d %v; want 200", tc.kind, code, err)
				}
				if v := metricValue(t, g, "vmgateway_http_conns_evicted_total"); v < 1 {
					t.Errorf("vmgateway_http_conns_evicted_total is %v; want the idle connections evicted", v)
				}
				return
			}
			if code == http.StatusOK {
				t.Fatal("with no bound a query still got through 400 idle connections to a gateway of 256 files: the test shows nothing")
			}
		})
	}
}

// TestHealthPollersDoNotLockClientsOut: 20 kept-alive connections without a token that poll /health more often than
// the eviction grace, reading every answer, held every connection of -http.maxConnections=20: a client with a token
// was refused 29 times of 30 (an attacker's review). A connection nobody vouched for (no valid token yet) keeps a
// hundredth of the grace when idle, and goes first: the client with a token is served.
func TestHealthPollersDoNotLockClientsOut(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	priv, pub := keyPair(t, "ec")
	tok := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, "-http.maxConnections=20")
	addr := strings.TrimPrefix(g.URL, "http://")
	stop := make(chan struct{})
	var pollers sync.WaitGroup
	defer func() { close(stop); pollers.Wait() }()
	for range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		pollers.Add(1)
		go func() {
			defer pollers.Done()
			defer c.Close()
			vmtest.PollHealth(c, bufio.NewReader(c), 300*time.Millisecond, stop) // more often than the grace of 1 s
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	served := 0
	for range 10 {
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := client.Do(req); err == nil {
			if resp.StatusCode == http.StatusOK {
				served++
			}
			resp.Body.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
	if served < 8 {
		t.Errorf("a client with a token beside 20 /health pollers at -http.maxConnections=20: %d of 10 served", served)
	}
}

// TestSlowReadBodiesDoNotLockClientsOut: one team's connections, each sending a query's form a byte short, are
// active while the gateway reads their bodies, and an active connection is not evicted: 15,500 of them, each sending
// its last byte before -http.readBodyTimeout and then another, kept every other client out (an attacker's review). A
// team reads at most -maxConcurrentPerTenantRequests bodies at once; its others wait for one within -maxQueueDuration,
// get 429, and may then go. Here the bound of 40 connections is held by 40 such connections of one team: another
// team's query is answered where a team may read 10 bodies at once, and not where it may read 100.
func TestSlowReadBodiesDoNotLockClientsOut(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	priv, pub := keyPair(t, "ec")
	victim := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	attacker := mint(t, priv, "-mode=read", "-extraLabels=team=att")
	for _, perTeam := range []string{"10", "100"} {
		t.Run("-maxConcurrentPerTenantRequests="+perTeam, func(t *testing.T) {
			g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
				"-http.maxConnections=40", "-http.readBodyTimeout=30s", "-maxQueueDuration=200ms", "-maxConcurrentPerTenantRequests="+perTeam)
			addr := strings.TrimPrefix(g.URL, "http://")
			head := "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + attacker +
				"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 15\r\n\r\nquery=vector(1"
			for range 40 {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, _ = c.Write([]byte(head))
			}
			time.Sleep(1500 * time.Millisecond) // the queue runs out for those past the team's bodies, and their grace
			client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			served := 0
			for range 5 {
				req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/query?query=up", nil)
				req.Header.Set("Authorization", "Bearer "+victim)
				if resp, err := client.Do(req); err == nil {
					if resp.StatusCode == http.StatusOK {
						served++
					}
					resp.Body.Close()
				}
			}
			t.Logf("%s bodies a team: another team's queries answered %d of 5", perTeam, served)
			switch {
			case perTeam == "10" && served < 4:
				t.Fatalf("another team's queries answered %d of 5 beside one team's 40 slow bodies; want at least 4", served)
			case perTeam == "100" && served > 0:
				t.Fatalf("with 100 bodies a team, %d of another team's queries got through 40 slow bodies: the test shows nothing", served)
			}
		})
	}
}
