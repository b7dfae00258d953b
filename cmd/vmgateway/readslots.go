package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/redact"
)

var (
	readMaxConcurrentRequests = flag.Int("read.maxConcurrentRequests", 0, "How many reads the gateway forwards at once to the -read.url backends together. Past it, reads wait at the gateway, where each team (isolation unit) takes its turn, rather than in VictoriaMetrics' own queue, where one team's flood of slow queries holds up every other team's. "+
		"0 (the default) learns it from the backends: the sum of their vm_concurrent_select_capacity (their -search.maxConcurrentRequests), read from each one's /metrics (each address found with -discoverBackendIPs) at start and every minute; while no backend could be read there is no limit. "+
		"A negative value sets no limit. A -read.url that is a load balancer over several backends answers /metrics from one of them: use -discoverBackendIPs (a headless Service), or give the sum here. With several gateway replicas in front of the same backends, set -read.replicas")
	readReplicas = flag.Int("read.replicas", 1, "How many gateway replicas forward reads to the same read backends. Each forwards at most its part of their capacity (-read.maxConcurrentRequests, or as learned): the capacity divided by the replicas, rounded down, at least 1. "+
		"Each replica that took the whole capacity would let the backends' own queue, first come first served, fill again with one team's reads behind the others' backs")
	readMaxQueueDuration = flag.Duration("read.maxQueueDuration", 10*time.Second, "How long a read waits for its turn at the read backends (-read.maxConcurrentRequests), after its wait under -maxQueueDuration, before it gets 429. It takes the place of VictoriaMetrics' own -search.maxQueueDuration (10s by default), whose queue stays empty")
)

// readCapacityInterval is how often the backends' capacity is read again; readCapacityRetry while one is unknown.
const (
	readCapacityInterval = time.Minute
	readCapacityRetry    = 10 * time.Second
)

// readSlotsWatch learns the read backends' capacity from their /metrics and gives it to the gateway
// (gateway.SetReadSlots): the number of queries VictoriaMetrics runs at once is its own flag, which the gateway can
// only read there. An address not read yet counts as the mean of those read (one fleet); none read, no limit.
type readSlotsWatch struct {
	set    func(int) // gateway.SetReadSlots
	client *http.Client
	again  chan struct{}

	mu     sync.Mutex
	addrs  []gateway.BackendAddr
	known  map[string]int  // capacity by current address (URL and Host), as last read
	failed map[string]bool // the current addresses whose last read failed, logged once
	slots  int             // what the gateway was last given

	stop context.CancelFunc
	done sync.WaitGroup
}

// newReadSlotsWatch returns the watch the flags ask for; nil when -read.maxConcurrentRequests fixes the limit or
// turns it off (startReadSlots then sets it).
func newReadSlotsWatch(rt http.RoundTripper) *readSlotsWatch {
	if *readMaxConcurrentRequests != 0 {
		return nil
	}
	return &readSlotsWatch{client: metricsClient(rt, 10*time.Second), again: make(chan struct{}, 1), known: map[string]int{}, failed: map[string]bool{}}
}

// setAddrs is gateway.Config.ReadAddrs: a new address is read soon.
func (w *readSlotsWatch) setAddrs(addrs []gateway.BackendAddr) {
	w.mu.Lock()
	w.addrs = addrs
	w.mu.Unlock()
	select {
	case w.again <- struct{}{}:
	default:
	}
}

// startReadSlots gives gw its read limit: the flag's, or the backends' as w learns it.
func startReadSlots(w *readSlotsWatch, gw *gateway.Gateway) {
	set := func(capacity int) {
		if capacity > 0 && *readReplicas > capacity {
			slog.Warn("-read.replicas is more than the read backends' capacity: each replica forwards one read at once, and together "+
				"they forward more than the backends run, which queue the rest first come first served; give the backends more "+
				"-search.maxConcurrentRequests, or run fewer replicas", "replicas", *readReplicas, "capacity", capacity)
		}
		gw.SetReadSlots(replicaPart(capacity, *readReplicas))
	}
	if w == nil {
		set(max(*readMaxConcurrentRequests, 0))
		return
	}
	w.set = set
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for {
			wait := readCapacityInterval
			if !w.readAll(ctx) {
				wait = readCapacityRetry
			}
			if !sleepUnless(ctx, wait, w.again) {
				return
			}
		}
	}()
}

