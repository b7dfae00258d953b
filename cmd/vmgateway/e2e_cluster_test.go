package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 5: in cluster mode every request lands in the token's tenant and nowhere else. Two recording upstreams
// stand for vmselect and vminsert, so these tests assert the exact request forwarded, and a read can never be seen
// at the write upstream or the other way round; e2e_realcluster_test.go sends the same requests to a real cluster
// and checks what it stored and answered. The tables read like prom-label-proxy's: request in, forwarded request
// out.

// clusterKey signs the tokens of these tests; P-256 keeps key generation cheap.
var clusterKey = sync.OnceValue(func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

// clusterPublicKeyFile writes the public half of clusterKey as PKIX PEM for -auth.publicKeyFiles.
func clusterPublicKeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwt-public.pem")
	writePublicKey(t, path, &clusterKey().PublicKey)
	return path
}

// clusterToken signs a token whose vm_access claim is va: an auth.VMAccess, or raw JSON for shapes VMAccess
// cannot produce (no tenant_id, out-of-range numbers).
func clusterToken(t testing.TB, va any) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "e2e-cluster", "exp": time.Now().Add(time.Hour).Unix(), "vm_access": va}
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(clusterKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// clusterGW is a gateway with -enable.auth in front of two recorders: sel as -read.url, ins as -write.url.
type clusterGW struct {
	g        *gw
	sel, ins *vmtest.Recorder
}

func startClusterGW(t *testing.T, cluster bool) *clusterGW {
	t.Helper()
	c := &clusterGW{sel: vmtest.NewRecorder(t), ins: vmtest.NewRecorder(t)}
	c.g = startGateway(t, "-read.url="+c.sel.URL, "-write.url="+c.ins.URL, fmt.Sprintf("-clusterMode=%t", cluster),
		"-enable.auth", "-auth.publicKeyFiles="+clusterPublicKeyFile(t))
	return c
}

// clusterReq is one client request. Every request also carries hostile AccountID, ProjectID, X-Forwarded-For and Host
// headers, which must never matter.
type clusterReq struct {
	method, path string // path is below the gateway's root and may carry a raw query
	ctype, cenc  string
	body         string
	header       []string
}

// clusterHostileHeaders would pick another tenant or fake the client's address if the gateway passed them on.
var clusterHostileHeaders = []string{"AccountID", "16", "ProjectID", "7", "X-Forwarded-For", "6.6.6.6"}

// send sends r with the token (when not empty) and returns the status and body. It does not use do() because
// it must set Host, which Go's client takes from Request.Host only.
func (c *clusterGW) send(t *testing.T, token string, r clusterReq) (int, string) {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, c.g.URL+r.path, body)
	if err != nil {
		t.Fatalf("bad request %s %s: %s", r.method, r.path, err)
	}
	req.Host = "evil.example"
	// A fixed id: a generated one, echoed in error answers, could hold the digits the tests look for in them.
	req.Header.Set("X-Request-Id", "e2e-cluster")
	h := append(append([]string(nil), clusterHostileHeaders...), r.header...)
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if r.cenc != "" {
		req.Header.Set("Content-Encoding", r.cenc)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %s", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// clusterFwd is the one request an upstream must have received.
type clusterFwd struct {
	insert        bool   // vminsert (-write.url) rather than vmselect (-read.url)
	method        string // the client's method when empty
	path, rawPath string // rawPath: the escaped path on the wire when it differs from path
	query         url.Values
	body          string
	ctype, cenc   string
}

// expectForward checks that exactly want reached exactly one upstream and nothing reached the other.
func (c *clusterGW) expectForward(t *testing.T, name, token string, code int, respBody string, want clusterFwd) {
	t.Helper()
	sel, ins := c.sel.Requests(), c.ins.Requests()
	got, other, up, otherName := sel, ins, c.sel, "vminsert"
	if want.insert {
		got, other, up, otherName = ins, sel, c.ins, "vmselect"
	}
	if code/100 != 2 {
		t.Errorf("%s: status %d, want it forwarded: %s", name, code, respBody)
		return
	}
	if len(other) != 0 {
		t.Errorf("%s: %d request(s) reached %s, which must see none: %s %s", name, len(other), otherName, other[0].Method, other[0].RawPath)
	}
	if len(got) != 1 {
		t.Errorf("%s: %d requests forwarded, want 1: %+v", name, len(got), got)
		return
	}
	r := got[0]
	rawPath := want.rawPath
	if rawPath == "" {
		rawPath = want.path
	}
	if r.Method != want.method || r.Path != want.path || r.RawPath != rawPath {
		t.Errorf("%s: forwarded %s %s (raw %s), want %s %s (raw %s)", name, r.Method, r.Path, r.RawPath, want.method, want.path, rawPath)
	}
	if !sameArgs(r.Query, want.query) {
		t.Errorf("%s: forwarded query %v (%s), want %v", name, r.Query, r.RawQuery, want.query)
	}
	if r.Body != want.body {
		t.Errorf("%s: forwarded body %q, want %q", name, r.Body, want.body)
	}
	checkClusterHeaders(t, name, up, r, token, want.ctype, want.cenc)
}

// checkClusterHeaders: the upstream's Host, X-Forwarded-For from the connection, no token, no tenant headers,
// and the client's Content-Type and Content-Encoding.
func checkClusterHeaders(t *testing.T, name string, up *vmtest.Recorder, r vmtest.Recorded, token, ctype, cenc string) {
	t.Helper()
	if host := strings.TrimPrefix(up.URL, "http://"); r.Host != host {
		t.Errorf("%s: Host %q, want the upstream's %q", name, r.Host, host)
	}
	for _, h := range []string{"Authorization", "AccountID", "ProjectID"} {
		if v, ok := r.Header[http.CanonicalHeaderKey(h)]; ok {
			t.Errorf("%s: header %s: %q reached the upstream", name, h, v)
		}
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
		t.Errorf("%s: X-Forwarded-For %q, want the connection's 127.0.0.1 only", name, xff)
	}
	if got := r.Header.Get("Content-Type"); got != ctype {
		t.Errorf("%s: Content-Type %q, want %q", name, got, ctype)
	}
	if got := r.Header.Get("Content-Encoding"); got != cenc {
		t.Errorf("%s: Content-Encoding %q, want %q", name, got, cenc)
	}
	if token != "" {
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, token) || strings.Contains(v, strings.SplitN(token, ".", 3)[2]) {
					t.Errorf("%s: the token reached the upstream in header %s", name, k)
				}
			}
		}
	}
}

// expectRefused checks a Prometheus-style JSON error with the status and a message containing msg, and that
// neither upstream saw anything.
func (c *clusterGW) expectRefused(t *testing.T, name string, code int, body string, wantCode int, msg string) {
	t.Helper()
	sel, ins := c.sel.Requests(), c.ins.Requests()
	if n := len(sel) + len(ins); n != 0 {
		t.Errorf("%s: refused requests must reach no upstream; vmselect saw %+v, vminsert saw %+v", name, sel, ins)
	}
	checkClusterError(t, name, code, body, wantCode, msg)
}

func checkClusterError(t *testing.T, name string, code int, body string, wantCode int, msg string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: status %d, want %d: %s", name, code, wantCode, body)
		return
	}
	var e struct{ Status, ErrorType, Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Status != "error" {
		t.Errorf("%s: want a Prometheus-style JSON error, got %q", name, body)
		return
	}
	wantType := map[int]string{400: "bad_data", 401: "unauthorized", 403: "forbidden", 404: "not_found", 503: "unavailable"}[wantCode]
	if e.ErrorType != wantType {
		t.Errorf("%s: errorType %q, want %q", name, e.ErrorType, wantType)
	}
	if !strings.Contains(e.Error, msg) {
		t.Errorf("%s: error %q does not mention %q", name, e.Error, msg)
	}
}

// sameArgs compares query args, treating nil and empty alike.
func sameArgs(a, b url.Values) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// clusterAPI is one documented API. The client sends the same args and body in both shapes; an unrestricted token's
// request reaches the upstream with exactly those args and that body, on the gateway's own path.
type clusterAPI struct {
	name  string
	kind  route.Kind
	unenf bool // cannot be limited to a token's series: refused for restricted tokens
	// refused is what a cluster-mode gateway refuses every token with (403), when it does
	refused string
	single  string // client path in the single-node shape
	// cluster is the client path in the cluster shape, with {t} for the tenant; empty when there is none.
	cluster string
	// up is the upstream path, with {t} for the token's tenant as a:p; upRaw its escaped form when it differs.
	up, upRaw   string
	method      string
	args        url.Values
	ctype, cenc string
	body        string
}

// insert says whether the API goes to -write.url; Graphite tag registration is a write that vmselect serves.
func (a clusterAPI) insert() bool { return strings.HasPrefix(a.up, "/insert/") }

