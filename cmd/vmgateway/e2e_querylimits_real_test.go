package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 18 against real backends: every query limit refuses the limited tenant's request and the same request of
// another tenant is answered by the real VictoriaMetrics, in the URL and in a form body, against a real cluster
// (tenant 7 limited, tenant 8 not) and against the real single-node, 1.79.5 and the current release (only tenant
// 0:0 there: the same requests go to a gateway whose limits are for another tenant). query_timeout reaches the
// backend as the exact timeout arg, seen by a recording proxy in front of the real backend, which answers it.
// Whether VictoriaMetrics cuts a query at the timeout is not asserted: it checks the deadline only at some points
// of a search (the cluster cut a search of fresh data at timeout=0.001 and let a settled one of 200 ms run; the
// single-node versions let a 0.7 s query_range run past timeout=0.01).

// qlRealConfig is qlConfig for one tenant only.
func qlRealConfig(account uint32) string {
	return strings.Replace(qlConfig, "limits:\n  - ", fmt.Sprintf("limits:\n  - account_id: %d\n    ", account), 1)
}

// qlRealCase is a request of qlCases and what the unlimited tenant's answer from VictoriaMetrics must hold.
type qlRealCase struct {
	qlCase
	served string
}

// qlRealCases are qlCases with the regexp-blocked query changed to one VictoriaMetrics answers (it refuses
// `{__name__=~".*"}`, which matches every series, on its own) and what each answer holds: the series' job label
// where data is read, for the others the shape of the answer.
func qlRealCases(now time.Time) []qlRealCase {
	var out []qlRealCase
	for _, c := range qlCases(now) {
		served := `"job":"a"`
		switch c.name {
		case "blocked exact", "blocked rewritten":
			served = `"result":[{"metric":{},"value":[`
		case "blocked regexp":
			c.args = url.Values{"query": {`count({__name__=~".+"} offset 1m)`}}
			served = `"result":[{"metric":{},"value":[`
		case "@":
			served = `"status":"success"` // nothing was written in 1970
		case "WITH":
			// 1.79.5 has no WITH templates for durations (`WITH (w = 3d) x[w]`): a function template reads the same.
			c.args = url.Values{"query": {"WITH (f(m) = max_over_time(m[3d])) f(ql_e2e)"}}
		}
		out = append(out, qlRealCase{qlCase: c, served: served})
	}
	return out
}

// qlCurrentCases are requests current VictoriaMetrics reads differently from v1.79: times past 9223372036 in any
// numeric form as milliseconds, and /api/v1/query of one top-level subquery with its durations in its own steps.
func qlCurrentCases(now time.Time) []qlRealCase {
	ms := func(d time.Duration) int64 { return now.Add(-d).UnixMilli() }
	return []qlRealCase{
		{qlCase{name: "milliseconds with a fraction", path: "/api/v1/query_range",
			args:  url.Values{"query": {"ql_e2e"}, "start": {fmt.Sprintf("%d.0", ms(3*time.Hour))}, "step": {"60"}},
			limit: "max_total_query_length", want: "the request spans 3h"}, `"job":"a"`},
		{qlCase{name: "milliseconds with an exponent", path: "/api/v1/export",
			args:  url.Values{"match[]": {"ql_e2e"}, "start": {strconv.FormatFloat(float64(ms(2*24*time.Hour)), 'e', -1, 64)}},
			limit: "max_total_query_length", want: "the request spans 2d"}, `"job":"a"`},
		{qlCase{name: "a top-level subquery in its own steps", path: "/api/v1/query",
			args:  url.Values{"query": {"max_over_time(ql_e2e[1h])[2i:1d]"}},
			limit: "max_query_lookback", want: "before now"}, `"job":"a"`},
		{qlCase{name: "a top-level rollup's @, which VictoriaMetrics drops", path: "/api/v1/query",
			args:  url.Values{"query": {"max_over_time(ql_e2e[1h]) @ now()"}, "time": {strconv.FormatInt(now.Add(-47*time.Hour).Unix(), 10)}},
			limit: "max_query_lookback", want: "before now"}, `"job":"a"`},
		{qlCase{name: "an instant query at the step of its max_lookback", path: "/api/v1/query",
			args:  url.Values{"query": {"max_over_time(ql_e2e[1i])"}, "max_lookback": {"2d"}},
			limit: "max_query_lookback", want: "2d before now"}, `"job":"a"`},
		{qlCase{name: "federate with an end", path: "/federate",
			args:  url.Values{"match[]": {"ql_e2e"}, "end": {strconv.FormatInt(now.Add(-time.Minute).Unix(), 10)}},
			limit: "max_total_query_length", want: "the request spans"}, `job="a"`},
		{qlCase{name: "a subquery at the request's step", path: "/api/v1/query",
			args:  url.Values{"query": {"(ql_e2e + 0)[1h:]"}, "step": {"5s"}},
			limit: "min_step", want: "runs at the request's step 5s"}, `"job":"a"`},
	}
}

