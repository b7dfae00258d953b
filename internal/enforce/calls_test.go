package enforce

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// crashingCalls make VictoriaMetrics 1.79.5 (and the v1.150 cluster's vmselect, for most) panic and exit; each is
// refused with the reason given.
var crashingCalls = []struct{ query, reason string }{
	{`limit_offset("a", "b", x)`, "limit_offset's limit must be a number"},
	{`limit_offset(1, "b", x)`, "limit_offset's offset must be a number"},
	{`limit_offset(NaN, 1, x)`, "limit_offset's limit must be a number"},
	{`limit_offset(-1e20, 0, x)`, "limit_offset's limit must be a number"},
	{`limit_offset(1, -1, x)`, "limit_offset's offset must be a number"},
	{`limit_offset(1, 1e20, x)`, "limit_offset's offset must be a number"},
	{`sum(LIMIT_OFFSET(1, scalar(y), x))`, "limit_offset's offset must be a number"},
	{`sum(quantiles_over_time())`, "quantiles_over_time() is called without the series it rolls up (argument 1)"},
	{`quantiles_over_time()`, "quantiles_over_time() is called without"},
	{`rate()`, "rate() is called without the series it rolls up (argument 1)"},
	{`sum(quantile_over_time(0.5))`, "quantile_over_time() is called without the series it rolls up (argument 2)"},
	// Times out of an int64 of milliseconds, and @ times VictoriaMetrics cannot copy (times.go).
	{`-(time() @ (time() @ 1))`, "the @ modifier's time must be"},
	{`m - m @ (m[5m:1m])`, "the @ modifier's time must be"},
	{`-(m @ (m[5m] offset 1h))`, "the @ modifier's time must be"},
	{`WITH (x = m @ 1) m - m @ x`, "the @ modifier's time must be"},
	{`time() @ 1e19`, "the @ modifier's time must be"},
	{`sum_over_time(time()[5m:1m] @ (1e10*1e10))`, "the @ modifier's time must be"},
	{`sum_over_time(time()[5m:1m] @ (end()*1e10))`, "the @ modifier's time must be"},
	{`sum_over_time(time()[5m:1m] @ scalar(vector(1e19)))`, "the @ modifier's time must be"},
	{`foo @ bar`, "the @ modifier's time must be"}, // a series of the team's with the value 1e19 stops it
	// Durations in steps count at the longest step forwarded (MaxStep, a year): 3000000i at a step of 100y stopped both.
	{`time() @ (end() + 3000000i)`, "the duration 3000000i is longer than 100 years"},
	{`rate(m[5m:3000000i])`, "the duration 3000000i is longer than 100 years"},
	{`-(time() @ (end() % 0))`, "the @ modifier's time must be"},
	{`rate(time()[5m:99999999999d])`, "the duration 99999999999d is longer than 100 years"},
	{`rate(m[300000000y])`, "the duration 300000000y is longer than 100 years"},
	{`m offset 300000000y`, "is longer than 100 years"},
}

