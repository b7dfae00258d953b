package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
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
		"It learns there too whether a backend goes on with an answer after its connection is closed (VictoriaMetrics before v1.110.0 exports to the end into nowhere): an answer from one whose client goes away, or that is cut for another team's read, is read to its end with its slot held. A fixed value learns neither, and closes the connection; the backends' flags are still read (-read.learnBackendFlags). "+
		"A negative value sets no limit. A -read.url that is a load balancer over several backends answers /metrics from one of them: use -discoverBackendIPs (a headless Service), or give the sum here. With several gateway replicas in front of the same backends, set -read.replicas")
	readReplicas = flag.Int("read.replicas", 1, "How many gateway replicas forward reads to the same read backends. Each forwards at most its part of their capacity (-read.maxConcurrentRequests, or as learned): the capacity divided by the replicas, rounded down, at least 1. "+
		"Each replica that took the whole capacity would let the backends' own queue, first come first served, fill again with one team's reads behind the others' backs")
	readLearnBackendFlags = flag.Bool("read.learnBackendFlags", true, "Whether the gateway reads each read backend's /metrics, at start and every minute, for its -dedup.minScrapeInterval (the query limits assume no denser samples), its -search.maxQueryLen (a query the rewrite makes too long gets the gateway's error naming both lengths), the workers it runs a query on (-search.maxFanOutPoints counts an aggregation's groups in each) whether it reads `or` inside a selector's braces (VictoriaMetrics v1.110.0 on, as its page tells: a token's several filters then go out inside them) whether its count_values is linear in the series (v1.88.0 on: -search.maxCountValuesComparisons is then not counted) and its -search.maxUniqueTimeseries (a query whose subqueries would read within -search.maxQueryWindowPoints over that many series of each selector is not counted), where -read.maxConcurrentRequests is set; 0 reads them with the capacity whatever this says. False leaves the limits, the rewrite and the check as if none were known")
	readMaxQueueDuration  = flag.Duration("read.maxQueueDuration", 10*time.Second, "How long a read waits for its turn at the read backends (-read.maxConcurrentRequests), after its wait under -maxQueueDuration, before it gets 429. It takes the place of VictoriaMetrics' own -search.maxQueueDuration (10s by default), whose queue stays empty. A read VictoriaMetrics refuses because the query memory all queries share is full waits as long, from its first refusal, to be sent again once another query is answered, with the memory that query frees held for it, the read refused first going first")

	readSlotLending = flag.Bool("read.slotLending", false, "Whether a team (isolation unit) alone in wanting more than three quarters of the read slots (-read.maxConcurrentRequests, or as learned) may take the rest, and a quarter more to wait in the backends' own queue (none under 4 slots), while every read in flight began less than 100ms ago and the team's last 16 reads each took less; nothing is lent while another team waits. "+
		"Held to three quarters, a team alone leaves a quarter of VictoriaMetrics' query slots idle, and the rest idle between one query's end and the next one's arrival: a dashboard got 0.69-0.81 of VictoriaMetrics' own throughput through the gateway, 0.9 through haproxy, on two cores. "+
		"The cost: another team that comes waits for the reads on loan to end, which are quick unless the team sent a burst of slow queries at once after quick ones: those then hold the reserve as long as they run, and the other team's reads get 429 past -read.maxQueueDuration. A team whose read on loan turns out slow is lent nothing for a minute, doubling with each to an hour (vmgateway_read_backend_slow_loans_total), so that such a burst gets through once in that while")

	writeMaxConcurrentRequests = flag.Int("write.maxConcurrentRequests", 0, "How many writes the gateway forwards at once to the -write.url backends together. Past it, writes wait at the gateway, each team (isolation unit) in turn. "+
		"VictoriaMetrics runs -maxConcurrentInserts writes at once and queues the rest first come first served: there, one team's bulk imports hold up every other team's writes, and where a backend holds a slot for a whole request body (before v1.86.0), one team's bodies sent slowly hold every slot. "+
		"0 (the default) learns it from the backends: the sum of their vm_concurrent_insert_capacity, read from each one's /metrics at start and every minute. Where every one frees its slot while it waits on a body (v1.108.0 on, which /metrics tells apart), a write gives its turn up while its client is slow, and after 20ms of it to a team waiting with fewer, and takes one again, first among its team's, when more of its body comes; and a team holding none takes at once one of a quarter more turns (at least one) reserved past the limit. Else, and with a fixed value, a write holds its turn for its whole body. "+
		"A negative value sets no limit. With several gateway replicas in front of the same backends, set -write.replicas")
	writeReplicas         = flag.Int("write.replicas", 1, "How many gateway replicas forward writes to the same write backends; each forwards at most its part of -write.maxConcurrentRequests (or of what it learned), rounded down, at least 1")
	writeMaxQueueDuration = flag.Duration("write.maxQueueDuration", 20*time.Second, "How long a write waits for its turn at the write backends (-write.maxConcurrentRequests), after its wait under -maxQueueDuration, before it gets 429. It takes the place of VictoriaMetrics' own -insert.maxQueueDuration (1m by default), and is shorter than the clients' own timeouts (Prometheus remote_write 30s, vmagent 1m): "+
		"a client on a chunked body that goes away is seen only when its write's turn comes (one with a Content-Length that leaves with its body sent leaves the queue at once)")
)

