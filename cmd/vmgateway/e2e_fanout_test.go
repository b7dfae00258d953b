package main

import (
	"fmt"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestHistogramFanOutBounded: histogram_over_time outside an aggregation VictoriaMetrics does as it goes makes a series
// of each bucket of each series it reads, all in VictoriaMetrics' memory (300 series of a team's own samples took
// v1.151 to 751 MB). Behind a gateway bounding them at 2×10^6 points, on 1.79.5, the current release and a real
// cluster: over an hour at 8 s, team dev's 12 series (about 270 buckets each, 1.5×10^6 points) are answered as
// VictoriaMetrics answers them; the same query over dev's and ops' 52 series is refused, counted in the token's own
// series (in the cluster, ops writes to another tenant, and a token of dev's tenant is answered); a heatmap (`sum(...) by
// (vmrange)`) is answered; histogram_quantile over the histograms is refused like them; and a token of two filters,
// whose heatmap the rewrite puts a union under the sum of for 1.79.5, is refused there over ops' 40 series, and
// answered by the releases that read its filters inside the braces. The backends run a query on 2 workers
// (GOMAXPROCS=2), whatever the machine's cores: a heatmap of the 52 series is then bounded by the query alone.
func TestHistogramFanOutBounded(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	ranged := fanOutRange(end)
	dev, ops := fanOutData("dev", 12, end), fanOutData("ops", 40, end)
	// The backends' /metrics are read, as by default, for what they read (-read.maxConcurrentRequests=0).
	limit := []string{"-search.maxFanOutPoints=2000000", "-read.maxConcurrentRequests=0"}
	for _, v := range []struct {
		name  string
		start func(t *testing.T) fanOutSetup
	}{
		{"1.79.5", func(t *testing.T) fanOutSetup { return singleFanOut(t, vmtest.Start(t), dev+ops, limit...) }},
		// Read slots fixed: the backend's flags are read all the same (-read.learnBackendFlags).
		{"current", func(t *testing.T) fanOutSetup {
			return singleFanOut(t, vmtest.StartCurrent(t), dev+ops, append(limit, "-read.maxConcurrentRequests=16", "-read.learnBackendFlags")...)
		}},
		{"cluster", func(t *testing.T) fanOutSetup {
			rc := startRealCluster(t, limit...)
			rc.importDirect(t, "3", dev)
			rc.importDirect(t, "3", ops)
			rc.importDirect(t, "4", dev)
			vmtest.Eventually(t, func() (bool, string) {
				rc.c.Flush(t)
				_, _, b3 := do(t, http.MethodGet, rc.c.Select.URL+"/select/3/prometheus/api/v1/query?query=count(count_over_time(hx[2h]))", nil)
				_, _, b4 := do(t, http.MethodGet, rc.c.Select.URL+"/select/4/prometheus/api/v1/query?query=count(count_over_time(hx[2h]))", nil)
				return strings.Contains(b3, `"52"`) && strings.Contains(b4, `"12"`), "tenants 3 and 4 count " + b3 + " " + b4
			})
			t3, t4 := tenant.ID{AccountID: 3}, tenant.ID{AccountID: 4}
			return fanOutSetup{g: rc.g, prefix: "/select/3:0/prometheus", direct: rc.c.Select.URL + "/select/3/prometheus/api/v1/query_range?extra_label=team=dev&",
				devTok:   clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}}),
				allTok:   clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead}),
				opsSplit: clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead, ExtraFilters: []string{`{team="ops",half="a"}`, `{team="ops",half="b"}`}}),
				devWide:  clusterToken(t, auth.VMAccess{Tenant: t4, Mode: auth.ModeRead}),
			}
		}},
	} {
		t.Run(v.name, func(t *testing.T) {
			s := v.start(t)
			prefix := s.prefix
			// What the read backends read is learnt from their /metrics: from v1.110.0 on, `or` inside the braces.
			braces := v.name != "1.79.5"
			vmtest.Eventually(t, func() (bool, string) {
				logs := s.g.logs.String()
				if braces {
					return strings.Contains(logs, "inside the braces of each selector"), "the read backends' /metrics not read yet"
				}
				return strings.Contains(logs, "the read backends run this many requests at once"), "the read backends' /metrics not read yet"
			})
			// Through a token of two filters, the rewrite puts a union of one selector per filter under the heatmap's sum
			// where a backend cannot read them inside the braces, and VictoriaMetrics then builds every series' buckets.
			twoFilters := "-search.maxFanOutPoints"
			if braces {
				twoFilters = ""
			}
			query := func(tok, q string) (int, string) {
				p := prefix
				if tok == s.devWide && strings.HasPrefix(p, "/select/") {
					p = "/select/4:0/prometheus"
				}
				code, _, body := do(t, http.MethodPost, s.g.URL+p+"/api/v1/query_range", strings.NewReader(ranged(q)),
					append(bearer(tok), "Content-Type", "application/x-www-form-urlencoded")...)
				return code, body
			}
			// Team dev's 12 series: answered, as VictoriaMetrics answers them.
			code, body := query(s.devTok, `histogram_over_time(hx[5m])`)
			if code != http.StatusOK {
				t.Fatalf("dev's histograms: %d %.300s", code, body)
			}
			_, _, want := do(t, http.MethodGet, s.direct+ranged(`histogram_over_time(hx[5m])`), nil)
			if a, b := resultOf(t, body), resultOf(t, want); a != b || strings.Count(a, `"vmrange"`) < 12*200 {
				t.Errorf("dev's histograms through the gateway: %d series, directly %d; want the same, about 3,000",
					strings.Count(a, `"vmrange"`), strings.Count(b, `"vmrange"`))
			}
			for _, tc := range []struct {
				name, tok, q, refused string
			}{
				{"dev's and ops' 52 series", s.allTok, `histogram_over_time(hx[5m])`, "histogram_over_time in the query would make "},
				{"their quantiles", s.allTok, `histogram_quantile(0.9, histogram_over_time(hx[5m]))`, "as the read backends counted the series it reads"},
				{"their heatmap", s.allTok, `sum(histogram_over_time(hx[5m])) by (vmrange)`, ""},
				{"a heatmap by series", s.allTok, `sum(histogram_over_time(hx[5m])) by (vmrange, i)`, "-search.maxFanOutPoints"},
				{"a heatmap through two filters", s.opsSplit, `sum(histogram_over_time(hx[5m])) by (vmrange)`, twoFilters},
				{"a heatmap through one", s.devTok, `sum(histogram_over_time(hx[5m])) by (vmrange)`, ""},
				{"the histograms of one of ops' series", s.opsSplit, `histogram_over_time(hx{i="7"}[5m])`, ""},
				{"12 series seen unrestricted", s.devWide, `histogram_over_time(hx[5m])`, ""},
			} {
				if tc.tok == "" {
					continue
				}
				code, body := query(tc.tok, tc.q)
				if tc.refused == "" {
					if code != http.StatusOK || resultOf(t, body) == "[]" {
						t.Errorf("%s: %d %.300s; want answered", tc.name, code, body)
					}
					continue
				}
				checkClusterError(t, tc.name, code, body, http.StatusBadRequest, tc.refused)
			}
			// An @ back into the data from a range a day later, where there is none: counted where it reads (an attacker's
			// review: `@ (end() - end() % 3600 - 1d)` was taken not to shift the range, and the count found nothing).
			later := url.Values{"query": {`histogram_over_time(hx[5m] @ (END() - END() % 60 - 1d))`},
				"start": {fmt.Sprint(end + 86400 - 3600)}, "end": {fmt.Sprint(end + 86400)}, "step": {"8"}}
			code, _, body = do(t, http.MethodPost, s.g.URL+prefix+"/api/v1/query_range", strings.NewReader(later.Encode()),
				append(bearer(s.allTok), "Content-Type", "application/x-www-form-urlencoded")...)
			checkClusterError(t, "an @ back into the data", code, body, http.StatusBadRequest, "histogram_over_time in the query would make ")
			for result, want := range map[string]float64{"admitted": 2, "refused": 5, "failed": 0} {
				if s.devWide != "" && result == "admitted" {
					want++
				}
				if braces && result == "refused" {
					want-- // the heatmap through two filters, judged from the query alone
				}
				if got := metricValue(t, s.g, `vmgateway_query_fanout_measured_total{result="`+result+`"}`); got != want {
					t.Errorf("vmgateway_query_fanout_measured_total{result=%q} = %v; want %v", result, got, want)
				}
			}
		})
	}
}