// qlV179Cases are requests v1.79 reads differently from current releases: a time whose milliseconds are past
// int64 (start=1e19, 2286 as seconds) it reads as 1970, and exports everything (TestArgsAsVictoriaMetricsReadsThem).
func qlV179Cases() []qlRealCase {
	return []qlRealCase{
		{qlCase{name: "a start past int64 milliseconds", path: "/api/v1/export", args: url.Values{"match[]": {"ql_e2e"}, "start": {"1e19"}},
			limit: "max_total_query_length", want: "the request spans"}, `"job":"a"`},
		{qlCase{name: "a whole-number start past int64 milliseconds", path: "/api/v1/series",
			args: url.Values{"match[]": {"ql_e2e"}, "start": {"1700000000000000000"}}, limit: "max_total_query_length", want: "the request spans"}, `"job":"a"`},
	}
}

// qlImport is 3 days of ql_e2e{job="a"} every 5 minutes, as export's JSON lines: every window, offset and subquery
// of the cases reads data.
func qlImport(now time.Time) string {
	var values, stamps []string
	for t := now.Add(-72 * time.Hour); !t.After(now); t = t.Add(5 * time.Minute) {
		values = append(values, strconv.Itoa(len(values)))
		stamps = append(stamps, strconv.FormatInt(t.UnixMilli(), 10))
	}
	return fmt.Sprintf(`{"metric":{"__name__":"ql_e2e","job":"a"},"values":[%s],"timestamps":[%s]}`+"\n",
		strings.Join(values, ","), strings.Join(stamps, ","))
}

// qlSide is one tenant's way to the backend: its gateway, token and path prefix.
type qlSide struct {
	g      *gw
	token  string
	prefix string
	tenant string
}

// runQLRealCases sends every case as limited and as other, in the URL and in a form body: limited gets the 422 of
// the limit, counted; other gets VictoriaMetrics' answer.
func runQLRealCases(t *testing.T, limited, other qlSide, cases []qlRealCase) {
	t.Helper()
	for _, c := range cases {
		for _, form := range []bool{false, true} {
			shape := map[bool]string{false: "URL", true: "form"}[form]
			// Retried: a new series can take a moment to be found over every day it has samples in.
			vmtest.Eventually(t, func() (bool, string) {
				code, body := qlRequest(t, other.g, other.prefix+c.path, c.args, form, other.token)
				return code == http.StatusOK && strings.Contains(body, c.served),
					fmt.Sprintf("%s (%s), tenant %s: %d %.400s; want 200 from VictoriaMetrics with %s", c.name, shape, other.tenant, code, body, c.served)
			})
			if c.limit == "" {
				vmtest.Eventually(t, func() (bool, string) {
					code, body := qlRequest(t, limited.g, limited.prefix+c.path, c.args, form, limited.token)
					return code == http.StatusOK && strings.Contains(body, c.served),
						fmt.Sprintf("%s (%s), tenant %s within its limits: %d %.400s; want 200 with %s", c.name, shape, limited.tenant, code, body, c.served)
				})
				continue
			}
			series := `vmgateway_querylimits_rejected_total{limit="` + c.limit + `"}`
			before := metricValue(t, limited.g, series)
			code, body := qlRequest(t, limited.g, limited.prefix+c.path, c.args, form, limited.token)
			var e struct{ Status, ErrorType, Error string }
			if code != http.StatusUnprocessableEntity || json.Unmarshal([]byte(body), &e) != nil || e.Status != "error" || e.ErrorType != "execution" {
				t.Errorf("%s (%s), tenant %s: %d %.400s; want 422 with a Prometheus-style error", c.name, shape, limited.tenant, code, body)
				continue
			}
			if !strings.Contains(e.Error, c.limit) || !strings.Contains(e.Error, c.want) || !strings.Contains(e.Error, "tenant "+limited.tenant) {
				t.Errorf("%s (%s): %q; want the limit %s, %q and tenant %s", c.name, shape, e.Error, c.limit, c.want, limited.tenant)
			}
			if after := metricValue(t, limited.g, series); after != before+1 {
				t.Errorf("%s (%s): %s went from %v to %v", c.name, shape, series, before, after)
			}
		}
	}
}

