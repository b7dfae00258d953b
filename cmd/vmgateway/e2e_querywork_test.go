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

// TestQueryWorkBounded: a query whose subqueries read few points of each series but many series (the attacker's
// `count(max_over_time(m[3h:1s]))` at step=1s took v1.151 75 s of CPU over a team's 2,000 series) is refused by
// -search.maxQueryWindowPoints, counted on the read backends in the token's own series. Behind a gateway bounding it
// at 10^8, on 1.79.5, the current release and a real cluster, over an hour at 10 s: the subquery over team dev's 100
// series (6.5×10^7 points) is answered as VictoriaMetrics answers it, and over dev's and ops' 2,000 (1.3×10^9) refused;
// the same subquery over their sum (one series) is answered without a count; a sorting function over raw samples, and a
// sum of a window's every sample under a subquery, are judged on the samples the series hold (a sample a minute: dev's
// 100 series pass, where one a second assumed would not; the 2,000 do not); a subquery under @ end() is counted where VictoriaMetrics reads it; a dashboard's small
// subquery is not counted.
func TestQueryWorkBounded(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	ranged := workRange(end)
	for _, v := range workSetups("qw", end, "-search.maxQueryWindowPoints=100000000", "-read.maxConcurrentRequests=0") {
		t.Run(v.name, func(t *testing.T) {
			s := v.start(t)
			checkWorkRows(t, s, ranged, "refused", []workRow{
				{"dev's 100 series", s.devTok, `count(max_over_time(qw[1h:1s]))`, "", true},
				{"dev's and ops' 2,000 series", s.allTok, `count(max_over_time(qw[1h:1s]))`, "would read 1.3e+09 points over all the series", true},
				{"their sum", s.allTok, `max_over_time(sum(qw)[1h:1s])`, "", false},
				{"dev's quantiles of a sample a minute", s.devTok, `count(quantile_over_time(0.5, qw[10m]))`, "", true},
				{"dev's and ops' quantiles", s.allTok, `count(quantile_over_time(0.5, qw[10m]))`, "-search.maxQueryWindowPoints", true},
				// A sum of every sample of an hour's window at each point of a subquery at 1 s (an attacker's review: a month's
				// window at 1 s over a day, 12.6 s of v1.151's CPU a series, was counted nowhere). The subquery's own points
				// (10,830 a series) pass over the 2,000 series; the sums' samples (2.5×10^5 a series) do not.
				{"dev's sums under a subquery", s.devTok, `count(max_over_time(sum_over_time(qw[1h])[1m:1s]))`, "", true},
				{"dev's and ops' sums under a subquery", s.allTok, `count(max_over_time(sum_over_time(qw[1h])[1m:1s]))`, "-search.maxQueryWindowPoints", true},
				// Under an @, where the subquery's range aligned to its step moves it (an attacker's review: its count over a
				// window of the step at the walk's end() found no sample, and the query read every series at VictoriaMetrics').
				{"dev's series under @", s.devTok, `count(max_over_time((max_over_time(qw[2m]) @ (end() - 600))[1h:3s]))`, "", true},
				{"dev's and ops' under @", s.allTok, `count(max_over_time((max_over_time(qw[2m]) @ (end() - 600))[1h:3s]))`, "-search.maxQueryWindowPoints", true},
				// 361 points of a window of 10: 1,805 points a series, too few to be counted.
				{"a dashboard's subquery", s.allTok, `max_over_time(rate(qw[5m])[10m:1m])`, "", false},
			})
		})
	}
}