func qv(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

const (
	clusterFormCT     = "application/x-www-form-urlencoded"
	clusterProtobufCT = "application/x-protobuf"
	// clusterBinaryBody has bytes a text-minded proxy would mangle: NUL, CR, invalid UTF-8.
	clusterBinaryBody = "\x00\x01\xff\xfe\r\n\x80remote\x00write"
)

// clusterAPIs are the suffixes of ../../shared/reference/cluster-multitenancy-and-urls.md (URL format), with
// the single-node paths that mean the same.
var clusterAPIs = []clusterAPI{
	// vminsert: /insert/<tenant>/<suffix>
	{name: "remote_write", kind: route.Write, single: "/api/v1/write", cluster: "/insert/{t}/prometheus/api/v1/write",
		up: "/insert/{t}/prometheus/api/v1/write", method: "POST", ctype: clusterProtobufCT, cenc: "snappy", body: clusterBinaryBody},
	{name: "remote_write bare prometheus", kind: route.Write, single: "/prometheus/api/v1/write", cluster: "/insert/{t}/prometheus",
		up: "/insert/{t}/prometheus/api/v1/write", method: "POST", ctype: clusterProtobufCT, cenc: "snappy", body: clusterBinaryBody},
	{name: "remote_write push alias", kind: route.Write, single: "/api/v1/push", cluster: "/insert/{t}/prometheus/api/v1/push",
		up: "/insert/{t}/prometheus/api/v1/write", method: "POST", ctype: clusterProtobufCT, cenc: "snappy", body: clusterBinaryBody},
	{name: "import", kind: route.Write, single: "/api/v1/import", cluster: "/insert/{t}/prometheus/api/v1/import",
		up: "/insert/{t}/prometheus/api/v1/import", method: "POST", ctype: "application/json",
		body: `{"metric":{"__name__":"up","job":"x"},"values":[1],"timestamps":[1700000000000]}` + "\n"},
	{name: "import_native", kind: route.Write, single: "/prometheus/api/v1/import/native", cluster: "/insert/{t}/prometheus/api/v1/import/native",
		up: "/insert/{t}/prometheus/api/v1/import/native", method: "POST", ctype: "application/octet-stream", body: clusterBinaryBody},
	{name: "import_csv", kind: route.Write, single: "/api/v1/import/csv", cluster: "/insert/{t}/prometheus/api/v1/import/csv",
		up: "/insert/{t}/prometheus/api/v1/import/csv", method: "POST", ctype: "text/csv",
		args: qv("format", "2:metric:ask,3:metric:bid,1:label:ticker"), body: "GOOG,1.23,4.56\nMSFT,3.21,1.67\n"},
	{name: "import_prometheus", kind: route.Write, single: "/api/v1/import/prometheus", cluster: "/insert/{t}/prometheus/api/v1/import/prometheus",
		up: "/insert/{t}/prometheus/api/v1/import/prometheus", method: "POST", ctype: "text/plain",
		args: qv("timestamp", "1700000000000"), body: "foo{bar=\"baz\"} 1\n# HELP x y\nbar 2\n"},
	{name: "import_prometheus pushgateway", kind: route.Write, single: "/api/v1/import/prometheus/metrics/job/j1/instance/i1",
		cluster: "/insert/{t}/prometheus/api/v1/import/prometheus/metrics/job/j1/instance/i1",
		up:      "/insert/{t}/prometheus/api/v1/import/prometheus/metrics/job/j1/instance/i1", method: "POST", ctype: "text/plain", body: "foo 1\n"},
	{name: "opentelemetry", kind: route.Write, single: "/opentelemetry/v1/metrics", cluster: "/insert/{t}/opentelemetry/v1/metrics",
		up: "/insert/{t}/opentelemetry/v1/metrics", method: "POST", ctype: clusterProtobufCT, cenc: "gzip", body: clusterBinaryBody},
	{name: "datadog_series v1", kind: route.Write, single: "/datadog/api/v1/series", cluster: "/insert/{t}/datadog/api/v1/series",
		up: "/insert/{t}/datadog/api/v1/series", method: "POST", ctype: "application/json",
		body: `{"series":[{"metric":"system.load.1","points":[[1700000000,0.7]]}]}`},
	{name: "datadog_series v2", kind: route.Write, single: "/datadog/api/v2/series", cluster: "/insert/{t}/datadog/api/v2/series",
		up: "/insert/{t}/datadog/api/v2/series", method: "POST", ctype: "application/json", cenc: "deflate", body: clusterBinaryBody},
	{name: "datadog_sketches", kind: route.Write, single: "/datadog/api/beta/sketches", cluster: "/insert/{t}/datadog/api/beta/sketches",
		up: "/insert/{t}/datadog/api/beta/sketches", method: "POST", ctype: clusterProtobufCT, body: clusterBinaryBody},
	{name: "influx_write", kind: route.Write, single: "/influx/write", cluster: "/insert/{t}/influx/write",
		up: "/insert/{t}/influx/write", method: "POST", ctype: "text/plain", args: qv("db", "telegraf", "precision", "s"),
		body: "cpu,host=a usage=1 1700000000\nmem,host=a free=2 1700000000\n"},
	{name: "influx_write /write alias", kind: route.Write, single: "/write", cluster: "/insert/{t}/influx/write",
		up: "/insert/{t}/influx/write", method: "POST", ctype: "text/plain", args: qv("db", "x"), body: "cpu usage=1\n"},
	{name: "influx_v2_write", kind: route.Write, single: "/influx/api/v2/write", cluster: "/insert/{t}/influx/api/v2/write",
		up: "/insert/{t}/influx/api/v2/write", method: "POST", ctype: "text/plain", args: qv("bucket", "b", "org", "o"), body: "cpu usage=1\n"},
	{name: "newrelic_write", kind: route.Write, single: "/newrelic/infra/v2/metrics/events/bulk", cluster: "/insert/{t}/newrelic/infra/v2/metrics/events/bulk",
		up: "/insert/{t}/newrelic/infra/v2/metrics/events/bulk", method: "POST", ctype: "application/json", cenc: "gzip", body: clusterBinaryBody},
	{name: "opentsdb_put", kind: route.Write, single: "/opentsdb/api/put", cluster: "/insert/{t}/opentsdb/api/put",
		up: "/insert/{t}/opentsdb/api/put", method: "POST", ctype: "application/json",
		body: `[{"metric":"sys.cpu","value":1,"timestamp":1700000000,"tags":{"host":"a"}}]`},
	{name: "opentsdb_put /api/put alias", kind: route.Write, single: "/api/put", cluster: "/insert/{t}/opentsdb/api/put",
		up: "/insert/{t}/opentsdb/api/put", method: "POST", ctype: "application/json", body: `{"metric":"m","value":1,"tags":{"a":"b"}}`},

	// vmselect: /select/<tenant>/prometheus/<suffix>
	{name: "query", kind: route.Read, single: "/api/v1/query", cluster: "/select/{t}/prometheus/api/v1/query",
		up: "/select/{t}/prometheus/api/v1/query", method: "GET", args: qv("query", `sum(rate(http_requests_total{job="api"}[5m])) by (code)`, "time", "1700000000")},
	{name: "query POST form", kind: route.Read, single: "/prometheus/api/v1/query", cluster: "/select/{t}/prometheus/api/v1/query",
		up: "/select/{t}/prometheus/api/v1/query", method: "POST", ctype: clusterFormCT, args: qv("nocache", "1"),
		body: "query=up%7Bjob%3D%22x%22%7D&time=1700000000"},
	{name: "query_range", kind: route.Read, single: "/api/v1/query_range", cluster: "/select/{t}/prometheus/api/v1/query_range",
		up: "/select/{t}/prometheus/api/v1/query_range", method: "GET", args: qv("query", "rate(up[1m])", "start", "1700000000", "end", "1700003600", "step", "60s")},
	{name: "series", kind: route.Read, single: "/prometheus/api/v1/series", cluster: "/select/{t}/prometheus/api/v1/series",
		up: "/select/{t}/prometheus/api/v1/series", method: "GET", args: qv("match[]", `up{job="x"}`, "match[]", `{__name__=~"node_.*"}`, "start", "1700000000")},
	{name: "labels", kind: route.Read, single: "/api/v1/labels", cluster: "/select/{t}/prometheus/api/v1/labels",
		up: "/select/{t}/prometheus/api/v1/labels", method: "GET", args: qv("match[]", "up")},
	{name: "label values", kind: route.Read, single: "/api/v1/label/job/values", cluster: "/select/{t}/prometheus/api/v1/label/job/values",
		up: "/select/{t}/prometheus/api/v1/label/job/values", method: "GET", args: qv("match[]", "up", "limit", "10")},
	{name: "label values __name__", kind: route.Read, single: "/prometheus/api/v1/label/__name__/values", cluster: "/select/{t}/prometheus/api/v1/label/__name__/values",
		up: "/select/{t}/prometheus/api/v1/label/__name__/values", method: "GET"},
	{name: "label values escaped name", kind: route.Read, single: "/api/v1/label/a%20b%3F/values", cluster: "/select/{t}/prometheus/api/v1/label/a%20b%3F/values",
		up: "/select/{t}/prometheus/api/v1/label/a b?/values", upRaw: "/select/{t}/prometheus/api/v1/label/a%20b%3F/values", method: "GET"},
	{name: "federate", kind: route.Read, single: "/federate", cluster: "/select/{t}/prometheus/federate",
		up: "/select/{t}/prometheus/federate", method: "GET", args: qv("match[]", `{job="x"}`)},
	{name: "export", kind: route.Read, single: "/api/v1/export", cluster: "/select/{t}/prometheus/api/v1/export",
		up: "/select/{t}/prometheus/api/v1/export", method: "GET", args: qv("match[]", "up", "reduce_mem_usage", "1")},
	{name: "export_native", kind: route.Read, single: "/prometheus/api/v1/export/native", cluster: "/select/{t}/prometheus/api/v1/export/native",
		up: "/select/{t}/prometheus/api/v1/export/native", method: "GET", args: qv("match[]", `{__name__!=""}`)},
	{name: "export_csv", kind: route.Read, single: "/api/v1/export/csv", cluster: "/select/{t}/prometheus/api/v1/export/csv",
		up: "/select/{t}/prometheus/api/v1/export/csv", method: "GET", args: qv("format", "__name__,__value__,__timestamp__:unix_s", "match[]", "up")},
	{name: "series_count", kind: route.Read, unenf: true, single: "/api/v1/series/count", cluster: "/select/{t}/prometheus/api/v1/series/count",
		up: "/select/{t}/prometheus/api/v1/series/count", method: "GET"},
	{name: "status_tsdb", kind: route.Read, single: "/api/v1/status/tsdb", cluster: "/select/{t}/prometheus/api/v1/status/tsdb",
		up: "/select/{t}/prometheus/api/v1/status/tsdb", method: "GET", args: qv("topN", "5", "date", "2024-01-02")},
	{name: "status_active_queries", kind: route.Read, unenf: true, single: "/api/v1/status/active_queries", cluster: "/select/{t}/prometheus/api/v1/status/active_queries",
		up: "/select/{t}/prometheus/api/v1/status/active_queries", method: "GET"},
	// vmselect's list of recent queries is one for all tenants: how a tenant's entries leave it counts the others'.
	{name: "status_top_queries", kind: route.Read, unenf: true, refused: "vmselect keeps one list of recent queries for every tenant",
		single: "/prometheus/api/v1/status/top_queries", cluster: "/select/{t}/prometheus/api/v1/status/top_queries",
		up: "/select/{t}/prometheus/api/v1/status/top_queries", method: "GET", args: qv("topN", "3", "maxLifetime", "1h")},
	// vmselect passes them to its one vmalert (-vmalert.proxyURL) without the tenant: every tenant's rules and alerts.
	{name: "rules", kind: route.Read, unenf: true, refused: "so the answer holds every tenant's rules and alerts",
		single: "/api/v1/rules", cluster: "/select/{t}/prometheus/api/v1/rules",
		up: "/select/{t}/prometheus/api/v1/rules", method: "GET", args: qv("type", "alert")},
	{name: "alerts", kind: route.Read, unenf: true, refused: "so the answer holds every tenant's rules and alerts",
		single: "/prometheus/api/v1/alerts", cluster: "/select/{t}/prometheus/api/v1/alerts",
		up: "/select/{t}/prometheus/api/v1/alerts", method: "GET"},
	{name: "metadata", kind: route.Read, unenf: true, single: "/api/v1/metadata", cluster: "/select/{t}/prometheus/api/v1/metadata",
		up: "/select/{t}/prometheus/api/v1/metadata", method: "GET", args: qv("metric", "up", "limit", "1")},
	// Its relabel_configs' `if` selectors are MetricsQL that VictoriaMetrics parses unbounded.
	{name: "metric_relabel_debug", kind: route.Read, unenf: true, refused: "parses the `if` selectors of its relabel_configs", single: "/metric-relabel-debug", cluster: "/select/{t}/prometheus/metric-relabel-debug",
		up: "/select/{t}/prometheus/metric-relabel-debug", method: "GET", args: qv("metric", `up{a="b"}`, "relabel_configs", "- action: drop")},

	// vmselect: /select/<tenant>/graphite/<suffix>; none can be limited to a token's series.
	{name: "graphite render", kind: route.Read, unenf: true, single: "/graphite/render", cluster: "/select/{t}/graphite/render",
		up: "/select/{t}/graphite/render", method: "GET", args: qv("target", "sumSeries(foo.*.bar)", "format", "json", "from", "-1h")},
	{name: "graphite render bare", kind: route.Read, unenf: true, single: "/render", cluster: "/select/{t}/graphite/render",
		up: "/select/{t}/graphite/render", method: "POST", ctype: clusterFormCT, body: "target=foo.bar&format=json"},
	{name: "graphite metrics/find", kind: route.Read, unenf: true, single: "/graphite/metrics/find", cluster: "/select/{t}/graphite/metrics/find",
		up: "/select/{t}/graphite/metrics/find", method: "GET", args: qv("query", "foo.*")},
	{name: "graphite metrics/expand", kind: route.Read, unenf: true, single: "/metrics/expand", cluster: "/select/{t}/graphite/metrics/expand",
		up: "/select/{t}/graphite/metrics/expand", method: "GET", args: qv("query", "foo.*", "leavesOnly", "1")},
	{name: "graphite metrics/index.json", kind: route.Read, unenf: true, single: "/graphite/metrics/index.json", cluster: "/select/{t}/graphite/metrics/index.json",
		up: "/select/{t}/graphite/metrics/index.json", method: "GET"},
	{name: "graphite tags/tagSeries", kind: route.Write, unenf: true, single: "/graphite/tags/tagSeries", cluster: "/select/{t}/graphite/tags/tagSeries",
		up: "/select/{t}/graphite/tags/tagSeries", method: "POST", ctype: clusterFormCT, body: "path=disk.used%3Bdc%3Ddc1%3Bserver%3Dweb01"},
	{name: "graphite tags/tagMultiSeries", kind: route.Write, unenf: true, single: "/graphite/tags/tagMultiSeries", cluster: "/select/{t}/graphite/tags/tagMultiSeries",
		up: "/select/{t}/graphite/tags/tagMultiSeries", method: "POST", ctype: clusterFormCT, body: "path=a%3Bx%3D1&path=b%3Bx%3D2"},
	{name: "graphite tags", kind: route.Read, unenf: true, single: "/tags", cluster: "/select/{t}/graphite/tags",
		up: "/select/{t}/graphite/tags", method: "GET", args: qv("filter", "d.*", "limit", "5")},
	{name: "graphite tags/<tag_name>", kind: route.Read, unenf: true, single: "/graphite/tags/dc", cluster: "/select/{t}/graphite/tags/dc",
		up: "/select/{t}/graphite/tags/dc", method: "GET", args: qv("filter", "dc1")},
	{name: "graphite tags/findSeries", kind: route.Read, unenf: true, single: "/graphite/tags/findSeries", cluster: "/select/{t}/graphite/tags/findSeries",
		up: "/select/{t}/graphite/tags/findSeries", method: "GET", args: qv("expr", "dc=dc1", "expr", "server=~web.*")},
	{name: "graphite tags/autoComplete/tags", kind: route.Read, unenf: true, single: "/graphite/tags/autoComplete/tags", cluster: "/select/{t}/graphite/tags/autoComplete/tags",
		up: "/select/{t}/graphite/tags/autoComplete/tags", method: "GET", args: qv("tagPrefix", "d", "expr", "server=web01")},
	{name: "graphite tags/autoComplete/values", kind: route.Read, unenf: true, single: "/graphite/tags/autoComplete/values", cluster: "/select/{t}/graphite/tags/autoComplete/values",
		up: "/select/{t}/graphite/tags/autoComplete/values", method: "GET", args: qv("tag", "dc", "valuePrefix", "dc")},
	{name: "graphite tags/delSeries", kind: route.Admin, unenf: true, single: "/graphite/tags/delSeries", cluster: "/select/{t}/graphite/tags/delSeries",
		up: "/select/{t}/graphite/tags/delSeries", method: "POST", ctype: clusterFormCT, body: "path=disk.used%3Bdc%3Ddc1"},

	// vmselect: /select/<tenant>/vmui/; the trailing slash is kept, vmui answers /vmui with a redirect.
	{name: "vmui", kind: route.Read, single: "/vmui", cluster: "/select/{t}/vmui", up: "/select/{t}/vmui", method: "GET"},
	{name: "vmui/", kind: route.Read, single: "/vmui/", cluster: "/select/{t}/vmui/", up: "/select/{t}/vmui/", method: "GET"},
	{name: "vmui asset", kind: route.Read, single: "/vmui/static/js/main.3f5a1c.js", cluster: "/select/{t}/vmui/static/js/main.3f5a1c.js",
		up: "/select/{t}/vmui/static/js/main.3f5a1c.js", method: "GET"},
	{name: "vmui below prometheus", kind: route.Read, single: "/prometheus/vmui/", cluster: "/select/{t}/prometheus/vmui/",
		up: "/select/{t}/vmui/", method: "GET", args: qv("g0.expr", "up")},

	// vmselect: /delete/<tenant>/prometheus/api/v1/admin/tsdb/delete_series
	{name: "delete_series", kind: route.Admin, single: "/api/v1/admin/tsdb/delete_series", cluster: "/delete/{t}/prometheus/api/v1/admin/tsdb/delete_series",
		up: "/delete/{t}/prometheus/api/v1/admin/tsdb/delete_series", method: "GET", args: qv("match[]", `up{job="x"}`)},
	{name: "delete_series POST form", kind: route.Admin, single: "/prometheus/api/v1/admin/tsdb/delete_series", cluster: "/delete/{t}/prometheus/api/v1/admin/tsdb/delete_series",
		up: "/delete/{t}/prometheus/api/v1/admin/tsdb/delete_series", method: "POST", ctype: clusterFormCT, body: "match%5B%5D=up%7Bjob%3D%22x%22%7D"},

	// vmselect: /admin/tenants lists tenants outside any tenant; it has no cluster-shaped client path, and it tells
	// every tenant's ID, so a read-only token may not call it.
	{name: "admin_tenants", kind: route.Admin, unenf: true, single: "/admin/tenants", up: "/admin/tenants", method: "GET",
		args: qv("start", "1700000000", "end", "1700003600")},
}

// clusterTenant is a token's tenant and the forms a client may write it in a cluster-shaped path.
type clusterTenant struct {
	name     string
	vmAccess any // the vm_access claim of an unrestricted full-mode token
	id       tenant.ID
	forms    []string
}

var clusterTenants = []clusterTenant{
	{"token without tenant_id", json.RawMessage(`{"mode":0}`), tenant.ID{}, []string{"0", "0:0"}},
	{"0:0", auth.VMAccess{Mode: auth.ModeFull}, tenant.ID{}, []string{"0", "0:0"}},
	{"15:0", auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: 15}}, tenant.ID{AccountID: 15}, []string{"15", "15:0"}},
	{"4294967295:4294967295", auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}},
		tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}, []string{"4294967295:4294967295"}},
}

