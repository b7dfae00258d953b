//go:build linux

// Command bench measures what vmgateway costs per request, side by side with direct access to the upstream and
// with the other proxies, on loopback: one fast in-process upstream; the real vmgateway binary (auth on with an
// RS256 token carrying extra_labels, rate limiting on); vmauth (v1.151 by default, built when missing: a JWT user
// whose url_prefix takes extra_label from the token); haproxy and nginx passing requests through (the Debian
// packages, installed when missing); a bare httputil.ReverseProxy and a Go byte relay (this binary run again). All are driven by
// the same load generator with the same concurrency and duration, in interleaved rounds, on each workload: reads,
// small imports, and vmagent's remote-write batches (~1 MiB, snappy) at a few connections. Then the real-work
// round: a real VictoriaMetrics loaded with generated series answers a mix of dashboard queries, directly,
// through the gateway and through vmauth. It prints a table with the gateway's ratio to each, and writes the
// figures as JSON. Run it from the module root:
//
//	go run ./bench                 # or: make bench
//	go run ./bench -duration 5s -rounds 1 -stream.mib 64
//
// It reads /proc for CPU time and RSS, so it runs on Linux only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

var (
	concurrency = flag.Int("concurrency", 64, "Concurrent keep-alive connections of the load generator, the same for every target")
	duration    = flag.Duration("duration", 10*time.Second, "Measured duration of one run")
	warmup      = flag.Duration("warmup", 2*time.Second, "Unmeasured load before each run: connections open, caches fill")
	rounds      = flag.Int("rounds", 3, "Interleaved rounds (direct, vmgateway, vmauth, then again); the table shows the median")
	workloads   = flag.String("workloads", "read,write,remotewrite", "Comma-separated workloads: read (Grafana query_range GET), write (small Prometheus text imports), remotewrite (vmagent's ~1 MiB snappy remote-write batches, at -remotewrite.concurrency)")
	outDir      = flag.String("out", "bench-results", "Directory for latest.json, the CPU profile and the logs of the processes under test")
	gatewayBin  = flag.String("gateway.bin", "", "A vmgateway binary to measure; empty builds ./cmd/vmgateway from the current tree")
	baselineBin = flag.String("baseline.bin", "", "Another vmgateway binary (e.g. built from the main branch) to measure in the same interleaved rounds as \"baseline\", to compare a change with")
	vmauthBin   = flag.String("vmauth.bin", "/root/vmbin/vmauth", "The vmauth binary to compare with, built with go install (-vmauth.version) when missing; empty skips vmauth")
	streamMiB   = flag.Int("stream.mib", 512, "Size of the streaming check's write body in MiB; 0 skips the check")
	profile     = flag.Bool("profile", true, "After the rounds, run one more vmgateway run of each workload (and of the dashboard mix, with -realwork) while taking a CPU profile of the gateway (not counted in the table); make pgo merges them into the build's profile")
	openGateway = flag.Bool("open", true, "Also measure vmgateway with auth and rate limits off as \"vmgateway-open\": its forwarding core alone, which splits the gateway's gap to haproxy into the core's part and the pipeline's (token, limits, rewrite)")
	twoBackends = flag.Bool("twoBackends", true, "Also measure vmgateway with two -read.url and -write.url backends (the upstream twice) as \"vmgateway-2be\": the cost of balancing against one backend")
	goBenchFile = flag.String("gobench", "bench-results/go-bench.txt", "Output of the Go benchmarks, to report the cached-auth and rate-limit targets from; a missing file is skipped")
)