// TestQueryArmsBounded: a query of many arms holds the series of each at once, which no limit of VictoriaMetrics adds
// up (attackers' reviews: a union of 200 arms of one selector over 50 of a team's series took v1.151 from 648 to
// 1,267 MB, ten arms of quantiles of 20 phis to 1 GB, 300 arms of a selector of 20,000 series to 6 GB, 300 of sum() of
// them to 2.7 GB, 5,000 of `1` to 540 MB). Behind a gateway bounding a query of more than 10 arms at 2×10^6 points,
// on 1.79.5, the current release and a real cluster, over an hour at 10 s (361 points, 128 more a series): 11 arms of
// dev's 100 series (5.4×10^5 points), quantiles of 10 phis over them, 30 arms of counts VictoriaMetrics does as it
// goes over them, and an instant query of 11 arms, are counted and answered as VictoriaMetrics answers them; the same over
// dev's and ops' 2,000 series are refused on the count, and 17 offsets of dev's, each counted, are answered; 10 arms
// are not counted; 51 selectors, more than -search.maxQuerySelectors, and 5,600 numbers (2×10^6 points) are refused
// before any count.
func TestQueryArmsBounded(t *testing.T) {
	end := time.Now().Add(-time.Minute).Truncate(time.Minute).Unix()
	ranged := workRange(end)
	arms := func(n int, f string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf(f, i)
		}
		return strings.Join(s, " or ")
	}
	threeSpans := func(n int, f string) string { // as arms, at three offsets: three counts
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf(f, i%3)
		}
		return strings.Join(s, " or ")
	}
	phis := `"phi", 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99`
	// 102 WITH templates without args, each ten calls deeper than the one before, over 100 arms: 1,020 levels once
	// expanded, where the text nests ten (an attacker's review: every limit read it as reading nothing).
	deep := []string{"t0=union(" + strings.TrimSuffix(strings.Repeat("qa,", 100), ",") + ")"}
	for k := 1; k <= 102; k++ {
		deep = append(deep, fmt.Sprintf("t%d=%st%d%s", k, strings.Repeat("abs(", 10), k-1, strings.Repeat(")", 10)))
	}
	for _, v := range workSetups("qa", end, "-search.maxQueryPoints=2000000", "-read.maxConcurrentRequests=0") {
		t.Run(v.name, func(t *testing.T) {
			s := v.start(t)
			checkWorkRows(t, s, ranged, "refused_points", []workRow{
				{"11 arms of dev's series", s.devTok, arms(11, `qa offset %ds`), "", true},
				{"11 arms of dev's and ops'", s.allTok, arms(11, `qa offset %ds`), "would make series of 1.08e+07 points in all", true},
				{"quantiles of 10 phis over dev's series", s.devTok, `quantiles(` + phis + `, qa) by (i)`, "", true},
				{"quantiles of 10 phis over dev's and ops'", s.allTok, `quantiles(` + phis + `, qa) by (i)`, "-search.maxQueryPoints", true},
				{"10 arms of dev's and ops'", s.allTok, arms(10, `qa offset %ds`), "", false},
				{"30 counts of dev's series", s.devTok, threeSpans(30, `count(qa offset %ds)`), "", true},
				{"30 counts of dev's and ops'", s.allTok, threeSpans(30, `count(qa offset %ds)`), "would make series of 7.68e+06 points in all", true},
				{"17 spans of dev's series, each counted", s.devTok, arms(17, `qa offset %ds`), "", true},
				{"51 selectors", s.devTok, threeSpans(51, `qa offset %ds`), "-search.maxQuerySelectors", false},
				{"templates nested 1,020 levels deep", s.allTok, "WITH (" + strings.Join(deep, ",") + ") count(t102)",
					"nests more than 1000 levels deep as parsed, its WITH templates expanded", false},
				{"5,600 numbers", s.allTok, "count(union(" + strings.Repeat("1,", 5599) + "1))", "numbers and calls of no selector would make series of 2.02e+06 points", true}, // refused_points, without a count
			})
			// An instant query holds 128 points of each series an arm reads beside its one: 11 arms of dev's 100 series
			// pass (1.4×10^5), of the 2,000 (2.8×10^6) are refused.
			instant := url.Values{"query": {arms(11, `qa offset %ds`)}, "time": {fmt.Sprint(end)}}
			for _, tok := range []string{s.devTok, s.allTok} {
				code, _, body := do(t, http.MethodPost, s.g.URL+s.prefix+"/api/v1/query", strings.NewReader(instant.Encode()),
					append(bearer(tok), "Content-Type", "application/x-www-form-urlencoded")...)
				if tok == s.allTok {
					checkClusterError(t, "an instant query of 11 arms of dev's and ops'", code, body, http.StatusBadRequest, "would make series of 2.84e+06 points")
				} else if code != http.StatusOK || strings.Count(body, `"qa"`) != 100 {
					t.Errorf("an instant query of 11 arms of dev's series: %d %.300s; want dev's 100 series", code, body)
				}
			}
		})
	}
}

// workRange is the args of a range query of q over the hour before end at 10 s.
func workRange(end int64) func(q string) string {
	return func(q string) string {
		return url.Values{"query": {q}, "start": {fmt.Sprint(end - 3600)}, "end": {fmt.Sprint(end)}, "step": {"10"}}.Encode()
	}
}

// workSetup is a gateway in front of a read backend holding 2,000 series of a metric, as workSetups starts it.
type workSetup struct {
	name  string
	start func(t *testing.T) fanOutSetup
}