// shapes returns the client requests of a for a tenant: the single-node path, then the cluster path once per
// form of the tenant.
func (a clusterAPI) shapes(forms []string) []clusterReq {
	rq := ""
	if len(a.args) > 0 {
		rq = "?" + a.args.Encode()
	}
	out := []clusterReq{{method: a.method, path: a.single + rq, ctype: a.ctype, cenc: a.cenc, body: a.body}}
	if a.cluster != "" {
		for _, f := range forms {
			out = append(out, clusterReq{method: a.method, path: strings.ReplaceAll(a.cluster, "{t}", f) + rq, ctype: a.ctype, cenc: a.cenc, body: a.body})
		}
	}
	return out
}

// forwarded is what an unrestricted token's request for a must become upstream in tenant t.
func (a clusterAPI) forwarded(t tenant.ID) clusterFwd {
	f := clusterFwd{insert: a.insert(), method: a.method, path: strings.ReplaceAll(a.up, "{t}", t.String()),
		query: a.args, body: a.body, ctype: a.ctype, cenc: a.cenc}
	if a.upRaw != "" {
		f.rawPath = strings.ReplaceAll(a.upRaw, "{t}", t.String())
	}
	return f
}

// TestClusterEveryAPIInTheTokensTenant: every documented API, in both client shapes, for every tenant, reaches
// the right upstream at /<root>/<token tenant>/<suffix>, with the args and body unchanged and the hostile
// headers gone.
func TestClusterEveryAPIInTheTokensTenant(t *testing.T) {
	c := startClusterGW(t, true)
	// /admin/tenants names every tenant; each token learns of its own alone (15:0 holds no data here).
	const tenants = `{"status":"success","data":["0:0","16:7","4294967295:4294967295"]}`
	// /api/v1/status/active_queries numbers the queries of every tenant from one counter: the ids are dropped.
	const activeQueries = `{"status":"ok","data":[{"duration":"0.001s","id":"00000000000000A1","query":"up"}]}`
	c.sel.Respond(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/admin/tenants" {
			_, _ = io.WriteString(w, tenants)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/api/v1/status/active_queries") {
			_, _ = io.WriteString(w, activeQueries)
			return
		}
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})
	n := 0
	for _, tn := range clusterTenants {
		tok := clusterToken(t, tn.vmAccess)
		for _, a := range clusterAPIs {
			for _, r := range a.shapes(tn.forms) {
				name := fmt.Sprintf("%s [tenant %s] %s %s", a.name, tn.name, r.method, r.path)
				code, body := c.send(t, tok, r)
				if a.refused != "" {
					c.expectRefused(t, name, code, body, http.StatusForbidden, a.refused)
					n++
					continue
				}
				c.expectForward(t, name, tok, code, body, a.forwarded(tn.id))
				if want := `{"status":"success","data":["` + tn.id.String() + `"]}`; a.name == "admin_tenants" && code == 200 {
					if !strings.Contains(tenants, `"`+tn.id.String()+`"`) {
						want = `{"status":"success","data":[]}`
					}
					if body != want {
						t.Errorf("%s: the client got %s; want %s", name, body, want)
					}
				}
				if want := `{"status":"ok","data":[{"duration":"0.001s","query":"up"}]}`; a.name == "status_active_queries" && code == 200 && body != want {
					t.Errorf("%s: the client got %s; want %s", name, body, want)
				}
				n++
			}
		}
	}
	t.Logf("%d requests (%d APIs x single and cluster shapes x %d tenants) forwarded as expected", n, len(clusterAPIs), len(clusterTenants))
}

