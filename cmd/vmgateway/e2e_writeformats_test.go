package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Every write format of the route table, sent through the gateway with a token whose extra_labels say team="dev"
// while the data says team="ops", and read back from the real backend: stored, and stored with the token's
// label. Debian's 1.79.5, the current single-node release and the real cluster each get the formats they ingest.

// writeFormat is one write request. single is its single-node path (with query); cluster its path below
// /insert/<tenant>. The stored series is metric with value.
type writeFormat struct {
	name, single, cluster string
	ctype, cenc           string
	body                  string
	metric, value         string
	// modern: not ingested by Debian's 1.79.5 (404 "unsupported path"); the current release and the cluster
	// v1.150 ingest it.
	modern bool
}

func writeFormats(now time.Time) []writeFormat {
	ms, sec := now.UnixMilli(), now.Unix()
	return []writeFormat{
		{name: "import_prometheus", single: "/api/v1/import/prometheus?extra_label=team=ops", cluster: "/prometheus/api/v1/import/prometheus?extra_label=team=ops",
			ctype: "text/plain", body: `wf_prom{team="ops"} 1` + "\n", metric: "wf_prom", value: "1"},
		{name: "import_prometheus pushgateway", single: "/api/v1/import/prometheus/metrics/job/j1/instance/i1",
			cluster: "/prometheus/api/v1/import/prometheus/metrics/job/j1/instance/i1",
			ctype:   "text/plain", body: `wf_push{team="ops"} 2` + "\n", metric: "wf_push", value: "2", modern: true},
		{name: "import (JSON lines)", single: "/api/v1/import", cluster: "/prometheus/api/v1/import", ctype: "application/json",
			body:   fmt.Sprintf(`{"metric":{"__name__":"wf_json","team":"ops"},"values":[3],"timestamps":[%d]}`, ms) + "\n",
			metric: "wf_json", value: "3"},
		{name: "import_csv", single: "/api/v1/import/csv?format=1:label:team,2:metric:wf_csv", cluster: "/prometheus/api/v1/import/csv?format=1:label:team,2:metric:wf_csv",
			ctype: "text/csv", body: "ops,4\n", metric: "wf_csv", value: "4"},
		{name: "influx_write", single: "/influx/write?db=x", cluster: "/influx/write?db=x", ctype: "text/plain",
			body: "wf_influx,team=ops value=6\n", metric: "wf_influx_value", value: "6"},
		{name: "influx_write /write alias", single: "/write", cluster: "/influx/write", ctype: "text/plain",
			body: "wf_influxw,team=ops value=7\n", metric: "wf_influxw_value", value: "7"},
		{name: "influx_v2_write", single: "/influx/api/v2/write?bucket=b&org=o", cluster: "/influx/api/v2/write?bucket=b&org=o", ctype: "text/plain",
			body: "wf_influx2,team=ops value=8\n", metric: "wf_influx2_value", value: "8"},
		{name: "datadog_series v1", single: "/datadog/api/v1/series", cluster: "/datadog/api/v1/series", ctype: "application/json",
			body:   fmt.Sprintf(`{"series":[{"metric":"wf_datadog","points":[[%d,9]],"tags":["team:ops"]}]}`, sec),
			metric: "wf_datadog", value: "9"},
		{name: "datadog_series v2", single: "/datadog/api/v2/series", cluster: "/datadog/api/v2/series", ctype: "application/json",
			body:   fmt.Sprintf(`{"series":[{"metric":"wf_datadog2","type":3,"points":[{"timestamp":%d,"value":10}],"tags":["team:ops"]}]}`, sec),
			metric: "wf_datadog2", value: "10", modern: true},
		{name: "datadog_sketches", single: "/datadog/api/beta/sketches", cluster: "/datadog/api/beta/sketches", ctype: "application/x-protobuf",
			body: ddSketch("wf_sketch", sec, 11), metric: "wf_sketch.count", value: "11", modern: true},
		{name: "opentelemetry", single: "/opentelemetry/v1/metrics", cluster: "/opentelemetry/v1/metrics", ctype: "application/x-protobuf",
			body: otelGauge("wf_otel", now, 12), metric: "wf_otel", value: "12", modern: true},
		{name: "newrelic_write", single: "/newrelic/infra/v2/metrics/events/bulk", cluster: "/newrelic/infra/v2/metrics/events/bulk", ctype: "application/json",
			body:   fmt.Sprintf(`[{"EntityID":1,"IsAgent":true,"Events":[{"eventType":"SystemSample","timestamp":%d,"wf_newrelic":13,"team":"ops"}]}]`, sec),
			metric: "wf_newrelic", value: "13", modern: true},
	}
}

// writeTarget is a real backend behind a gateway with -enable.auth.
type writeTarget struct {
	gw     *gw
	prefix string // "/insert/<tenant>" for the cluster shape, "" for the single-node one
	modern bool   // ingests the modern formats
	flush  func(t testing.TB)
	export func(t testing.TB, metric string) string // straight from the backend, in the token's tenant
	// viaToken is a write token with the extra_labels team=dev and via=<via>, for vmagent's remote_write.
	viaToken func(via string) string
}

