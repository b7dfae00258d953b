//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The real-work round: a real VictoriaMetrics holding generated series answers a small mix of dashboard queries,
// directly and through the proxies. There the upstream does most of the work, and a proxy should almost vanish.

var (
	realWork            = flag.Bool("realwork", true, "After the rounds, the real-work round: direct to a real VictoriaMetrics loaded with generated series, the gateway and vmauth, on a mix of dashboard queries")
	realWorkVM          = flag.String("realwork.vm", "/usr/bin/victoria-metrics", "The single-node VictoriaMetrics binary of the real-work round")
	realWorkConcurrency = flag.Int("realwork.concurrency", 16, "Concurrent connections of the real-work round, like a few Grafana users refreshing dashboards")
	realWorkDirect      = flag.String("realwork.direct", "", "Comma-separated concurrencies to also measure VictoriaMetrics at directly in the real-work round, as direct-c<N>: "+
		"at its own limit of queries at once (4 for 1.79.5 on two cores), what the gateway's read slots hold it to, it answers fewer than with more waiting in its queue")
)

// realSeries is how many series the real-work round generates: half http_requests_total counters, half
// http_request_duration_seconds_bucket histogram buckets, every other instance of them team=dev.
const realSeries = 1000

// realSpan and realStep are the generated samples: an hour of them, one every 30 seconds, ending realEnd.
const (
	realSpan = time.Hour
	realStep = 30 * time.Second
)

// realEnd is the last sample's time: set when the data is loaded, and the time of every dashboard query.
var realEnd int64

// dashboardQueries are what a dashboard asks: instant and range queries, rollups, aggregations, a regexp selector.
var dashboardQueries = []struct {
	instant bool
	query   string
}{
	{true, `sum(rate(http_requests_total[5m])) by (job)`},
	{false, `sum(rate(http_requests_total{handler=~"/api/v1/(query|query_range)"}[5m])) by (handler)`},
	{false, `histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket[5m])) by (le, job))`},
	{true, `topk(5, max_over_time(http_requests_total[30m]))`},
	{false, `sum(increase(http_requests_total{code="500"}[10m])) by (instance)`},
}

// dashboardRequests are the dashboard's queries as raw requests. Direct requests, and those through a proxy that
// only passes them on, carry the restriction the gateway and vmauth add (extra_label=team=dev), so that
// VictoriaMetrics does the same work for each target.
func dashboardRequests(addr, token string, direct bool) [][]byte {
	var out [][]byte
	for _, q := range dashboardQueries {
		args := url.Values{"query": {q.query}}
		path := "/api/v1/query"
		if q.instant {
			args.Set("time", strconv.FormatInt(realEnd, 10))
		} else {
			path = "/api/v1/query_range"
			args.Set("start", strconv.FormatInt(realEnd-int64(realSpan/time.Second), 10))
			args.Set("end", strconv.FormatInt(realEnd, 10))
			args.Set("step", "60")
		}
		if direct {
			args.Set("extra_label", labelName+"="+labelValue)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "GET %s?%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Grafana/11.0.0\r\n", path, args.Encode(), addr)
		if !direct {
			fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
		}
		b.WriteString("Accept: application/json\r\n\r\n")
		out = append(out, []byte(b.String()))
	}
	return out
}

