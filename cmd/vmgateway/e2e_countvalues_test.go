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
// 1,000 series of a value each (cvq), its 1,000 hosts of one version (cvfleet), its 1,000 hosts upgraded half an hour
// ago (cvver), its 1,500 series of a value each gone an hour ago (cvold) and ops' 1,500 hosts of a version each (cvfleet
// too, which dev's token does not see), an hour at 60 s: on 1.79.5 dev's distinct values are refused as the read
// backends counted them (61 million comparisons), over a range and at one point (2,000 series, 4 million; the gone
// ones through a step of 2 hours, which the count reads with), and so is a count_values over another, whose count
// would run the inner one again; its fleets, grouped or not, and the upgrade are answered as VictoriaMetrics answers
// them, and so are targets that flap (cvup). Refused too: a count grouped by a label the arg makes, which 1.79.5 would
// have copied into the counts' other operands as a filter, and a range from its end to its end through a step of 2
// hours over 1,500 series gone an hour before it (cvold2). v1.151 and the v1.150 cluster, whose /metrics list -search.maxSeriesPerAggrFunc, answer all of them.
func TestCountValuesComparisons(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	start := end - 3600
	var data strings.Builder
	// The same gone an hour before a multiple of 2 hours, where the gateway moves a range of that step: read from there
	// only through a step that long.
	aligned := end - end%7200
	for ts := aligned - 3600; ts <= aligned-600; ts += 60 {
		for i := range 1500 {
			fmt.Fprintf(&data, "cvold2{team=\"dev\",i=\"%d\"} %d %d000\n", i, i, ts)
		}
	}
	for ts := end - 4200; ts <= end; ts += 60 {
		for i := range 1000 {
			fmt.Fprintf(&data, "cvq{team=\"dev\",i=\"%d\"} %d %d000\n", i, i, ts)
			fmt.Fprintf(&data, "cvfleet{team=\"dev\",i=\"%d\",job=\"j%d\"} 7 %d000\n", i, i%4, ts)
		}
		for i := range 1500 {
			fmt.Fprintf(&data, "cvfleet{team=\"ops\",i=\"%d\",job=\"j%d\"} %d %d000\n", i, i%4, i, ts)
			if ts <= end-3600 {
				// Gone an hour ago: read at one point only through a step that long.
				fmt.Fprintf(&data, "cvold{team=\"dev\",i=\"%d\"} %d %d000\n", i, i, ts)
			}
		}
		for i := range 1000 {
			// A rolling upgrade half an hour ago.
			fmt.Fprintf(&data, "cvver{team=\"dev\",i=\"%d\"} %d %d000\n", i, 41+min(max(ts-end+1800, 0), 1), ts)
			// Targets that flap, each at its own pace.
			fmt.Fprintf(&data, "cvup{team=\"dev\",i=\"%d\"} %d %d000\n", i, min(ts/60%int64(2+i%5), 1), ts)
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
				return strings.Contains(b, `"5500"`), "tenant 3 counts " + b
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
			var hosts []string // a Grafana variable of every host: a 3,890-byte regexp
			for i := range 1000 {
				hosts = append(hosts, fmt.Sprint(i))
			}
			for _, tc := range []struct {
				name, api, query string
				span             url.Values
				refused          string // on 1.79.5
			}{
				// 1,000 distinct values of 1,000 series at 61 points: 61 million.
				{"dev's distinct values", "query_range", `count(count_values("v", cvq))`, ranged, refused},
				// 2,000 series at one point: up to 4 million.
				{"at one point, 2,000 series", "query", `count(count_values("v", cvq or label_set(cvq + 1000, "copy", "1")))`, at, refused},
				{"a moving arg at one point", "query", `count(count_values("v", cvq and on() (now() > 0)))`, at, "whose values depend on the range"},
				// 1,500 series written an hour ago, read through a step of 2 hours: 2.25 million.
				{"at one point, a long step", "query", `count(count_values("v", cvold))`, url.Values{"time": {fmt.Sprint(end)}, "step": {"2h"}}, refused},
				// The same through a range from its end to its end at a step of 2 hours.
				{"a range of one point, a long step", "query_range", `count(count_values("v", cvold2))`,
					url.Values{"start": {fmt.Sprint(aligned)}, "end": {fmt.Sprint(aligned)}, "step": {"7200"}}, refused},
				// Grouped by a label the arg makes, which 1.79.5 would copy into the counts' other operands as a filter.
				{"by a label the arg makes", "query_range", `count(count_values("v", quantiles_over_time("phi", 0.5, cvq[10m])) by (phi))`, ranged, refused},
				// A count of the outer one would run the inner one again.
				{"nested", "query_range", `count(count_values("a", count_values("b", cvq)))`, ranged, "whose count_values the gateway would run again"},
				// One version of 1,000 hosts: 61,000, on the distinct values of their last points (ops' 1,500 values
				// are not dev's).
				{"dev's fleet", "query_range", `count_values("version", cvfleet)`, ranged, ""},
				{"dev's fleet by job", "query_range", `count_values("version", cvfleet) by (job)`, ranged, ""},
				{"dev's fleet at one point", "query", `count_values("version", cvfleet)`, at, ""},
				// Two versions, 1,000 hosts upgraded: 122,000, on the values of their first and last points.
				{"a rolling upgrade", "query_range", `count_values("version", cvver)`, ranged, ""},
				// Two values, many changes: on whole numbers, 2 a group.
				{"flapping targets", "query_range", `count_values("up", cvup)`, ranged, ""},
				// Counted within the backends' -search.maxQueryLen (16 KiB): the arg is written once in each count.
				{"a long arg", "query_range", `count_values("version", cvfleet{i=~"` + strings.Join(hosts, "|") + `"})`, ranged, ""},
				// A group of each series: 1,000 groups of a series.
				{"dev's values by i", "query_range", `count(count_values("v", cvq) by (i))`, ranged, ""},
				{"at one point by i", "query", `count(count_values("v", cvq or cvfleet) by (i))`, at, ""},
			} {
				// No answer from the rollup cache: one cached while the cluster still took the data would stand against
				// the other's.
				args := url.Values{"query": {tc.query}, "nocache": {"1"}}
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
				if tc.refused != "" && tc.refused != refused {
					// Answered (a moving arg's values depend on when it runs).
					if code != http.StatusOK {
						t.Errorf("%s: %d %.300s; want answered", tc.name, code, body)
					}
					continue
				}
				// The same answer, once the backend has all the data: the cluster may make the last of it searchable
				// between the two.
				for try := 1; ; try++ {
					_, _, direct := do(t, http.MethodGet, want, nil)
					got, w := resultOf(t, body), resultOf(t, direct)
					if code == http.StatusOK && got == w && len(got) >= 10 {
						break
					}
					if try == 5 || code != http.StatusOK {
						t.Errorf("%s: %d %.300s; directly %.300s; want the same answer", tc.name, code, got, w)
						break
					}
					time.Sleep(time.Second)
					code, _, body = do(t, http.MethodPost, s.g.URL+s.prefix+"/api/v1/"+tc.api, strings.NewReader(args.Encode()),
						append(bearer(s.devTok), "Content-Type", "application/x-www-form-urlencoded")...)
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
		return strings.Contains(body, `"5500"`), "the latest samples count " + body
	})
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, append([]string{"-read.url=" + vm.URL, "-write.url=" + vm.URL, "-enable.auth", "-auth.publicKeyFiles=" + pub}, flags...)...)
	return fanOutSetup{g: g, vm: vm.URL, devTok: mint(t, priv, "-mode=read", "-extraLabels=team=dev")}
}

// latestSamples asks how many series of TestCountValuesComparisons' have their last sample, at end: the import's last
// rows may reach the cluster's storage after its first.
func latestSamples(end int64) string {
	return url.Values{"query": {`count(last_over_time({__name__=~"cvq|cvfleet|cvver|cvup"}[1m]))`}, "time": {fmt.Sprint(end)}}.Encode()
}