func TestCheckCalls(t *testing.T) {
	e := devOnly(t)
	for _, c := range crashingCalls {
		_, err := e.Query(c.query)
		if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("Query(%q): %v; want 400 saying %q", c.query, err, c.reason)
		}
	}
	for _, q := range []string{`limit_offset(10, 0, x)`, `limit_offset(0, 2147483647, sum(x) by (a))`, `limit_offset(1.5, 2, x)`,
		`sum(x) by (a) limit 2147483647`, `sum(x) by (a) limit 10`,
		`sum(quantiles_over_time("phi", 0.5, 0.9, x[5m]))`, `quantile_over_time(0.5, x[5m])`, `rate(x)`, `limitk(-1, x)`,
		`x @ end()`, `x @ (end() - 1h)`, `rate(x[5m] @ start())`, `x @ 1700000000.5`, `(x)[5m:1m] @ (start() + 30s - 1)`,
		`x @ -1e11`, `rate(x[100y] offset -1h)`, `x[5i]`, `max_over_time(x[1h]) @ now()`, `x @ (time() - 5m)`,
		`x @ (end() - end() % 86400)`, `x @ round(end(), 3600)`, `x @ (end() - step())`, `rate(x[100i])`} {
		if _, err := e.Query(q); err != nil {
			t.Errorf("Query(%q): %v; want it rewritten", q, err)
		}
	}
	// Each phi of the quantiles family makes as many series as the call would without it (2,000 phis ran v1.151 out
	// of memory, an attacker's review).
	names := func(n int) string {
		all := []string{"min_over_time", "max_over_time", "avg_over_time", "sum_over_time", "count_over_time"}
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", all[i%len(all)])
		}
		return b.String()
	}
	phis := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "0.%03d, ", i+1)
		}
		return b.String()
	}
	for _, c := range []struct {
		query string
		ok    bool
	}{
		{`quantiles("phi", ` + phis(20) + `x) by (a)`, true},
		{`quantiles_over_time("phi", ` + phis(20) + `x[5m])`, true},
		{`histogram_quantiles("phi", ` + phis(20) + `sum(rate(x[5m])) by (le))`, true},
		{`quantiles("phi", ` + phis(21) + `x)`, false},
		{`sum(QUANTILES_OVER_TIME("phi", ` + phis(21) + `x[5m]))`, false},
		{`histogram_quantiles("phi", ` + phis(2000) + `x)`, false},
		// Nested calls multiply: three of 20 phis made 8,000 series of each (a review of the first version).
		{`quantiles("c", ` + phis(20) + `quantiles("b", ` + phis(20) + `x) by (b))`, false},
		{`histogram_quantiles("b", ` + phis(2) + `sum(quantiles_over_time("a", ` + phis(11) + `x[5m])) by (le))`, false},
		{`quantiles("b", ` + phis(2) + `quantiles_over_time("a", ` + phis(10) + `x[5m]))`, true},
		{`quantiles("b", ` + phis(20) + `x) + quantiles("a", ` + phis(20) + `y)`, true},
		// aggr_over_time makes a series of each function it names, repeated or not, and the rollup family three (four)
		// without a tag: 200 names over a subquery of 10 series' histograms took v1.151 to 2.5 GB (an attacker's review).
		{`aggr_over_time((` + names(20) + `), x[5m])`, true},
		{`aggr_over_time((` + names(21) + `), x[5m])`, false},
		{`count(AGGR_OVER_TIME((` + strings.Repeat(`"max_over_time", `, 200) + `"min_over_time"), histogram_over_time(x[5m])[1h:1m]))`, false},
		{`aggr_over_time("max_over_time", x[5m])`, true},
		{`rollup(rollup_candlestick(x[5m])[1h:1m])`, true},
		{`quantiles("q", ` + phis(7) + `rollup(x[5m]))`, false},
		{`quantiles("q", ` + phis(7) + `rollup(x[5m], "max"))`, true},
		{`aggr_over_time((` + names(5) + `), rollup_candlestick(x[5m])[1h:1m])`, true},
		{`aggr_over_time((` + names(6) + `), rollup_candlestick(x[5m])[1h:1m])`, false},
	} {
		_, err := e.Query(c.query)
		if c.ok && err != nil {
			t.Errorf("Query(%.60q): %v; want it rewritten", c.query, err)
		}
		if !c.ok && (statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "without a tag; at most 20 are allowed, nested calls multiplied")) {
			t.Errorf("Query(%.60q): %v; want 400 naming the series of each", c.query, err)
		}
	}
	// An aggregate's limit past an int32 wraps v1.151's memory estimate, which then passes -search.maxMemoryPerQuery
	// (TestVMAggregateLimitWraps); 1.79.5 runs it.
	for _, c := range []struct{ query, reason string }{
		{`sum(x) by (i) limit 4611686018427387905`, "sum(...) limit 4611686018427387905: the limit of an aggregate must be at most 2147483647"},
		{`rate(topk(1, count(x) by (a) limit 2147483648)[5m:])`, "count(...) limit 2147483648: the limit of an aggregate"},
	} {
		if _, err := e.Query(c.query); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("Query(%q): %v; want 400 saying %q", c.query, err, c.reason)
		}
	}
	// An aggregate's name written with escapes parses as a plain function, which VictoriaMetrics 1.79.5 runs as the
	// aggregate where it copies the query by printing it (`time() + count\_values("v", time())` is answered there),
	// and which the rewrite prints as the aggregate: the checks of aggregates (count_values' points) would not see it.
	for _, q := range []string{`time() + count\_values("v", time())`, `su\m(x)`, `max_over_time(count\_values("v", x)[1d:1s])`, `-(top\k(1, x))`} {
		if _, err := e.Query(q); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "aggregate function written with escapes") {
			t.Errorf("Query(%q): %v; want 400 naming the escaped aggregate", q, err)
		}
	}
	for _, q := range []string{`count_values("v", x)`, `sum(x) by (a)`, `COUNT_VALUES("v", x)`, `rate\_x(x)`} {
		if _, err := e.Query(q); err != nil && strings.Contains(err.Error(), "escapes") {
			t.Errorf("Query(%q): %v; want no refusal for escapes", q, err)
		}
	}
	// Unrestricted tokens whose queries the gateway parses (in cluster mode) are held to the same.
	var nilE *Enforcer
	if _, err := nilE.query(`sum(quantiles_over_time())`, true, false, nil); statusOf(err) != http.StatusBadRequest {
		t.Errorf("unrestricted, cluster: %v; want 400", err)
	}
}

