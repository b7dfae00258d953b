package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/golang/snappy"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// VictoriaMetrics before v1.108.0 cuts a series down to -maxLabelsPerTimeseries labels after appending the
// extra_label arguments, so a series that fills the limit itself loses the token's label and keeps the one it
// brought: team dev's write would be stored as team ops'. v1.108.0 drops such a series. The gateway tells the two
// apart from each write backend's /metrics: an error and vmgateway_write_backend_truncates_labels 1 for Debian's
// 1.79.5, 0 for the current release, -1 (and a warning) for a backend whose metrics say neither. On 1.79.5 its label
// guard drops the series, as the current release does.
func TestWriteBackendLabelTruncation(t *testing.T) {
	notVM := vmtest.NewRecorder(t)
	for _, tc := range []struct {
		name      string
		start     func(testing.TB, ...string) *vmtest.VM
		gauge     string
		logged    string
		truncates bool
	}{
		{"debian-1.79.5", vmtest.Start, "1", "the write backend truncates series", true},
		{"current-" + vmtest.CurrentVersion, vmtest.StartCurrent, "0", "the write backend drops series over its label limit", false},
		{"not VictoriaMetrics", nil, "-1", "cannot tell whether the write backend truncates", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := notVM.URL
			var vm *vmtest.VM
			if tc.start != nil {
				vm = tc.start(t)
				backend = vm.URL
			}
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+backend, "-write.url="+backend, "-enable.auth", "-auth.publicKeyFiles="+pub,
				"-write.labelTruncationCheckInterval=1h")
			if !g.logged(tc.logged) {
				t.Fatalf("the gateway did not log %q", tc.logged)
			}
			want := fmt.Sprintf("vmgateway_write_backend_truncates_labels{backend=%q} %s\n", backend, tc.gauge)
			if _, _, m := do(t, http.MethodGet, g.URL+"/metrics", nil); !strings.Contains(m, want) {
				t.Fatalf("/metrics lacks %q", strings.TrimSpace(want))
			}
			if vm == nil {
				return
			}
			// What the check stands for: a dev token's series with 45 labels, past both releases' default limits
			// (30 and 40), team="ops" first.
			labels := []string{`team="ops"`}
			for i := 0; len(labels) < 44; i++ {
				labels = append(labels, fmt.Sprintf(`l%02d="x"`, i))
			}
			write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
			code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("trunc_probe{"+strings.Join(labels, ",")+"} 1\n"),
				append(bearer(write), "Content-Type", "text/plain")...)
			if code/100 != 2 {
				t.Fatalf("the write: %d %s", code, body)
			}
			// A control series under the limit is stored with the token's label on both, and tells when the write
			// has landed.
			code, _, body = do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader(`trunc_control{team="ops"} 1`+"\n"),
				append(bearer(write), "Content-Type", "text/plain")...)
			if code/100 != 2 {
				t.Fatalf("the control write: %d %s", code, body)
			}
			// Straight to the backend, with the token's label as the gateway sends it: what the guard stands in for.
			code, _, body = do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus?extra_label=team=dev",
				strings.NewReader("trunc_direct{"+strings.Join(labels, ",")+"} 1\n"), "Content-Type", "text/plain")
			if code/100 != 2 {
				t.Fatalf("the write straight to the backend: %d %s", code, body)
			}
			var stored, direct string
			vmtest.Eventually(t, func() (bool, string) {
				vm.Flush(t)
				_, _, control := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=trunc_control", nil)
				_, _, stored = do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(`{__name__="trunc_probe"}`), nil)
				_, _, direct = do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(`{__name__="trunc_direct"}`), nil)
				return strings.Contains(control, `"team":"dev"`) && (!tc.truncates || direct != ""), "the control series: " + control
			})
			if strings.TrimSpace(stored) != "" {
				t.Errorf("%s stored the long series written through the gateway as %q; it must be dropped", tc.name, stored)
			}
			switch {
			case tc.truncates && !strings.Contains(direct, `"team":"ops"`):
				t.Errorf("1.79.5 stored the long series written to it directly as %q; the check says it keeps team=ops (has it stopped truncating?)", direct)
			case !tc.truncates && strings.TrimSpace(direct) != "":
				t.Errorf("%s stored the long series written to it directly as %q; the check says it drops it", tc.name, direct)
			}
			// Which of the two dropped it: the gateway on 1.79.5, the backend itself on the current release.
			dropped := `vmgateway_write_series_dropped_total{reason="too_many_labels"} 1` + "\n"
			if _, _, m := do(t, http.MethodGet, g.URL+"/metrics", nil); strings.Contains(m, dropped) != tc.truncates {
				t.Errorf("/metrics has %q: %v; want %v", strings.TrimSpace(dropped), !tc.truncates, tc.truncates)
			}
			if tc.truncates && !g.logged("dropped a series the write backend would have stored without the token's extra labels") {
				t.Errorf("the gateway did not log the dropped series")
			}
		})
	}
}