func main() {
	flag.Parse()
	if *goRelayListen != "" {
		if err := serveGoRelay(*goRelayListen, *goRelayUpstream); err != nil {
			fmt.Fprintf(os.Stderr, "bench: Go relay: %s\n", err)
			os.Exit(1)
		}
		return
	}
	if *reverseProxyListen != "" {
		if err := serveReverseProxy(*reverseProxyListen, *reverseProxyUpstream); err != nil {
			fmt.Fprintf(os.Stderr, "bench: reverse proxy: %s\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s\n", err)
		os.Exit(1)
	}
}

func run() error {
	if *concurrency < 1 || *remoteWriteConcurrency < 1 || *duration <= 0 || *rounds < 1 {
		return errors.New("-concurrency, -remotewrite.concurrency, -duration and -rounds must be positive")
	}
	wls, err := parseWorkloads(*workloads)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "vmgateway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	res := &Results{Config: Config{
		Concurrency: *concurrency, Duration: duration.String(), Warmup: warmup.String(), Rounds: *rounds,
		Workloads: wls, ReadResponseBytes: len(matrixJSON), WriteBodyBytes: len(importBody),
		RemoteWriteConcurrency: *remoteWriteConcurrency, RemoteWriteBodyBytes: len(remoteWriteBody), RemoteWriteSeries: remoteWriteSeries,
	}}
	res.Machine = machineInfo(*vmauthBin)
	fmt.Printf("machine: %s, %d cores, %s, load average %s\n", res.Machine.CPUModel, res.Machine.Cores, res.Machine.GoVersion, res.Machine.LoadAvgStart)

	up, err := startUpstream()
	if err != nil {
		return err
	}
	defer up.close()

	bin := *gatewayBin
	if bin == "" {
		bin = filepath.Join(tmp, "vmgateway")
		fmt.Println("building ./cmd/vmgateway")
		if err := buildGateway(bin); err != nil {
			return err
		}
	}
	cred, err := newCredentials(tmp)
	if err != nil {
		return err
	}
	targets := []*target{{name: "direct", kind: "direct", addr: up.addr}}
	gw, err := startGateway(ctx, "vmgateway", bin, tmp, up.addr, cred)
	if err != nil {
		return err
	}
	defer gw.stop()
	targets = append(targets, &target{name: "vmgateway", kind: "vmgateway", addr: gw.addr, proc: gw})
	if *openGateway {
		og, err := startOpenGateway(ctx, "vmgateway-open", bin, up.addr, cred)
		if err != nil {
			return err
		}
		defer og.stop()
		targets = append(targets, &target{name: "vmgateway-open", kind: "open", addr: og.addr, proc: og})
	}
	if *twoBackends {
		up2 := "http://" + up.addr
		g2, err := startGateway(ctx, "vmgateway-2be", bin, tmp, up.addr, cred, "-read.url="+up2, "-write.url="+up2)
		if err != nil {
			return err
		}
		defer g2.stop()
		targets = append(targets, &target{name: "vmgateway-2be", kind: "vmgateway", addr: g2.addr, proc: g2})
	}
	if *baselineBin != "" {
		bl, err := startGateway(ctx, "baseline", *baselineBin, tmp, up.addr, cred)
		if err != nil {
			return err
		}
		defer bl.stop()
		targets = append(targets, &target{name: "baseline", kind: "vmgateway", addr: bl.addr, proc: bl})
	}
	if *vmauthBin != "" {
		if err := ensureVMAuth(*vmauthBin); err != nil {
			return err
		}
		va, err := startVMAuth(ctx, "vmauth", *vmauthBin, tmp, up.addr, cred)
		if err != nil {
			return err
		}
		defer va.stop()
		targets = append(targets, &target{name: "vmauth", kind: "vmauth", addr: va.addr, proc: va, token: cred.tokenFor("vmauth")})
	}
	for _, pt := range []struct {
		on    bool
		start func() (*process, error)
	}{
		{*withHAProxy, func() (*process, error) { return startHAProxy(ctx, "haproxy", tmp, up.addr) }},
		{*withNginx, func() (*process, error) { return startNginx(ctx, "nginx", tmp, up.addr) }},
		{*withReverseProxy, func() (*process, error) { return startReverseProxy(ctx, up.addr) }},
		{*withGoRelay, func() (*process, error) { return startGoRelay(ctx, up.addr) }},
	} {
		if !pt.on {
			continue
		}
		p, err := pt.start()
		if err != nil {
			return err
		}
		defer p.stop()
		targets = append(targets, &target{name: p.name, kind: "passthrough", addr: p.addr, proc: p})
	}
	for _, t := range targets {
		if err := sanityCheck(t, up, cred.token); err != nil {
			return err
		}
	}
	fmt.Println("sanity checks passed: vmgateway and vmauth both add team=dev before the upstream sees a request; the pass-through proxies answer")

	if *streamMiB > 0 {
		for _, t := range targets[1:] {
			s, err := streamCheck(ctx, t, up, cred.token, int64(*streamMiB)<<20)
			if err != nil {
				return err
			}
			res.Stream = append(res.Stream, s)
			fmt.Printf("streaming %d MiB through %s: RSS %.1f MiB before, peak %.1f MiB, growth %.1f MiB, %.0f MiB/s\n",
				*streamMiB, t.name, s.RSSBeforeMiB, s.PeakMiB, s.GrowthMiB, s.MiBPerSec)
		}
	}

	for _, wl := range wls {
		for round := 1; round <= *rounds; round++ {
			for _, t := range targets {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r, err := measure(ctx, t, wl, round, cred.token, nil)
				if err != nil {
					return err
				}
				res.Runs = append(res.Runs, r)
				printRun(r)
			}
		}
	}
	res.summarize(targets, wls, *rounds)

	if *realWork {
		rts, stopReal, err := startRealWork(ctx, tmp, bin, cred)
		if err != nil {
			return err
		}
		err = res.realWorkRounds(ctx, rts, cred.token)
		if err == nil && *profile {
			// By name: -realwork.direct puts more direct targets before it.
			gi := slices.IndexFunc(rts, func(t *target) bool { return t.name == "vmgateway" })
			if perr := profileGateway(ctx, rts[gi], "dashboard", bin, cred, res); perr != nil {
				fmt.Fprintf(os.Stderr, "bench: profile: %s\n", perr)
			}
		}
		stopReal()
		if err != nil {
			return err
		}
	}

	if *profile {
		for _, wl := range wls {
			if err := profileGateway(ctx, targets[1], wl, bin, cred, res); err != nil {
				fmt.Fprintf(os.Stderr, "bench: profile: %s\n", err)
			}
		}
	}
	res.GoBench = readGoBench(*goBenchFile)
	res.evaluateTargets()
	res.Machine.LoadAvgEnd = loadAvg()

	printTable(os.Stdout, res)
	out := filepath.Join(*outDir, "latest.json")
	if err := res.write(out); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s\n", out)
	return nil
}

