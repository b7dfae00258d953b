package main

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 15, items 6 and 7, as the attacker with one valid token would try them.

// respToken signs an RS256 token for -auth.publicKeyFiles=rlPublicKeyFile.
func respToken(t *testing.T, va auth.VMAccess) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "e2e-resp", "exp": time.Now().Add(time.Hour).Unix(), "vm_access": va}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rlKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// getRaw sends GET with Accept-Encoding: gzip and returns the answer as it came over the wire, and decoded.
func getRaw(t *testing.T, target string, header ...string) (resp *http.Response, wire, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err = (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %s", target, err)
	}
	defer resp.Body.Close()
	if wire, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("GET %s: reading the answer: %s", target, err)
	}
	body = wire
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(strings.NewReader(string(wire)))
		if err != nil {
			t.Fatalf("GET %s: %s", target, err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatalf("GET %s: %s", target, err)
		}
	}
	return resp, wire, body
}

// metricNameEntries returns the seriesCountByMetricName entries of a status/tsdb answer by name.
func metricNameEntries(t *testing.T, body []byte) map[string]map[string]any {
	t.Helper()
	var a struct {
		Status string
		Data   struct {
			SeriesCountByMetricName []map[string]any `json:"seriesCountByMetricName"`
		}
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Status != "success" {
		t.Fatalf("not a status/tsdb answer (%v): %.500s", err, body)
	}
	m := map[string]map[string]any{}
	for _, e := range a.Data.SeriesCountByMetricName {
		m[fmt.Sprint(e["name"])] = e
	}
	return m
}

// TestTSDBStatusHidesOtherTeamsQueries is item 6 against the real VictoriaMetrics v1.151: team prod queries a
// metric name team dev also writes; VictoriaMetrics counts those queries in dev's status/tsdb answer, and the
// gateway removes the count and the time for dev's restricted token, whatever encoding dev asks for.
func TestTSDBStatusHidesOtherTeamsQueries(t *testing.T) {
	vm := vmtest.StartCurrent(t)
	data := "shared_metric{team=\"prod\"} 1\nshared_metric{team=\"dev\"} 2\ndev_only{team=\"dev\"} 3\nprod_only{team=\"prod\"} 4\n"
	if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus", strings.NewReader(data), "Content-Type", "text/plain"); code != 204 {
		t.Fatalf("import: %d %s", code, b)
	}
	vm.Flush(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t))
	prod := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "prod"}, Mode: auth.ModeRead})
	dev := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeRead})
	full := respToken(t, auth.VMAccess{Mode: auth.ModeRead})

	vmtest.Eventually(t, func() (bool, string) {
		code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=shared_metric", nil, bearer(prod)...)
		return code == 200 && strings.Contains(b, `"team":"prod"`), fmt.Sprintf("prod's query: %d %s", code, b)
	})
	for i := 0; i < 5; i++ {
		if code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=shared_metric", nil, bearer(prod)...); code != 200 {
			t.Fatalf("prod's query: %d %s", code, b)
		}
	}

	// Directly, dev's own selection shows prod's queries: the fields this test is about are there to remove.
	direct := vm.URL + "/api/v1/status/tsdb?" + url.Values{"match[]": {`{team="dev"}`}}.Encode()
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := getRaw(t, direct)
		e := metricNameEntries(t, body)["shared_metric"]
		n, _ := e["requestsCount"].(float64)
		ts, _ := e["lastRequestTimestamp"].(float64)
		return n >= 6 && ts > 0, fmt.Sprintf("direct answer for team dev: %s", body)
	})

	for _, path := range []string{"/api/v1/status/tsdb", "/prometheus/api/v1/status/tsdb?topN=100", "/api/v1/status/tsdb?match[]=shared_metric"} {
		resp, wire, body := getRaw(t, g.URL+path, bearer(dev)...)
		if resp.StatusCode != 200 {
			t.Fatalf("dev's %s: %d %s", path, resp.StatusCode, body)
		}
		if resp.Header.Get("Content-Encoding") != "" || resp.ContentLength != int64(len(wire)) {
			t.Errorf("dev's %s: Content-Encoding %q, Content-Length %d for %d bytes", path, resp.Header.Get("Content-Encoding"), resp.ContentLength, len(wire))
		}
		if strings.Contains(string(body), "requestsCount") || strings.Contains(string(body), "lastRequestTimestamp") {
			t.Errorf("dev's %s shows query activity: %s", path, body)
		}
		es := metricNameEntries(t, body)
		if e := es["shared_metric"]; e == nil || e["value"] != 1.0 || len(e) != 2 {
			t.Errorf("dev's %s: shared_metric entry %v, want name and value 1 only; answer %s", path, e, body)
		}
		if es["prod_only"] != nil {
			t.Errorf("dev's %s shows prod's metric: %s", path, body)
		}
	}

	// An unrestricted token sees the whole tenant anyway: its answer is VictoriaMetrics', activity included.
	resp, _, body := getRaw(t, g.URL+"/api/v1/status/tsdb", bearer(full)...)
	if e := metricNameEntries(t, body)["shared_metric"]; resp.StatusCode != 200 || e == nil || e["requestsCount"] == nil || e["value"] != 2.0 {
		t.Errorf("unrestricted token: %d, shared_metric entry %v; answer %s", resp.StatusCode, e, body)
	}
}