// workSetups are 1.79.5, the current release and a real cluster (tenant 3), each holding 2,000 series of metric (dev's
// 100 and ops' 1,900, a sample a minute over the 70 minutes before end), behind a gateway with flags whose read backends'
// /metrics it has read.
func workSetups(metric string, end int64, flags ...string) []workSetup {
	var b strings.Builder
	for i := range 2000 {
		team := "ops"
		if i < 100 {
			team = "dev"
		}
		for ts := end - 4200; ts <= end; ts += 60 {
			fmt.Fprintf(&b, "%s{team=%q,i=\"%d\"} %d %d000\n", metric, team, i, i+int(ts%7), ts)
		}
	}
	data := b.String()
	learned := func(t *testing.T, s fanOutSetup, known bool) fanOutSetup {
		vmtest.Eventually(t, func() (bool, string) {
			if known {
				return strings.Contains(s.g.logs.String(), "select at most this many series of a selector"), "the read backends' /metrics not read yet"
			}
			return strings.Contains(s.g.logs.String(), "the read backends run this many requests at once"), "the read backends' /metrics not read yet"
		})
		return s
	}
	return []workSetup{
		{"1.79.5", func(t *testing.T) fanOutSetup {
			s, _ := singleSetup(t, vmtest.Start(t), data, metric, 2000, flags...)
			return learned(t, s, true)
		}},
		{"current", func(t *testing.T) fanOutSetup {
			s, _ := singleSetup(t, vmtest.StartCurrent(t), data, metric, 2000, flags...)
			return learned(t, s, true)
		}},
		{"cluster", func(t *testing.T) fanOutSetup {
			rc := startRealCluster(t, flags...)
			rc.importDirect(t, "3", data)
			vmtest.Eventually(t, func() (bool, string) {
				rc.c.Flush(t)
				_, _, b := do(t, http.MethodGet, rc.c.Select.URL+"/select/3/prometheus/api/v1/query?query=count(count_over_time("+metric+"[2h]))", nil)
				return strings.Contains(b, `"2000"`), "tenant 3 counts " + b
			})
			t3 := tenant.ID{AccountID: 3}
			return learned(t, fanOutSetup{g: rc.g, prefix: "/select/3:0/prometheus", direct: rc.c.Select.URL + "/select/3/prometheus/api/v1/query_range?extra_label=team=dev&",
				devTok: clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}}),
				allTok: clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead}),
			}, false)
		}},
	}
}

// workRow is a query sent with tok: refused with 400 saying refused, or answered (as VictoriaMetrics answers dev's);
// counted says it moved vmgateway_query_work_measured_total.
type workRow struct {
	name, tok, q, refused string
	counted               bool
}

// checkWorkRows sends each row's query through s as a range query (ranged) and checks what it got, and that a row
// counted and refused moved the measured total's refusedAs result.
func checkWorkRows(t *testing.T, s fanOutSetup, ranged func(string) string, refusedAs string, rows []workRow) {
	t.Helper()
	measured := func() (admitted, refused float64) {
		return metricValue(t, s.g, `vmgateway_query_work_measured_total{result="admitted"}`),
			metricValue(t, s.g, `vmgateway_query_work_measured_total{result="`+refusedAs+`"}`)
	}
	for _, tc := range rows {
		admitted, refused := measured()
		code, _, body := do(t, http.MethodPost, s.g.URL+s.prefix+"/api/v1/query_range", strings.NewReader(ranged(tc.q)),
			append(bearer(tc.tok), "Content-Type", "application/x-www-form-urlencoded")...)
		if tc.refused != "" {
			checkClusterError(t, tc.name, code, body, http.StatusBadRequest, tc.refused)
		} else if code != http.StatusOK || resultOf(t, body) == "[]" {
			t.Errorf("%s: %d %.300s; want answered", tc.name, code, body)
		} else if tc.tok == s.devTok {
			_, _, want := do(t, http.MethodGet, s.direct+ranged(tc.q), nil)
			if a, b := resultOf(t, body), resultOf(t, want); a != b {
				t.Errorf("%s through the gateway: %.300s; directly %.300s", tc.name, a, b)
			}
		}
		a, r := measured()
		if counted := a+r > admitted+refused; counted != tc.counted {
			t.Errorf("%s: counted %v; want %v", tc.name, counted, tc.counted)
		}
		if tc.counted && (r > refused) != (tc.refused != "") {
			t.Errorf("%s: refused on its count %v; want %v", tc.name, r > refused, tc.refused != "")
		}
	}
}

// TestRewriteDeepenedRefused: a query within the depth bound as the client sent it, which the token's rewrite makes a
// level deeper than the parse allows (behind 1.79.5, `absent` of a token's two filter branches goes under label_set),
// is refused with 400: the query limits cannot walk it, and one they read as reading nothing would pass every limit (a
// diff review). The same query through an unrestricted token is answered.
func TestRewriteDeepenedRefused(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-read.maxConcurrentRequests=0", "-enable.auth", "-auth.publicKeyFiles="+pub)
	split := mint(t, priv, "-mode=read", "-extraLabels=team=dev", `-extraFilters={env="a"}`, `-extraFilters={env="b"}`)
	all := mint(t, priv, "-mode=read")
	q := strings.Repeat("abs(", 999) + "absent(nothing_here)" + strings.Repeat(")", 999)
	send := func(tok string) (int, string) {
		code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/query", strings.NewReader(url.Values{"query": {q}}.Encode()),
			"Authorization", "Bearer "+tok, "Content-Type", "application/x-www-form-urlencoded")
		return code, body
	}
	if code, body := send(all); code != http.StatusOK {
		t.Fatalf("unrestricted: %d %.300s; want answered", code, body)
	}
	code, body := send(split)
	checkClusterError(t, "a query the rewrite deepens", code, body, http.StatusBadRequest, "cannot parse the query as it goes upstream")
}
