package enforce

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce/corpus"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

func clientRequest(t *testing.T, c corpus.Entry) *http.Request {
	t.Helper()
	r, err := c.Request("http://gateway")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// forward does what the gateway does with an enforced request: route it, enforce it, send it upstream.
// refused is the gateway's error, if it answers itself.
func forward(t *testing.T, base string, e *Enforcer, r *http.Request) (status int, body string, refused error) {
	t.Helper()
	return forwardIn(t, base, e, r, false)
}

// forwardIn is forward to a backend that reads `or` inside the braces where braces is set (Args.Braces).
func forwardIn(t *testing.T, base string, e *Enforcer, r *http.Request, braces bool) (status int, body string, refused error) {
	t.Helper()
	rt, err := route.Lookup(r.URL.EscapedPath())
	if err != nil {
		return 0, "", err
	}
	if err := enforceHTTPIn(e, r, rt, false, braces); err != nil {
		return 0, "", err
	}
	u := base + rt.Upstream(false, tenant.ID{})
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	out, err := http.NewRequest(r.Method, u, r.Body)
	if err != nil {
		t.Fatal(err)
	}
	out.ContentLength = r.ContentLength
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		t.Fatalf("%s %s: %s", r.Method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return string(b)
}

func post(t *testing.T, u, ctype, body string) {
	t.Helper()
	resp, err := http.Post(u, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", u, resp.StatusCode, b)
	}
}

// seriesOf lists the series matching a selector, straight from VictoriaMetrics (no enforcement).
func seriesOf(t *testing.T, base, match string) []map[string]string {
	t.Helper()
	var out struct {
		Data []map[string]string `json:"data"`
	}
	b := get(t, base+"/api/v1/series?start=-1d&match[]="+url.QueryEscape(match))
	if err := json.Unmarshal([]byte(b), &out); err != nil {
		t.Fatalf("series %s: %s: %s", match, err, b)
	}
	return out.Data
}

func writeTeams(t *testing.T, vm *vmtest.VM) {
	t.Helper()
	post(t, vm.URL+"/api/v1/import/prometheus", "text/plain", corpus.TeamData(time.Now()))
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		n := len(seriesOf(t, vm.URL, `{__name__=~".+"}`))
		return n == corpus.SeriesCount, fmt.Sprintf("%d series visible; want %d", n, corpus.SeriesCount)
	})
}

// TestVMAdversarialReads sends every request of the shared testdata/adversarial.json, enforced for a team="dev" token, to a
// real VictoriaMetrics holding three teams' data: no answer may carry another team's series, label or value.
func TestVMAdversarialReads(t *testing.T) {
	vm := vmtest.Start(t)
	writeTeams(t, vm)
	entries, err := corpus.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 50 {
		t.Fatalf("the corpus has %d requests; want at least 50", len(entries))
	}
	twoFilters := func() *Enforcer {
		return mustNew(t, []Label{{"team", "dev"}}, []string{`{instance=~"dev-.*"}`, `{instance="dev-host",job!="none"}`})
	}
	var current *vmtest.VM
	for _, tok := range []struct {
		name   string
		e      *Enforcer
		braces bool
	}{
		{"labels", devOnly(t), false},
		{"labels+filter", mustNew(t, []Label{{"team", "dev"}}, []string{`{instance=~"dev-.*"}`}), false},
		// Two branches: v1.79 cannot read `or` inside braces, and reads the selectors lifted into unions (liftOr).
		{"labels+two filters", twoFilters(), false},
		// The current release reads them inside the braces, where the gateway keeps them when it knows it (Args.Braces).
		{"labels+two filters in braces", twoFilters(), true},
		{"filter only", mustNew(t, nil, []string{`{team="dev",instance="dev-host"}`}), false},
	} {
		t.Run(tok.name, func(t *testing.T) {
			base := vm.URL
			if tok.braces {
				if current == nil {
					current = vmtest.StartCurrent(t)
					writeTeams(t, current)
				}
				base = current.URL
			}
			var summary []string
			for _, c := range entries {
				status, body, refused := forwardIn(t, base, tok.e, clientRequest(t, c), tok.braces)
				outcome := fmt.Sprintf("%d", status)
				if refused != nil {
					outcome = fmt.Sprintf("refused %d: %s", statusOf(refused), refused)
					if st := statusOf(refused); st < 400 || st > 499 {
						t.Errorf("%s: the gateway's error %q has status %d; want 4xx", c.Name, refused, st)
					}
				}
				summary = append(summary, c.Name+" → "+outcome)
				switch c.Want {
				case "ok":
					if refused != nil || status/100 != 2 {
						t.Errorf("%s: want it forwarded and answered 2xx; got %s %.300s", c.Name, outcome, body)
					}
				case "refused":
					if refused == nil {
						t.Errorf("%s: want the gateway to refuse it; it was forwarded: %d %.300s", c.Name, status, body)
					}
				case "any":
				default:
					t.Fatalf("%s: unknown want %q", c.Name, c.Want)
				}
				if refused != nil || status/100 != 2 {
					continue
				}
				for _, f := range c.Leaks(body) {
					t.Errorf("LEAK %s: the answer contains %s:\n%.2000s", c.Name, f, body)
				}
				if c.DevMarker != "" && !strings.Contains(body, c.DevMarker) {
					t.Errorf("%s: the answer lacks the team's own data %s:\n%.1000s", c.Name, c.DevMarker, body)
				}
			}
			t.Logf("%d requests:\n%s", len(entries), strings.Join(summary, "\n"))
		})
	}
}