// guardSeries is a series of n labels besides its name, team="ops" first.
func guardSeries(n int) []string {
	labels := []string{"team", "ops"}
	for i := 1; i < n; i++ {
		labels = append(labels, fmt.Sprintf("l%02d", i), "x")
	}
	return labels
}

// TestLabelGuardFormatsOnDebian writes, through a token for team dev, each format the guard counts to Debian's
// 1.79.5 running with a label limit of its own (24): a series that fits with the token's label is stored with it,
// one label more and it is dropped whole, never stored as team ops'. The formats the guard cannot count are refused,
// and the limit comes from the backend.
func TestLabelGuardFormatsOnDebian(t *testing.T) {
	const limit = 24
	vm := vmtest.Start(t, fmt.Sprintf("-maxLabelsPerTimeseries=%d", limit))
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-write.labelTruncationCheckInterval=1h")
	write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	send := func(path, ctype, body string, want int) {
		t.Helper()
		code, _, answer := do(t, http.MethodPost, g.URL+path, strings.NewReader(body), append(bearer(write), "Content-Type", ctype)...)
		if code != want {
			t.Fatalf("POST %s: %d %s; want %d", path, code, answer, want)
		}
	}
	prom := func(name string, labels []string) string {
		var b strings.Builder
		b.WriteString(name + "{")
		for i := 0; i < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%q", labels[i], labels[i+1])
		}
		b.WriteString("} 1\n")
		return b.String()
	}
	jsonLine := func(name string, labels []string) string {
		var b strings.Builder
		fmt.Fprintf(&b, `{"metric":{"__name__":%q`, name)
		for i := 0; i < len(labels); i += 2 {
			fmt.Fprintf(&b, ",%q:%q", labels[i], labels[i+1])
		}
		fmt.Fprintf(&b, `},"values":[1],"timestamps":[%d]}`+"\n", time.Now().UnixMilli())
		return b.String()
	}
	influx := func(name string, labels []string) string {
		var b strings.Builder
		b.WriteString(name)
		for i := 0; i < len(labels); i += 2 {
			fmt.Fprintf(&b, ",%s=%s", labels[i], labels[i+1])
		}
		b.WriteString(" value=1\n")
		return b.String()
	}
	room := limit - 1 // the token's team
	var kept, dropped []string
	// Each format at its edge: the name counts as a label in the Prometheus formats, the database in Influx's.
	send("/api/v1/import/prometheus", "text/plain", prom("lg_prom_in", guardSeries(room-1))+prom("lg_prom_out", guardSeries(room)), 204)
	send("/api/v1/import", "application/json", jsonLine("lg_json_in", guardSeries(room-1))+jsonLine("lg_json_out", guardSeries(room)), 204)
	send("/influx/write", "text/plain", influx("lg_influx_in", guardSeries(room))+influx("lg_influx_out", guardSeries(room+1)), 204)
	send("/influx/write?db=x", "text/plain", influx("lg_influxdb_in", guardSeries(room-1))+influx("lg_influxdb_out", guardSeries(room)), 204)
	// The client's own extra_label takes a place too: 1.79.5 appends it before the token's; one without a value adds
	// no label there, and takes none.
	send("/api/v1/import/prometheus?extra_label=site=eu&extra_label=none=", "text/plain", prom("lg_xl_in", guardSeries(room-2))+prom("lg_xl_out", guardSeries(room-1)), 204)
	kept = append(kept, "lg_prom_in", "lg_json_in", "lg_influx_in_value", "lg_influxdb_in_value", "lg_xl_in")
	dropped = append(dropped, "lg_prom_out", "lg_json_out", "lg_influx_out_value", "lg_influxdb_out_value", "lg_xl_out")

	csvFormat := func(name string, labels int) string {
		f := "1:metric:" + name
		for i := range labels {
			f += fmt.Sprintf(",%d:label:c%02d", i+2, i)
		}
		return url.QueryEscape(f)
	}
	row := "1" + strings.Repeat(",x", room-1) + "\n"
	send("/api/v1/import/csv?format="+csvFormat("lg_csv_in", room-1), "text/csv", row, 204)
	send("/api/v1/import/csv?format="+csvFormat("lg_csv_out", room), "text/csv", row+"", 400)
	kept = append(kept, "lg_csv_in")
	send("/api/v1/import/native", "application/octet-stream", "x", 403)
	send("/datadog/api/v1/series", "application/json", `{"series":[]}`, 403)

	// vmagent, a real remote-write client, with the same token.
	agent := startVMAgent(t, g.URL+"/api/v1/write", "-remoteWrite.bearerToken="+write)
	code, _, body := do(t, http.MethodPost, agent+"/api/v1/import/prometheus",
		strings.NewReader(prom("lg_rw_in", guardSeries(room-1))+prom("lg_rw_out", guardSeries(room))), "Content-Type", "text/plain")
	if code/100 != 2 {
		t.Fatalf("write into vmagent: %d %s", code, body)
	}
	kept = append(kept, "lg_rw_in")
	dropped = append(dropped, "lg_rw_out")

	// A series under a field number 1.79.5's decoder cuts to 32 bits (2^32+1 is its field 1): stored there as team
	// ops' when sent straight, refused by the gateway, which would otherwise not see it as a series.
	hidden := func(name string) []byte {
		var ts []byte
		labels := append([]string{"__name__", name}, guardSeries(room)...)
		for i := 0; i < len(labels); i += 2 {
			ts = pbBytes(ts, 1, pbBytes(pbBytes(nil, 1, []byte(labels[i])), 2, []byte(labels[i+1])))
		}
		ts = pbBytes(ts, 2, pbVarint(pbFixed64(nil, 1, math.Float64bits(1)), 2, uint64(time.Now().UnixMilli())))
		req := binary.AppendUvarint(nil, (1<<32+1)<<3|2)
		req = binary.AppendUvarint(req, uint64(len(ts)))
		return snappy.Encode(nil, append(req, ts...))
	}
	code, _, body = do(t, http.MethodPost, vm.URL+"/api/v1/write?extra_label=team=dev", bytes.NewReader(hidden("lg_rw_hidden_direct")),
		"Content-Type", "application/x-protobuf", "Content-Encoding", "snappy")
	if code/100 != 2 {
		t.Fatalf("the hidden series straight to 1.79.5: %d %s", code, body)
	}
	code, _, body = do(t, http.MethodPost, g.URL+"/api/v1/write", bytes.NewReader(hidden("lg_rw_hidden")),
		append(bearer(write), "Content-Type", "application/x-protobuf", "Content-Encoding", "snappy")...)
	if code != http.StatusBadRequest || !strings.Contains(body, "field number") {
		t.Fatalf("the hidden series through the gateway: %d %s; want a 400", code, body)
	}
	dropped = append(dropped, "lg_rw_hidden")

	vmtest.Eventually(t, func() (bool, string) {
		vm.Flush(t)
		if _, _, got := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=lg_rw_hidden_direct", nil); !strings.Contains(got, `"team":"ops"`) {
			return false, "lg_rw_hidden_direct, sent straight to 1.79.5, not stored as team ops' (does it still cut field numbers?): " + got
		}
		for _, name := range kept {
			_, _, got := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+name, nil)
			if !strings.Contains(got, `"team":"dev"`) {
				return false, name + " not stored with team dev: " + got
			}
		}
		return true, ""
	})
	if _, _, got := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=lg_xl_in", nil); !strings.Contains(got, `"site":"eu"`) {
		t.Errorf("lg_xl_in stored without the client's extra_label site=eu: %s", got)
	}
	for _, name := range dropped {
		if _, _, got := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+name, nil); strings.TrimSpace(got) != "" {
			t.Errorf("%s, one label over the limit, was stored: %s", name, got)
		}
	}
	want := fmt.Sprintf(`vmgateway_write_series_dropped_total{reason="too_many_labels"} %d`, len(dropped)-1) // the hidden one was refused whole
	if _, _, m := do(t, http.MethodGet, g.URL+"/metrics", nil); !strings.Contains(m, want+"\n") {
		t.Errorf("/metrics lacks %q", want)
	}
}