// qlProxy is a recording upstream that passes every request on to the real backend at target: the test sees the
// exact args the gateway forwarded and the real backend's answer to them.
func qlProxy(t *testing.T, target string) *vmtest.Recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := vmtest.NewRecorder(t)
	rec.Respond(httputil.NewSingleHostReverseProxy(u).ServeHTTP)
	return rec
}

// checkQLTimeout sends a query as limited (query_timeout 20s) and as other through gateways whose upstream is a
// recording proxy to the real backend: the limited tenant's request reaches VictoriaMetrics with timeout=20 and
// is answered, in the URL and in a form body; a client's own shorter timeout is kept; the other tenant's request
// carries none.
func checkQLTimeout(t *testing.T, rec *vmtest.Recorder, limited, other qlSide) {
	t.Helper()
	rec.Requests()
	for _, c := range []struct {
		side    qlSide
		args    url.Values
		timeout string
	}{
		{limited, url.Values{"query": {"count_over_time(ql_e2e[1d])"}}, "20"},
		{limited, url.Values{"query": {"count_over_time(ql_e2e[1d])"}, "timeout": {"5s"}}, "5s"},
		// An empty timeout, which VictoriaMetrics reads as none, is replaced by the limit's.
		{limited, url.Values{"query": {"count_over_time(ql_e2e[1d])"}, "timeout": {""}}, "20"},
		{other, url.Values{"query": {"count_over_time(ql_e2e[1d])"}}, ""},
	} {
		for _, form := range []bool{false, true} {
			code, body := qlRequest(t, c.side.g, c.side.prefix+"/api/v1/query", c.args, form, c.side.token)
			if code != http.StatusOK || !strings.Contains(body, `"job":"a"`) {
				t.Errorf("tenant %s, %v (form %v): %d %.400s; want VictoriaMetrics' answer", c.side.tenant, c.args, form, code, body)
			}
			reqs := rec.Requests()
			if len(reqs) != 1 {
				t.Errorf("tenant %s, %v (form %v): %d requests reached the backend, want 1", c.side.tenant, c.args, form, len(reqs))
				continue
			}
			// The timeout arg is where VictoriaMetrics reads it: the URL, or the form for a client's own one.
			got := reqs[0].Query["timeout"]
			if vs, _ := url.ParseQuery(reqs[0].Body); len(vs["timeout"]) > 0 {
				got = append(got, vs["timeout"]...)
			}
			want := []string(nil)
			if c.timeout != "" {
				want = []string{c.timeout}
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("tenant %s, %v (form %v): timeout args %q reached the backend, want %q", c.side.tenant, c.args, form, got, want)
			}
		}
	}
}