// TestVMQueryCompat sends the rewrites of the unit table to VictoriaMetrics v1.79, for a token of one branch and one of
// three (whose selectors are lifted into unions): they must parse there, except the constructs that version does not
// know (the client's own query fails there the same way) and those that keep `or` inside braces (liftOr).
func TestVMQueryCompat(t *testing.T) {
	vm := vmtest.Start(t)
	newer := map[string]string{
		"keep_metric_names":  "keep_metric_names after a binary operation",
		"unicode label name": "non-ASCII label names",
	}
	for _, e := range []*Enforcer{devOnly(t), devFiltered(t)} {
		t.Run(e.String(), func(t *testing.T) { queryCompat(t, vm, e, newer) })
	}
}

func queryCompat(t *testing.T, vm *vmtest.VM, e *Enforcer, newer map[string]string) {
	for _, c := range queryCases() {
		q, err := e.Query(c.in)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.PostForm(vm.URL+"/api/v1/query", url.Values{"query": {q}})
		if err != nil {
			// v1.79 exits on some queries it cannot copy (a panic), which a rewrite must never send it.
			t.Errorf("%s: VictoriaMetrics v1.79 is gone after the rewrite %s: %s", c.name, q, err)
			vm.Restart(t)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		why, isNewer := newer[c.name]
		if strings.Contains(q, `" or `) {
			// A range selector alone keeps its branches inside the braces.
			why, isNewer = "`or` inside braces", true
		}
		switch {
		case resp.StatusCode == 200 && isNewer:
			t.Errorf("%s: %s now works in VictoriaMetrics v1.79: update the list", c.name, why)
		case resp.StatusCode != 200 && !isNewer:
			t.Errorf("%s: VictoriaMetrics refuses the rewrite %s: %d %s", c.name, q, resp.StatusCode, b)
		}
	}
}

// TestVMDelete: delete_series with a restricted token removes only the token's series, whatever the client adds.
func TestVMDelete(t *testing.T) {
	vm := vmtest.Start(t)
	now := time.Now().UnixMilli()
	var sb strings.Builder
	for _, tm := range corpus.Teams {
		for _, m := range []string{"deleteme_total", "deleteme_too"} {
			fmt.Fprintf(&sb, "%s{team=%q,instance=\"%s-host\"} 1 %d\n", m, tm, tm, now)
		}
	}
	fmt.Fprintf(&sb, "deleteme_total{instance=\"none-host\"} 1 %d\n", now)
	post(t, vm.URL+"/api/v1/import/prometheus", "text/plain", sb.String())
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		n := len(seriesOf(t, vm.URL, `{__name__=~"deleteme.*"}`))
		return n == 7, fmt.Sprintf("%d series; want 7", n)
	})
	dev := devOnly(t)
	deletes := []corpus.Entry{
		{Name: "delete by name with smuggled args", Method: "POST", Path: "/api/v1/admin/tsdb/delete_series",
			URL:  [][2]string{{"extra_label", "team=ops"}},
			Form: [][2]string{{"match[]", `deleteme_total`}, {"extra_filters[]", `{team=~".*"}`}, {"extra_label", "team=sec"}}},
		{Name: "delete by regexp on the enforced label", Method: "POST", Path: "/api/v1/admin/tsdb/delete_series",
			URL: [][2]string{{"match[]", `{__name__="deleteme_too",team=~".*"}`}}},
		{Name: "delete without match[]", Method: "POST", Path: "/api/v1/admin/tsdb/delete_series"},
		{Name: "delete of another team", Method: "POST", Path: "/api/v1/admin/tsdb/delete_series",
			URL: [][2]string{{"match[]", `{team="ops"}`}, {"match[]", `{instance="none-host"}`}}},
	}
	for _, c := range deletes {
		status, body, refused := forward(t, vm.URL, dev, clientRequest(t, c))
		if c.Name == "delete without match[]" {
			if statusOf(refused) != 400 {
				t.Errorf("%s: %v %d %s; want a 400 from the gateway", c.Name, refused, status, body)
			}
			continue
		}
		if refused != nil || status != 204 {
			t.Fatalf("%s: %v %d %s", c.Name, refused, status, body)
		}
	}
	vmtest.Eventually(t, func() (bool, string) {
		left := seriesOf(t, vm.URL, `{__name__=~"deleteme.*"}`)
		for _, s := range left {
			if s["team"] == "dev" {
				return false, fmt.Sprintf("dev's series %v is still there", s)
			}
		}
		return true, ""
	})
	left := seriesOf(t, vm.URL, `{__name__=~"deleteme.*"}`)
	var got []string
	for _, s := range left {
		got = append(got, s["__name__"]+"/"+s["team"]+"/"+s["instance"])
	}
	sort.Strings(got)
	want := []string{"deleteme_too/ops/ops-host", "deleteme_too/sec/sec-host", "deleteme_total//none-host",
		"deleteme_total/ops/ops-host", "deleteme_total/sec/sec-host"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after dev's deletes:\n got %q\nwant %q", got, want)
	}
}