// fanOutRange is the encoded args of a range query of q over the hour to end at 8 s.
func fanOutRange(end int64) func(q string) string {
	return func(q string) string {
		return url.Values{"query": {q}, "start": {fmt.Sprint(end - 3600)}, "end": {fmt.Sprint(end)}, "step": {"8"}}.Encode()
	}
}

// fanOutData is an hour and ten minutes to end of a sample a second of n series hx of team, spread over 15 decades.
func fanOutData(team string, n int, end int64) string {
	var b strings.Builder
	r := rand.New(rand.NewSource(int64(n)))
	for i := range n {
		half := "ab"[i%2 : i%2+1]
		for ts := end - 4200; ts <= end; ts++ {
			fmt.Fprintf(&b, "hx{team=%q,half=%q,i=\"%d\"} %.6g %d000\n", team, half, i, math.Pow(10, -3+15*r.Float64()), ts)
		}
	}
	return b.String()
}

// TestHistogramFanOutWorkers: VictoriaMetrics holds the groups of an aggregation it does as it goes once in each
// worker it runs the query on, and each busy worker builds every bucket of the one series it reads before adding them
// (v1.151 at 32 workers took 1.5 GB for a heatmap of 300 series over an hour at 1 s, 160 MB at 2). Behind a v1.151 of
// 32 workers (GOMAXPROCS=32, which the gateway reads on its /metrics), a heatmap no longer passes on the query alone:
// counted, over dev's and ops' 52 series of 15 decades (about 270 buckets each, held in all 32 workers) and over dev's
// 12 (in 12 workers, with as many series' buckets being built) it is refused, and over 200 series of latencies within 2
// decades answered (36 buckets in 32 workers, and 32 series of 36 being built, where their series fill 7,200); behind
// one of 2 all three pass without a count.
func TestHistogramFanOutWorkers(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	ranged := fanOutRange(end)
	var narrow strings.Builder
	r := rand.New(rand.NewSource(3))
	for i := range 200 {
		for ts := end - 4200; ts <= end; ts += 10 {
			fmt.Fprintf(&narrow, "hn{team=\"dev\",i=\"%d\"} %.6g %d000\n", i, math.Pow(10, -2+2*r.Float64()), ts)
		}
	}
	data := fanOutData("dev", 12, end) + fanOutData("ops", 40, end) + narrow.String()
	const counted = "as the read backends counted the series it reads"
	for _, tc := range []struct {
		procs    string
		refused  [2]string // of the 52 series' heatmap, and of dev's 12
		measured float64
	}{
		{"32", [2]string{counted, counted}, 4},
		{"2", [2]string{}, 0},
	} {
		t.Run("GOMAXPROCS="+tc.procs, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", tc.procs)
			s := singleFanOut(t, vmtest.StartCurrent(t), data, "-search.maxFanOutPoints=2000000", "-read.maxConcurrentRequests=0")
			vmtest.Eventually(t, func() (bool, string) {
				return strings.Contains(s.g.logs.String(), `workers=`+tc.procs), "the read backend's workers not read yet: " + s.g.logs.String()
			})
			vmtest.Eventually(t, func() (bool, string) {
				_, _, body := do(t, http.MethodGet, s.vm+"/api/v1/query?query=count(count_over_time(hn[2h]))", nil)
				return strings.Contains(body, `"200"`), "hn counts " + body
			})
			for _, q := range []struct {
				who, tok, query, refused string
				series                   int // answered: at least so many series
			}{
				{"dev and ops", s.allTok, `sum(histogram_over_time(hx[5m])) by (vmrange)`, tc.refused[0], 200},
				{"dev", s.devTok, `sum(histogram_over_time(hx[5m])) by (vmrange)`, tc.refused[1], 200},
				{"200 narrow series", s.devTok, `sum(histogram_over_time(hn[5m])) by (vmrange)`, "", 30},
				// No modifier: one group (its count once printed `()`, which VictoriaMetrics refused).
				{"200 narrow series summed", s.devTok, `sum(histogram_over_time(hn[5m]))`, "", 1},
			} {
				code, _, body := do(t, http.MethodPost, s.g.URL+"/api/v1/query_range", strings.NewReader(ranged(q.query)),
					append(bearer(q.tok), "Content-Type", "application/x-www-form-urlencoded")...)
				if q.refused == "" {
					if code != http.StatusOK || strings.Count(resultOf(t, body), `"values"`) < q.series {
						t.Errorf("%s's heatmap: %d %.300s; want answered", q.who, code, body)
					}
					continue
				}
				checkClusterError(t, q.who+"'s heatmap", code, body, http.StatusBadRequest, q.refused)
			}
			got := metricValue(t, s.g, `vmgateway_query_fanout_measured_total{result="admitted"}`) +
				metricValue(t, s.g, `vmgateway_query_fanout_measured_total{result="refused"}`)
			if got != tc.measured {
				t.Errorf("heatmaps counted: %v; want %v", got, tc.measured)
			}
		})
	}
}