// capacityInterval is how often the backends' capacity is read again; capacityRetry while one is unknown.
const (
	capacityInterval = time.Minute
	capacityRetry    = 10 * time.Second
)

// slotKind is what a slotsWatch learns: the read backends' capacity, or the write backends'.
type slotKind struct {
	name       string // "read" or "write", as in the flags
	max        *int   // -<name>.maxConcurrentRequests
	replicas   *int   // -<name>.replicas
	metric     string // what capacityOf reads, for the operator
	capacityOf func(io.Reader) (capacity, error)
	fixed      func(*gateway.Gateway, int)                                     // SetReadSlots, SetWriteSlots
	learned    func(*gateway.Gateway, map[string]gateway.BackendCapacity, int) // SetReadCapacity, SetWriteCapacity
}

var (
	readSlots = &slotKind{"read", readMaxConcurrentRequests, readReplicas, "vm_concurrent_select_capacity", selectCapacityOf,
		(*gateway.Gateway).SetReadSlots, (*gateway.Gateway).SetReadCapacity}
	writeSlots = &slotKind{"write", writeMaxConcurrentRequests, writeReplicas, "vm_concurrent_insert_capacity", insertCapacityOf,
		(*gateway.Gateway).SetWriteSlots, (*gateway.Gateway).SetWriteCapacity}
)

// slotsWatch learns each backend's capacity from its /metrics and gives it to the gateway (gateway.SetReadCapacity,
// SetWriteCapacity), which forwards what the backends its balancer sends to can run: the number of requests
// VictoriaMetrics runs at once is its own flag, which the gateway can only read there. An address that cannot be read
// keeps what was read of it before; none read, no limit.
type slotsWatch struct {
	kind *slotKind
	// factsOnly says the capacity is the flag's: only the read backends' flags and release are learnt.
	factsOnly bool
	set       func(byKey map[string]gateway.BackendCapacity) // nil: no limit
	// dedup, for the read backends, is told the least -dedup.minScrapeInterval of those known, 0 when one has none
	// or one is not known (gateway.SetBackendDedup).
	dedup func(time.Duration)
	// maxQueryLen, for the read backends, is told the least -search.maxQueryLen of those known, 0 when one is not
	// known (gateway.SetBackendMaxQueryLen).
	maxQueryLen func(int)
	// braces, for the read backends, is told whether every one reads `or` inside a selector's braces, false when one
	// is not known (gateway.SetBackendBraces).
	braces func(bool)
	// workers, for the read backends, is told the most workers one of them runs a query on, 0 when one is not known
	// (gateway.SetBackendWorkers).
	workers func(int)
	// linearCountValues, for the read backends, is told whether every one's count_values is linear, false when one is
	// not known (gateway.SetBackendLinearCountValues).
	linearCountValues func(bool)
	// maxSeries, for the read backends, is told the most series one of them selects of a selector, 0 when one is not
	// known (gateway.SetBackendMaxSeries).
	maxSeries func(int64)
	client    *http.Client
	again     chan struct{}

	mu      sync.Mutex
	addrs   []gateway.BackendAddr
	known   map[string]capacity                // by current address (BackendAddr.Key), as last read
	failed  map[string]bool                    // the current addresses whose last read failed, logged once
	given   map[string]gateway.BackendCapacity // what the gateway was last given
	started bool

	stop context.CancelFunc
	done sync.WaitGroup
}

