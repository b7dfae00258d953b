package querylimits

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// lookbackArgCorpus is max_lookback, lookback_delta and latency_offset args as clients and attackers write them:
// seconds in every number form, milliseconds sent as seconds, durations, signs, the edges of each form, and what no
// release should read.
var lookbackArgCorpus = []string{
	"", "0", "-0", "00", "60", "300", "301", "1000", "3600", "1e3", "1E3", "5.5", ".5", "0.001", "1000000", "300000",
	"5400000", "86400000", "5m", "1h30m", "1.5h", "90m", "-5m", "-60", "1e19", "1e300", "9223372036854775807",
	"3153600000", "3153600001", "Inf", "-Inf", "NaN", "5i", "1y", "2y", "1w", "1d", "1d12h", "1ms", "100ms", "5m ",
	" 5m", "+5m", "+300", "0x10", "1_000", "1_0m", "1m_0s", "060", "1h1h",
}

// lookbackLadder is how far back, in seconds, a probe sample lies from the time a query is asked at: the edges
// around the readings the corpus asks for, so that a reading is known to the rung.
var lookbackLadder = []int64{
	1, 15, 17, 59, 61, 299, 301, 599, 601, 999, 1001, 3599, 3601, 5399, 5401, 86399, 86401, 129599, 129601, 299999,
	300001, 604799, 604801, 999999, 1000001, 5399999, 5400001, 31535999, 31536001, 63071999, 63072001, 86399999,
	86400001, 1000000000, 1500000000,
}

// TestLookbackArgsAsVictoriaMetricsReadsThem asks both real releases how far back they read for each max_lookback,
// lookback_delta and latency_offset arg and for each tsdb status date, from probe samples at known distances
// before the time asked at, and checks the query limits read at least as far back (or refuse the arg): a shorter
// reading would let a request read past max_query_lookback.
func TestLookbackArgsAsVictoriaMetricsReadsThem(t *testing.T) {
	// bare reads one step or lookback back; steps reads exactly one step back.
	const bare, steps = "lb_probe", "last_over_time(lb_probe[1i])"
	for _, rel := range []struct {
		name  string
		start func(testing.TB, ...string) *vmtest.VM
	}{{"v1.79.5", vmtest.Start}, {vmtest.CurrentVersion, vmtest.StartCurrent}} {
		t.Run(rel.name, func(t *testing.T) {
			vm := rel.start(t)
			p := importLookbackProbes(t, vm)
			t.Run("query", func(t *testing.T) {
				for _, k := range []string{"max_lookback", "lookback_delta"} {
					for _, arg := range lookbackArgCorpus {
						p.checkQuery(t, "/api/v1/query", bare, url.Values{k: {arg}})
						p.checkQuery(t, "/api/v1/query", bare, url.Values{k: {arg}, "step": {"60"}})
						p.checkQuery(t, "/api/v1/query_range", bare, url.Values{k: {arg}, "step": {"60"}})
						// Without a step an instant query runs at one of its lookback: a window of steps reads it.
						p.checkQuery(t, "/api/v1/query", steps, url.Values{k: {arg}})
					}
				}
				// Both at once: a release may read one and not the other.
				for _, both := range [][2]string{{"1m", "1d"}, {"1d", "1m"}, {"", "1d"}, {"1d", ""}, {"0", "1d"}, {"1d", "0"}, {"-1m", "1d"}} {
					args := url.Values{"max_lookback": {both[0]}, "lookback_delta": {both[1]}}
					p.checkQuery(t, "/api/v1/query", bare, args)
					p.checkQuery(t, "/api/v1/query", steps, args)
					p.checkQuery(t, "/api/v1/query_range", bare, url.Values{"max_lookback": {both[0]}, "lookback_delta": {both[1]}, "step": {"60"}})
				}
			})
			t.Run("instant_step", func(t *testing.T) {
				// The step of an instant query: the window of a step (checkStepArgs reads it for ranges only).
				for _, arg := range lookbackArgCorpus {
					p.checkQuery(t, "/api/v1/query", steps, url.Values{"step": {arg}})
					p.checkQuery(t, "/api/v1/query", steps, url.Values{"step": {arg}, "max_lookback": {"1h"}})
				}
			})
			t.Run("federate", func(t *testing.T) {
				for _, k := range []string{"max_lookback", "lookback_delta"} {
					for _, arg := range lookbackArgCorpus {
						p.checkFederate(t, url.Values{k: {arg}})
					}
				}
			})
			t.Run("latency_offset", func(t *testing.T) {
				// An asked time within latency_offset of now moves back to now - latency_offset.
				hourAgo := strconv.FormatInt(p.now0/1000-3600, 10)
				for _, arg := range lookbackArgCorpus {
					p.checkLatencyOffset(t, arg, "")
					p.checkLatencyOffset(t, arg, hourAgo)
				}
			})
			t.Run("tsdb_date", func(t *testing.T) { p.checkTSDBDates(t) })
			if p.readCounted < 4*len(lookbackArgCorpus) {
				t.Fatalf("the release read only %d requests: is it answering?", p.readCounted)
			}
		})
	}
}