// checkWriteFormats sends every format t ingests with write (a token whose extra_labels are team=dev) and
// checks what the backend stored; read (team=dev, read mode) must see each series through the gateway.
func checkWriteFormats(t *testing.T, wt writeTarget, write, read string, native []byte) {
	t.Helper()
	formats := writeFormats(time.Now())
	sent := 0
	for _, f := range formats {
		if f.modern && !wt.modern {
			continue
		}
		path := f.single
		if wt.prefix != "" {
			path = wt.prefix + f.cluster
		}
		hdr := append(bearer(write), "Content-Type", f.ctype)
		if f.cenc != "" {
			hdr = append(hdr, "Content-Encoding", f.cenc)
		}
		code, _, body := do(t, http.MethodPost, wt.gw.URL+path, strings.NewReader(f.body), hdr...)
		if code/100 != 2 {
			t.Errorf("%s: POST %s: %d %s", f.name, path, code, body)
			continue
		}
		sent++
	}
	if native != nil {
		path := "/api/v1/import/native"
		if wt.prefix != "" {
			path = wt.prefix + "/prometheus/api/v1/import/native"
		}
		code, _, body := do(t, http.MethodPost, wt.gw.URL+path, strings.NewReader(string(native)), append(bearer(write), "Content-Type", "application/octet-stream")...)
		if code/100 != 2 {
			t.Errorf("import_native: POST %s: %d %s", path, code, body)
		}
		formats = append(formats, writeFormat{name: "import_native", metric: "wf_native", value: "5"})
		sent++
	}
	// Prometheus remote_write (snappy protobuf) comes from vmagent, a real client, on each remote_write path with
	// its own token, whose via label tells which path stored the series.
	paths := [][2]string{{"write", "/api/v1/write"}, {"push", "/api/v1/push"}, {"bare", "/prometheus/api/v1/write"}}
	if wt.prefix != "" {
		paths = [][2]string{{"write", wt.prefix + "/prometheus/api/v1/write"}, {"push", wt.prefix + "/prometheus/api/v1/push"}, {"bare", wt.prefix + "/prometheus"}}
	}
	var flags []string
	for _, p := range paths {
		flags = append(flags, "-remoteWrite.url="+wt.gw.URL+p[1], "-remoteWrite.bearerToken="+wt.viaToken(p[0]))
	}
	agent := startClient(t, "/usr/bin/vmagent", append(flags, "-remoteWrite.tmpDataPath="+t.TempDir(), "-remoteWrite.flushInterval=100ms")...)
	if code, _, body := do(t, http.MethodPost, agent+"/api/v1/import/prometheus", strings.NewReader(`wf_remote{team="ops"} 14`+"\n"), "Content-Type", "text/plain"); code/100 != 2 {
		t.Fatalf("write into vmagent: %d %s", code, body)
	}
	sent += len(paths)
	vmtest.Eventually(t, func() (bool, string) {
		wt.flush(t)
		body := wt.export(t, "wf_remote")
		for _, p := range paths {
			if !strings.Contains(body, `"via":"`+p[0]+`"`) {
				return false, fmt.Sprintf("remote_write through %s: wf_remote stored as %s", p[1], body)
			}
		}
		return strings.Count(body, `"team":"dev"`) == len(paths) && !strings.Contains(body, `"ops"`), "remote_write: wf_remote stored as " + body
	})
	checked := len(paths)
	for _, f := range formats {
		if f.modern && !wt.modern {
			continue
		}
		vmtest.Eventually(t, func() (bool, string) {
			wt.flush(t)
			body := wt.export(t, f.metric)
			return strings.Contains(body, `"team":"dev"`) && strings.Contains(body, `"values":[`+f.value) && !strings.Contains(body, `"ops"`),
				fmt.Sprintf("%s: %s stored as %s, want team=dev and value %s", f.name, f.metric, body, f.value)
		})
		sel := url.QueryEscape(fmt.Sprintf(`{__name__=%q}`, f.metric))
		q := wt.gw.URL + "/api/v1/query?query=" + sel
		if wt.prefix != "" {
			q = wt.gw.URL + strings.Replace(wt.prefix, "/insert/", "/select/", 1) + "/prometheus/api/v1/query?query=" + sel
		}
		// Export may show a new series a moment before a query does (1.79.5 registers it per day in the background).
		vmtest.Eventually(t, func() (bool, string) {
			code, _, body := do(t, http.MethodGet, q, nil, bearer(read)...)
			return code == 200 && strings.Contains(body, `"team":"dev"`) && strings.Contains(body, `"`+f.value+`"]`),
				fmt.Sprintf("%s: the read token does not see %s through the gateway: %d %s", f.name, f.metric, code, body)
		})
		checked++
	}
	t.Logf("%d writes sent, %d series read back with the token's team=\"dev\"", sent, checked)
}