// TestTruncationFollowsAddresses: with -discoverBackendIPs a rolling upgrade or a rollback puts both kinds of
// release behind one name, so each address is checked, and one truncating address guards every narrowed write. A
// new address is looked at before the next narrowed write is let through, the guard ends when the old release's
// address goes, and a gone address leaves no gauge behind. The addresses are real: Debian's 1.79.5 and the current
// release, as the discovery hands them over (gateway.Config.WriteAddrs).
func TestTruncationFollowsAddresses(t *testing.T) {
	old, cur := vmtest.Start(t), vmtest.StartCurrent(t)
	defer func(d time.Duration) { *labelTruncationCheckInterval = d }(*labelTruncationCheckInterval)
	*labelTruncationCheckInterval = time.Hour
	addr := func(vm *vmtest.VM) gateway.BackendAddr {
		u, err := url.Parse(vm.URL)
		if err != nil {
			t.Fatal(err)
		}
		return gateway.BackendAddr{URL: u, Host: "vminsert.example:8480"}
	}
	w := newTruncationWatch(nil, http.DefaultTransport)
	w.setAddrs([]gateway.BackendAddr{addr(cur)})
	w.start()
	defer w.close()
	limit := func(want int) {
		t.Helper()
		if got, err := w.labelLimit(context.Background()); got != want || err != nil {
			t.Fatalf("label limit %d, %v; want %d", got, err, want)
		}
	}
	gauge := func(vm *vmtest.VM) string {
		var b bytes.Buffer
		metrics.WritePrometheus(&b, false)
		for _, l := range strings.Split(b.String(), "\n") {
			if v, ok := strings.CutPrefix(l, fmt.Sprintf("vmgateway_write_backend_truncates_labels{backend=%q,host=%q} ", vm.URL, "vminsert.example:8480")); ok {
				return v
			}
		}
		return "absent"
	}
	limit(0)
	// The rollback: the old release's address comes beside the current one. No wait for the hour's look.
	w.setAddrs([]gateway.BackendAddr{addr(cur), addr(old)})
	limit(30)
	if g, o := gauge(cur), gauge(old); g != "0" || o != "1" {
		t.Fatalf("gauges: current release %s, 1.79.5 %s; want 0 and 1", g, o)
	}
	// The upgrade done: the old address gone, its gauge with it. Writes routed on a list it was in may still reach
	// it for a while: the guard ends leaveGrace later.
	w.setAddrs([]gateway.BackendAddr{addr(cur)})
	limit(30)
	for _, t := range *w.leaving.Load() {
		t.goneAt.Add(-int64(leaveGrace))
	}
	limit(0)
	if o := gauge(old); o != "absent" {
		t.Fatalf("the gone address's gauge is still exported: %s", o)
	}
}