func parseWorkloads(s string) ([]string, error) {
	var out []string
	for _, w := range strings.Split(s, ",") {
		switch w = strings.TrimSpace(w); w {
		case "read", "write", "remotewrite":
			// A workload named twice would be measured twice and its medians taken over both.
			if !slices.Contains(out, w) {
				out = append(out, w)
			}
		case "":
		default:
			return nil, fmt.Errorf("-workloads: unknown workload %q; want some of read, write, remotewrite", w)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-workloads is empty; want some of read, write, remotewrite")
	}
	return out, nil
}

func printRun(r Run) {
	fmt.Printf("%-11s round %d %-13s %9.0f req/s  p50 %7.0f µs  p99 %7.0f µs  cpu %6.1f ms/1k  others %.2f cores  errors %d\n",
		r.Workload, r.Round, r.Target, r.RPS, r.P50us, r.P99us, r.CPUPer1k, r.OtherCores, r.Errors)
}

// realWorkRounds measures the real-work targets in interleaved rounds, like the others.
func (res *Results) realWorkRounds(ctx context.Context, targets []*target, token string) error {
	for round := 1; round <= *rounds; round++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := measure(ctx, t, "dashboard", round, token, nil)
			if err != nil {
				return err
			}
			res.Runs = append(res.Runs, r)
			printRun(r)
		}
	}
	res.summarize(targets, []string{"dashboard"}, *rounds)
	res.floors(targets, "dashboard", *rounds)
	return nil
}