// lookbackProbes are the probe samples in one release: lb_probe{x="X"} X seconds before t0 (a past midnight),
// fed_probe{x="X"} X seconds before now0 (when they were imported), tsdbday_N N days before today at 01:00, or
// halfway between midnight and now when that is earlier (a sample still to come is not exported: the test failed
// from midnight to 01:00 UTC).
type lookbackProbes struct {
	vm          *vmtest.VM
	t0, now0    int64
	today       int64
	tsdbDays    []int64
	readCounted int // requests the release answered
}

func importLookbackProbes(t *testing.T, vm *vmtest.VM) *lookbackProbes {
	t.Helper()
	now := time.Now().UnixMilli()
	today := now - now%day
	p := &lookbackProbes{vm: vm, t0: today - 2*day, now0: now, today: today, tsdbDays: []int64{0, 1, 2, 5, 40}}
	var b strings.Builder
	line := func(name, x string, ts int64) {
		fmt.Fprintf(&b, `{"metric":{"__name__":%q,"x":%q},"values":[1],"timestamps":[%d]}`+"\n", name, x, ts)
	}
	for _, x := range lookbackLadder {
		line("lb_probe", strconv.FormatInt(x, 10), p.t0-x*1000)
		line("fed_probe", strconv.FormatInt(x, 10), p.now0-x*1000)
	}
	at := min(int64(time.Hour/time.Millisecond), (now-today)/2)
	for _, n := range p.tsdbDays {
		line("tsdbday_"+strconv.FormatInt(n, 10), "0", today-n*day+at)
	}
	resp, err := http.Post(vm.URL+"/api/v1/import", "application/json", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("import: status %d", resp.StatusCode)
	}
	vm.Flush(t)
	want := 2*len(lookbackLadder) + len(p.tsdbDays)
	vmtest.Eventually(t, func() (bool, string) {
		resp, err := http.PostForm(vm.URL+"/api/v1/export", url.Values{"match[]": {`{__name__=~"lb_probe|fed_probe|tsdbday_.+"}`}, "start": {"0"}})
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		n := 0
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
			n++
		}
		return n == want, fmt.Sprintf("exported %d series of %d", n, want)
	})
	return p
}

// vmReadsBack is the probes' x labels a request shows, in seconds, ascending; false when the release refuses it.
func vmReadsBack(t *testing.T, base, path string, args url.Values) ([]int64, bool) {
	t.Helper()
	var xs []int64
	if path != "/federate" {
		var ans struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
				} `json:"result"`
			} `json:"data"`
		}
		if !vmAnswer(t, base, path, args, &ans) {
			return nil, false
		}
		for _, r := range ans.Data.Result {
			x, err := strconv.ParseInt(r.Metric["x"], 10, 64)
			if err != nil {
				t.Fatalf("%s %v: a series without x: %v", path, args, r.Metric)
			}
			xs = append(xs, x)
		}
		slices.Sort(xs)
		return xs, true
	}
	resp, err := http.PostForm(base+path, args)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	re := regexp.MustCompile(`x="(\d+)"`)
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			x, _ := strconv.ParseInt(m[1], 10, 64)
			xs = append(xs, x)
		}
	}
	slices.Sort(xs)
	return xs, true
}