// startVictoriaMetrics starts a single-node VictoriaMetrics with empty storage and loads the generated series.
func startVictoriaMetrics(ctx context.Context, dir string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startProcess(ctx, "victoria-metrics", *realWorkVM, addr,
		"-storageDataPath="+filepath.Join(dir, "vm-data"), "-httpListenAddr="+addr, "-retentionPeriod=1y",
		"-loggerLevel=WARN", "-search.latencyOffset=0s")
	if err != nil {
		return nil, err
	}
	if err := loadSeries(ctx, addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// loadSeries imports the generated series, flushes them to searchable storage and waits until all are there.
func loadSeries(ctx context.Context, addr string) error {
	end := time.Now().Add(-time.Minute).Truncate(realStep)
	realEnd = end.Unix()
	pr, pw := io.Pipe()
	go func() {
		var b strings.Builder
		for t := end.Add(-realSpan); !t.After(end); t = t.Add(realStep) {
			ms := t.UnixMilli()
			n := 0
			for job := 0; job < 5; job++ {
				for inst := 0; inst < 10; inst++ {
					team := "ops"
					if inst%2 == 0 {
						team = "dev"
					}
					for h, handler := range []string{"query", "query_range", "series", "labels", "export"} {
						for c, code := range []string{"200", "500"} {
							v := (ms/1000 - realEnd + int64(realSpan/time.Second)) * int64(1+h+job+c*3)
							fmt.Fprintf(&b, "http_requests_total{job=\"job-%d\",instance=\"10.0.0.%d:8080\",handler=\"/api/v1/%s\",code=%q,team=%q} %d %d\n",
								job, inst, handler, code, team, v, ms)
							n++
						}
					}
					for i, le := range []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"} {
						v := (ms/1000 - realEnd + int64(realSpan/time.Second)) * int64(1+i+inst)
						fmt.Fprintf(&b, "http_request_duration_seconds_bucket{job=\"job-%d\",instance=\"10.0.0.%d:8080\",le=%q,team=%q} %d %d\n",
							job, inst, le, team, v, ms)
						n++
					}
				}
			}
			if n != realSeries {
				pw.CloseWithError(fmt.Errorf("generated %d series; want %d", n, realSeries))
				return
			}
			if _, err := io.WriteString(pw, b.String()); err != nil {
				return
			}
			b.Reset()
		}
		pw.Close()
	}()
	base := "http://" + addr
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/import/prometheus", pr)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("loading the real-work series: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("loading the real-work series: status %d", resp.StatusCode)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, err := http.Get(base + "/internal/force_flush"); err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		n, err := countSeries(base)
		if err == nil && n == realSeries {
			fmt.Printf("loaded %d series into VictoriaMetrics on %s\n", n, addr)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VictoriaMetrics on %s holds %d series 30s after the import (err %v); want %d", addr, n, err, realSeries)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func countSeries(base string) (int, error) {
	q := url.Values{"query": {`count({__name__=~"http_request.*"})`}, "time": {strconv.FormatInt(realEnd, 10)}}
	resp, err := http.Get(base + "/api/v1/query?" + q.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var ans struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return 0, err
	}
	if len(ans.Data.Result) == 0 {
		return 0, nil
	}
	s, _ := ans.Data.Result[0].Value[1].(string)
	return strconv.Atoi(s)
}

// realWorkCheck makes sure each dashboard query gets a non-empty successful answer through t, before t is measured.
func realWorkCheck(t *target, token string) error {
	for i, raw := range t.requests("dashboard", token) {
		req, err := http.ReadRequest(bufioReader(raw))
		if err != nil {
			return err
		}
		u := "http://" + t.addr + req.URL.RequestURI()
		out, _ := http.NewRequest(http.MethodGet, u, nil)
		out.Header = req.Header
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			return fmt.Errorf("real-work check of %s: %w", t.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"status":"success"`) || strings.Contains(string(b), `"result":[]`) {
			return fmt.Errorf("real-work check of %s: query %q: status %d, answer %.300s", t.name, dashboardQueries[i].query, resp.StatusCode, b)
		}
	}
	return nil
}

// startRealWork starts VictoriaMetrics and the proxies in front of it (the -baseline.bin gateway too); the returned
// func stops them all.
func startRealWork(ctx context.Context, dir, gatewayBin string, cred *credentials) ([]*target, func(), error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if _, err := os.Stat(*realWorkVM); err != nil {
		return nil, nil, fmt.Errorf("-realwork.vm: %w; pass -realwork=false to skip the real-work round", err)
	}
	vm, err := startVictoriaMetrics(ctx, dir)
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, vm.stop)
	targets := []*target{{name: "direct", kind: "direct", addr: vm.addr, concurrency: *realWorkConcurrency}}
	for _, f := range strings.Split(*realWorkDirect, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			stopAll()
			return nil, nil, fmt.Errorf("-realwork.direct=%q: %q is not a positive concurrency", *realWorkDirect, f)
		}
		targets = append(targets, &target{name: "direct-c" + f, kind: "direct", addr: vm.addr, concurrency: n})
	}
	gw, err := startGateway(ctx, "vmgateway-vm", gatewayBin, dir, vm.addr, cred)
	if err != nil {
		stopAll()
		return nil, nil, err
	}
	stops = append(stops, gw.stop)
	targets = append(targets, &target{name: "vmgateway", kind: "vmgateway", addr: gw.addr, proc: gw, token: cred.token, concurrency: *realWorkConcurrency})
	if *baselineBin != "" {
		bl, err := startGateway(ctx, "baseline-vm", *baselineBin, dir, vm.addr, cred)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, bl.stop)
		targets = append(targets, &target{name: "baseline", kind: "vmgateway", addr: bl.addr, proc: bl, token: cred.token, concurrency: *realWorkConcurrency})
	}
	if *vmauthBin != "" {
		va, err := startVMAuth(ctx, "vmauth-vm", *vmauthBin, dir, vm.addr, cred)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, va.stop)
		targets = append(targets, &target{name: "vmauth", kind: "vmauth", addr: va.addr, proc: va, token: cred.tokenFor("vmauth"), concurrency: *realWorkConcurrency})
	}
	// The pass-through proxies are the floor here too: what any proxy between the dashboard and VictoriaMetrics
	// costs on this machine, where all of them share its cores with VictoriaMetrics.
	// Named apart from the synthetic rounds' (their config files and logs go by name).
	for _, pt := range []struct {
		on    bool
		name  string
		start func(ctx context.Context, name, dir, upstreamAddr string) (*process, error)
	}{
		{*withHAProxy, "haproxy", startHAProxy},
		{*withNginx, "nginx", startNginx},
	} {
		if !pt.on {
			continue
		}
		p, err := pt.start(ctx, pt.name+"-vm", dir, vm.addr)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, p.stop)
		targets = append(targets, &target{name: pt.name, kind: "passthrough", addr: p.addr, proc: p, concurrency: *realWorkConcurrency})
	}
	for _, t := range targets {
		if err := realWorkCheck(t, cred.token); err != nil {
			stopAll()
			return nil, nil, err
		}
	}
	return targets, stopAll, nil
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