// capacity is what one backend runs at once, and whether it goes on with an answer after its connection is closed
// (gateway.BackendCapacity.RunsOn).
type capacity struct {
	n      int
	runsOn bool
	// paced: a write backend that frees its insert slot while it waits on a request's body (gateway.BackendCapacity.Paced).
	paced bool
	// pushdown is a read backend's -search.maxBinaryOpPushdownLabelValues, or unboundedPushdown for a release without
	// the flag (1.79.5 copies every value).
	pushdown int
	// dedup is a read backend's -dedup.minScrapeInterval (0: none, or not listed).
	dedup time.Duration
	// maxQueryLen is a read backend's -search.maxQueryLen (0: not listed).
	maxQueryLen int
	// braces says a read backend reads `or` inside a selector's braces: VictoriaMetrics does since v1.92.0, and its
	// /metrics tells that apart from v1.110.0 on (stopsAbandonedFlag); those between are taken not to.
	braces bool
	// workers is how many workers a read backend runs one query on (0: not listed): its -search.maxWorkersPerQuery, at
	// most its GOMAXPROCS; before the flag (v1.9x), every one of its GOMAXPROCS.
	workers int
	// linearCountValues says a read backend's count_values is linear in the series it reads: VictoriaMetrics' since
	// v1.88.0, whose /metrics lists linearCountValuesFlag.
	linearCountValues bool
	// maxSeries is the most series a read backend selects of a selector: its -search.maxUniqueTimeseries, or the
	// value v1.151 works out when it is 0 (vm_search_max_unique_timeseries); 0 when neither is listed (a vmselect's 0
	// leaves it to vmstorage's, which its page does not list).
	maxSeries int64
}

// newSlotsWatch returns the watch the flags of k ask for; nil when k's -maxConcurrentRequests fixes the limit or turns
// it off (startSlots then sets it), but for the read backends' flags and release, read all the same where
// -read.learnBackendFlags says so (factsOnly): a fixed -read.maxConcurrentRequests cost the query limits the backends'
// dedup, the rewrite the braces of several filters and the query length check its bound.
func newSlotsWatch(k *slotKind, rt http.RoundTripper) *slotsWatch {
	if *k.max != 0 && (k != readSlots || !*readLearnBackendFlags) {
		return nil
	}
	return &slotsWatch{kind: k, factsOnly: *k.max != 0, client: metricsClient(rt, 10*time.Second), again: make(chan struct{}, 1),
		known: map[string]capacity{}, failed: map[string]bool{}}
}

// setAddrs is gateway.Config.ReadAddrs or WriteAddrs: a new address is read soon. Until it is, it is taken not to
// read `or` inside the braces, which a release before v1.92.0 would refuse every query of several branches for (an
// attacker's review), and its count_values not to be linear.
func (w *slotsWatch) setAddrs(addrs []gateway.BackendAddr) {
	w.mu.Lock()
	w.addrs = addrs
	if slices.ContainsFunc(addrs, func(a gateway.BackendAddr) bool { _, ok := w.known[a.Key()]; return !ok }) {
		if w.braces != nil {
			w.braces(false)
		}
		if w.linearCountValues != nil {
			w.linearCountValues(false)
		}
	}
	w.mu.Unlock()
	select {
	case w.again <- struct{}{}:
	default:
	}
}

// startSlots gives gw its limit of k's kind: the flag's, or the backends' as w learns it.
func startSlots(k *slotKind, w *slotsWatch, gw *gateway.Gateway) {
	if w == nil || w.factsOnly {
		k.fixed(gw, gateway.ReplicaPart(max(*k.max, 0), *k.replicas))
		if w == nil {
			return
		}
	}
	w.set = func(byKey map[string]gateway.BackendCapacity) { k.learned(gw, byKey, *k.replicas) }
	if k == readSlots {
		w.dedup, w.maxQueryLen, w.braces, w.workers = gw.SetBackendDedup, gw.SetBackendMaxQueryLen, gw.SetBackendBraces, gw.SetBackendWorkers
		w.linearCountValues, w.maxSeries = gw.SetBackendLinearCountValues, gw.SetBackendMaxSeries
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for {
			wait := capacityInterval
			if !w.readAll(ctx) {
				wait = capacityRetry
			}
			if !sleepUnless(ctx, wait, w.again) {
				return
			}
		}
	}()
}