// nextRung is the ladder's rung after x (0 past its end): a reading that showed the probe x back and not the one
// at the next rung is under it.
func nextRung(x int64) int64 {
	for _, r := range lookbackLadder {
		if r > x {
			return r
		}
	}
	return 0
}

// gatewayReadsFrom is the earliest time the query limits judge a request to read (ms), found as the least
// max_query_lookback they let it through under; false when they refuse the arg itself (400).
func gatewayReadsFrom(t *testing.T, path string, args url.Values, now int64) (int64, bool) {
	t.Helper()
	rt := mustRoute(t, path)
	accepts := func(lim int64) (bool, error) {
		c := mustConfig(t, fmt.Sprintf("limits:\n  - account_id: 7\n    max_query_lookback: %dms\n", lim))
		_, err := c.Check(limited, rt, enforce.Args{URL: args}, time.UnixMilli(now))
		if err != nil && httperr.Status(err) != http.StatusUnprocessableEntity {
			return false, err
		}
		return err == nil, nil
	}
	hi := int64(300 * 365 * day)
	ok, err := accepts(hi)
	if err != nil {
		return 0, false
	}
	if !ok {
		return math.MinInt64, true // further back than any limit
	}
	// The least limit that accepts the request, with its grace, is how far back the limits judge it reads.
	lo := int64(1)
	if ok, _ := accepts(lo); ok {
		return now - lo - lookbackGrace(lo), true
	}
	for hi-lo > 1 { // accepts(hi), not accepts(lo)
		mid := lo + (hi-lo)/2
		if ok, _ := accepts(mid); ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return now - hi - lookbackGrace(hi), true
}

// checkQuery asks query (of lb_probe) at t0 with args on an instant (path /api/v1/query) or a one-point range
// query: the farthest probe the release shows is data it read, which the query limits must judge read too.
func (p *lookbackProbes) checkQuery(t *testing.T, path, query string, args url.Values) {
	t.Helper()
	vmArgs := url.Values{"query": {query}}
	at := strconv.FormatInt(p.t0/1000, 10)
	if path == "/api/v1/query" {
		vmArgs.Set("time", at)
	} else {
		vmArgs.Set("start", at)
		vmArgs.Set("end", at)
	}
	for k, vs := range args {
		vmArgs[k] = vs
	}
	xs, ok := p.vmReads(t, path, vmArgs)
	if !ok {
		return
	}
	if path == "/api/v1/query" && strings.HasSuffix(query, "[1i])") {
		p.checkInstantStep(t, args, xs)
	}
	if len(xs) == 0 {
		return
	}
	far := xs[len(xs)-1]
	if testing.Verbose() {
		t.Logf("%s %s %s: reads back %s..%s", path, query, enc(args), fmtDuration(far*1000), fmtDuration(nextRung(far)*1000))
	}
	if query == "lb_probe" {
		// Without these args the release reads a little further back than the query limits' model (its staleness
		// interval, minutes: see span.go); only what an arg adds to that is judged here.
		def := url.Values{"query": vmArgs["query"], "time": vmArgs["time"], "start": vmArgs["start"], "end": vmArgs["end"], "step": vmArgs["step"]}
		if d, ok := p.vmReads(t, path, def); ok && len(d) > 0 && d[len(d)-1] >= far {
			return
		}
	}
	readFrom, ok := gatewayReadsFrom(t, path, vmArgs, p.now0)
	if !ok {
		return // refused before anything is forwarded
	}
	if readFrom > p.t0-far*1000 {
		t.Errorf("%s %s %s: the release reads back at least %s (less than %s) from the query's time; the query limits judge %s",
			path, query, enc(args), fmtDuration(far*1000), fmtDuration(nextRung(far)*1000), fmtDuration(p.t0-readFrom))
	}
}

// checkInstantStep takes the probes a one-step window showed (xs) as the step the release ran an instant query at
// with args: no more than the ladder's rung after the farthest shown (a window leaves out its lower bound). min_step
// must not be judged on a coarser one: a subquery without a step of its own runs at it. A window that showed no
// probe tells nothing (1.79.5 shows none for a step of 100 years).
func (p *lookbackProbes) checkInstantStep(t *testing.T, args url.Values, xs []int64) {
	t.Helper()
	if len(xs) == 0 {
		return
	}
	atMost := nextRung(xs[len(xs)-1])
	if atMost == 0 {
		return
	}
	c := mustConfig(t, fmt.Sprintf("limits:\n  - account_id: 7\n    min_step: %dms\n", atMost*1000+1))
	q := url.Values{"query": {"sum(x)[1h:]"}, "time": {strconv.FormatInt(p.t0/1000, 10)}}
	for k, vs := range args {
		q[k] = vs
	}
	if _, err := c.Check(limited, mustRoute(t, "/api/v1/query"), enforce.Args{URL: q}, time.UnixMilli(p.now0)); err == nil {
		t.Errorf("/api/v1/query %s: the release runs at a step of at most %s; the query limits let min_step=%s through",
			enc(args), fmtDuration(atMost*1000), fmtDuration(atMost*1000+1))
	}
}

func (p *lookbackProbes) vmReads(t *testing.T, path string, args url.Values) ([]int64, bool) {
	t.Helper()
	xs, ok := vmReadsBack(t, p.vm.URL, path, args)
	if ok {
		p.readCounted++
	} else if testing.Verbose() {
		t.Logf("%s %s: refused", path, enc(args))
	}
	return xs, ok
}

// checkFederate asks /federate for fed_probe with args and no time range: the release reads back max_lookback
// from its now; the farthest probe shown, far before the import's now, is data it read.
func (p *lookbackProbes) checkFederate(t *testing.T, args url.Values) {
	t.Helper()
	all := url.Values{"match[]": {"fed_probe"}}
	for k, vs := range args {
		all[k] = vs
	}
	before := time.Now().UnixMilli()
	xs, ok := p.vmReads(t, "/federate", all)
	if !ok || len(xs) == 0 {
		return
	}
	far := xs[len(xs)-1]
	if testing.Verbose() {
		t.Logf("/federate %s: reads back %s..%s", enc(args), fmtDuration(far*1000), fmtDuration(nextRung(far)*1000))
	}
	// The release read from its now back to the probe at now0-far; its now is a whole second (fasttime), up to a
	// second behind the clock: from a second before the request the query limits must judge at least as far back.
	readFrom, ok := gatewayReadsFrom(t, "/federate", all, before-1000)
	if !ok {
		return
	}
	if readFrom > p.now0-far*1000 {
		t.Errorf("/federate %s: the release reads back at least %s (less than %s); the query limits judge %s",
			enc(args), fmtDuration(far*1000), fmtDuration(nextRung(far)*1000), fmtDuration(before-1000-readFrom))
	}
}

// checkLatencyOffset reads latency_offset=arg as the release does (how far before the time asked at, now or at, it
// evaluates `time()`) and checks that the query limits move a selector's read back at least as far.
func (p *lookbackProbes) checkLatencyOffset(t *testing.T, arg, at string) {
	t.Helper()
	args := url.Values{"latency_offset": {arg}}
	if at != "" {
		args.Set("time", at)
	}
	before := time.Now().UnixMilli()
	asked := before
	if at != "" {
		secs, _ := strconv.ParseInt(at, 10, 64)
		asked = secs * 1000
	}
	var ans instantAnswer
	if !vmAnswer(t, p.vm.URL, "/api/v1/query", url.Values{"query": {"time()"}, "latency_offset": {arg}, "time": args["time"]}, &ans) {
		if testing.Verbose() {
			t.Logf("%s: refused", enc(args))
		}
		return
	}
	if len(ans.Data.Result) != 1 {
		t.Fatalf("%s: an answer of 200 without one sample", enc(args))
	}
	s, ok := ans.Data.Result[0].Value[1].(string)
	if !ok {
		t.Fatalf("%s: the sample is %v", enc(args), ans.Data.Result[0].Value)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%s: the sample is %q", enc(args), s)
	}
	p.readCounted++
	moved := asked - int64(math.Round(v*1000))
	if testing.Verbose() {
		t.Logf("%s: evaluates %s before the time asked", enc(args), fmtDuration(moved))
	}
	// The release's now is a whole second (fasttime), up to a second behind the clock.
	if moved <= 1000 {
		return
	}
	q := url.Values{"query": {"x"}, "time": args["time"]}
	base, ok1 := gatewayReadsFrom(t, "/api/v1/query", q, before)
	q.Set("latency_offset", arg)
	readFrom, ok2 := gatewayReadsFrom(t, "/api/v1/query", q, before)
	if !ok1 || !ok2 {
		return
	}
	if got := base - readFrom; got < moved-1000 {
		t.Errorf("%s: the release evaluates at least %s before the time asked; the query limits move the read back %s",
			enc(args), fmtDuration(moved), fmtDuration(got))
	}
}

// checkTSDBDates asks /api/v1/status/tsdb for the days of the tsdbday_N probes in many spellings: the earliest
// probe day the release counts is a day it read, which the query limits must judge read too.
func (p *lookbackProbes) checkTSDBDates(t *testing.T) {
	var corpus []string
	for _, n := range p.tsdbDays {
		d := time.UnixMilli(p.today - n*day).UTC()
		ymd := d.Format("2006-01-02")
		corpus = append(corpus, ymd, " "+ymd, ymd+" ", "+"+ymd, d.Format("2006-1-2"), d.Format("20060102"), ymd+"T00:00:00Z",
			ymd+"T12:00:00Z", d.Format("2006-01"), strconv.FormatInt(d.Unix(), 10), strconv.FormatInt(d.UnixMilli(), 10),
			fmt.Sprintf("%d-%02d-%02d", d.Year(), d.Month(), d.Day()+31))
	}
	corpus = append(corpus, "", "1970-01-01", "1969-12-31", "1970-01-02", "0000-01-01", "0001-01-01", "9999-12-31",
		"2026-02-30", "-1d", "1d", "now", "today", "0", "-1", "Inf", "NaN")
	read := 0
	for _, arg := range corpus {
		var ans struct {
			Data struct {
				ByName []struct {
					Name string `json:"name"`
				} `json:"seriesCountByMetricName"`
			} `json:"data"`
		}
		if !vmAnswer(t, p.vm.URL, "/api/v1/status/tsdb", url.Values{"date": {arg}, "topN": {"100"}}, &ans) {
			continue
		}
		read++
		earliest := int64(math.MaxInt64)
		for _, n := range ans.Data.ByName {
			if d, ok := strings.CutPrefix(n.Name, "tsdbday_"); ok {
				days, _ := strconv.ParseInt(d, 10, 64)
				earliest = min(earliest, p.today-days*day)
			}
		}
		if testing.Verbose() {
			t.Logf("date=%q: counts from %s", arg, fmtTime(earliest))
		}
		if earliest == math.MaxInt64 {
			continue // a day without probes: nothing known of what it read
		}
		readFrom, ok := gatewayReadsFrom(t, "/api/v1/status/tsdb", url.Values{"date": {arg}}, p.now0)
		if !ok {
			continue
		}
		if readFrom > earliest {
			t.Errorf("date=%q: the release counts the series of %s; the query limits judge it reads from %s",
				arg, fmtTime(earliest), fmtTime(readFrom))
		}
	}
	if read < 5 {
		t.Fatalf("read only %d of %d dates: is /api/v1/status/tsdb answering?", read, len(corpus))
	}
}

func enc(args url.Values) string {
	var b []string
	for k, vs := range args {
		for _, v := range vs {
			b = append(b, k+"="+strconv.Quote(v))
		}
	}
	slices.Sort(b)
	return strings.Join(b, " ")
}