// TestRealClusterQueryLimits runs every query limit against a real cluster: tenant 7 is limited, tenant 8 is not.
func TestRealClusterQueryLimits(t *testing.T) {
	now := time.Now()
	rc := startRealCluster(t, "-querylimits.config="+writeFile(t, "querylimits.yaml", qlRealConfig(7)))
	for _, tn := range []string{"7", "8"} {
		code, _, body := do(t, http.MethodPost, rc.c.Insert.URL+"/insert/"+tn+"/prometheus/api/v1/import", strings.NewReader(qlImport(now)))
		if code/100 != 2 {
			t.Fatalf("import into tenant %s: %d %s", tn, code, body)
		}
	}
	rc.c.Flush(t)
	t7, t8 := clusterToken(t, qlAccess(7)), clusterToken(t, qlAccess(8))
	limited := qlSide{g: rc.g, token: t7, prefix: "/select/7/prometheus", tenant: "7:0"}
	other := qlSide{g: rc.g, token: t8, prefix: "/select/8/prometheus", tenant: "8:0"}
	vmtest.Eventually(t, func() (bool, string) {
		code, body := qlRequest(t, rc.g, other.prefix+"/api/v1/query", url.Values{"query": {"count_over_time(ql_e2e[3d])"}}, false, t8)
		return code == http.StatusOK && strings.Contains(body, `"job":"a"`), "the imported data is not visible: " + body
	})
	runQLRealCases(t, limited, other, qlRealCases(now))
	runQLRealCases(t, limited, other, qlCurrentCases(now))

	rec := qlProxy(t, rc.c.Select.URL)
	viaRec := startGateway(t, "-read.url="+rec.URL, "-write.url="+rc.c.Insert.URL, "-clusterMode", "-enable.auth",
		"-auth.publicKeyFiles="+clusterPublicKeyFile(t), "-querylimits.config="+writeFile(t, "querylimits.yaml", qlRealConfig(7)))
	limited.g, other.g = viaRec, viaRec
	checkQLTimeout(t, rec, limited, other)
}

func qlAccess(account uint32) auth.VMAccess {
	return auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: account}}
}

// TestQueryLimitsRealSingleNode runs every query limit against the real single-node, 1.79.5 and the current
// release. Single-node VictoriaMetrics has only tenant 0:0: the limited side is a gateway with limits for 0:0, the
// other a gateway in front of the same backend whose limits are for tenant 7.
func TestQueryLimitsRealSingleNode(t *testing.T) {
	for _, v := range []struct {
		name  string
		start func(testing.TB, ...string) *vmtest.VM
	}{{"v1.79.5", vmtest.Start}, {vmtest.CurrentVersion, vmtest.StartCurrent}} {
		t.Run(v.name, func(t *testing.T) {
			now := time.Now()
			vm := v.start(t)
			if code, _, body := do(t, http.MethodPost, vm.URL+"/api/v1/import", strings.NewReader(qlImport(now))); code != http.StatusNoContent {
				t.Fatalf("import: %d %s", code, body)
			}
			vm.Flush(t)
			gateway := func(upstream, config string) *gw {
				return startGateway(t, "-read.url="+upstream, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t),
					"-querylimits.config="+writeFile(t, "querylimits.yaml", config))
			}
			token := rlToken(t, tenant.ID{}, "alice")
			limited := qlSide{g: gateway(vm.URL, qlRealConfig(0)), token: token, tenant: "0:0"}
			other := qlSide{g: gateway(vm.URL, qlRealConfig(7)), token: token, tenant: "0:0 (limits for 7:0 only)"}
			vmtest.Eventually(t, func() (bool, string) {
				code, body := qlRequest(t, other.g, "/api/v1/query", url.Values{"query": {"count_over_time(ql_e2e[3d])"}}, false, token)
				return code == http.StatusOK && strings.Contains(body, `"job":"a"`), "the imported data is not visible: " + body
			})
			runQLRealCases(t, limited, other, qlRealCases(now))
			if v.name == "v1.79.5" {
				runQLRealCases(t, limited, other, qlV179Cases())
			}
			rec := qlProxy(t, vm.URL)
			limited.g, other.g = gateway(rec.URL, qlRealConfig(0)), gateway(rec.URL, qlRealConfig(7))
			checkQLTimeout(t, rec, limited, other)
		})
	}
}