// TestClusterModesAndRestrictedTokens: a read token cannot reach vminsert or delete, a write token cannot reach
// vmselect, and a token with extra_labels cannot call what cannot be limited to its series — in both shapes.
func TestClusterModesAndRestrictedTokens(t *testing.T) {
	c := startClusterGW(t, true)
	t15 := tenant.ID{AccountID: 15}
	readTok := clusterToken(t, auth.VMAccess{Tenant: t15, Mode: auth.ModeRead})
	writeTok := clusterToken(t, auth.VMAccess{Tenant: t15, Mode: auth.ModeWrite})
	restricted := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15, ExtraLabels: map[string]string{"team": "dev"}})
	forms := []string{"15", "15:0"}
	refused, allowed := 0, 0
	for _, a := range clusterAPIs {
		for _, r := range a.shapes(forms) {
			for _, tc := range []struct {
				mode string
				tok  string
				ok   bool
			}{
				{"read", readTok, a.kind == route.Read},
				{"write", writeTok, a.kind == route.Write},
			} {
				name := fmt.Sprintf("%s token: %s %s", tc.mode, r.method, r.path)
				code, body := c.send(t, tc.tok, r)
				if tc.ok && a.refused != "" {
					c.expectRefused(t, name, code, body, http.StatusForbidden, a.refused)
					refused++
					continue
				}
				if tc.ok {
					c.expectForward(t, name, tc.tok, code, body, a.forwarded(t15))
					allowed++
					continue
				}
				c.expectRefused(t, name, code, body, http.StatusForbidden, fmt.Sprintf("mode %q does not allow %s API", tc.mode, a.kind))
				refused++
			}
			if a.unenf {
				name := fmt.Sprintf("restricted token: %s %s", r.method, r.path)
				code, body := c.send(t, restricted, r)
				want := "cannot be limited to the token's extra_labels/extra_filters"
				if a.refused != "" {
					want = a.refused
				}
				c.expectRefused(t, name, code, body, http.StatusForbidden, want)
				refused++
			}
		}
	}
	t.Logf("%d requests refused with 403 and %d allowed by mode", refused, allowed)
}

// clusterAttack is a request that must be refused before anything is forwarded.
type clusterAttack struct {
	name string
	req  clusterReq
	code int
	msg  string // a part of the error message
}

// TestClusterAttacks: tenants other than the token's, multitenant, traversal, header-shaped paths, out-of-range
// tenants and tenant labels are refused with the right status and reach neither upstream.
// clusterGet and clusterPost build the requests of the attack tables.
func clusterGet(p string) clusterReq { return clusterReq{method: "GET", path: p} }

func clusterPost(p, ctype, body string) clusterReq {
	return clusterReq{method: "POST", path: p, ctype: ctype, body: body}
}