// TestCheckCallsOnVictoriaMetrics: what checkRunnable refuses, VictoriaMetrics 1.79.5 cannot run either (it exits or
// refuses it), and the calls it lets through run.
func TestCheckCallsOnVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	crashed := 0
	for _, c := range crashingCalls {
		// The longest step VictoriaMetrics takes, which a client may ask for: durations in steps are multiplied by it.
		resp, err := http.PostForm(vm.URL+"/api/v1/query", url.Values{"query": {c.query}, "step": {"100y"}})
		if err != nil {
			crashed++
			vm.Restart(t)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("%s: VictoriaMetrics runs it (%s); the gateway must not refuse it", c.query, b)
		}
	}
	if crashed == 0 {
		t.Errorf("none of the refused calls made VictoriaMetrics 1.79.5 exit: the check guards against nothing")
	}
	e := devOnly(t)
	for _, q := range []string{`limit_offset(10, 0, x)`, `limit_offset(1.5, 2, x)`, `sum(quantiles_over_time("phi", 0.5, 0.9, x[5m]))`, `limitk(-1, x)`,
		`-(x @ (end() - 1h))`, `0 - rate(x[5m] @ start())`, `1 - sum_over_time(time()[5m:1m] @ 1e11)`, `-rate(x[100y:100y] offset -1h)`,
		`-(x @ (end() - end() % 86400))`, `-(x @ round(end() - step(), 3600))`} {
		rq, err := e.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.PostForm(vm.URL+"/api/v1/query", url.Values{"query": {rq}})
		if err != nil {
			t.Fatalf("%s: VictoriaMetrics is gone: %s", rq, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", rq, resp.StatusCode, b)
		}
	}
	t.Logf("%d of %d refused calls made VictoriaMetrics 1.79.5 exit", crashed, len(crashingCalls))
}

// TestVMAggregateLimitWraps: v1.151 estimates what an aggregate with a limit holds as its CPUs times the limit,
// unchecked, and a limit that wraps that to a few series passes -search.maxMemoryPerQuery, which refuses the same
// query with a limit of 1,000: one team's query past the operator's memory bound. The gateway refuses the limit.
func TestVMAggregateLimitWraps(t *testing.T) {
	t.Setenv("GOMAXPROCS", "4") // VictoriaMetrics' CPUs (cgroup.AvailableCPUs): 4 × (2^62+1) wraps to 4
	vm := vmtest.StartCurrent(t, "-search.maxMemoryPerQuery=1MB")
	end := time.Now().Truncate(time.Minute)
	var body strings.Builder
	for i := range 2000 {
		for m := range 60 {
			fmt.Fprintf(&body, "wrap_x{team=\"dev\",i=\"%d\"} %d %d\n", i, m, end.Add(time.Duration(m-60)*time.Minute).UnixMilli())
		}
	}
	resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader(body.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	vm.Flush(t)
	query := func(q string) (int, string) {
		t.Helper()
		resp, err := http.PostForm(vm.URL+"/api/v1/query_range", url.Values{"query": {q}, "nocache": {"1"},
			"start": {fmt.Sprint(end.Add(-time.Hour).Unix())}, "end": {fmt.Sprint(end.Unix())}, "step": {"1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	e := devOnly(t)
	bounded, err := e.Query(`sum(rate(wrap_x[5m])) by (i) limit 1000`)
	if err != nil {
		t.Fatal(err)
	}
	if st, b := query(bounded); st != 422 || !strings.Contains(b, "-search.maxMemoryPerQuery") {
		t.Fatalf("%s: %d %.200s; want 422 for want of memory", bounded, st, b)
	}
	wrapping := `sum(rate(wrap_x{team="dev"}[5m])) by (i) limit 4611686018427387905`
	if st, b := query(wrapping); st != http.StatusOK {
		t.Fatalf("%s straight to VictoriaMetrics: %d %.200s; want it answered, past its memory bound", wrapping, st, b)
	}
	if _, err := e.Query(wrapping); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "the limit of an aggregate must be at most") {
		t.Errorf("the gateway's rewrite of %s: %v; want 400 naming the limit", wrapping, err)
	}
}