func (w *slotsWatch) close() {
	if w != nil && w.stop != nil {
		w.stop()
		w.done.Wait()
	}
}

// readAll reads every address's capacity and gives the gateway those known, or no limit when none is known; false
// when one could not be read.
func (w *slotsWatch) readAll(ctx context.Context) bool {
	w.mu.Lock()
	addrs := w.addrs
	w.mu.Unlock()
	read := make(map[string]capacity, len(addrs))
	failed := map[string]error{}
	for _, a := range addrs {
		c, err := w.capacity(ctx, a)
		if ctx.Err() != nil {
			return true
		}
		if err != nil {
			failed[a.Key()] = err
			continue
		}
		if w.kind == readSlots {
			w.mu.Lock()
			was, known := w.known[a.Key()]
			w.mu.Unlock()
			warnPushdown(a, c, was, known)
		}
		read[a.Key()] = c
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	known, wasFailed := make(map[string]capacity, len(addrs)), w.failed
	w.failed = make(map[string]bool, len(failed))
	byKey := make(map[string]gateway.BackendCapacity, len(addrs))
	sum, unknown := 0, 0
	for _, a := range addrs {
		key := a.Key()
		if err := failed[key]; err != nil {
			w.failed[key] = true
			switch {
			case wasFailed[key]:
			case w.factsOnly:
				slog.Warn("cannot read the read backend's /metrics to learn its -dedup.minScrapeInterval, -search.maxQueryLen, the workers it "+
					"runs a query on, whether it reads `or` inside a selector's braces, whether its count_values is linear and the series it "+
					"selects; until it is read the query limits and the rewrite assume none (32 workers, count_values and subqueries "+
					"counted), and it "+
					"is read again every 10s; -read.learnBackendFlags=false stops reading it", "backend", redact.URL(a.URL), "host", a.Host, "err", err)
			default:
				slog.Warn("cannot read the "+w.kind.name+" backend's /metrics to learn how many requests it runs at once ("+w.kind.metric+"); "+
					"it is taken to be what it was, or like the smallest of the others, and read again every 10s; set -"+w.kind.name+".maxConcurrentRequests to give it instead",
					"backend", redact.URL(a.URL), "host", a.Host, "err", err)
			}
		}
		c, ok := read[key]
		if !ok {
			c, ok = w.known[key]
		}
		if !ok {
			unknown++
			continue
		}
		known[key] = c
		byKey[key] = gateway.BackendCapacity{Slots: c.n, RunsOn: c.runsOn, Paced: c.paced}
		sum += c.n
	}
	w.known = known
	if w.dedup != nil {
		w.dedup(least(known, unknown, dedupOf))
	}
	if w.maxQueryLen != nil {
		w.maxQueryLen(least(known, unknown, maxQueryLenOf))
	}
	// Addresses set since this read began are not known yet (setAddrs).
	current := slices.Equal(w.addrs, addrs)
	if w.braces != nil {
		w.braces(current && every(known, unknown, func(c capacity) bool { return c.braces }))
	}
	if w.linearCountValues != nil {
		w.linearCountValues(current && every(known, unknown, func(c capacity) bool { return c.linearCountValues }))
	}
	if w.workers != nil {
		w.workers(most(current, known, unknown, workersOf))
	}
	if w.maxSeries != nil {
		w.maxSeries(most(current, known, unknown, maxSeriesOf))
	}
	if w.factsOnly {
		return len(failed) == 0
	}
	if len(known) == 0 {
		byKey = nil
	}
	if !maps.Equal(byKey, w.given) || !w.started {
		paced := w.kind == writeSlots && every(known, unknown, func(c capacity) bool { return c.paced })
		if byKey != nil && w.kind == writeSlots && gateway.ReplicaPart(sum, *w.kind.replicas) < 2 {
			slog.Warn("this replica forwards one write at once to the write backends: writes are never cut, so one team's body "+
				"holds that slot while it comes (sent slowly, for as long as it lasts, where a backend holds its slot for a whole body); "+
				"give the backends more -maxConcurrentInserts, or run fewer -write.replicas",
				"replicas", *w.kind.replicas, "capacity", sum)
		}
		if byKey != nil && *w.kind.replicas > sum {
			slog.Warn("-"+w.kind.name+".replicas is more than the "+w.kind.name+" backends' capacity: each replica forwards one request at once, and together "+
				"they forward more than the backends run, which queue the rest first come first served; give the backends more "+
				"capacity, or run fewer replicas", "replicas", *w.kind.replicas, "capacity", sum)
		}
		switch {
		case paced:
			slog.Info("the write backends run this many writes at once, and free their slot while they wait on a request's body: writes "+
				"past what those the balancer sends to run wait at the gateway, each team in turn; a write whose client is slow gives its "+
				"turn up while it waits on it, and one that held it 20ms passes it on to a team waiting with fewer", "capacity", sum, "backends", len(known), "unknown", unknown, "replicas", *w.kind.replicas)
		case byKey == nil:
			slog.Warn("no "+w.kind.name+" backend's capacity is known: requests are forwarded without a limit, and queue in the backends' "+
				"own queue, first come first served, until one can be read", "unknown", unknown)
		default:
			slog.Info("the "+w.kind.name+" backends run this many requests at once: requests past what those the balancer sends to run wait at the gateway, each team in turn",
				"capacity", sum, "backends", len(known), "unknown", unknown, "replicas", *w.kind.replicas)
		}
		w.given, w.started = byKey, true
		w.set(byKey)
	}
	return len(failed) == 0
}

// least is the least of what of gives of the backends known: 0 when one gives none (0), when some are unknown, or
// when none is known, since a request may go to any of them.
func least[T int | int64 | time.Duration](known map[string]capacity, unknown int, of func(capacity) T) T {
	if unknown > 0 || len(known) == 0 {
		return 0
	}
	first, l := true, T(0)
	for _, c := range known {
		if v := of(c); first || v < l {
			first, l = false, v
		}
	}
	return max(l, 0)
}

// most is the most of what of gives of the backends known, as a query may go to any of them: 0 (not known) when one
// gives none, when some are unknown or none is known, or when the addresses changed during the read (not current).
func most[T int | int64](current bool, known map[string]capacity, unknown int, of func(capacity) T) T {
	m := T(0)
	if current && least(known, unknown, of) > 0 {
		for _, c := range known {
			m = max(m, of(c))
		}
	}
	return m
}

func dedupOf(c capacity) time.Duration { return c.dedup }
func maxQueryLenOf(c capacity) int     { return c.maxQueryLen }
func workersOf(c capacity) int         { return c.workers }
func maxSeriesOf(c capacity) int64     { return c.maxSeries }

// every tells whether of holds for every backend, all of them known: a request may go to any of them.
func every(known map[string]capacity, unknown int, of func(capacity) bool) bool {
	if unknown > 0 || len(known) == 0 {
		return false
	}
	for _, c := range known {
		if !of(c) {
			return false
		}
	}
	return true
}

// capacity reads the capacity of the backend at a from its /metrics.
func (w *slotsWatch) capacity(ctx context.Context, a gateway.BackendAddr) (capacity, error) {
	resp, err := getMetrics(ctx, w.client, metricsURLOf(a.URL), a.Host)
	if err != nil {
		return capacity{}, redact.URLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return capacity{}, fmt.Errorf("GET /metrics answered %d", resp.StatusCode)
	}
	return w.kind.capacityOf(io.LimitReader(resp.Body, maxMetricsPage))
}

// selectCapacityOf reads a VictoriaMetrics /metrics page for vm_concurrent_select_capacity: every release holds a
// query slot for as long as the query runs. Releases before v1.110.0 go on with an export after its connection is
// closed, and do not have stopsAbandonedFlag, which came with v1.110.0; the releases of the long-term branches that
// have the fix without the flag (v1.102.13 and later v1.102) have their abandoned answers read to the end, which costs
// them only the rest of the export, in the slot of the team that asked for it.
func selectCapacityOf(r io.Reader) (capacity, error) {
	runsOn, pushdown, dedup, maxQueryLen := true, unboundedPushdown, time.Duration(0), 0
	procs, perQuery, linear := 0, 0, false
	var maxSeries, worked int64
	n, err := countOf(r, "vm_concurrent_select_capacity", func(line string) {
		if p, ok := gaugeValue(line, "go_gomaxprocs"); ok {
			procs = int(p)
		}
		if v, ok := flagValue(line, workersFlag); ok {
			if p, err := strconv.Atoi(v); err == nil && p > 0 {
				perQuery = p
			}
		}
		runsOn = runsOn && !strings.HasPrefix(line, stopsAbandonedFlag)
		if v, ok := flagValue(line, pushdownFlag); ok {
			if p, err := strconv.Atoi(v); err == nil && p >= 0 {
				pushdown = p
			}
		}
		if v, ok := flagValue(line, dedupFlag); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				dedup = d
			}
		}
		if v, ok := flagValue(line, maxQueryLenFlag); ok {
			maxQueryLen = flagSize(v)
		}
		linear = linear || strings.HasPrefix(line, linearCountValuesFlag)
		if v, ok := flagValue(line, maxSeriesFlag); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
				maxSeries = n
			}
		}
		if n, ok := gaugeValue(line, maxSeriesWorkedOut); ok {
			worked = n
		}
	})
	if maxSeries == 0 {
		maxSeries = worked
	}
	workers := procs
	if perQuery > 0 && procs > 0 {
		// VictoriaMetrics runs no more workers than its GOMAXPROCS, whatever the flag says (netstorage.MaxWorkers).
		workers = min(perQuery, procs)
	}
	return capacity{n: n, runsOn: runsOn, pushdown: pushdown, dedup: dedup, maxQueryLen: maxQueryLen, braces: !runsOn,
		workers: workers, linearCountValues: linear, maxSeries: maxSeries}, err
}