// fanOutSetup is a gateway of TestHistogramFanOutBounded and its tokens.
type fanOutSetup struct {
	g              *gw
	prefix, direct string // the gateway's path prefix, and VictoriaMetrics' query path of dev's series
	vm             string // a single-node VictoriaMetrics' URL
	devTok, allTok string // dev's restricted token, and a token that sees dev's and ops' series
	// opsSplit is a token of two filters over ops' series; devWide, in the cluster, an unrestricted token of a tenant
	// that holds dev's series alone.
	opsSplit, devWide string
}

// singleFanOut is TestHistogramFanOutBounded's setup on a single-node VictoriaMetrics holding data, behind a gateway
// with flags.
func singleFanOut(t *testing.T, vm *vmtest.VM, data string, flags ...string) fanOutSetup {
	s, priv := singleSetup(t, vm, data, "hx", 52, flags...)
	s.opsSplit = mint(t, priv, "-mode=read", `-extraFilters={team="ops",half="a"}`, `-extraFilters={team="ops",half="b"}`)
	return s
}

// singleSetup is a gateway with flags in front of a single-node VictoriaMetrics holding data, once its n series of
// metric are searchable, dev's token and one that sees every series, and the private key that signs them.
func singleSetup(t *testing.T, vm *vmtest.VM, data, metric string, n int, flags ...string) (fanOutSetup, string) {
	importInto(t, vm.URL+"/api/v1/import/prometheus", data)
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/query?query=count(count_over_time("+metric+"[2h]))", nil)
		return strings.Contains(body, fmt.Sprintf(`"%d"`, n)), metric + " counts " + body
	})
	priv, pub := keyPair(t, "ec")
	var s fanOutSetup
	s.g = startGateway(t, append([]string{"-read.url=" + vm.URL, "-write.url=" + vm.URL, "-enable.auth", "-auth.publicKeyFiles=" + pub}, flags...)...)
	s.direct, s.vm = vm.URL+"/api/v1/query_range?extra_label=team=dev&", vm.URL
	s.devTok, s.allTok = mint(t, priv, "-mode=read", "-extraLabels=team=dev"), mint(t, priv, "-mode=read")
	return s, priv
}