// TestLabelGuardHostileCorpusOnDebian writes a corpus of lines an attacker holding a team-dev token would try
// (escapes, quotes, braces and commas inside values, duplicate and empty labels, odd spacing and line ends, Influx
// escapes and several fields, JSON duplicate keys and escapes) through the gateway to Debian's 1.79.5 with a label
// limit of 4, and the same lines straight to a second 1.79.5 with the token's extra_label as the gateway would send
// them. Straight, several are stored without team dev (the corpus has teeth); through the gateway every series
// stored has team dev, whatever each line's answer was.
func TestLabelGuardHostileCorpusOnDebian(t *testing.T) {
	const limit = 4
	viaGW, direct := vmtest.Start(t, fmt.Sprintf("-maxLabelsPerTimeseries=%d", limit)), vmtest.Start(t, fmt.Sprintf("-maxLabelsPerTimeseries=%d", limit))
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+viaGW.URL, "-write.url="+viaGW.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-write.labelTruncationCheckInterval=1h")
	write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	ms := time.Now().UnixMilli()
	type entry struct{ path, body string }
	prom := func(lines ...string) []entry {
		var es []entry
		for _, l := range lines {
			es = append(es, entry{"/api/v1/import/prometheus", l})
		}
		return es
	}
	corpus := prom(
		"c01{a=\"1\",b=\"2\",c=\"3\"} 1\n",
		"c02{team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c03{team=\"ops\",a=\"x\\\",b=\\\"y\",c=\"z\"} 1\n",
		"c04{team=\"ops\",a=\"}\",b=\"2\"} 1\n",
		"c05{team=\"ops\",a=\"{\",b=\"}\"} 1\n",
		"c06{team=\"ops\",a=\"1\",b=\"2\",} 1\n",
		"c07 {team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c08{ team=\"ops\" , a=\"1\" , b=\"2\" } 1\n",
		"c09{team=\"ops\",a=\"1\",b=\"2\"}1\n",
		"c10{team=\"ops\",a=\"1\",b=\"2\"} 1 "+strconv.FormatInt(ms, 10)+"\n",
		"c11{team=\"ops\",a=\"1\",b=\"2\",team=\"ops2\"} 1\n",
		"c12{team=\"ops\",a=\"\",b=\"2\",c=\"3\"} 1\n",
		"{__name__=\"c13\",team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c14{team='ops',a='1',b='2'} 1\n",
		"c15{team=\"ops\",a=\"1\",b=\"2\"} 1 # comment\n",
		"c16{team=\"ops\",a=\"1\",b=\"2\"} 1\r\n",
		"# TYPE c17 gauge\nc17{team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c18{team=\"ops\",a=\"1\",b=\"2\"} NaN\n",
		"  c19{team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c20{team=\"ops\"\t,a=\"1\",\tb=\"2\"}\t1\n",
		"c21{team=\"ops\",a=\"1\\n\",b=\"2\"} 1\n",
		"c22{team=\"ops\",a=\"1\",b=\"2\"} 1\rc22b{team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c23:x.y{team=\"ops\",a=\"1\",b=\"2\"} 1\n",
		"c24{team=\"ops\",a=\"1\",b=\"2\",c=\"3\",d=\"4\",e=\"5\",f=\"6\"} 1\n",
		"c25{team=\"ops\",a=\"1\",b=\"2\"} 1\nc25ok{team=\"ops\"} 1\n",
		"c26{team=\"ops\",a=\"1\",b=\"2\"} 1",
		"c27{team=\"ops\",\"a\"=\"1\",b=\"2\"} 1\n",
		"c28{team=\"ops\",a=\"1\",b=\"2\"\n} 1\n",
		"c29{team=\"ops\",a=\"1\"b=\"2\"} 1\n",
		"c30{team=\"ops\",a=\"\\\\\",b=\"2\"} 1\n",
	)
	for _, l := range []string{
		"i01,team=ops,a=1,b=2,c=3 f=1\n",
		"i02,team=ops,a=1\\,x=2,b=2,c=3 f=1\n",
		"i03,team=ops,a=1\\ x=2,b=2,c=3 f=1\n",
		"i04,team=ops,a=1,b=2 f=1,g=2,h=\"x,y=z\"\n",
		"i05\\,x=y,team=ops,a=1,b=2,c=3 f=1\n",
		"i06,team=ops,a=1,b=2,c=3 f=1 " + strconv.FormatInt(ms*1e6, 10) + "\n",
		"i07,team=ops,a=1,b=2,team=ops2 f=1\n",
		"i08,team=ops,a=1,b=2,c= f=1\n",
		"i09,team=ops,a\\=b=1,c=2,d=3 f=1\n",
		"i10,team=ops,a=1,b=2,c=3 f=1\r\n",
		"i11,team=ops,a=1,b=2,c=3 f=\"s\",g=1i\n",
		"i12,team=ops,a=1,b=2,c=3  f=1\n",
		"i13,team=ops,a=1,b=2,c=3,d=4,e=5 f=1\n",
		"i14,team=ops,a=1 f=1\ni14b,team=ops,a=1,b=2,c=3 f=1\n",
	} {
		corpus = append(corpus, entry{"/influx/write", l})
		corpus = append(corpus, entry{"/influx/write?db=d" + l[1:3], strings.Replace(l, "i", "k", 1)})
	}
	for _, l := range []string{
		`{"metric":{"__name__":"j01","team":"ops","a":"1","b":"2"},"values":[1],"timestamps":[T]}`,
		`{"metric":{"__name__":"j02","team":"ops","a":"1","a":"2","b":"2"},"values":[1],"timestamps":[T]}`,
		`{"metric":{"__name__":"j03","te\u0061m":"ops","a":"1","b":"2"},"values":[1],"timestamps":[T]}`,
		`{"metric":{"__name__":"j04","team":"ops","a":"","b":"2","c":"3"},"values":[1],"timestamps":[T]}`,
		`{"values":[1],"timestamps":[T],"metric":{"__name__":"j05","team":"ops","a":"1","b":"2"}}`,
		`{"metric":{"__name__":"j06","team":"ops","a":"1","b":"2"},"metric":{"__name__":"j06b"},"values":[1],"timestamps":[T]}`,
		` { "metric" : { "__name__" : "j07" , "team" : "ops" , "a" : "1" , "b" : "2" } , "values" : [1] , "timestamps" : [T] } `,
		`{"metric":{"__name__":"j08","team":"ops","a":"1","b":"2"},"values":[1],"timestamps":[T]}{"metric":{"__name__":"j08b"},"values":[1],"timestamps":[T]}`,
		`{"metric":{"__name__":"j09","team":"ops","a":1,"b":"2"},"values":[1],"timestamps":[T]}`,
		`{"metric":{"__name__":"j10","team":"ops","a":"1","b":"2","c":"3","d":"4"},"values":[1,2],"timestamps":[T,T]}`,
	} {
		corpus = append(corpus, entry{"/api/v1/import", strings.ReplaceAll(l, "T", strconv.FormatInt(ms, 10)) + "\n"})
	}

	for _, e := range corpus {
		code, _, answer := do(t, http.MethodPost, g.URL+e.path, strings.NewReader(e.body), append(bearer(write), "Content-Type", "text/plain")...)
		if code >= 500 {
			t.Errorf("POST %s %q through the gateway: %d %s", e.path, e.body, code, answer)
		}
		sep := "?"
		if strings.Contains(e.path, "?") {
			sep = "&"
		}
		code, _, answer = do(t, http.MethodPost, direct.URL+e.path+sep+"extra_label=team=dev", strings.NewReader(e.body), "Content-Type", "text/plain")
		if code >= 500 {
			t.Errorf("POST %s %q straight: %d %s", e.path, e.body, code, answer)
		}
	}
	// Series stored under a team other than dev, or under none, and all series stored.
	foreign := func(vm *vmtest.VM) (bad []string, all int) {
		vm.Flush(t)
		_, _, export := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(`{__name__=~".+"}`), nil)
		for _, l := range strings.Split(strings.TrimSpace(export), "\n") {
			var s struct{ Metric map[string]string }
			if l == "" {
				continue
			}
			if err := json.Unmarshal([]byte(l), &s); err != nil {
				t.Fatalf("export line %q: %s", l, err)
			}
			all++
			if s.Metric["team"] != "dev" {
				bad = append(bad, fmt.Sprint(s.Metric))
			}
		}
		return bad, all
	}
	var leaked []string
	var stored int
	vmtest.Eventually(t, func() (bool, string) {
		bad, all := foreign(direct)
		leaked = bad
		_, stored = foreign(viaGW)
		return len(bad) >= 10 && stored >= 5, fmt.Sprintf("straight: %d series of %d outside team dev; through the gateway %d stored", len(bad), all, stored)
	})
	t.Logf("straight to 1.79.5, %d series were stored outside team dev, e.g. %s", len(leaked), leaked[0])
	if bad, all := foreign(viaGW); len(bad) > 0 {
		t.Errorf("through the gateway, %d of %d series were stored outside team dev: %s", len(bad), all, strings.Join(bad, "; "))
	}
}

