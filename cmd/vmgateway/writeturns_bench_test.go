package main

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// BenchmarkWriteTurns measures what one team's bulk imports cost another team's one-line writes on v1.151, which runs
// -maxConcurrentInserts parse-and-insert steps at once and queues the rest first come first served, side by side:
// the gateway's default (turns at the capacity it learns, a write giving its turn up while its client is slow),
// no limit (what the default was before), and a fixed -write.maxConcurrentRequests=4 (turns held for the whole
// body). "flood": dev posts a body of 100,000 lines (7 MB) on each of 16 connections, again and again, while ops
// posts one line b.N times, one after the other: ops' p50 and p99, and the flood's bodies a second. "teams": the same
// flood from four teams, four connections each, so that each holds a turn for as long as its bodies last unless it
// passes it on. "alone": dev's b.N bodies on 16 connections, nobody else writing: what the turns cost a team alone.
//
//	go test -run '^$' -bench BenchmarkWriteTurns -benchtime 60x ./cmd/vmgateway
func BenchmarkWriteTurns(b *testing.B) {
	vm := vmtest.StartCurrent(b, "-maxConcurrentInserts=4")
	priv, pub := keyPair(b, "ec")
	dev := mint(b, priv, "-mode=write", "-extraLabels=team=dev")
	ops := mint(b, priv, "-mode=write", "-extraLabels=team=ops")
	teams := make([]string, 4)
	for i := range teams {
		teams[i] = mint(b, priv, "-mode=write", fmt.Sprintf("-extraLabels=team=t%d", i))
	}
	var big bytes.Buffer
	for i := range 100000 {
		fmt.Fprintf(&big, "big{i=\"%d\",pod=\"pod-%d\",zone=\"zone-%d\"} %d\n", i, i%500, i%3, i)
	}
	const flooders = 16
	post := func(c *http.Client, g *gw, token string, body []byte) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/v1/import/prometheus", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, mode := range []struct{ name, flag string }{
		{"default", "-write.maxConcurrentRequests=0"},
		{"unlimited", "-write.maxConcurrentRequests=-1"},
		{"fixed4", "-write.maxConcurrentRequests=4"},
	} {
		g := startGateway(b, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, mode.flag,
			"-write.maxQueueDuration=1m")
		// Bodies of the teams of tokens, on flooders connections in all, until stop, or b.N of them when n is set.
		run := func(b *testing.B, tokens []string, n int64, stop <-chan struct{}) (done *atomic.Int64, wait func()) {
			done = new(atomic.Int64)
			var taken atomic.Int64
			var wg sync.WaitGroup
			for i := range flooders {
				wg.Add(1)
				dev := tokens[i%len(tokens)]
				go func() {
					defer wg.Done()
					c := &http.Client{Timeout: 2 * time.Minute}
					for {
						select {
						case <-stop:
							return
						default:
						}
						if n > 0 && taken.Add(1) > n {
							return
						}
						code, err := post(c, g, dev, big.Bytes())
						if err != nil || code != http.StatusNoContent {
							b.Errorf("dev's body: %d %v", code, err)
							return
						}
						done.Add(1)
					}
				}()
			}
			return done, wg.Wait
		}
		flood := func(b *testing.B, tokens []string) {
			stop := make(chan struct{})
			bodies, wait := run(b, tokens, 0, stop)
			time.Sleep(2 * time.Second) // the flood fills the backend's queue
			c := &http.Client{Timeout: time.Minute}
			took := make([]time.Duration, 0, b.N)
			from := bodies.Load()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				t0 := time.Now()
				code, err := post(c, g, ops, []byte(`opsw{a="1"} 1`+"\n"))
				if err != nil || code != http.StatusNoContent {
					b.Fatalf("ops' write: %d %v", code, err)
				}
				took = append(took, time.Since(t0))
			}
			elapsed := time.Since(start)
			b.StopTimer()
			n := bodies.Load() - from
			close(stop)
			wait()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ops-p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "ops-p99-ms")
			b.ReportMetric(float64(n)/elapsed.Seconds(), "flood-bodies/s")
		}
		b.Run(mode.name+"/flood", func(b *testing.B) { flood(b, []string{dev}) })
		b.Run(mode.name+"/teams", func(b *testing.B) { flood(b, teams) })
		b.Run(mode.name+"/alone", func(b *testing.B) {
			b.ResetTimer()
			_, wait := run(b, []string{dev}, int64(b.N), nil)
			wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "dev-bodies/s")
		})
		if strings.Contains(mode.flag, "=0") {
			b.Logf("%s: %v write slots", mode.name, metricValue(b, g, "vmgateway_write_backend_slots"))
		}
	}
}