// TestVMWrites: a write in each format VictoriaMetrics v1.79 accepts, with team="ops" in the data and a client
// extra_label=team=ops, is stored with team="dev" once the enforcer ran.
func TestVMWrites(t *testing.T) {
	tsdbAddr := vmtest.FreePort(t)
	vm := vmtest.Start(t, "-opentsdbHTTPListenAddr="+tsdbAddr)
	now := time.Now()
	ms, s := now.UnixMilli(), now.Unix()

	// A native-format body comes from another VictoriaMetrics' export.
	src := vmtest.Start(t)
	post(t, src.URL+"/api/v1/import/prometheus", "text/plain", fmt.Sprintf("wr_native{team=\"ops\",instance=\"n\"} 1 %d\n", ms))
	src.Flush(t)
	var native string
	vmtest.Eventually(t, func() (bool, string) {
		native = get(t, src.URL+"/api/v1/export/native?match[]=wr_native")
		return strings.Contains(native, "wr_native"), "wr_native is not exported yet"
	})

	writes := []struct {
		name, path, query, ctype, body, metric string
		base                                   string // default vm.URL
		// newer: an API v1.79 does not have; it must answer "unsupported path" and store nothing.
		newer bool
	}{
		{"prometheus text", "/api/v1/import/prometheus", "", "text/plain",
			fmt.Sprintf("wr_prom{team=\"ops\",instance=\"p\"} 1 %d\n", ms), "wr_prom", "", false},
		{"prometheus text, /prometheus prefix", "/prometheus/api/v1/import/prometheus", "timestamp=" + fmt.Sprint(ms), "text/plain",
			"wr_prom2{team=\"ops\"} 1\n", "wr_prom2", "", false},
		{"json lines", "/api/v1/import", "", "application/json",
			fmt.Sprintf(`{"metric":{"__name__":"wr_json","team":"ops"},"values":[1],"timestamps":[%d]}`+"\n", ms), "wr_json", "", false},
		{"csv", "/api/v1/import/csv", "format=1:metric:wr_csv,2:label:team,3:time:unix_ms", "text/csv",
			fmt.Sprintf("1,ops,%d\n", ms), "wr_csv", "", false},
		{"influx line protocol", "/influx/write", "db=x", "text/plain",
			fmt.Sprintf("wr_influx,team=ops value=1 %d\n", now.UnixNano()), "wr_influx_value", "", false},
		{"influx line protocol, /write alias", "/write", "", "text/plain",
			fmt.Sprintf("wr_influx2,team=ops value=1 %d\n", now.UnixNano()), "wr_influx2_value", "", false},
		{"prometheus remote write", "/api/v1/write", "", "application/x-protobuf",
			remoteWriteBody([][2]string{{"__name__", "wr_remote"}, {"team", "ops"}}, 1, ms), "wr_remote", "", false},
		{"datadog", "/datadog/api/v1/series", "", "application/json",
			fmt.Sprintf(`{"series":[{"metric":"wr.datadog","points":[[%d,1]],"host":"h","tags":["team:ops"]}]}`, s), "wr.datadog", "", false},
		{"native", "/api/v1/import/native", "", "application/octet-stream", native, "wr_native", "", false},
		{"pushgateway path labels", "/api/v1/import/prometheus/metrics/job/j/team/ops", "", "text/plain",
			fmt.Sprintf("wr_push{team=\"ops\"} 1 %d\n", ms), "wr_push", "", true},
		{"pushgateway base64 path label", "/api/v1/import/prometheus/metrics/job/j/team@base64/b3Bz", "", "text/plain",
			fmt.Sprintf("wr_push64 1 %d\n", ms), "wr_push64", "", true},
		{"opentsdb http", "/opentsdb/api/put", "", "application/json",
			fmt.Sprintf(`[{"metric":"wr.tsdb","timestamp":%d,"value":1,"tags":{"team":"ops"}}]`, s), "wr.tsdb", "http://" + tsdbAddr, false},
	}
	dev := mustNew(t, []Label{{"team", "dev"}}, []string{`{instance="ignored-on-writes"}`})
	for _, w := range writes {
		q := "extra_label=team%3Dops"
		if w.query != "" {
			q = w.query + "&" + q + "&extra_label=team=sec"
		}
		r, err := http.NewRequest("POST", "http://gateway"+w.path+"?"+q, strings.NewReader(w.body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", w.ctype)
		base := vm.URL
		if w.base != "" {
			base = w.base
		}
		status, body, refused := forward(t, base, dev, r)
		switch {
		case w.newer && refused == nil && status == 400 && strings.Contains(body, "unsupported path"):
			t.Logf("%s: VictoriaMetrics v1.79 does not serve %s", w.name, w.path)
		case refused != nil || status/100 != 2:
			t.Errorf("%s: %v %d %s", w.name, refused, status, body)
		case w.newer:
			t.Errorf("%s: this VictoriaMetrics serves %s now: it must be checked like the others", w.name, w.path)
		}
	}
	vm.Flush(t)
	for _, w := range writes {
		if w.newer {
			if got := seriesOf(t, vm.URL, fmt.Sprintf(`{__name__=%q}`, w.metric)); len(got) > 0 {
				t.Errorf("%s: stored %v", w.name, got)
			}
			continue
		}
		var got []map[string]string
		vmtest.Eventually(t, func() (bool, string) {
			got = seriesOf(t, vm.URL, fmt.Sprintf(`{__name__=%q}`, w.metric))
			return len(got) > 0, fmt.Sprintf("%s: %s is not stored", w.name, w.metric)
		})
		for _, s := range got {
			if s["team"] != "dev" {
				t.Errorf("%s: stored %v; want team=dev", w.name, s)
			}
		}
	}
}

// TestVMExtraLabelLastWins documents what invariant 5 relies on: on a write, the last extra_label of a name wins
// over the data and over earlier args; on a read, extra_label args of one name are ANDed.
func TestVMExtraLabelLastWins(t *testing.T) {
	vm := vmtest.Start(t)
	post(t, vm.URL+"/api/v1/import/prometheus?extra_label=team=ops&extra_label=team=dev", "text/plain",
		fmt.Sprintf("lastwins{team=\"sec\"} 1 %d\n", time.Now().UnixMilli()))
	vm.Flush(t)
	var got []map[string]string
	vmtest.Eventually(t, func() (bool, string) {
		got = seriesOf(t, vm.URL, "lastwins")
		return len(got) > 0, "lastwins is not stored"
	})
	if len(got) != 1 || got[0]["team"] != "dev" {
		t.Errorf("stored %v; want team=dev (the last extra_label)", got)
	}
	b := get(t, vm.URL+"/api/v1/series?match[]=lastwins&start=-1d&extra_label=team=dev&extra_label=team=ops")
	if strings.Contains(b, "lastwins") {
		t.Errorf("two read extra_label args of one name are not ANDed: %s", b)
	}
}

// remoteWriteBody encodes one sample as a Prometheus remote-write request: protobuf in an uncompressed
// (literal-only) snappy block, which any snappy decoder accepts.
func remoteWriteBody(labels [][2]string, v float64, ms int64) string {
	field := func(b []byte, num int, data []byte) []byte {
		b = binary.AppendUvarint(b, uint64(num<<3|2))
		b = binary.AppendUvarint(b, uint64(len(data)))
		return append(b, data...)
	}
	var ts []byte
	for _, l := range labels {
		var lb []byte
		lb = field(lb, 1, []byte(l[0]))
		lb = field(lb, 2, []byte(l[1]))
		ts = field(ts, 1, lb)
	}
	var sample []byte
	sample = append(sample, 1<<3|1)
	sample = binary.LittleEndian.AppendUint64(sample, math.Float64bits(v))
	sample = append(sample, 2<<3|0)
	sample = binary.AppendUvarint(sample, uint64(ms))
	ts = field(ts, 2, sample)
	var wr []byte
	wr = field(wr, 1, ts)

	out := binary.AppendUvarint(nil, uint64(len(wr)))
	for len(wr) > 0 {
		n := min(len(wr), 60)
		out = append(out, byte(n-1)<<2)
		out = append(out, wr[:n]...)
		wr = wr[n:]
	}
	return string(out)
}

// TestVMHonoursEnforcementArgs records which enforcement args VictoriaMetrics itself applies on each read API,
// straight, without the enforcer: the defence in depth the gateway's own args rely on. series/count applies
// none of them (nor match[]), which is why it is unenforceable.
func TestVMHonoursEnforcementArgs(t *testing.T) {
	vm := vmtest.Start(t)
	writeTeams(t, vm)
	apis := []struct {
		name, path, args string
		honours          bool
	}{
		{"query", "/api/v1/query", "query=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"query_range", "/api/v1/query_range", "start=-15m&step=60&query=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"series", "/api/v1/series", "match[]=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"labels", "/api/v1/labels", "", true},
		{"label values", "/api/v1/label/instance/values", "", true},
		{"export", "/api/v1/export", "match[]=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"export csv", "/api/v1/export/csv", "format=__name__,instance,__value__&match[]=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"export native", "/api/v1/export/native", "match[]=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"federate", "/federate", "match[]=" + url.QueryEscape(`{__name__=~".+"}`), true},
		{"status/tsdb", "/api/v1/status/tsdb", "topN=100&focusLabel=instance", true},
		{"series/count", "/api/v1/series/count", "match[]=" + url.QueryEscape(`{team="dev"}`), false},
	}
	for _, arg := range []string{"extra_label=team=dev", "extra_filters=" + url.QueryEscape(`{team="dev"}`),
		"extra_filters[]=" + url.QueryEscape(`{team="dev"}`)} {
		for _, api := range apis {
			for _, viaBody := range []bool{false, true} {
				q := api.args
				if q != "" {
					q += "&"
				}
				q += arg
				var body string
				if api.name == "series/count" {
					body = get(t, vm.URL+api.path+"?"+q)
					// Every team's series are counted: 13.
					if (body == `{"status":"success","data":[13]}`) == !api.honours {
						continue
					}
					t.Errorf("%s with %s: %s", api.name, arg, body)
					continue
				}
				if viaBody {
					resp, err := http.Post(vm.URL+api.path, formType, strings.NewReader(q))
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					body = string(b)
				} else {
					body = get(t, vm.URL+api.path+"?"+q)
				}
				leak := ""
				for _, f := range corpus.Forbidden {
					if strings.Contains(body, f) {
						leak = f
					}
				}
				if leak != "" || !strings.Contains(body, "dev") {
					t.Errorf("%s with %s (in the body: %v): VictoriaMetrics does not apply it (%q in the answer):\n%.500s",
						api.name, arg, viaBody, leak, body)
				}
			}
		}
	}
}

// TestVMUnrestrictedQueries: queries of an unrestricted token that make VictoriaMetrics v1.79 exit as sent (it copies
// a query by printing and parsing it) run there as the gateway forwards them.
func TestVMUnrestrictedQueries(t *testing.T) {
	vm := vmtest.Start(t)
	var unrestricted *Enforcer
	crashed := 0
	for _, q := range []string{`-{__name__="on"}`, `-{__name__=""}`, `1 - {__name__="on"}`, `-{__name__=""} or 1`,
		`0 - {__name__="IGNORING"}`, `-{__name__="group_left"} offset 5m`, `{__name__="sum"} or vector(1)`, `({__name__="TopK"}) unless x`} {
		resp, err := http.PostForm(vm.URL+"/api/v1/query", url.Values{"query": {q}})
		if err != nil {
			crashed++
			vm.Restart(t)
		} else {
			resp.Body.Close()
		}
		out, err := unrestricted.query(q, false, false, nil)
		if err != nil || out == q {
			t.Errorf("%s: %q %v; want it forwarded with the name inside the braces", q, out, err)
			continue
		}
		resp, err = http.PostForm(vm.URL+"/api/v1/query", url.Values{"query": {out}})
		if err != nil {
			t.Errorf("%s: VictoriaMetrics v1.79 is gone after %s: %s", q, out, err)
			vm.Restart(t)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: VictoriaMetrics refuses %s: %d %s", q, out, resp.StatusCode, b)
		}
	}
	if crashed == 0 {
		t.Errorf("none of the queries made VictoriaMetrics 1.79.5 exit as sent: the test guards against nothing")
	}
}

// TestVMSiblingGroups checks storageSiblings against the real storage of both releases: for every name and each of its
// siblings, a series written with name="a", the sibling, then the extra_label name="b" (as the gateway appends it)
// keeps both values of name, and with a name of no group between, the last one wins. A release whose commonTagKeys
// changed fails here, and storageSiblings must follow it.
func TestVMSiblingGroups(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB, ...string) *vmtest.VM
	}{{"1.79.5", vmtest.Start}, {"current", vmtest.StartCurrent}} {
		t.Run(tc.name, func(t *testing.T) {
			vm := tc.start(t)
			type pair struct{ name, between string }
			var pairs []pair
			for _, n := range slices.Sorted(maps.Keys(storageSiblings)) {
				if rawKey(n) {
					continue // a token's label is never one (CheckLabelName); as the one between, it is checked
				}
				for _, s := range storageSiblings[n] {
					pairs = append(pairs, pair{n, s})
				}
				pairs = append(pairs, pair{n, "zzz_unrelated"})
			}
			ms := time.Now().UnixMilli()
			// JSON, which carries any bytes of a name in its order (Prometheus text reads a tab or a space in a raw key as
			// the end of the name).
			for i, p := range pairs {
				name, _ := json.Marshal(p.name)
				between, _ := json.Marshal(p.between)
				post(t, vm.URL+"/api/v1/import?extra_label="+url.QueryEscape(p.name+"=b"), "application/json",
					fmt.Sprintf(`{"metric":{"__name__":"sibchk_%d",%s:"a",%s:"x"},"values":[1],"timestamps":[%d]}`+"\n", i, name, between, ms))
			}
			vm.Flush(t)
			// An export reads the samples, which are searchable a moment after the series are indexed.
			vmtest.Eventually(t, func() (bool, string) {
				vm.Flush(t)
				n := strings.Count(get(t, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(`{__name__=~"sibchk_.*"}`)), "\n")
				return n == len(pairs), fmt.Sprintf("%d of %d series exported", n, len(pairs))
			})
			for i, p := range pairs {
				exp := get(t, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(fmt.Sprintf("sibchk_%d", i)))
				got := labelValues(t, exp, p.name)
				want := []string{"a", "b"}
				if p.between == "zzz_unrelated" {
					want = []string{"b"}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%q, then %q, then the extra_label %q=b: stored with %q=%q; want %q (%s)", p.name, p.between, p.name, p.name, got, want, exp)
				}
			}
		})
	}
}

// labelValues reads the values of every label named name, duplicates included, in the first series of an export.
func labelValues(t *testing.T, export, name string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(export))
	var vals []string
	depth := 0
	inMetric := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("export %q: %s", export, err)
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
				if inMetric && depth == 1 {
					return vals
				}
			}
		case string:
			if depth == 1 && v == "metric" {
				inMetric = true
				continue
			}
			if inMetric && depth == 2 && v == name {
				val, err := dec.Token()
				if err != nil {
					t.Fatal(err)
				}
				vals = append(vals, val.(string))
			} else if inMetric && depth == 2 {
				if _, err := dec.Token(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return vals
}