// clusterAttacks are the requests a full token of tenant 15:0 sends to reach other tenants, the multitenant
// API or tenant labels; each must be refused before anything is forwarded. The recording test checks what was
// forwarded, the real-cluster test what the cluster stored and answered.
func clusterAttacks() []clusterAttack {
	get, post := clusterGet, clusterPost
	const (
		allows = "the token allows tenant 15:0 only"
		mt     = `"multitenant" pseudo-tenant`
		query  = "/prometheus/api/v1/query?query=up"
	)
	return []clusterAttack{
		// A tenant in the path that is not the token's.
		{"other account", get("/select/16" + query), 403, allows},
		{"other project", get("/select/15:1" + query), 403, allows},
		{"tenant 0", get("/select/0" + query), 403, allows},
		{"max tenant", get("/select/4294967295:4294967295" + query), 403, allows},
		{"other tenant write", post("/insert/16/prometheus/api/v1/write", clusterProtobufCT, clusterBinaryBody), 403, allows},
		{"other tenant influx", post("/insert/0:0/influx/write", "text/plain", "cpu v=1\n"), 403, allows},
		{"other tenant delete", get("/delete/16/prometheus/api/v1/admin/tsdb/delete_series?match[]=up"), 403, allows},
		{"other tenant vmui", get("/select/14/vmui/"), 403, allows},
		{"other tenant graphite", get("/select/16/graphite/render?target=a.b"), 403, allows},
		{"leading zeros name another tenant", get("/select/016" + query), 403, allows},

		// multitenant, in every position, case and encoding.
		{"select multitenant", get("/select/multitenant" + query), 403, mt},
		{"insert multitenant", post("/insert/multitenant/prometheus/api/v1/write", clusterProtobufCT, clusterBinaryBody), 403, mt},
		{"insert multitenant influx", post("/insert/multitenant/influx/write", "text/plain", "cpu,vm_account_id=16 v=1\n"), 403, mt},
		{"delete multitenant", get("/delete/multitenant/prometheus/api/v1/admin/tsdb/delete_series?match[]=up"), 403, mt},
		{"select multitenant vmui", get("/select/multitenant/vmui/"), 403, mt},
		{"upper case", get("/select/MULTITENANT" + query), 403, mt},
		{"mixed case", get("/insert/MultiTenant/prometheus/api/v1/import/prometheus"), 403, mt},
		{"one escaped letter", get("/select/%6dultitenant" + query), 403, mt},
		{"all escaped", get("/select/%6D%75%6C%74%69%74%65%6E%61%6E%74" + query), 403, mt},
		{"dot-dot to multitenant", get("/select/1/../multitenant" + query), 403, mt},
		{"dot-dot from own tenant", get("/select/15/../multitenant" + query), 403, mt},
		{"escaped dot-dot", get("/select/15/%2e%2e/multitenant" + query), 403, mt},
		{"as label name", get("/select/15/prometheus/api/v1/label/multitenant/values"), 403, mt},
		{"as pushgateway job", post("/insert/15/prometheus/api/v1/import/prometheus/metrics/job/multitenant", "text/plain", "x 1\n"), 403, mt},
		{"as vmui file", get("/select/15/vmui/multitenant"), 403, mt},
		{"single shape", get("/multitenant/api/v1/query?query=up"), 403, mt},
		{"trailing", get("/select/15/prometheus/multitenant"), 403, mt},

		// Path traversal: canonicalised before classification, so it lands on another tenant (403) or nowhere.
		{"dot-dot to another tenant", get("/select/15/../16" + query), 403, allows},
		{"double slashes", get("//select//16" + query), 403, allows},
		{"double slashes everywhere", get("//select//16//prometheus//api//v1//query?query=up"), 403, allows},
		{"escaped dot-dot", get("/select/15/%2e%2e/16" + query), 403, allows},
		{"upper-case escaped dot-dot", get("/select/15/%2E%2E/16" + query), 403, allows},
		{"dot segments", get("/select/15/./../16/." + query), 403, allows},
		{"climb from the suffix", get("/select/15/prometheus/api/v1/query/../../../../../16" + query), 403, allows},
		{"select to insert", post("/select/15/../../insert/16/prometheus/api/v1/write", clusterProtobufCT, clusterBinaryBody), 403, allows},
		{"single shape to cluster", get("/prometheus/../select/16" + query), 403, allows},
		{"escaped root", get("/sel%65ct/16" + query), 403, allows},
		{"escaped tenant", get("/select/%31%36" + query), 403, allows},
		{"encoded slash in tenant", get("/select/15%2F..%2F16" + query), 400, "encoded '/'"},
		{"encoded slash lower case", get("/select/15%2f..%2f16" + query), 400, "encoded '/'"},
		{"encoded slash in suffix", get("/select/15/prometheus%2Fapi%2Fv1%2Fquery?query=up"), 400, "encoded '/'"},
		{"encoded slash in label", get("/select/15/prometheus/api/v1/label/..%2f..%2f..%2f16/values"), 400, "encoded '/'"},
		{"encoded backslash", get("/select/15/..%5c16" + query), 400, `'\'`},
		{"above the root", get("/../select/16" + query), 400, "climbs above the root"},
		{"above the root, escaped", get("/%2e%2e/select/15" + query), 400, "climbs above the root"},
		{"double-encoded dot-dot", get("/select/15/%252e%252e/16" + query), 404, "unsupported path"},
		{"escaped dot-dot in label", get("/select/15/prometheus/api/v1/label/%2e%2e/values"), 404, "unsupported path"},
		{"escaped query in path", get("/select/15/prometheus/api/v1/query%3Fquery=up"), 404, "unsupported path"},
		{"NUL in path", get("/select/15%00/prometheus/api/v1/query"), 400, "control character"},
		{"upper-case root", get("/SELECT/15" + query), 404, "unsupported path"},

		// Tenant-less header-shaped paths: the tenant would come from AccountID/ProjectID headers.
		{"select prometheus", get("/select/prometheus/api/v1/query?query=up"), 400, "tenant-less form"},
		{"select graphite", get("/select/graphite/render?target=a"), 400, "tenant-less form"},
		{"select vmui", get("/select/vmui/"), 400, "tenant-less form"},
		{"insert prometheus", post("/insert/prometheus/api/v1/write", clusterProtobufCT, clusterBinaryBody), 400, "tenant-less form"},
		{"insert import", post("/insert/prometheus/api/v1/import/prometheus", "text/plain", "x 1\n"), 400, "tenant-less form"},
		{"insert influx", post("/insert/influx/write", "text/plain", "cpu v=1\n"), 400, "tenant-less form"},
		{"insert opentelemetry", post("/insert/opentelemetry/v1/metrics", clusterProtobufCT, clusterBinaryBody), 400, "tenant-less form"},
		{"insert datadog", post("/insert/datadog/api/v2/series", "application/json", "{}"), 400, "tenant-less form"},
		{"insert newrelic", post("/insert/newrelic/infra/v2/metrics/events/bulk", "application/json", "[]"), 400, "tenant-less form"},
		{"insert opentsdb", post("/insert/opentsdb/api/put", "application/json", "[]"), 400, "tenant-less form"},
		{"delete prometheus", get("/delete/prometheus/api/v1/admin/tsdb/delete_series?match[]=up"), 400, "tenant-less form"},
		{"select without tenant", get("/select/"), 400, "has no tenant"},
		{"insert without tenant", get("/insert//prometheus/api/v1/write"), 400, "tenant-less form"},

		// Out-of-range and malformed tenants.
		{"account 2^32", get("/select/4294967296" + query), 400, "[0..4294967295]"},
		{"project 2^32", get("/select/15:4294967296" + query), 400, "[0..4294967295]"},
		{"negative", get("/select/-1" + query), 400, "[0..4294967295]"},
		{"plus sign", get("/select/+15" + query), 400, "[0..4294967295]"},
		{"hex", get("/select/0xf" + query), 400, "[0..4294967295]"},
		{"three parts", get("/select/15:0:0" + query), 400, "[0..4294967295]"},
		{"empty project", get("/select/15:" + query), 400, "[0..4294967295]"},
		{"empty account", get("/insert/:0/prometheus/api/v1/write"), 400, "[0..4294967295]"},
		{"very long", get("/select/99999999999999999999" + query), 400, "[0..4294967295]"},
		{"escaped space", get("/select/15%20" + query), 400, "[0..4294967295]"},

		// Tenant labels in selectors and enforcement args: the multitenant label API is never reachable.
		{"query vm_account_id", get("/select/15/prometheus/api/v1/query?query=" + url.QueryEscape(`up{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"query vm_project_id", get("/api/v1/query?query=" + url.QueryEscape(`sum(rate(x{vm_project_id!=""}[5m]))`)), 403, "vm_project_id"},
		{"query regexp", get("/api/v1/query?query=" + url.QueryEscape(`{__name__="up",vm_account_id=~".+"}`)), 403, "vm_account_id"},
		{"query or-branch", get("/api/v1/query?query=" + url.QueryEscape(`up{job="a" or vm_account_id="16"}`)), 403, "vm_account_id"},
		{"query WITH template", get("/api/v1/query?query=" + url.QueryEscape(`WITH (f = {vm_account_id="16"}) up{f}`)), 403, "vm_account_id"},
		{"query_range form body", post("/select/15:0/prometheus/api/v1/query_range", clusterFormCT, "query="+url.QueryEscape(`up{vm_account_id="7",vm_project_id="9"}`)+"&step=60"), 403, "vm_account_id"},
		{"series match[]", get("/api/v1/series?match[]=" + url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"export match[]", get("/select/15/prometheus/api/v1/export?match[]=" + url.QueryEscape(`up{vm_project_id="1"}`)), 403, "vm_project_id"},
		{"export legacy match", get("/api/v1/export?match=" + url.QueryEscape(`up{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"labels match[]", get("/api/v1/labels?match[]=" + url.QueryEscape(`{vm_account_id!="15"}`)), 403, "vm_account_id"},
		{"label values match[]", get("/api/v1/label/job/values?match[]=" + url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"federate match[]", get("/federate?match[]=" + url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"status_tsdb match[]", get("/api/v1/status/tsdb?match[]=" + url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"delete match[]", get("/delete/15/prometheus/api/v1/admin/tsdb/delete_series?match[]=" + url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"series match[] form body", post("/api/v1/series", clusterFormCT, "match%5B%5D="+url.QueryEscape(`{vm_project_id="3"}`)), 403, "vm_project_id"},
		{"extra_filters[]", get("/api/v1/query?query=up&extra_filters[]=" + url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"extra_filters", get("/api/v1/series?match[]=up&extra_filters=" + url.QueryEscape(`{vm_project_id="1"}`)), 403, "vm_project_id"},
		{"extra_filters[] form body", post("/api/v1/query", clusterFormCT, "query=up&extra_filters%5B%5D="+url.QueryEscape(`{vm_account_id="16"}`)), 403, "vm_account_id"},
		{"extra_label on a read", get("/api/v1/query?query=up&extra_label=vm_account_id=16"), 403, "vm_account_id"},
		{"extra_label on a write", post("/insert/15/prometheus/api/v1/import/prometheus?extra_label=vm_account_id=16", "text/plain", "x 1\n"), 403, "vm_account_id"},
		{"extra_label on influx", post("/influx/write?extra_label=vm_project_id=2", "text/plain", "cpu v=1\n"), 403, "vm_project_id"},
	}
}

func TestClusterAttacks(t *testing.T) {
	c := startClusterGW(t, true)
	t15 := tenant.ID{AccountID: 15}
	full := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15})
	restricted := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15, ExtraLabels: map[string]string{"team": "dev"}, ExtraFilters: []string{`{env=~"prod|stage"}`}})
	get := clusterGet
	const query = "/prometheus/api/v1/query?query=up"
	attacks := clusterAttacks()
	for _, a := range attacks {
		code, body := c.send(t, full, a.req)
		c.expectRefused(t, "full token: "+a.name+": "+a.req.path, code, body, a.code, a.msg)
	}
	// A restricted token gets the same answers where the path decides; its selectors on tenant labels are
	// refused too. (Its client extra_filters and extra_label are replaced by the token's: see the rewrite test.)
	restrictedAttacks := 0
	for _, a := range attacks {
		if strings.HasPrefix(a.name, "extra_") {
			continue
		}
		code, body := c.send(t, restricted, a.req)
		c.expectRefused(t, "restricted token: "+a.name+": "+a.req.path, code, body, a.code, a.msg)
		restrictedAttacks++
	}

	// Tokens whose own tenant is out of range, or that are not tokens, are refused before routing.
	badTokens := []struct{ name, tok string }{
		{"account_id 2^32", clusterToken(t, json.RawMessage(`{"tenant_id":{"account_id":4294967296,"project_id":0}}`))},
		{"negative project_id", clusterToken(t, json.RawMessage(`{"tenant_id":{"account_id":15,"project_id":-1}}`))},
		{"tenant as string", clusterToken(t, json.RawMessage(`{"tenant_id":"multitenant"}`))},
		{"no token", ""},
	}
	for _, bt := range badTokens {
		code, body := c.send(t, bt.tok, get("/select/15"+query))
		c.expectRefused(t, "bad token: "+bt.name, code, body, 401, "")
	}
	t.Logf("%d attacks with a full token, %d with a restricted token, %d bad tokens: all refused, nothing forwarded",
		len(attacks), restrictedAttacks, len(badTokens))
}

// TestClusterHeadersNeverPickTheTenant: AccountID/ProjectID headers, "multitenant" ones included, are dropped and
// the request lands in the token's tenant; a tenant-less single-node path is the token's tenant too.
func TestClusterHeadersNeverPickTheTenant(t *testing.T) {
	c := startClusterGW(t, true)
	t15 := tenant.ID{AccountID: 15}
	tok := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15})
	for _, h := range [][]string{
		{"AccountID", "16", "ProjectID", "3"},
		{"AccountID", "multitenant"},
		{"ACCOUNTID", "multitenant", "projectid", "0"},
		{"Accountid", "0"},
	} {
		for _, tc := range []struct {
			req  clusterReq
			want clusterFwd
		}{
			{clusterReq{method: "GET", path: "/api/v1/query?query=up", header: h},
				clusterFwd{method: "GET", path: "/select/15:0/prometheus/api/v1/query", query: qv("query", "up")}},
			{clusterReq{method: "GET", path: "/select/15/prometheus/api/v1/series?match[]=up", header: h},
				clusterFwd{method: "GET", path: "/select/15:0/prometheus/api/v1/series", query: qv("match[]", "up")}},
			{clusterReq{method: "POST", path: "/api/v1/import/prometheus", ctype: "text/plain", body: "x{vm_account_id=\"16\"} 1\n", header: h},
				clusterFwd{insert: true, method: "POST", path: "/insert/15:0/prometheus/api/v1/import/prometheus", body: "x{vm_account_id=\"16\"} 1\n", ctype: "text/plain"}},
			{clusterReq{method: "POST", path: "/insert/15:0/influx/write", ctype: "text/plain", body: "cpu v=1\n", header: h},
				clusterFwd{insert: true, method: "POST", path: "/insert/15:0/influx/write", body: "cpu v=1\n", ctype: "text/plain"}},
			{clusterReq{method: "GET", path: "/vmui/", header: h}, clusterFwd{method: "GET", path: "/select/15:0/vmui/"}},
			// A traversal that resolves to the token's own tenant is a plain request in that tenant.
			{clusterReq{method: "GET", path: "/select/16/../15/prometheus/api/v1/labels", header: h},
				clusterFwd{method: "GET", path: "/select/15:0/prometheus/api/v1/labels"}},
		} {
			name := fmt.Sprintf("%s %s with %q", tc.req.method, tc.req.path, h)
			code, body := c.send(t, tok, tc.req)
			c.expectForward(t, name, tok, code, body, tc.want)
		}
	}
}

// TestClusterRestrictedTokenRewrites: a token with extra_labels and extra_filters gets every selector rewritten
// and the token's extra_label / extra_filters[] args; the client's own enforcement args are gone. Writes carry
// the token's extra_label args last and keep their bodies byte for byte.
func TestClusterRestrictedTokenRewrites(t *testing.T) {
	c := startClusterGW(t, true)
	t15 := tenant.ID{AccountID: 15}
	tok := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: t15, ExtraLabels: map[string]string{"team": "dev", "env": "prod"},
		ExtraFilters: []string{`{app=~"api|web"}`, `{tier="gold"}`}})
	const (
		sel = `{env="prod",team="dev",Env="",app=~"api|web"}`
		alt = `{env="prod",team="dev",Env="",tier="gold"}`
	)
	enforced := func(kv ...string) url.Values {
		v := qv(kv...)
		v["extra_label"] = []string{"env=prod", "team=dev", "Env=", "\x00\x00\x0d="}
		v["extra_filters[]"] = []string{`{app=~"api|web"}`, `{tier="gold"}`}
		return v
	}
	for _, tc := range []struct {
		name string
		req  clusterReq
		want clusterFwd
	}{
		{"query", clusterReq{method: "GET", path: "/select/15/prometheus/api/v1/query?" + qv("query", `sum(rate(http_requests_total{code="500"}[5m]))`,
			"time", "1", "extra_label", "team=ops", "extra_filters[]", `{team="ops"}`, "extra_filters", `{team="ops"}`).Encode()},
			clusterFwd{path: "/select/15:0/prometheus/api/v1/query", query: enforced(
				"query", `sum(union(rate(http_requests_total{code="500",env="prod",team="dev",Env="",app=~"api|web"}[5m]), `+
					`rate(http_requests_total{code="500",env="prod",team="dev",Env="",tier="gold"}[5m])))`, "time", "1")}},
		{"query_range form body", clusterReq{method: "POST", path: "/api/v1/query_range?extra_label=team=ops", ctype: clusterFormCT,
			body: qv("query", `up / on(job) group_left node_info`, "step", "60", "extra_filters[]", `{x="y"}`).Encode()},
			clusterFwd{path: "/select/15:0/prometheus/api/v1/query_range", query: enforced(), ctype: clusterFormCT,
				body: qv("query", `union(up{env="prod",team="dev",Env="",app=~"api|web"}, up{env="prod",team="dev",Env="",tier="gold"}) / on(job) group_left() `+
					`union(node_info{env="prod",team="dev",Env="",app=~"api|web"}, node_info{env="prod",team="dev",Env="",tier="gold"})`, "step", "60").Encode()}},
		{"series", clusterReq{method: "GET", path: "/prometheus/api/v1/series?" + qv("match[]", `up{job="x"}`).Encode()},
			clusterFwd{path: "/select/15:0/prometheus/api/v1/series", query: enforced("match[]", `up{job="x",env="prod",team="dev",Env="",app=~"api|web"}`, "match[]", `up{job="x",env="prod",team="dev",Env="",tier="gold"}`)}},
		{"labels without match[]", clusterReq{method: "GET", path: "/select/15:0/prometheus/api/v1/labels"},
			clusterFwd{path: "/select/15:0/prometheus/api/v1/labels", query: enforced("match[]", sel, "match[]", alt)}},
		{"label values", clusterReq{method: "GET", path: "/api/v1/label/job/values?match[]=up"},
			clusterFwd{path: "/select/15:0/prometheus/api/v1/label/job/values", query: enforced("match[]", `up{env="prod",team="dev",Env="",app=~"api|web"}`, "match[]", `up{env="prod",team="dev",Env="",tier="gold"}`)}},
		{"export legacy match", clusterReq{method: "GET", path: "/api/v1/export?match=up"},
			clusterFwd{path: "/select/15:0/prometheus/api/v1/export", query: enforced("match[]", `up{env="prod",team="dev",Env="",app=~"api|web"}`, "match[]", `up{env="prod",team="dev",Env="",tier="gold"}`)}},
		{"federate", clusterReq{method: "GET", path: "/select/15/prometheus/federate?match[]=" + url.QueryEscape(`{__name__=~"job:.*"}`)},
			clusterFwd{path: "/select/15:0/prometheus/federate", query: enforced("match[]", `{__name__=~"job:.*",env="prod",team="dev",Env="",app=~"api|web"}`, "match[]", `{__name__=~"job:.*",env="prod",team="dev",Env="",tier="gold"}`)}},
		{"delete_series", clusterReq{method: "POST", path: "/delete/15/prometheus/api/v1/admin/tsdb/delete_series", ctype: clusterFormCT, body: "match%5B%5D=up"},
			clusterFwd{path: "/delete/15:0/prometheus/api/v1/admin/tsdb/delete_series", query: enforced(), ctype: clusterFormCT,
				body: qv("match[]", `up{env="prod",team="dev",Env="",app=~"api|web"}`, "match[]", `up{env="prod",team="dev",Env="",tier="gold"}`).Encode()}},
		{"vmui is served as is", clusterReq{method: "GET", path: "/select/15/vmui/?extra_label=a=b"},
			clusterFwd{path: "/select/15:0/vmui/", query: qv("extra_label", "a=b")}},
		{"remote_write", clusterReq{method: "POST", path: "/insert/15/prometheus/api/v1/write?extra_label=team=ops&extra_label=env=dev&extra_label=x=y",
			ctype: clusterProtobufCT, cenc: "snappy", body: clusterBinaryBody},
			clusterFwd{insert: true, path: "/insert/15:0/prometheus/api/v1/write", query: qv("extra_label", "x=y", "extra_label", "env=prod", "extra_label", "team=dev"),
				ctype: clusterProtobufCT, cenc: "snappy", body: clusterBinaryBody}},
		{"import_csv keeps its other args", clusterReq{method: "POST", path: "/api/v1/import/csv?format=1:metric:x&extra_label=team=ops", ctype: "text/csv", body: "1\n"},
			clusterFwd{insert: true, path: "/insert/15:0/prometheus/api/v1/import/csv", query: qv("format", "1:metric:x", "extra_label", "env=prod", "extra_label", "team=dev"),
				ctype: "text/csv", body: "1\n"}},
		{"influx", clusterReq{method: "POST", path: "/influx/write?db=x", ctype: "text/plain", body: "cpu,team=ops v=1\n"},
			clusterFwd{insert: true, path: "/insert/15:0/influx/write", query: qv("db", "x", "extra_label", "env=prod", "extra_label", "team=dev"),
				ctype: "text/plain", body: "cpu,team=ops v=1\n"}},
	} {
		tc.want.method = tc.req.method
		code, body := c.send(t, tok, tc.req)
		c.expectForward(t, tc.name, tok, code, body, tc.want)
	}
	// Tenant labels are refused even where they would be ANDed with the token's labels.
	code, body := c.send(t, tok, clusterReq{method: "GET", path: "/api/v1/query?query=" + url.QueryEscape(`up{vm_account_id="16"}`)})
	c.expectRefused(t, "restricted query on vm_account_id", code, body, 403, "vm_account_id")
}