// TestCountValuesOverTimeBounded: count_values_over_time makes a series of each distinct value of each series it reads
// (an attacker's review: over 100 of a team's own series of 1 s samples, an hour at 10 s took v1.151 to 2.6 GB, each
// series within the per-series bound). Behind a gateway bounding the series such functions make at 2×10^6 points, on
// the current release (1.79.5 has no count_values_over_time): over dev's 12 series of values that never repeat, an
// hour at 8 s is refused as the read backends counted the values, and so is the same under a rollup over a subquery
// of 5 points (its series are the rollup's 451 long); over 200 series of three status codes each, answered.
func TestCountValuesOverTimeBounded(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	ranged := fanOutRange(end)
	var codes strings.Builder
	for i := range 200 {
		for ts := end - 4200; ts <= end; ts += 10 {
			fmt.Fprintf(&codes, "hc{team=\"dev\",i=\"%d\"} %d %d000\n", i, []int{200, 404, 500}[int(ts/10)%3], ts)
		}
	}
	s := singleFanOut(t, vmtest.StartCurrent(t), fanOutData("dev", 12, end)+fanOutData("ops", 40, end)+codes.String(),
		"-search.maxFanOutPoints=2000000")
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := do(t, http.MethodGet, s.vm+"/api/v1/query?query=count(count_over_time(hc[2h]))", nil)
		return strings.Contains(body, `"200"`), "hc counts " + body
	})
	query := func(q string) (int, string) {
		code, _, body := do(t, http.MethodPost, s.g.URL+"/api/v1/query_range", strings.NewReader(ranged(q)),
			append(bearer(s.devTok), "Content-Type", "application/x-www-form-urlencoded")...)
		return code, body
	}
	code, body := query(`count_values_over_time("v", hx[5m])`)
	checkClusterError(t, "dev's values counted", code, body, http.StatusBadRequest, "count_values_over_time in the query would make ")
	if !strings.Contains(body, "as the read backends counted the series it reads") {
		t.Errorf("dev's values counted: %s; want refused on the count", body)
	}
	// Under a rollup over a subquery, each series it makes is as long as the rollup's points, not the subquery's five.
	code, body = query(`max_over_time(count_values_over_time("v", hx[20m])[20m:20m])`)
	checkClusterError(t, "dev's values under a subquery", code, body, http.StatusBadRequest, "count_values_over_time in the query would make ")
	code, body = query(`count_values_over_time("code", hc[5m])`)
	if n := strings.Count(resultOf(t, body), `"code"`); code != http.StatusOK || n != 600 {
		t.Errorf("three status codes of 200 series: %d, %d series %.300s; want answered, 600", code, n, body)
	}
}