// TestTSDBStatusOnOlderVictoriaMetrics: v1.79.5 answers without query activity; a restricted token's answer is
// still filtered, and passes whole.
func TestTSDBStatusOnOlderVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	data := "shared_metric{team=\"prod\"} 1\nshared_metric{team=\"dev\"} 2\ndev_only{team=\"dev\"} 3\nprod_only{team=\"prod\"} 4\n"
	if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus", strings.NewReader(data), "Content-Type", "text/plain"); code != 204 {
		t.Fatalf("import: %d %s", code, b)
	}
	vm.Flush(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t))
	dev := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeRead})
	vmtest.Eventually(t, func() (bool, string) {
		resp, wire, body := getRaw(t, g.URL+"/api/v1/status/tsdb", bearer(dev)...)
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(wire)) {
			return false, fmt.Sprintf("%d, Content-Length %d for %d bytes: %s", resp.StatusCode, resp.ContentLength, len(wire), body)
		}
		es := metricNameEntries(t, body)
		ok := len(es) == 2 && es["dev_only"]["value"] == 1.0 && es["shared_metric"]["value"] == 1.0 && len(es["shared_metric"]) == 2
		return ok, fmt.Sprintf("dev's answer: %s", body)
	})
}

// TestGraphiteTagSeriesIsAWrite is item 7 against the real VictoriaMetrics v1.79.5: registering Graphite series is
// a write. A read-only token cannot, a write token can and is held to the tenant's write limits, and a restricted
// token cannot, since VictoriaMetrics ignores extra_label there and the tags come from the client.
func TestGraphiteTagSeriesIsAWrite(t *testing.T) {
	vm := vmtest.Start(t)
	g := rlGateway(t, vm.URL, vm.URL, "limits:\n  - {type: rows_inserted, value: 1000}\n")
	readFull := respToken(t, auth.VMAccess{Mode: auth.ModeRead})
	write := respToken(t, auth.VMAccess{Mode: auth.ModeWrite})
	devWrite := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeWrite})
	form := func(paths ...string) string { return url.Values{"path": paths}.Encode() }

	code, _, b := do(t, http.MethodPost, g.URL+"/tags/tagSeries", strings.NewReader(form("spoof.read;team=prod")), bearer(readFull)...)
	if code != 403 || !strings.Contains(b, `the token's mode \"read\" does not allow write API \"graphite_tags_tag_series\"`) {
		t.Errorf("read-only token, tagSeries: %d %s", code, b)
	}
	code, _, b = do(t, http.MethodPost, g.URL+"/graphite/tags/tagMultiSeries", strings.NewReader(form("spoof.read2;team=prod")), bearer(readFull)...)
	if code != 403 || !strings.Contains(b, `does not allow write API \"graphite_tags_tag_multi_series\"`) {
		t.Errorf("read-only token, tagMultiSeries: %d %s", code, b)
	}
	code, _, b = do(t, http.MethodPost, g.URL+"/tags/tagSeries", strings.NewReader(form("spoof.dev;team=prod")), bearer(devWrite)...)
	if code != 403 || !strings.Contains(b, "the graphite_tags_tag_series API cannot be limited to the token's extra_labels/extra_filters") {
		t.Errorf("restricted write token, tagSeries: %d %s", code, b)
	}
	code, _, b = do(t, http.MethodPost, g.URL+"/tags/tagSeries", strings.NewReader(form("disk.used;rack=a1;dc=dc1")), bearer(write)...)
	if code != 200 || b != `"disk.used;dc=dc1;rack=a1"` {
		t.Fatalf("write token, tagSeries: %d %s", code, b)
	}
	code, _, b = do(t, http.MethodPost, g.URL+"/graphite/tags/tagMultiSeries", strings.NewReader(form("disk.free;rack=a1", "disk.free;rack=b2")), bearer(write)...)
	if code != 200 || b != `["disk.free;rack=a1","disk.free;rack=b2"]` {
		t.Fatalf("write token, tagMultiSeries: %d %s", code, b)
	}
	vmtest.Eventually(t, func() (bool, string) {
		code, _, b := do(t, http.MethodGet, vm.URL+"/tags/findSeries?expr=rack=~.*", nil)
		ok := strings.Contains(b, "disk.used;dc=dc1;rack=a1") && strings.Contains(b, "disk.free;rack=b2") && !strings.Contains(b, "spoof")
		return code == 200 && ok, fmt.Sprintf("registered series: %d %s", code, b)
	})

	// The tenant goes over its rows_inserted limit (10000 rows a minute against 1000): registration is refused
	// with the other writes, while reads pass.
	now := time.Now()
	var ts, vs []string
	for sec := -300; sec <= 600; sec += 5 {
		ts = append(ts, strconv.FormatInt(now.Add(time.Duration(sec)*time.Second).UnixMilli(), 10))
		vs = append(vs, strconv.Itoa((sec+300)*10000/60))
	}
	usage := fmt.Sprintf(`{"metric":{"__name__":"vm_tenant_inserted_rows_total","accountID":"0","projectID":"0"},"values":[%s],"timestamps":[%s]}`,
		strings.Join(vs, ","), strings.Join(ts, ","))
	if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import", strings.NewReader(usage), "Content-Type", "application/json"); code != 204 {
		t.Fatalf("import usage: %d %s", code, b)
	}
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		code, _, b := do(t, http.MethodPost, g.URL+"/tags/tagSeries", strings.NewReader(form("disk.late;rack=c3")), bearer(write)...)
		return code == 429 && strings.Contains(b, "limit type=rows_inserted"), fmt.Sprintf("tagSeries over the write limit: %d %s", code, b)
	})
	code, _, b = do(t, http.MethodPost, g.URL+"/tags/tagMultiSeries", strings.NewReader(form("disk.late2;rack=c3")), bearer(write)...)
	if code != 429 || !strings.Contains(b, "limit type=rows_inserted") {
		t.Errorf("tagMultiSeries over the write limit: %d %s", code, b)
	}
	if code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=1", nil, bearer(readFull)...); code != 200 {
		t.Errorf("a read over the write limit: %d %s", code, b)
	}
}