// Minimal protobuf encoding for the OpenTelemetry and Datadog sketch bodies: the repository depends on no
// protobuf library, and these two messages need only a few fields.
func pbTag(b []byte, field, wire int) []byte { return binary.AppendUvarint(b, uint64(field<<3|wire)) }
func pbBytes(b []byte, field int, v []byte) []byte {
	b = pbTag(b, field, 2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
func pbVarint(b []byte, field int, v uint64) []byte {
	return binary.AppendUvarint(pbTag(b, field, 0), v)
}
func pbFixed64(b []byte, field int, v uint64) []byte {
	return binary.LittleEndian.AppendUint64(pbTag(b, field, 1), v)
}

// otelGauge is an OTLP ExportMetricsServiceRequest with one gauge point whose attribute says team="ops".
func otelGauge(name string, now time.Time, v float64) string {
	attr := pbBytes(pbBytes(nil, 1, []byte("team")), 2, pbBytes(nil, 1, []byte("ops")))                     // KeyValue{key, AnyValue{string}}
	point := pbFixed64(pbFixed64(pbBytes(nil, 7, attr), 3, uint64(now.UnixNano())), 4, math.Float64bits(v)) // NumberDataPoint
	metric := pbBytes(pbBytes(nil, 1, []byte(name)), 5, pbBytes(nil, 1, point))                             // Metric{name, Gauge{points}}
	rm := pbBytes(nil, 2, pbBytes(nil, 2, metric))                                                          // ResourceMetrics{ScopeMetrics{metrics}}
	return string(pbBytes(nil, 1, rm))
}

// ddSketch is a Datadog SketchPayload with one sketch of count cnt, tagged team:ops.
func ddSketch(name string, sec int64, cnt int64) string {
	dog := pbVarint(pbVarint(nil, 1, uint64(sec)), 2, uint64(cnt))
	dog = pbFixed64(pbFixed64(pbFixed64(dog, 3, math.Float64bits(1)), 4, math.Float64bits(2)), 6, math.Float64bits(float64(cnt)*1.5))
	sk := pbBytes(pbBytes(pbBytes(nil, 1, []byte(name)), 4, []byte("team:ops")), 7, dog)
	return string(pbBytes(nil, 1, sk))
}

// singleTarget is a single-node VictoriaMetrics behind a gateway with -enable.auth, for checkWriteFormats.
func singleTarget(t *testing.T, vm *vmtest.VM, modern bool) (writeTarget, string, string, []byte) {
	t.Helper()
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	read := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	// A native body is what a real VictoriaMetrics exports: seed a series straight into the backend, export it.
	native := exportNative(t, vm.URL+"/api/v1/import/prometheus", vm.URL+"/api/v1/export/native", vm.Flush)
	wt := writeTarget{gw: g, modern: modern, flush: vm.Flush, export: func(t testing.TB, metric string) string {
		_, _, body := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(fmt.Sprintf(`{__name__=%q,team!="seed"}`, metric)), nil)
		return body
	}, viaToken: func(via string) string { return mint(t, priv, "-mode=write", "-extraLabels=team=dev,via="+via) }}
	return wt, write, read, native
}

// exportNative writes wf_native{team="seed"} 5 at importURL and returns its native export from exportURL.
func exportNative(t *testing.T, importURL, exportURL string, flush func(testing.TB)) []byte {
	t.Helper()
	if code, _, body := do(t, http.MethodPost, importURL, strings.NewReader(`wf_native{team="seed"} 5`+"\n"), "Content-Type", "text/plain"); code/100 != 2 {
		t.Fatalf("seed for the native export: %d %s", code, body)
	}
	var native string
	vmtest.Eventually(t, func() (bool, string) {
		flush(t)
		code, _, body := do(t, http.MethodGet, exportURL+"?match[]="+url.QueryEscape(`wf_native{team="seed"}`), nil)
		native = body
		return code == 200 && strings.Contains(body, "wf_native"), fmt.Sprintf("native export: %d, %d bytes", code, len(body))
	})
	return []byte(native)
}

// TestWriteFormatsCarryTheTokensLabels: every write format each single-node release ingests, through the gateway
// into Debian's 1.79.5 and into the current release, stored with the token's label.
func TestWriteFormatsCarryTheTokensLabels(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  func(testing.TB, ...string) *vmtest.VM
		modern bool
	}{
		{"debian-1.79.5", vmtest.Start, false},
		{"current-" + vmtest.CurrentVersion, vmtest.StartCurrent, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := tc.start(t)
			wt, write, read, native := singleTarget(t, vm, tc.modern)
			checkWriteFormats(t, wt, write, read, native)
		})
	}
}

// TestModernFormatsRefusedByDebian: what 1.79.5 lacks is answered by the backend, through the gateway, as an
// error and nothing is stored: the "modern" marks above are facts, not guesses.
func TestModernFormatsRefusedByDebian(t *testing.T) {
	vm := vmtest.Start(t)
	wt, write, _, _ := singleTarget(t, vm, false)
	for _, f := range writeFormats(time.Now()) {
		if !f.modern {
			continue
		}
		code, _, body := do(t, http.MethodPost, wt.gw.URL+f.single, strings.NewReader(f.body), append(bearer(write), "Content-Type", f.ctype)...)
		if code/100 == 2 {
			t.Errorf("%s: Debian's 1.79.5 accepted it (%d %s): drop its modern mark", f.name, code, body)
		}
	}
}
