package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 18 through the real binary: per-tenant query-shape limits in front of the real single-node
// VictoriaMetrics, and in cluster mode in front of a recording upstream (tenant 7 limited, tenant 8 not).

const qlConfig = `limits:
  - max_total_query_length: 2h
    max_query_lookback: 1d
    min_step: 15s
    max_query_expression_size_bytes: 300
    query_timeout: 20s
    blocked_queries:
      - pattern: 'count({__name__=~".+"})'
      - pattern: '.*__name__=~"\.[*+]".*'
        regex: true
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// qlRequest sends args to path in the URL (GET) or as a form body (POST).
func qlRequest(t *testing.T, g *gw, path string, args url.Values, form bool, token string) (int, string) {
	t.Helper()
	hdr := []string{"Authorization", "Bearer " + token}
	if form {
		code, _, body := do(t, http.MethodPost, g.URL+path, strings.NewReader(args.Encode()), hdr...)
		return code, body
	}
	code, _, body := do(t, http.MethodGet, g.URL+path+"?"+args.Encode(), nil, hdr...)
	return code, body
}

type qlCase struct {
	name, path string
	args       url.Values
	// limit is the limit that refuses the request, "" when it is served.
	limit string
	// want is a piece of the refusal's message.
	want string
}

func qlCases(now time.Time) []qlCase {
	ago := func(d time.Duration) string { return strconv.FormatInt(now.Add(-d).Unix(), 10) }
	return []qlCase{
		{name: "range within", path: "/api/v1/query_range", args: url.Values{"query": {"ql_e2e"}, "start": {ago(time.Hour)}, "step": {"60"}}},
		{name: "range too long", path: "/api/v1/query_range", args: url.Values{"query": {"ql_e2e"}, "start": {ago(3 * time.Hour)}, "step": {"60"}},
			limit: "max_total_query_length", want: "the request spans 3h"},
		{name: "step too fine", path: "/api/v1/query_range", args: url.Values{"query": {"ql_e2e"}, "start": {ago(time.Hour)}, "step": {"5s"}},
			limit: "min_step", want: "the step is 5s"},
		{name: "window within", path: "/api/v1/query", args: url.Values{"query": {"max_over_time(ql_e2e[12h])"}}},
		{name: "window too far back", path: "/api/v1/query", args: url.Values{"query": {"max_over_time(ql_e2e[2d])"}},
			limit: "max_query_lookback", want: "2d before now"},
		{name: "offset", path: "/api/v1/query", args: url.Values{"query": {"max_over_time(ql_e2e[1h] offset 1d)"}},
			limit: "max_query_lookback", want: "1d1h before now"},
		{name: "subquery", path: "/api/v1/query", args: url.Values{"query": {"max_over_time(rate(ql_e2e[10m])[1d:1m])"}},
			limit: "max_query_lookback", want: "1d10m before now"},
		{name: "@", path: "/api/v1/query", args: url.Values{"query": {"ql_e2e @ 1000"}},
			limit: "max_query_lookback", want: "reads data from 1970-01-01T00:11:40Z"},
		{name: "WITH", path: "/api/v1/query", args: url.Values{"query": {"WITH (w = 3d) max_over_time(ql_e2e[w])"}},
			limit: "max_query_lookback", want: "3d before now"},
		{name: "expression too large", path: "/api/v1/query", args: url.Values{"query": {`ql_e2e{a!="` + strings.Repeat("x", 300) + `"}`}},
			limit: "max_query_expression_size_bytes", want: "the query arg is 313 bytes"},
		{name: "blocked exact", path: "/api/v1/query", args: url.Values{"query": {`count( {__name__ =~ ".+"} )`}},
			limit: "blocked_queries", want: "matches exactly the blocked query"},
		// Rewritten to read the same data the same way: compared in the normal form.
		{name: "blocked rewritten", path: "/api/v1/query", args: url.Values{"query": {`count by () ({__name__=~".{1,}",job=~".*"} offset 0s)`}},
			limit: "blocked_queries", want: "matches exactly the blocked query"},
		{name: "blocked regexp", path: "/api/v1/query", args: url.Values{"query": {`sum({__name__=~".*"})`}},
			limit: "blocked_queries", want: "matches the regexp the blocked query"},
		{name: "export without start", path: "/api/v1/export", args: url.Values{"match[]": {"ql_e2e"}},
			limit: "max_total_query_length", want: "the request spans"},
		{name: "export with start", path: "/api/v1/export", args: url.Values{"match[]": {"ql_e2e"}, "start": {ago(time.Hour)}}},
		{name: "series without start", path: "/api/v1/series", args: url.Values{"match[]": {"ql_e2e"}},
			limit: "max_total_query_length", want: "the request spans 1d"},
		{name: "series with start", path: "/api/v1/series", args: url.Values{"match[]": {"ql_e2e"}, "start": {ago(time.Hour)}}},
		{name: "timeout too long", path: "/api/v1/query", args: url.Values{"query": {"ql_e2e"}, "timeout": {"1m"}},
			limit: "query_timeout", want: "timeout=1m"},
	}
}

// TestQueryLimitsSingleNode runs every limit against the real single-node VictoriaMetrics, in the URL and in a form
// body: refused requests get 422 naming the limit and are counted; the others are answered by VictoriaMetrics.
func TestQueryLimitsSingleNode(t *testing.T) {
	vm := vmtest.Start(t)
	now := time.Now()
	var b strings.Builder
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&b, `{"metric":{"__name__":"ql_e2e","job":"a"},"values":[%d],"timestamps":[%d]}`+"\n", i, now.Add(-time.Duration(i)*time.Minute).UnixMilli())
	}
	if code, _, body := do(t, http.MethodPost, vm.URL+"/api/v1/import", strings.NewReader(b.String()), "Content-Type", "application/json"); code != http.StatusNoContent {
		t.Fatalf("import: %d %s", code, body)
	}
	vm.Flush(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t),
		"-querylimits.config="+writeFile(t, "querylimits.yaml", qlConfig))
	token := rlToken(t, tenant.ID{}, "alice")
	for _, c := range qlCases(now) {
		for _, form := range []bool{false, true} {
			shape := map[bool]string{false: "URL", true: "form"}[form]
			var before float64
			if c.limit != "" {
				before = metricValue(t, g, `vmgateway_querylimits_rejected_total{limit="`+c.limit+`"}`)
			}
			code, body := qlRequest(t, g, c.path, c.args, form, token)
			if c.limit == "" {
				if code != http.StatusOK {
					t.Errorf("%s (%s): %d %s, want 200 from VictoriaMetrics", c.name, shape, code, body)
				} else if !strings.Contains(body, "ql_e2e") {
					t.Errorf("%s (%s): the answer has no ql_e2e data: %.300s", c.name, shape, body)
				}
				continue
			}
			var e struct{ Status, ErrorType, Error string }
			if code != http.StatusUnprocessableEntity || json.Unmarshal([]byte(body), &e) != nil || e.Status != "error" || e.ErrorType != "execution" {
				t.Errorf("%s (%s): %d %s, want 422 with a Prometheus-style error", c.name, shape, code, body)
				continue
			}
			if !strings.Contains(e.Error, c.limit) || !strings.Contains(e.Error, c.want) || !strings.Contains(e.Error, "tenant 0:0") {
				t.Errorf("%s (%s): %q, want the limit %s, %q and the tenant", c.name, shape, e.Error, c.limit, c.want)
			}
			if after := metricValue(t, g, `vmgateway_querylimits_rejected_total{limit="`+c.limit+`"}`); after != before+1 {
				t.Errorf("%s (%s): vmgateway_querylimits_rejected_total{limit=%q} went from %v to %v", c.name, shape, c.limit, before, after)
			}
		}
	}
	// A body the limits cannot read is not forwarded either.
	code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/query", strings.NewReader("query=ql_e2e"), "Authorization", "Bearer "+token, "Content-Type", "multipart/form-data; boundary=x")
	if code != http.StatusUnsupportedMediaType {
		t.Errorf("a multipart body under query limits: %d %s, want 415", code, body)
	}
}

// TestQueryLimitsCluster checks cluster mode against a recording upstream: tenant 7 is limited, tenant 8 is not;
// what is refused never reaches the upstream, and query_timeout arrives there as the timeout arg.
func TestQueryLimitsCluster(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	cfg := writeFile(t, "querylimits.yaml", `limits:
  - account_id: 7
    max_query_lookback: 1d
    query_timeout: 20s
  - account_id: 7
    key: claim:sub
    max_total_query_length: 1h