// TestActiveQueriesNoneRunningOnDebian: 1.79.5 answers /api/v1/status/active_queries with an empty body when no query
// runs; the gateway, which drops the queries' ids, passed it as a 502 (a review). It holds no id: it goes through.
func TestActiveQueriesNoneRunningOnDebian(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/status/active_queries", nil, bearer(mint(t, priv, "-mode=read"))...)
	if code != http.StatusOK || strings.Contains(body, "error") {
		t.Fatalf("active queries, none running: %d %q; want 200 and VictoriaMetrics' answer", code, body)
	}
}

// TestBackendHostnameNotServed: VictoriaMetrics names its host in every answer (X-Server-Hostname; in Kubernetes the
// backend's pod), which clients of the gateway are not told (a review).
func TestBackendHostnameNotServed(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	if _, h, _ := do(t, http.MethodGet, vm.URL+"/api/v1/query?query=1", nil); h.Get("X-Server-Hostname") == "" {
		t.Fatal("VictoriaMetrics sent no X-Server-Hostname: the test cannot tell")
	}
	for _, path := range []string{"/api/v1/query?query=1", "/api/v1/query?query=sum(", "/api/v1/labels", "/vmui/"} {
		code, h, _ := do(t, http.MethodGet, g.URL+path, nil, bearer(mint(t, priv, "-mode=read"))...)
		if v := h.Get("X-Server-Hostname"); v != "" || code == 0 {
			t.Errorf("%s: %d, X-Server-Hostname %q; want none", path, code, v)
		}
	}
}