// TestSortLabelsRefusedOnBothReleases: with -sortLabels, Debian's 1.79.5 and the current release sort each series'
// labels with an unstable sort before keeping the last of two of one name, and so does the current release's stream
// deduplication: team dev's series of 15 labels with team="ops" among them, written straight with the token's
// extra_label, is stored as team ops'. The gateway reads the flag from the backend's /metrics and refuses such
// writes through a token with extra labels with 503 naming it
// (a client keeps the data and sends it again), exports vmgateway_write_backend_sorts_labels 1, and stores nothing;
// a write through an unrestricted token goes on.
func TestSortLabelsRefusedOnBothReleases(t *testing.T) {
	// The order found by simulating sort.Sort: team="ops" ends up after the appended team="dev".
	series := `sortm{z00="x",z01="x",z02="x",z03="x",a04="x",z05="x",a06="x",a07="x",team="ops",a08="x",a09="x",z10="x",a11="x",z12="x"} 1` + "\n"
	for _, v := range []struct {
		name  string
		start func(testing.TB, ...string) *vmtest.VM
		flag  string
	}{
		{"debian-1.79.5", vmtest.Start, "-sortLabels=true"},
		{"current-" + vmtest.CurrentVersion, vmtest.StartCurrent, "-sortLabels=true"},
		{"current-" + vmtest.CurrentVersion + "-streamAggr", vmtest.StartCurrent, "-streamAggr.dedupInterval=1s"},
	} {
		t.Run(v.name, func(t *testing.T) {
			vm := v.start(t, v.flag)
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
				"-write.labelTruncationCheckInterval=1h")
			dev := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
			code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader(series),
				append(bearer(dev), "Content-Type", "text/plain")...)
			checkClusterError(t, "a write through dev's token", code, body, http.StatusServiceUnavailable, "runs with "+v.flag)
			if !g.logged("the write backend sorts a series' labels") {
				t.Error("the gateway did not log the backend's flag")
			}
			want := fmt.Sprintf("vmgateway_write_backend_sorts_labels{backend=%q} 1\n", vm.URL)
			if _, _, m := do(t, http.MethodGet, g.URL+"/metrics", nil); !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
			}
			// Unrestricted writes have no label to lose.
			all := mint(t, priv, "-mode=write")
			code, _, body = do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader(`sort_control{team="ops"} 1`+"\n"),
				append(bearer(all), "Content-Type", "text/plain")...)
			if code/100 != 2 {
				t.Fatalf("an unrestricted write: %d %s", code, body)
			}
			// Straight to the backend with the token's label as the gateway would send it: what the refusal stands in for.
			code, _, body = do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus?extra_label=team=dev",
				strings.NewReader(strings.Replace(series, "sortm", "sortm_direct", 1)), "Content-Type", "text/plain")
			if code/100 != 2 {
				t.Fatalf("the write straight to the backend: %d %s", code, body)
			}
			var direct, stored string
			vmtest.Eventually(t, func() (bool, string) {
				vm.Flush(t)
				_, _, control := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=sort_control", nil)
				_, _, direct = do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=sortm_direct", nil)
				_, _, stored = do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=sortm", nil)
				return strings.Contains(control, `"team":"ops"`) && direct != "", "the control series: " + control
			})
			if strings.TrimSpace(stored) != "" {
				t.Errorf("the series written through dev's token was stored: %s", stored)
			}
			if !strings.Contains(direct, `"team":"ops"`) {
				t.Errorf("%s with %s stored the series written to it directly as %s; the refusal says it keeps team=ops", v.name, v.flag, direct)
			}
		})
	}
}

