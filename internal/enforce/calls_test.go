package enforce

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

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
		`sum(quantiles_over_time("phi", 0.5, 0.9, x[5m]))`, `quantile_over_time(0.5, x[5m])`, `rate(x)`, `limitk(-1, x)`} {
		if _, err := e.Query(q); err != nil {
			t.Errorf("Query(%q): %v; want it rewritten", q, err)
		}
	}
	// Unrestricted tokens whose queries the gateway parses (in cluster mode) are held to the same.
	var nilE *Enforcer
	if _, err := nilE.query(`sum(quantiles_over_time())`, true, nil); statusOf(err) != http.StatusBadRequest {
		t.Errorf("unrestricted, cluster: %v; want 400", err)
	}
}

// TestCheckCallsOnVictoriaMetrics: what checkCalls refuses, VictoriaMetrics 1.79.5 cannot run either (it exits or
// refuses it), and the calls it lets through run.
func TestCheckCallsOnVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	crashed := 0
	for _, c := range crashingCalls {
		resp, err := http.PostForm(vm.URL+"/api/v1/query", url.Values{"query": {c.query}})
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
	for _, q := range []string{`limit_offset(10, 0, x)`, `limit_offset(1.5, 2, x)`, `sum(quantiles_over_time("phi", 0.5, 0.9, x[5m]))`, `limitk(-1, x)`} {
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