// TestCountValuesBounded: count_values makes a series of each distinct value its arg takes at the query's points, each
// as long as them (an attacker's review: over 10 of a team's own series of values that never repeat, an hour at 1 s took
// v1.151 to 1.1 GB; under a subquery of 10 minutes at 1 s over 300, past 14.5 GB). Behind a gateway bounding the series
// such calls make at 2×10^6 points, on 1.79.5, the current release and a real cluster, through team dev's token, over an
// hour at 8 s: count_values over dev's 12 series of values that never repeat (5,400 series of 451 points) is refused, as
// the read backends counted them, and so is the same inside a subquery of an instant query, and at a range's own
// points off the multiples of its step where the arg has values only there; over 200 series of two versions (90,000
// points, 2 distinct values) it is answered as VictoriaMetrics answers it; an arg whose values depend on the range
// (end()) is refused, since no other query counts them.
func TestCountValuesBounded(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	start := end - 3600 - (end-3600)%8 // a multiple of the step
	ranged := func(q string, start int64, extra ...string) string {
		v := url.Values{"query": {q}, "start": {fmt.Sprint(start)}, "end": {fmt.Sprint(end)}, "step": {"8"}}
		for i := 0; i+1 < len(extra); i += 2 {
			v.Set(extra[i], extra[i+1])
		}
		return v.Encode()
	}
	var versions strings.Builder
	for i := range 200 {
		for ts := end - 4200; ts <= end; ts += 10 {
			fmt.Fprintf(&versions, "vinfo{team=\"dev\",i=\"%d\"} %d %d000\n", i, 1+i%2, ts)
		}
	}
	for i := range 600 {
		for ts := end - 4200; ts <= end; ts += 10 {
			fmt.Fprintf(&versions, "fleet{team=\"dev\",i=\"%d\"} 1 %d000\n", i, ts)
		}
	}
	// Two metrics of 300 series of a value each, the same 300 values in both: grouped by the metric's name, 600 series.
	for _, name := range []string{"cva", "cvb"} {
		for i := range 300 {
			for ts := end - 4200; ts <= end; ts += 60 {
				fmt.Fprintf(&versions, "%s{team=\"dev\",i=\"%d\"} %d %d000\n", name, i, i, ts)
			}
		}
	}
	data := fanOutData("dev", 12, end) + fanOutData("ops", 40, end) + versions.String()
	limit := "-search.maxFanOutPoints=2000000"
	for _, v := range []struct {
		name  string
		start func(t *testing.T) fanOutSetup
	}{
		{"1.79.5", func(t *testing.T) fanOutSetup { return singleFanOut(t, vmtest.Start(t), data, limit) }},
		{"current", func(t *testing.T) fanOutSetup { return singleFanOut(t, vmtest.StartCurrent(t), data, limit) }},
		{"cluster", func(t *testing.T) fanOutSetup {
			rc := startRealCluster(t, limit)
			rc.importDirect(t, "3", data)
			vmtest.Eventually(t, func() (bool, string) {
				rc.c.Flush(t)
				_, _, b := do(t, http.MethodGet, rc.c.Select.URL+"/select/3/prometheus/api/v1/query?query=count(count_over_time(%7B__name__%3D~%22hx%7Cvinfo%7Cfleet%7Ccva%7Ccvb%22%7D[2h]))", nil)
				return strings.Contains(b, `"1452"`), "tenant 3 counts " + b
			})
			return fanOutSetup{g: rc.g, prefix: "/select/3:0/prometheus", direct: rc.c.Select.URL + "/select/3/prometheus/api/v1/query_range?extra_label=team=dev&",
				devTok: clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}})}
		}},
	} {
		t.Run(v.name, func(t *testing.T) {
			s := v.start(t)
			if v.name != "cluster" {
				vmtest.Eventually(t, func() (bool, string) {
					_, _, body := do(t, http.MethodGet, s.vm+"/api/v1/query?query=count(count_over_time(%7B__name__%3D~%22vinfo%7Cfleet%7Ccva%7Ccvb%22%7D[2h]))", nil)
					return strings.Contains(body, `"1400"`), "vinfo, fleet, cva and cvb count " + body
				})
			}
			post := func(api, args string) (int, string) {
				code, _, body := do(t, http.MethodPost, s.g.URL+s.prefix+"/api/v1/"+api, strings.NewReader(args),
					append(bearer(s.devTok), "Content-Type", "application/x-www-form-urlencoded")...)
				return code, body
			}
			const counted = "count_values in the query would make "
			for _, tc := range []struct {
				name, api, args, refused string
			}{
				{"dev's values", "query_range", ranged(`count(count_values("v", hx))`, start), counted},
				{"dev's values inside a subquery", "query", url.Values{"query": {`max_over_time(count_values("v", hx)[10m:1s])`},
					"time": {fmt.Sprint(end)}}.Encode(), counted},
				{"an arg of end()", "query_range", ranged(`count_values("v", hx and on() (end() > 0))`, start), "whose values depend on the range"},
				// The subquery an instant query is runs as a range query at points its time and offset place.
				{"an instant query's subquery", "query", url.Values{"query": {`count(count_values("v", hx))[1h:1s] offset 500ms`},
					"time": {fmt.Sprint(end)}, "nocache": {"1"}}.Encode(), "directly in the subquery an instant query is"},
				// The same off the multiples in the form, which VictoriaMetrics reads, beside a start on them in the URL.
				{"two starts", fmt.Sprintf("query_range?start=%d", start), ranged(`count(count_values("v", hx and on() (vector(time()) % 8 == 3)))`,
					start+3, "nocache", "1"), "gives start more than once"},
			} {
				code, body := post(tc.api, tc.args)
				checkClusterError(t, tc.name, code, body, http.StatusBadRequest, tc.refused)
				if tc.refused == counted && !strings.Contains(body, "as the read backends counted the series it reads") {
					t.Errorf("%s: %s; want refused on the count", tc.name, body)
				}
			}
			// Two versions of 200 series: answered, as VictoriaMetrics answers it, over a range from a multiple of the
			// step and over one as vmui sends it (fractions of a second off the multiples, which VictoriaMetrics with its
			// cache on moves to them, 451 points from start, and the gateway too, so that the distinct values it counts
			// are those; these backends run without their cache, and are asked the moved range).
			versions := func(from, to string) string {
				return url.Values{"query": {`count_values("version", vinfo)`}, "start": {from}, "end": {to}, "step": {"8s"}}.Encode()
			}
			hour := versions(fmt.Sprint(start), fmt.Sprint(start+3600))
			for _, q := range [][2]string{{hour, hour}, {versions(fmt.Sprintf("%d.123", start), fmt.Sprintf("%d.123", start+3600)), hour}} {
				code, body := post("query_range", q[0])
				_, _, want := do(t, http.MethodGet, s.direct+q[1], nil)
				if a, b := resultOf(t, body), resultOf(t, want); code != http.StatusOK || a != b || strings.Count(a, `"version"`) != 2 {
					t.Errorf("the versions of 200 series (%s): %d %.300s; directly %.300s; want the same two series", q[0], code, a, b)
				}
			}
			// A fleet of 600 hosts of one version over an hour at 1 s: past the bound on each series' one value (600
			// series of 3,601 points), one across them, which 1.79.5 cannot count (no count_values_over_time).
			fleet := ranged(`count_values("version", fleet)`, start, "step", "1")
			code, body := post("query_range", fleet)
			if v.name == "1.79.5" {
				checkClusterError(t, "a fleet's version", code, body, http.StatusBadRequest, "count_values in the query would make 600 series")
			} else if _, _, want := do(t, http.MethodGet, s.direct+fleet, nil); code != http.StatusOK || resultOf(t, body) != resultOf(t, want) ||
				strings.Count(resultOf(t, body), `"version"`) != 1 {
				t.Errorf("a fleet's version: %d %.300s; want answered as directly, one series", code, body)
			}
			// Grouped by the metric's name over an hour at 1 s: 600 series of 3,601 points, past the bound. Counted across
			// the series without the name, which count_values_over_time drops, they were 300, and the query was admitted.
			code, body = post("query_range", ranged(`count_values("v", {__name__=~"cva|cvb"}) by (__name__)`, start, "step", "1"))
			checkClusterError(t, "count_values by the metric's name", code, body, http.StatusBadRequest, "count_values in the query would make 600 series")
			// An arg with values at points 3 s past the step's multiples only, from a start there, with nocache: the
			// query goes upstream from the multiple before, where the gateway counted it, and the arg has none.
			code, body = post("query_range", ranged(`count(count_values("v", hx and on() (vector(time()) % 8 == 3)))`, start+3, "nocache", "1"))
			if code != http.StatusOK || resultOf(t, body) != "[]" {
				t.Errorf("values off the step's multiples: %d %.300s; want answered at the multiples, nothing", code, body)
			}
			// An instant query whose latency_offset would have VictoriaMetrics (v1.151, v1.150) evaluate it an hour
			// earlier than the gateway counted it, where the arg has values: it goes upstream with its time and nocache.
			code, body = post("query", url.Values{"query": {fmt.Sprintf(`max_over_time(count_values("v", hx and on() (vector(time()) < %d))[30m:1s])`, end-3300)},
				"time": {fmt.Sprint(end)}, "latency_offset": {fmt.Sprintf("%ds", time.Now().Unix()-end+3600)}}.Encode())
			if code != http.StatusOK || resultOf(t, body) != "[]" {
				t.Errorf("an instant query moved by its latency offset: %d %.300s; want answered at its time, nothing", code, body)
			}
			// A start VictoriaMetrics v1.151 reads 1 ms later than the gateway (.0005 s, rounded, where the gateway
			// truncates), over an arg with values at fractions of a second only: the query goes upstream with the start
			// the gateway read, at whole seconds, where the arg has none.
			code, body = post("query_range", ranged(`count(count_values("v", hx and on() (vector(time()) % 1 > 0)))`, start, "start",
				fmt.Sprintf("%d.0005", start), "step", "1", "nocache", "1"))
			if code != http.StatusOK || resultOf(t, body) != "[]" {
				t.Errorf("a start read 1 ms apart: %d %.300s; want answered at whole seconds, nothing", code, body)
			}
		})
	}
}