`)
	g := startGateway(t, "-clusterMode", "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth",
		"-auth.publicKeyFiles="+rlPublicKeyFile(t), "-querylimits.config="+cfg)
	t7, t8 := rlToken(t, tenant.ID{AccountID: 7}, "alice"), rlToken(t, tenant.ID{AccountID: 8}, "bob")
	long := url.Values{"query": {"rate(x[2d])"}}
	for _, form := range []bool{false, true} {
		code, body := qlRequest(t, g, "/select/7/prometheus/api/v1/query", long, form, t7)
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, "max_query_lookback=1d") || !strings.Contains(body, "tenant 7:0") {
			t.Errorf("tenant 7, form %v: %d %s, want 422 max_query_lookback", form, code, body)
		}
		if reqs := rec.Requests(); len(reqs) != 0 {
			t.Errorf("a refused request reached the upstream: %+v", reqs)
		}
		code, body = qlRequest(t, g, "/select/8/prometheus/api/v1/query", long, form, t8)
		if code != http.StatusOK {
			t.Errorf("tenant 8, form %v: %d %s, want 200", form, code, body)
		}
		reqs := rec.Requests()
		if len(reqs) != 1 || reqs[0].Query.Get("timeout") != "" {
			t.Errorf("tenant 8 has no query_timeout: %+v", reqs)
		}
	}
	// The keyed limit names the identity.
	code, body := qlRequest(t, g, "/select/7/prometheus/api/v1/query_range", url.Values{"query": {"x"}, "start": {"-2h"}, "step": {"60"}}, false, t7)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, `claim:sub=\"alice\"`) {
		t.Errorf("keyed limit: %d %s, want 422 naming claim:sub=alice", code, body)
	}
	rec.Requests()
	// query_timeout reaches the upstream, in the URL and next to a form body.
	for _, form := range []bool{false, true} {
		code, body := qlRequest(t, g, "/select/7/prometheus/api/v1/query", url.Values{"query": {"rate(x[1h])"}}, form, t7)
		if code != http.StatusOK {
			t.Fatalf("tenant 7 within limits, form %v: %d %s", form, code, body)
		}
		reqs := rec.Requests()
		if len(reqs) != 1 || reqs[0].Query.Get("timeout") != "20" {
			t.Errorf("form %v: want timeout=20 upstream, got %+v", form, reqs)
		} else if form && !strings.Contains(reqs[0].Body, "query=") {
			t.Errorf("the form body did not reach the upstream: %q", reqs[0].Body)
		}
	}
}