// TestLabelGuardLongJSONLinesBounded: on Debian's 1.79.5, where the label guard counts the labels of each JSON line
// a narrowed token writes, four lines of 15 MB of samples that never close (1.2 MB gzipped: an attacker's review
// sent eight such and grew the gateway from 16 MB to 3.4 GB, 24 s of CPU, while the counting parsed each into a tree
// of a node per value) are dropped, the line after them is stored with the token's label, and the gateway's peak
// memory grows by less than the guard's own budget.
func TestLabelGuardLongJSONLinesBounded(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-write.labelTruncationCheckInterval=1h")
	if !g.logged("the write backend truncates series") {
		t.Fatal("the gateway did not find 1.79.5 truncating: the guard is off")
	}
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	rnd := rand.New(rand.NewPCG(1, 2))
	var chunk []byte
	for len(chunk) < 1<<20 {
		if rnd.IntN(200) == 0 {
			chunk = strconv.AppendInt(chunk, rnd.Int64N(100000), 10)
			chunk = append(chunk, ',')
		} else {
			chunk = append(chunk, "1,"...)
		}
	}
	for range 4 {
		_, _ = zw.Write([]byte(`{"metric":{"__name__":"junk","team":"ops"},"values":[`))
		for range 15 {
			_, _ = zw.Write(chunk)
		}
		_, _ = zw.Write([]byte("1]\n"))
	}
	fmt.Fprintf(zw, `{"metric":{"__name__":"jsonguard_control","team":"ops"},"values":[1],"timestamps":[%d]}`+"\n", time.Now().UnixMilli())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	_, before := rssKiB(t, g.Pid())
	dev := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	code, _, resp := do(t, http.MethodPost, g.URL+"/api/v1/import", &body, append(bearer(dev), "Content-Encoding", "gzip")...)
	if code/100 != 2 {
		t.Fatalf("the import: %d %s", code, resp)
	}
	_, after := rssKiB(t, g.Pid())
	vmtest.Eventually(t, func() (bool, string) {
		vm.Flush(t)
		_, _, got := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=jsonguard_control", nil)
		return strings.Contains(got, `"team":"dev"`), "the control line stored as " + got
	})
	if _, _, junk := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=junk", nil); strings.TrimSpace(junk) != "" {
		t.Errorf("the lines that never close were stored: %.200s", junk)
	}
	// The guard holds at most -write.labelGuardMaxMemory (256 MiB) of lines; the counting itself nothing more.
	t.Logf("the gateway's peak memory grew by %d MiB", (after-before)>>10)
	if grew := after - before; grew > 256<<10 {
		t.Errorf("the gateway's peak memory grew by %d MiB counting the labels of 60 MB of JSON lines; want under 256", grew>>10)
	}
}
