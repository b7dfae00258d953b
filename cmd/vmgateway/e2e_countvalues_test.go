package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestCountValuesComparisons: before v1.88.0, VictoriaMetrics' count_values compares each distinct value with each
// series of its group at each point, in one goroutine no timeout stops (6,000 of a team's own series of a value each
// over 2 hours at 5 s took 1.79.5 451 s of a core). Behind a gateway bounding those comparisons at 2×10^6, over dev's
// 1,000 series of a value each (cvq), its 1,000 hosts of one version (cvfleet) and ops' 1,500 hosts of a version each
// (cvfleet too, which dev's token does not see), an hour at 60 s: on 1.79.5 dev's distinct values are refused as the
// read backends counted them (61 million comparisons), over a range and at one point (2,000 series, 4 million), and
// its fleet, grouped or not, is answered as VictoriaMetrics answers it; v1.151 and the v1.150 cluster, whose /metrics
// list -search.maxSeriesPerAggrFunc, answer all of them.
func TestCountValuesComparisons(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	start := end - 3600
	var data strings.Builder
	for ts := end - 4200; ts <= end; ts += 60 {
		for i := range 1000 {
			fmt.Fprintf(&data, "cvq{team=\"dev\",i=\"%d\"} %d %d000\n", i, i, ts)
			fmt.Fprintf(&data, "cvfleet{team=\"dev\",i=\"%d\",job=\"j%d\"} 7 %d000\n", i, i%4, ts)
		}
		for i := range 1500 {
			fmt.Fprintf(&data, "cvfleet{team=\"ops\",i=\"%d\",job=\"j%d\"} %d %d000\n", i, i%4, i, ts)
		}
	}
	// The backends' /metrics are read, as by default, for what their count_values is (-read.maxConcurrentRequests=0).
	limit := []string{"-search.maxCountValuesComparisons=2000000", "-read.maxConcurrentRequests=0"}
	for _, v := range []struct {
		name   string
		linear bool
		start  func(t *testing.T) fanOutSetup
	}{
		{"1.79.5", false, func(t *testing.T) fanOutSetup {
			return countValuesSetup(t, vmtest.Start(t), data.String(), end, limit...)
		}},
		{"current", true, func(t *testing.T) fanOutSetup {
			return countValuesSetup(t, vmtest.StartCurrent(t), data.String(), end, limit...)
		}},
		{"cluster", true, func(t *testing.T) fanOutSetup {
			rc := startRealCluster(t, limit...)
			latest := latestSamples(end)
			rc.importDirect(t, "3", data.String())
			vmtest.Eventually(t, func() (bool, string) {
				rc.c.Flush(t)
				_, _, b := do(t, http.MethodGet, rc.c.Select.URL+"/select/3/prometheus/api/v1/query?"+latest, nil)
				return strings.Contains(b, `"3500"`), "tenant 3 counts " + b
			})
			return fanOutSetup{g: rc.g, prefix: "/select/3:0/prometheus", direct: rc.c.Select.URL + "/select/3/prometheus/api/v1/",
				devTok: clusterToken(t, auth.VMAccess{Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}})}
		}},
	} {
		t.Run(v.name, func(t *testing.T) {
			s := v.start(t)
			// What the read backends' count_values is, is learnt from their /metrics.
			vmtest.Eventually(t, func() (bool, string) {
				logs := s.g.logs.String()
				if v.linear {
					return strings.Contains(logs, "count_values is linear in the series it reads"), "the read backends' /metrics not read yet"
				}
				return strings.Contains(logs, "the read backends run this many requests at once"), "the read backends' /metrics not read yet"
			})
			ranged := url.Values{"start": {fmt.Sprint(start)}, "end": {fmt.Sprint(end)}, "step": {"60"}}
			at := url.Values{"time": {fmt.Sprint(end)}}
			const refused = "comparisons on a read backend before VictoriaMetrics v1.88.0"
			for _, tc := range []struct {
				name, api, query string
				span             url.Values
				refused          string // on 1.79.5
			}{
				// 1,000 distinct values of 1,000 series at 61 points: 61 million.
				{"dev's distinct values", "query_range", `count(count_values("v", cvq))`, ranged, refused},
				// 2,000 series at one point: up to 4 million.
				{"at one point, 2,000 series", "query", `count(count_values("v", cvq or cvfleet))`, at, refused},
				{"a moving arg at one point", "query", `count(count_values("v", cvq and on() (now() > 0)))`, at, "whose values depend on the range"},
				// One version of 1,000 hosts: 61,000, on the distinct values of their last points (ops' 1,500 values
				// are not dev's).
				{"dev's fleet", "query_range", `count_values("version", cvfleet)`, ranged, ""},
				{"dev's fleet by job", "query_range", `count_values("version", cvfleet) by (job)`, ranged, ""},
				{"dev's fleet at one point", "query", `count_values("version", cvfleet)`, at, ""},
				// A group of each series: 1,000 groups of a series.
				{"dev's values by i", "query_range", `count(count_values("v", cvq) by (i))`, ranged, ""},
				{"at one point by i", "query", `count(count_values("v", cvq or cvfleet) by (i))`, at, ""},
			} {
				args := url.Values{"query": {tc.query}}
				for k, vs := range tc.span {
					args[k] = vs
				}
				code, _, body := do(t, http.MethodPost, s.g.URL+s.prefix+"/api/v1/"+tc.api, strings.NewReader(args.Encode()),
					append(bearer(s.devTok), "Content-Type", "application/x-www-form-urlencoded")...)
				if tc.refused != "" && !v.linear {
					checkClusterError(t, tc.name, code, body, http.StatusBadRequest, tc.refused)
					continue
				}
				want := s.direct
				if !strings.HasSuffix(want, "/api/v1/") {
					want = s.vm + "/api/v1/"
				}
				want += tc.api + "?extra_label=team=dev&" + args.Encode()
				if tc.refused != "" && strings.Contains(tc.query, "now()") {
					// Answered; its values depend on when it runs.
					if code != http.StatusOK {
						t.Errorf("%s: %d %.300s; want answered", tc.name, code, body)
					}
					continue
				}
				_, _, direct := do(t, http.MethodGet, want, nil)
				if got, w := resultOf(t, body), resultOf(t, direct); code != http.StatusOK || got != w || len(got) < 10 {
					t.Errorf("%s: %d %.300s; directly %.300s; want the same answer", tc.name, code, got, w)
				}
			}
		})
	}
}

// countValuesSetup is a gateway with flags in front of vm, which holds data, with dev's restricted token.
func countValuesSetup(t *testing.T, vm *vmtest.VM, data string, end int64, flags ...string) fanOutSetup {
	importInto(t, vm.URL+"/api/v1/import/prometheus", data)
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/query?"+latestSamples(end), nil)
		return strings.Contains(body, `"3500"`), "cvq and cvfleet count " + body
	})
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, append([]string{"-read.url=" + vm.URL, "-write.url=" + vm.URL, "-enable.auth", "-auth.publicKeyFiles=" + pub}, flags...)...)
	return fanOutSetup{g: g, vm: vm.URL, devTok: mint(t, priv, "-mode=read", "-extraLabels=team=dev")}
}

// latestSamples asks how many series of TestCountValuesComparisons' have their last sample, at end: the import's last
// rows may reach the cluster's storage after its first.
func latestSamples(end int64) string {
	return url.Values{"query": {`count(last_over_time({__name__=~"cvq|cvfleet"}[1m]))`}, "time": {fmt.Sprint(end)}}.Encode()
}