// TestQueryLimitsReload changes the config under a running gateway: SIGHUP and the check interval load a valid one,
// an invalid one is counted and the previous limits stay.
func TestQueryLimitsReload(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	cfg := writeFile(t, "querylimits.yaml", "limits:\n  - max_query_lookback: 1d\n")
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-querylimits.config="+cfg)
	q := func(query string) int {
		code, _, _ := do(t, http.MethodGet, g.URL+"/api/v1/query?"+url.Values{"query": {query}}.Encode(), nil)
		return code
	}
	if c := q("rate(x[2d])"); c != http.StatusUnprocessableEntity {
		t.Fatalf("2d under a 1d lookback: %d", c)
	}
	if err := os.WriteFile(cfg, []byte("limits:\n  - max_query_lookback: 3d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := metricValue(t, g, `vmgateway_querylimits_config_reloads_total{status="success"}`)
	_ = g.Signal(syscall.SIGHUP)
	vmtest.Eventually(t, func() (bool, string) {
		return q("rate(x[2d])") == http.StatusOK, "the 3d lookback is not in force after SIGHUP"
	})
	if v := metricValue(t, g, `vmgateway_querylimits_config_reloads_total{status="success"}`); v != ok+1 {
		t.Errorf("successful reloads went from %v to %v", ok, v)
	}
	if err := os.WriteFile(cfg, []byte("limits:\n  - max_query_lookback: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = g.Signal(syscall.SIGHUP)
	vmtest.Eventually(t, func() (bool, string) {
		return metricValue(t, g, "vmgateway_querylimits_config_last_reload_successful") == 0, "the invalid config was not reported"
	})
	if c := q("rate(x[2d])"); c != http.StatusOK {
		t.Errorf("after an invalid config the previous limits must stay: %d", c)
	}
	if !g.logged("querylimits.yaml:2: max_query_lookback: want a positive duration") {
		t.Errorf("the log does not say what is wrong and where:\n%s", tailLines(g.logs.String(), 10))
	}

	// The check interval picks up a change without a signal.
	cfg2 := writeFile(t, "querylimits.yaml", "limits:\n  - max_query_lookback: 1d\n")
	g2 := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-querylimits.config="+cfg2, "-querylimits.configCheckInterval=100ms")
	if err := os.WriteFile(cfg2, []byte("limits:\n  - max_query_lookback: 3d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vmtest.Eventually(t, func() (bool, string) {
		code, _, _ := do(t, http.MethodGet, g2.URL+"/api/v1/query?"+url.Values{"query": {"rate(x[2d])"}}.Encode(), nil)
		return code == http.StatusOK, "the changed config was not loaded by the check interval"
	})
}

// TestQueryLimitsValidateConfig is -querylimits.validateConfig: exit 0 and a line for a valid config, exit 1 and
// every error with its line for an invalid one; an invalid config also stops the gateway from starting.
func TestQueryLimitsValidateConfig(t *testing.T) {
	good := writeFile(t, "good.yaml", qlConfig)
	out, err := exec.Command(gatewayBin, "-querylimits.validateConfig", "-querylimits.config="+good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Errorf("valid config: %v %s", err, out)
	}
	bad := writeFile(t, "bad.yaml", "limits:\n  - min_stp: 1m\n  - max_query_lookback: 30\n")
	out, err = exec.Command(gatewayBin, "-querylimits.validateConfig", "-querylimits.config="+bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "bad.yaml:2: unknown key \"min_stp\"") ||
		!strings.Contains(string(out), "bad.yaml:3: max_query_lookback") {
		t.Errorf("invalid config: %v %s", err, out)
	}
	out, err = exec.Command(gatewayBin, "-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1", "-querylimits.config="+bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot start") {
		t.Errorf("the gateway started with an invalid query limits config: %s", out)
	}
}

// TestQueryLimitsCostStats checks that the gateway reads what each query cost from the stats a current
// VictoriaMetrics ends its answers with, and counts the answers of v1.79.5, which has none.
func TestQueryLimitsCostStats(t *testing.T) {
	cur := vmtest.StartCurrent(t).URL
	var b strings.Builder
	for i := 0; i < 25; i++ {
		fmt.Fprintf(&b, "ql_cost{i=\"%d\"} %d\n", i, i)
	}
	if code, _, body := do(t, http.MethodPost, cur+"/api/v1/import/prometheus", strings.NewReader(b.String()), "Content-Type", "text/plain"); code != http.StatusNoContent {
		t.Fatalf("import: %d %s", code, body)
	}
	do(t, http.MethodGet, cur+"/internal/force_flush", nil)
	g := startGateway(t, "-read.url="+cur, "-write.url="+cur)
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=count(ql_cost)", nil)
		return strings.Contains(body, `"25"`), "the imported series are not visible: " + body
	})
	count, sum := metricValue(t, g, "vmgateway_query_series_fetched_count"), metricValue(t, g, "vmgateway_query_series_fetched_sum")
	code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=sum(ql_cost)", nil)
	if code != http.StatusOK || !strings.Contains(body, `"seriesFetched"`) {
		t.Fatalf("query: %d %s", code, body)
	}
	if c := metricValue(t, g, "vmgateway_query_series_fetched_count"); c != count+1 {
		t.Errorf("answers with stats went from %v to %v", count, c)
	}
	if s := metricValue(t, g, "vmgateway_query_series_fetched_sum"); s != sum+25 {
		t.Errorf("series fetched went from %v to %v, want +25", sum, s)
	}

	old := vmtest.Start(t)
	g2 := startGateway(t, "-read.url="+old.URL, "-write.url="+old.URL)
	absent := `vmgateway_query_stats_unread_total{reason="absent"}`
	compressed := `vmgateway_query_stats_unread_total{reason="compressed"}`
	a, c := metricValue(t, g2, absent), metricValue(t, g2, compressed)
	if code, _, body := do(t, http.MethodGet, g2.URL+"/api/v1/query?query=up", nil, "Accept-Encoding", "identity"); code != http.StatusOK || strings.Contains(body, `"stats"`) {
		t.Fatalf("v1.79.5 query: %d %s", code, body)
	}
	if v := metricValue(t, g2, absent); v != a+1 {
		t.Errorf("answers without stats went from %v to %v", a, v)
	}
	// Go's client asks for gzip; VictoriaMetrics compresses; the gateway forwards the answer unread.
	if code, _, body := do(t, http.MethodGet, g2.URL+"/api/v1/query?query=up", nil); code != http.StatusOK {
		t.Fatalf("v1.79.5 query: %d %s", code, body)
	}
	if v := metricValue(t, g2, compressed); v != c+1 {
		t.Errorf("compressed answers went from %v to %v", c, v)
	}
}