// TestHistogramAggregationBounded: the aggregation histogram makes a series of each bucket each of its groups' values
// fall in at the query's points, each as long as them (an attacker's review: `histogram(x) by (s)` over 50 of a team's
// series took v1.151 and vmselect to half a GB, a union of four such to 2.1 GB, where the same count_values was
// refused). Behind a gateway bounding such series at 2×10^6 points, over an hour at 8 s of dev's 12 series of values
// spread over 15 decades: one group per series is refused, as the read backends counted the values, on 1.79.5 and the
// current release; one group, or a group per half, is answered as VictoriaMetrics answers it (its buckets at most 977
// a group, whatever the values).
func TestHistogramAggregationBounded(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	ranged := fanOutRange(end)
	for name, start := range map[string]func(testing.TB, ...string) *vmtest.VM{"1.79.5": vmtest.Start, "current": vmtest.StartCurrent} {
		t.Run(name, func(t *testing.T) {
			s := singleFanOut(t, start(t), fanOutData("dev", 12, end)+fanOutData("ops", 40, end), "-search.maxFanOutPoints=2000000")
			query := func(q string) (int, string) {
				code, _, body := do(t, http.MethodGet, s.g.URL+"/api/v1/query_range?"+ranged(q), nil, bearer(s.devTok)...)
				return code, body
			}
			// Besides the plain forms, those a review of the first version got through: a group per metric name (its
			// groups were counted without the name), and an arg that reads no series.
			arms := make([]string, 5)
			for k := range arms {
				arms[k] = fmt.Sprintf(`histogram(label_set(time(), "g", "%d")) by (g)`, k)
			}
			for _, q := range []string{`histogram(hx) by (i)`, `count(histogram(hx) by (i))`, `HISTOGRAM by (i) (rate(hx[1m]))`,
				`count(union(histogram(hx) by (i), histogram(hx offset 1s) by (i)))`,
				`histogram(label_replace(hx, "__name__", "n$1", "i", "(.*)")) by (__name__)`,
				"count(union(" + strings.Join(arms, ", ") + "))"} {
				code, body := query(q)
				checkClusterError(t, q, code, body, http.StatusBadRequest, "histogram in the query would make ")
				if !strings.Contains(body, "as the read backends counted the series it reads") {
					t.Errorf("%s: %s; want refused on the count", q, body)
				}
			}
			// Several args, whose series VictoriaMetrics joins, are not counted together: refused (a review got 3,167
			// series through with `, vector(0)`).
			code, body := query(`count(histogram(hx, vector(0)) by (i))`)
			checkClusterError(t, "two args", code, body, http.StatusBadRequest, "histogram in the query has several args")
			// A time without a zone, which the backend reads in its own zone: the query would be evaluated elsewhere than
			// counted, and is refused.
			instant := url.Values{"query": {`histogram(hx)`}, "time": {time.Unix(end, 0).UTC().Format("2006-01-02T15:04:05")}}
			code, _, body = do(t, http.MethodGet, s.g.URL+"/api/v1/query?"+instant.Encode(), nil, bearer(s.devTok)...)
			checkClusterError(t, "a time without a zone", code, body, http.StatusBadRequest, "reads as a different time in different VictoriaMetrics releases or time zones")
			if name == "1.79.5" {
				return // it refuses a histogram of more than 256 series itself
			}
			// On the step's multiples, where the gateway moves the range of a call it counts there, as VictoriaMetrics
			// does with its cache on.
			aligned := end - 3600 - (end-3600)%8
			for _, q := range []string{`histogram(hx)`, `histogram(hx) by (half)`} {
				args := url.Values{"query": {q}, "start": {fmt.Sprint(aligned)}, "end": {fmt.Sprint(end)}, "step": {"8"}}
				code, _, body := do(t, http.MethodGet, s.g.URL+"/api/v1/query_range?"+args.Encode(), nil, bearer(s.devTok)...)
				args.Set("extra_label", "team=dev")
				_, _, want := do(t, http.MethodGet, s.vm+"/api/v1/query_range?"+args.Encode(), nil)
				if got := resultOf(t, body); code != http.StatusOK || got != resultOf(t, want) || !strings.Contains(got, `"le"`) {
					t.Errorf("%s: %d, %d bytes %.300s; want VictoriaMetrics' own answer, %d bytes %.300s", q, code, len(got), body, len(resultOf(t, want)), want)
				}
			}
		})
	}
}