// TestClusterVMUIRedirects: vmui's /vmui → /vmui/ redirect reaches the client relative to its own path, in both
// shapes and for a tenant with a colon, which a relative Location must not read as a URL scheme.
func TestClusterVMUIRedirects(t *testing.T) {
	c := startClusterGW(t, true)
	c.sel.Respond(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/vmui") {
			http.Redirect(w, r, r.URL.Path+"/", http.StatusFound)
			return
		}
		_, _ = io.WriteString(w, "<html>vmui</html>")
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tn := range clusterTenants {
		tok := clusterToken(t, tn.vmAccess)
		paths := []string{"/vmui", "/prometheus/vmui"}
		for _, f := range tn.forms {
			paths = append(paths, "/select/"+f+"/vmui", "/select/"+f+"/prometheus/vmui")
		}
		for _, p := range paths {
			req, _ := http.NewRequest(http.MethodGet, c.g.URL+p, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := resp.Location()
			if resp.StatusCode != http.StatusFound || err != nil || loc.Path != p+"/" || loc.Host != strings.TrimPrefix(c.g.URL, "http://") {
				t.Errorf("tenant %s: GET %s: %d Location %q, want %s/ on the gateway", tn.name, p, resp.StatusCode, resp.Header.Get("Location"), p)
			}
			got := c.sel.Requests()
			if len(got) != 1 || got[0].Path != "/select/"+tn.id.String()+"/vmui" {
				t.Errorf("tenant %s: GET %s reached vmselect as %+v", tn.name, p, got)
			}
			// The redirect target itself is served from the same tenant.
			code, _, body := do(t, http.MethodGet, loc.String(), nil, "Authorization", "Bearer "+tok)
			got = c.sel.Requests()
			if code != 200 || body != "<html>vmui</html>" || len(got) != 1 || got[0].Path != "/select/"+tn.id.String()+"/vmui/" {
				t.Errorf("tenant %s: following %s: %d %q, vmselect saw %+v", tn.name, loc, code, body, got)
			}
		}
	}
	if got := c.ins.Requests(); len(got) != 0 {
		t.Errorf("vmui requests reached vminsert: %+v", got)
	}
}

// TestSingleNodeClusterShapedPaths: without -clusterMode a cluster-shaped path of tenant 0 or 0:0 is the
// single-node API; any other tenant is refused and nothing is forwarded.
func TestSingleNodeClusterShapedPaths(t *testing.T) {
	c := startClusterGW(t, false)
	tok := clusterToken(t, json.RawMessage(`{"mode":0}`))
	for _, tc := range []struct {
		req  clusterReq
		want clusterFwd
	}{
		{clusterReq{method: "GET", path: "/select/0/prometheus/api/v1/query?query=up"}, clusterFwd{path: "/prometheus/api/v1/query", query: qv("query", "up")}},
		{clusterReq{method: "GET", path: "/select/0:0/prometheus/api/v1/series?match[]=up"}, clusterFwd{path: "/prometheus/api/v1/series", query: qv("match[]", "up")}},
		{clusterReq{method: "GET", path: "/select/0/graphite/render?target=a.b"}, clusterFwd{path: "/graphite/render", query: qv("target", "a.b")}},
		{clusterReq{method: "GET", path: "/select/0:0/vmui/"}, clusterFwd{path: "/vmui/"}},
		{clusterReq{method: "GET", path: "/select/0/prometheus/vmui"}, clusterFwd{path: "/vmui"}},
		{clusterReq{method: "POST", path: "/insert/0/prometheus/api/v1/write", ctype: clusterProtobufCT, cenc: "snappy", body: clusterBinaryBody},
			clusterFwd{insert: true, path: "/prometheus/api/v1/write", body: clusterBinaryBody, ctype: clusterProtobufCT, cenc: "snappy"}},
		{clusterReq{method: "POST", path: "/insert/0:0/prometheus", ctype: clusterProtobufCT, body: clusterBinaryBody},
			clusterFwd{insert: true, path: "/prometheus/api/v1/write", body: clusterBinaryBody, ctype: clusterProtobufCT}},
		{clusterReq{method: "POST", path: "/insert/0/influx/write?db=x", ctype: "text/plain", body: "cpu v=1\n"},
			clusterFwd{insert: true, path: "/influx/write", query: qv("db", "x"), body: "cpu v=1\n", ctype: "text/plain"}},
		{clusterReq{method: "POST", path: "/insert/0/opentsdb/api/put", ctype: "application/json", body: "[]"},
			clusterFwd{insert: true, path: "/api/put", body: "[]", ctype: "application/json"}},
		{clusterReq{method: "POST", path: "/delete/0:0/prometheus/api/v1/admin/tsdb/delete_series", ctype: clusterFormCT, body: "match%5B%5D=up"},
			clusterFwd{path: "/prometheus/api/v1/admin/tsdb/delete_series", body: "match%5B%5D=up", ctype: clusterFormCT}},
		// Tenant labels are plain labels in single-node VictoriaMetrics.
		{clusterReq{method: "GET", path: "/api/v1/query?query=" + url.QueryEscape(`up{vm_account_id="16"}`)},
			clusterFwd{path: "/prometheus/api/v1/query", query: qv("query", `up{vm_account_id="16"}`)}},
	} {
		tc.want.method = tc.req.method
		code, body := c.send(t, tok, tc.req)
		c.expectForward(t, "single-node: "+tc.req.method+" "+tc.req.path, tok, code, body, tc.want)
	}
	for _, r := range []clusterReq{
		{method: "GET", path: "/select/15/prometheus/api/v1/query?query=up"},
		{method: "GET", path: "/select/0:1/prometheus/api/v1/query?query=up"},
		{method: "GET", path: "/select/4294967295:4294967295/vmui/"},
		{method: "POST", path: "/insert/1/prometheus/api/v1/write", ctype: clusterProtobufCT, body: clusterBinaryBody},
		{method: "POST", path: "/insert/0:7/influx/write", ctype: "text/plain", body: "cpu v=1\n"},
		{method: "GET", path: "/delete/15/prometheus/api/v1/admin/tsdb/delete_series?match[]=up"},
		{method: "GET", path: "/select/0/../15/prometheus/api/v1/query?query=up"},
	} {
		code, body := c.send(t, tok, r)
		c.expectRefused(t, "single-node: "+r.method+" "+r.path, code, body, 400, "single-node VictoriaMetrics has no tenants")
	}
	// A token issued for a cluster tenant is no pass to single-node's one data set: every path refuses it.
	tok15 := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, Tenant: tenant.ID{AccountID: 15}})
	for _, r := range []clusterReq{
		{method: "GET", path: "/api/v1/query?query=up"},
		{method: "GET", path: "/select/0/prometheus/api/v1/query?query=up"},
		{method: "POST", path: "/insert/0:0/influx/write", ctype: "text/plain", body: "cpu v=1\n"},
		{method: "GET", path: "/select/15/prometheus/api/v1/query?query=up"},
	} {
		code, body := c.send(t, tok15, r)
		c.expectRefused(t, "single-node, token of tenant 15:0: "+r.method+" "+r.path, code, body, 403, "the token is for tenant 15:0")
	}

	for _, r := range []clusterReq{
		{method: "GET", path: "/select/multitenant/prometheus/api/v1/query?query=up"},
		{method: "GET", path: "/select/prometheus/api/v1/query?query=up"},
	} {
		code, body := c.send(t, tok, r)
		if code != 403 && code != 400 {
			t.Errorf("single-node: %s %s: status %d: %s", r.method, r.path, code, body)
		}
		c.expectRefused(t, "single-node: "+r.path, code, body, code, "")
	}
}