// flagSize reads a size flag's value as VictoriaMetrics prints it (16384, or as set: 16KiB, 1.5MB), multiplied out in
// the order its flagutil.Bytes does, so that the gateway's limit is the backend's to the byte; 0 when it cannot.
func flagSize(v string) int {
	steps, unit := 0, 1000.0
	for i, suffix := range []string{"KB", "MB", "GB", "KiB", "MiB", "GiB"} {
		if n, ok := strings.CutSuffix(v, suffix); ok {
			v, steps = n, i%3+1
			if i >= 3 {
				unit = 1024
			}
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	for range steps {
		f *= unit
	}
	if err != nil || !(f >= 1) || f > math.MaxInt32 {
		return 0
	}
	return int(f)
}

// gaugeValue is the value of the /metrics line of the gauge name without labels, when it is a positive whole number.
func gaugeValue(line, name string) (int64, bool) {
	v, ok := strings.CutPrefix(line, name+" ")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n, err == nil && n > 0
}

// flagValue is the value of the /metrics line of a flag, which begins with prefix (`flag{name="<name>`).
func flagValue(line, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(line, prefix)
	if !ok {
		return "", false
	}
	rest, ok = strings.CutPrefix(rest, `", value="`)
	if !ok {
		return "", false
	}
	v, _, ok := strings.Cut(rest, `"`)
	return v, ok
}

// dedupFlag begins the /metrics line of -dedup.minScrapeInterval: a read backend that has it keeps one sample of a
// series per interval when a query reads them (gateway.SetBackendDedup).
const dedupFlag = `flag{name="dedup.minScrapeInterval`

// workersFlag begins the /metrics line of -search.maxWorkersPerQuery: how many workers a read backend runs one query on,
// each of which holds the groups of an aggregation VictoriaMetrics does as it goes (gateway.SetBackendWorkers). Its
// value is printed worked out when it is not set: the CPUs, at most 32.
const workersFlag = `flag{name="search.maxWorkersPerQuery`

// linearCountValuesFlag begins the /metrics line of -search.maxSeriesPerAggrFunc, which came with v1.88.0's
// count_values, linear in the series it reads; before it, count_values compares each distinct value with each series
// at each point (gateway.SetBackendLinearCountValues).
const linearCountValuesFlag = `flag{name="search.maxSeriesPerAggrFunc"`

// maxSeriesFlag begins the /metrics line of -search.maxUniqueTimeseries: the most series a read backend selects of a
// selector (gateway.SetBackendMaxSeries); 0 when set to work it out, which v1.151 prints as maxSeriesWorkedOut.
const (
	maxSeriesFlag      = `flag{name="search.maxUniqueTimeseries`
	maxSeriesWorkedOut = "vm_search_max_unique_timeseries"
)

// maxQueryLenFlag begins the /metrics line of -search.maxQueryLen: the longest query a read backend takes, which the
// rewrite for a token's series may push a query past (gateway.SetBackendMaxQueryLen).
const maxQueryLenFlag = `flag{name="search.maxQueryLen`

// pushdownFlag begins the /metrics line of -search.maxBinaryOpPushdownLabelValues: how many values of each label of a
// binary operator's first side VictoriaMetrics copies into its other side's selectors. A team's own long label values,
// copied at every level of a chain of operators, ran v1.151 and vmselect out of memory with a 462-byte query (an
// attacker's review); at 10 the same query took 0.09 s. The gateway cannot see the values before the query runs, so it
// tells the operator (warnPushdown).
const pushdownFlag = `flag{name="search.maxBinaryOpPushdownLabelValues`

// unboundedPushdown stands for a release without pushdownFlag, which copies every value; safePushdown is the most
// the docs suggest.
const (
	unboundedPushdown = -1
	safePushdown      = 10
)

// warnPushdown warns of a read backend that copies more label values into a binary operator's other side than
// safePushdown, once for each value it is seen with.
func warnPushdown(a gateway.BackendAddr, c, was capacity, known bool) {
	if known && c.pushdown == was.pushdown || c.pushdown >= 0 && c.pushdown <= safePushdown {
		return
	}
	limit := "every value (this release has no -search.maxBinaryOpPushdownLabelValues)"
	if c.pushdown >= 0 {
		limit = fmt.Sprintf("up to %d values (-search.maxBinaryOpPushdownLabelValues=%d)", c.pushdown, c.pushdown)
	}
	slog.Warn("the read backend copies "+limit+" of each label of a binary operator's first side into its other side's "+
		"selectors, at every level of a chain of operators: a team that writes long label values can then run it out of "+
		"memory with a short query over its own data, which the gateway cannot see before it runs. Set "+
		"-search.maxBinaryOpPushdownLabelValues=10 on it (see docs/operations.md, \"The VictoriaMetrics behind the gateway\")",
		"backend", redact.URL(a.URL), "host", a.Host)
}

// stopsAbandonedFlag begins the /metrics line of a flag that VictoriaMetrics has since v1.110.0, the release that
// stops an export whose connection is closed.
const stopsAbandonedFlag = `flag{name="search.maxDeleteDuration"`

// insertCapacityOf reads a VictoriaMetrics /metrics page for vm_concurrent_insert_capacity, and whether the release
// frees its insert slot while it waits on a request's body (paced): those from v1.86.0 do. The page tells apart only
// the releases before v1.108.0 (by truncatingMetric, as truncationOf does), so those from v1.86.0 to v1.107 have
// their writes hold their turn for their whole body, which costs them only the turns of slow bodies.
func insertCapacityOf(r io.Reader) (capacity, error) {
	old := false
	n, err := countOf(r, "vm_concurrent_insert_capacity", func(line string) {
		old = old || strings.HasPrefix(line, truncatingMetric)
	})
	return capacity{n: n, paced: err == nil && !old}, err
}

// countOf reads a /metrics page for the count metric holds, passing every line to each (nil: none).
func countOf(r io.Reader, metric string, each func(string)) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n, found := 0, false
	for sc.Scan() {
		line := sc.Text()
		if each != nil {
			each(line)
		}
		v, ok := strings.CutPrefix(line, metric+" ")
		if !ok || found {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(f >= 1 && f <= 1e6) { // NaN too
			return 0, fmt.Errorf("%s is %q, not a count of requests", metric, v)
		}
		n, found = int(f), true
		if each == nil {
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading /metrics: %w", err)
	}
	if !found {
		return 0, fmt.Errorf("its /metrics has no %s (not VictoriaMetrics, or a proxy in front of it)", metric)
	}
	return n, nil
}