func (w *readSlotsWatch) close() {
	if w != nil && w.stop != nil {
		w.stop()
		w.done.Wait()
	}
}

// readAll reads every address's capacity and gives the gateway their sum; false when one could not be read.
func (w *readSlotsWatch) readAll(ctx context.Context) bool {
	w.mu.Lock()
	addrs := w.addrs
	w.mu.Unlock()
	read := make(map[string]int, len(addrs))
	failed := map[string]error{}
	for _, a := range addrs {
		n, err := w.capacity(ctx, a)
		if ctx.Err() != nil {
			return true
		}
		if err != nil {
			failed[addrKey(a)] = err
			continue
		}
		read[addrKey(a)] = n
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	known, wasFailed := make(map[string]int, len(addrs)), w.failed
	w.failed = make(map[string]bool, len(failed))
	sum, counted, unknown := 0, 0, 0
	for _, a := range addrs {
		key := addrKey(a)
		if err := failed[key]; err != nil {
			w.failed[key] = true
			if !wasFailed[key] {
				slog.Warn("cannot read the read backend's /metrics to learn how many queries it runs at once (vm_concurrent_select_capacity); "+
					"it is taken to be what it was, or like the others, and read again every 10s; set -read.maxConcurrentRequests to give it instead",
					"backend", redact.URL(a.URL), "host", a.Host, "err", err)
			}
		}
		n, ok := read[key]
		if !ok {
			n, ok = w.known[key]
		}
		if !ok {
			unknown++
			continue
		}
		known[key] = n
		sum += n
		counted++
	}
	w.known = known
	if counted > 0 {
		sum += unknown * sum / counted
	}
	if sum != w.slots {
		if sum == 0 {
			slog.Warn("no read backend's capacity is known: reads are forwarded without a limit, and queue in the backends' "+
				"own queue, first come first served, until one can be read", "unknown", unknown)
		} else {
			slog.Info("the read backends run this many queries at once: reads past it wait at the gateway, each team in turn",
				"slots", sum, "backends", counted, "unknown", unknown, "replicas", *readReplicas, "forwardedByThisReplica", replicaPart(sum, *readReplicas))
		}
		w.slots = sum
		w.set(sum)
	}
	return len(failed) == 0
}

// replicaPart is what one of replicas forwards of the backends' capacity (0: no limit). Rounded down, so that the
// replicas together never pass it, but at least 1, so that each forwards reads at all.
func replicaPart(capacity, replicas int) int {
	if capacity <= 0 || replicas <= 1 {
		return capacity
	}
	return max(1, capacity/replicas)
}

func addrKey(a gateway.BackendAddr) string { return a.URL.String() + " " + a.Host }

// capacity reads vm_concurrent_select_capacity from the /metrics of the backend at a.
func (w *readSlotsWatch) capacity(ctx context.Context, a gateway.BackendAddr) (int, error) {
	resp, err := getMetrics(ctx, w.client, metricsURLOf(a.URL), a.Host)
	if err != nil {
		return 0, redact.URLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics answered %d", resp.StatusCode)
	}
	return selectCapacityOf(io.LimitReader(resp.Body, maxMetricsPage))
}

// selectCapacityOf reads a VictoriaMetrics /metrics page for vm_concurrent_select_capacity.
func selectCapacityOf(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "vm_concurrent_select_capacity ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(n >= 1 && n <= 1e6) { // NaN too
			return 0, fmt.Errorf("vm_concurrent_select_capacity is %q, not a count of queries", v)
		}
		return int(n), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading /metrics: %w", err)
	}
	return 0, fmt.Errorf("its /metrics has no vm_concurrent_select_capacity (not VictoriaMetrics, or a proxy in front of it)")
}