// TestSingleNodeTokenFlows: the client flows of the cluster tests, end to end through the gateway with -enable.auth
// into a real single-node VictoriaMetrics: writes in several formats (one by vmagent with a bearer token), reads,
// per-team isolation by extra_labels, mode refusals and delete_series, in both path shapes.
func TestSingleNodeTokenFlows(t *testing.T) {
	vm := vmtest.Start(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+clusterPublicKeyFile(t))
	full := clusterToken(t, json.RawMessage(`{"mode":0}`))
	reader := clusterToken(t, auth.VMAccess{Mode: auth.ModeRead})
	writer := clusterToken(t, auth.VMAccess{Mode: auth.ModeWrite})
	dev := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, ExtraLabels: map[string]string{"team": "dev"}})
	ops := clusterToken(t, auth.VMAccess{Mode: auth.ModeFull, ExtraLabels: map[string]string{"team": "ops"}})
	withToken := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	now := time.Now().UnixMilli()

	writes := []struct {
		tok, path, ctype, body string
	}{
		{writer, "/api/v1/import/prometheus", "text/plain", `flow_prom{src="prom"} 1` + "\n"},
		{writer, "/insert/0/influx/write", "text/plain", "flow_influx,src=influx value=2\n"},
		{full, "/insert/0:0/prometheus/api/v1/import", "application/json",
			fmt.Sprintf(`{"metric":{"__name__":"flow_json","src":"json"},"values":[3],"timestamps":[%d]}`, now) + "\n"},
		{writer, "/prometheus/api/v1/import/csv?format=1:label:src,2:metric:flow_csv", "text/csv", "csv,4\n"},
		{dev, "/api/v1/import/prometheus", "text/plain", `flow_team{src="a",team="ops"} 10` + "\n"},
		{ops, "/insert/0/prometheus/api/v1/import/prometheus", "text/plain", `flow_team{src="b"} 20` + "\n"},
	}
	for _, w := range writes {
		code, _, body := do(t, http.MethodPost, g.URL+w.path, strings.NewReader(w.body), append(withToken(w.tok), "Content-Type", w.ctype)...)
		if code/100 != 2 {
			t.Fatalf("write %s: %d %s", w.path, code, body)
		}
	}
	// vmagent, a real remote_write client, sends the token as its bearer token.
	agent := startVMAgent(t, g.URL+"/api/v1/write", "-remoteWrite.bearerToken="+writer)
	if code, _, body := do(t, http.MethodPost, agent+"/api/v1/import/prometheus", strings.NewReader(`flow_remote{src="vmagent"} 5`+"\n"), "Content-Type", "text/plain"); code/100 != 2 {
		t.Fatalf("write into vmagent: %d %s", code, body)
	}
	// Refused writes must not land: a read token's write, and a write with a bad token.
	for _, tc := range []struct {
		hdr  []string
		code int
	}{{withToken(reader), 403}, {withToken(full + "x"), 401}, {nil, 401}} {
		code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("flow_forbidden 1\n"), append(tc.hdr, "Content-Type", "text/plain")...)
		checkClusterError(t, "refused write", code, body, tc.code, "")
	}

	query := func(tok, path, expr string) (int, string) {
		code, _, body := do(t, http.MethodGet, g.URL+path+"?query="+url.QueryEscape(expr), nil, withToken(tok)...)
		return code, body
	}
	want := map[string]string{"flow_prom": "1", "flow_influx_value": "2", "flow_json": "3", "flow_csv": "4", "flow_remote": "5"}
	for name, value := range want {
		vmtest.Eventually(t, func() (bool, string) {
			vm.Flush(t)
			code, body := query(reader, "/select/0/prometheus/api/v1/query", name)
			return code == 200 && strings.Contains(body, `"`+value+`"]`), fmt.Sprintf("query %s: %d %s", name, code, body)
		})
	}
	vmtest.Eventually(t, func() (bool, string) {
		code, body := query(full, "/api/v1/query", "count(flow_team)")
		return code == 200 && strings.Contains(body, `"2"]`), fmt.Sprintf("count(flow_team): %d %s", code, body)
	})
	// The marker was written after the refused writes and is visible, so they would be visible too.
	if code, body := query(full, "/api/v1/query", "flow_forbidden"); code != 200 || strings.Contains(body, "flow_forbidden") {
		t.Errorf("a refused write landed: %d %s", code, body)
	}

	// Reads in both shapes, as GET and as a POST form.
	reads := []struct {
		tok, method, path, form, want string
	}{
		{reader, "GET", "/api/v1/series?match[]=" + url.QueryEscape(`{src="csv"}`), "", `"__name__":"flow_csv"`},
		{reader, "GET", "/select/0:0/prometheus/api/v1/labels", "", `"src"`},
		{full, "GET", "/prometheus/api/v1/label/src/values", "", `"vmagent"`},
		{reader, "GET", "/select/0/prometheus/api/v1/export?match[]=flow_json", "", `"values":[3]`},
		{reader, "GET", "/federate?match[]=flow_prom", "", `flow_prom{src="prom"} 1`},
		{reader, "POST", "/select/0/prometheus/api/v1/query", "query=flow_influx_value", `"2"]`},
		{full, "POST", "/api/v1/query_range", fmt.Sprintf("query=flow_prom&start=%d&end=%d&step=15s", now/1000-300, now/1000+60), `"matrix"`},
		// extra_labels: each team sees its own series only, and its writes carry its label whatever the data said.
		{dev, "GET", "/api/v1/query?query=flow_team", "", `"team":"dev"`},
		{dev, "GET", "/api/v1/export?match[]=flow_team", "", `"values":[10]`},
		{ops, "GET", "/select/0/prometheus/api/v1/query?query=flow_team", "", `"team":"ops"`},
		{dev, "GET", "/api/v1/label/team/values", "", `["dev"]`},
		{ops, "GET", "/api/v1/series?match[]=" + url.QueryEscape(`{__name__=~"flow_.*"}`), "", `"src":"b"`},
	}
	for _, rd := range reads {
		var b io.Reader
		if rd.form != "" {
			b = strings.NewReader(rd.form)
		}
		code, _, body := do(t, rd.method, g.URL+rd.path, b, withToken(rd.tok)...)
		if code != 200 || !strings.Contains(body, rd.want) {
			t.Errorf("%s %s: %d, want %q in %s", rd.method, rd.path, code, rd.want, body)
		}
	}
	for _, tc := range []struct{ tok, path, notWant string }{
		{dev, "/api/v1/query?query=flow_team", `"team":"ops"`},
		{dev, "/api/v1/query?query=flow_prom", `flow_prom`},
		{ops, "/api/v1/export?match[]=flow_team", `"values":[10]`},
		{dev, "/api/v1/label/src/values", `"b"`},
		{dev, "/api/v1/label/src/values", `"prom"`},
	} {
		code, _, body := do(t, http.MethodGet, g.URL+tc.path, nil, withToken(tc.tok)...)
		if code != 200 || strings.Contains(body, tc.notWant) {
			t.Errorf("%s: %d, must not contain %q: %s", tc.path, code, tc.notWant, body)
		}
	}
	// Mode and shape refusals, answered by the gateway.
	for _, tc := range []struct {
		tok, method, path string
		code              int
		msg               string
	}{
		{writer, "GET", "/api/v1/query?query=flow_prom", 403, `mode "write" does not allow read API`},
		{reader, "GET", "/api/v1/admin/tsdb/delete_series?match[]=flow_prom", 403, `mode "read" does not allow admin API`},
		{dev, "GET", "/api/v1/series/count", 403, "cannot be limited"},
		{full, "GET", "/select/15/prometheus/api/v1/query?query=flow_prom", 400, "single-node VictoriaMetrics has no tenants"},
		{full, "GET", "/select/multitenant/prometheus/api/v1/query?query=flow_prom", 403, "multitenant"},
	} {
		code, _, body := do(t, tc.method, g.URL+tc.path, nil, withToken(tc.tok)...)
		checkClusterError(t, tc.path, code, body, tc.code, tc.msg)
	}

	// delete_series with a full token, in the cluster shape; a team's delete removes its own series only.
	if code, _, body := do(t, http.MethodPost, g.URL+"/delete/0/prometheus/api/v1/admin/tsdb/delete_series", strings.NewReader("match[]=flow_prom"), withToken(full)...); code/100 != 2 {
		t.Fatalf("delete_series: %d %s", code, body)
	}
	devFull := clusterToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeFull})
	if code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/admin/tsdb/delete_series?match[]=flow_team", nil, withToken(devFull)...); code/100 != 2 {
		t.Fatalf("dev delete_series: %d %s", code, body)
	}
	vmtest.Eventually(t, func() (bool, string) {
		code, body := query(full, "/api/v1/query", "flow_prom")
		return code == 200 && !strings.Contains(body, "flow_prom"), fmt.Sprintf("flow_prom after delete: %d %s", code, body)
	})
	vmtest.Eventually(t, func() (bool, string) {
		code, body := query(full, "/api/v1/query", "flow_team")
		return code == 200 && strings.Contains(body, `"team":"ops"`) && !strings.Contains(body, `"team":"dev"`),
			fmt.Sprintf("flow_team after dev's delete: %d %s", code, body)
	})
	if code, body := query(full, "/api/v1/query", "flow_json"); code != 200 || !strings.Contains(body, `"3"]`) {
		t.Errorf("delete_series removed more than it matched: flow_json: %d %s", code, body)
	}
}
