package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 19, "Seeing what happens": the access log, request ids and errors in one JSON shape, through the real
// binary against the real VictoriaMetrics.

var accessLogFields = []string{"ts", "request_id", "remote_addr", "method", "path", "api", "tenant", "subject", "mode",
	"status", "duration_ms", "bytes_in", "bytes_out", "upstream", "reason"}

// accessLines reads an access-log file: every line must be one JSON object with exactly the documented fields
// (and query, with -accessLog.queries). Lines are keyed by request id.
func accessLines(t *testing.T, path string, queries bool) map[string]map[string]any {
	t.Helper()
	want := len(accessLogFields)
	if queries {
		want++
	}
	out := vmtest.JSONLines(t, path, "request_id")
	for _, m := range out {
		for _, f := range accessLogFields {
			if _, ok := m[f]; !ok {
				t.Fatalf("access-log line lacks %q:\n%v", f, m)
			}
		}
		if _, ok := m["query"]; len(m) != want || ok != queries {
			t.Fatalf("access-log line has %d fields, want %d (query: %v):\n%v", len(m), want, queries, m)
		}
	}
	return out
}

// waitLines waits until the access log at path has a line for every id (lines are written at least every second).
func waitLines(t *testing.T, path string, queries bool, ids ...string) map[string]map[string]any {
	t.Helper()
	var lines map[string]map[string]any
	vmtest.Eventually(t, func() (bool, string) {
		if _, err := os.Stat(path); err != nil {
			return false, err.Error()
		}
		lines = accessLines(t, path, queries)
		for _, id := range ids {
			if lines[id] == nil {
				return false, fmt.Sprintf("no access-log line for request id %s in %s", id, path)
			}
		}
		return true, ""
	})
	return lines
}

type answer struct {
	code   int
	header http.Header
	body   string
	err    struct{ Status, ErrorType, Error, RequestID string }
}

func send(t *testing.T, method, u, body, id string, header ...string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	if id != "" {
		header = append(header, "X-Request-Id", id)
	}
	var a answer
	a.code, a.header, a.body = do(t, method, u, r, header...)
	if a.code >= 400 {
		if err := json.Unmarshal([]byte(a.body), &a.err); err != nil || a.err.Status != "error" {
			t.Fatalf("%s %s: %d answer is not a JSON error: %q", method, u, a.code, a.body)
		}
	}
	return a
}

// TestAccessLogLines: one line per request for 200, 401, 403, 404, 413, 429 and 502 with its fields, the reason
// of every refusal in the client's words, no token, signature or credential anywhere in the log, and a new file
// after a rotation and SIGHUP.
func TestAccessLogLines(t *testing.T) {
	vm := vmtest.Start(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	vmURL, _ := url.Parse(vm.URL)
	withCreds := "http://reader:s3cr3t-pass@" + vmURL.Host
	refused := "http://" + vmtest.FreePort(t)
	g := rlGateway(t, withCreds, vm.URL, "limits:\n  - {type: queries, value: 3, key: claim:sub}\n",
		"-write.url="+refused, "-maxReadBodySize=100", "-accessLog.path="+logPath)

	alice := rlToken(t, tenant.ID{}, "alice")
	tenant5 := rlToken(t, tenant.ID{AccountID: 5}, "team-5")
	limited := rlToken(t, tenant.ID{}, "limited")
	// Signed by another key: its signature does not verify.
	forgedParts := strings.Split(alice, ".")
	forged := forgedParts[0] + "." + forgedParts[1] + "." + strings.Repeat("A", len(forgedParts[2]))
	tokens := map[string]string{"alice": alice, "tenant5": tenant5, "limited": limited, "forged": forged}

	type want struct {
		code                                     int
		method, path, api, tenant, subject, mode string
		upstream                                 string
	}
	answers := map[string]answer{}
	expect := map[string]want{}
	// identity: bytes_out counts what went on the wire, and Go's client would ask for gzip and decode it unseen.
	answers["e2e-200"] = send(t, "GET", g.URL+"/api/v1/query?query=alice_private_query", "", "e2e-200", append(bearer(alice), "Accept-Encoding", "identity")...)
	expect["e2e-200"] = want{200, "GET", "/api/v1/query", "query", "0:0", "alice", "full", "http://" + vmURL.Host}
	answers["e2e-401"] = send(t, "GET", g.URL+"/api/v1/query?query=up", "", "e2e-401")
	expect["e2e-401"] = want{401, "GET", "/api/v1/query", "query", "", "", "", ""}
	answers["e2e-401-forged"] = send(t, "GET", g.URL+"/api/v1/query?query=up", "", "e2e-401-forged", bearer(forged)...)
	expect["e2e-401-forged"] = want{401, "GET", "/api/v1/query", "query", "", "", "", ""}
	answers["e2e-403"] = send(t, "GET", g.URL+"/api/v1/labels", "", "e2e-403", bearer(tenant5)...)
	expect["e2e-403"] = want{403, "GET", "/api/v1/labels", "labels", "5:0", "team-5", "full", ""}
	answers["e2e-404"] = send(t, "GET", g.URL+"/api/v1/no_such_api", "", "e2e-404", bearer(alice)...)
	expect["e2e-404"] = want{404, "GET", "/api/v1/no_such_api", "unknown", "0:0", "alice", "full", ""}
	answers["e2e-413"] = send(t, "POST", g.URL+"/api/v1/query", "query="+strings.Repeat("x", 200), "e2e-413", bearer(alice)...)
	expect["e2e-413"] = want{413, "POST", "/api/v1/query", "query", "0:0", "alice", "full", ""}
	for i := 0; i < 3; i++ {
		if a := send(t, "GET", g.URL+"/api/v1/query?query=up", "", "", bearer(limited)...); a.code != 200 {
			t.Fatalf("query %d of the limited token: %d %s", i+1, a.code, a.body)
		}
	}
	answers["e2e-429"] = send(t, "GET", g.URL+"/api/v1/query?query=up", "", "e2e-429", bearer(limited)...)
	expect["e2e-429"] = want{429, "GET", "/api/v1/query", "query", "0:0", "limited", "full", ""}
	answers["e2e-502"] = send(t, "POST", g.URL+"/api/v1/import/prometheus", "e2e_metric 1\n", "e2e-502", append(bearer(alice), "Content-Type", "text/plain")...)
	expect["e2e-502"] = want{502, "POST", "/api/v1/import/prometheus", "import_prometheus", "0:0", "alice", "full", refused}

	ids := make([]string, 0, len(expect))
	for id := range expect {
		ids = append(ids, id)
	}
	lines := waitLines(t, logPath, false, ids...)
	for id, w := range expect {
		a, l := answers[id], lines[id]
		if a.code != w.code {
			t.Errorf("%s: the client got %d %s, want %d", id, a.code, a.body, w.code)
		}
		got := map[string]any{"status": float64(w.code), "method": w.method, "path": w.path, "api": w.api, "tenant": w.tenant,
			"subject": w.subject, "mode": w.mode, "upstream": w.upstream, "reason": a.err.Error}
		for k, v := range got {
			if l[k] != v {
				t.Errorf("%s: %s = %#v, want %#v\n%v", id, k, l[k], v, l)
			}
		}
		if w.code >= 400 && (a.err.RequestID != id || a.header.Get("X-Request-Id") != id) {
			t.Errorf("%s: the error carries request id %q, the header %q", id, a.err.RequestID, a.header.Get("X-Request-Id"))
		}
		if d, ok := l["duration_ms"].(float64); !ok || d < 0 || d > 60000 {
			t.Errorf("%s: duration_ms %v", id, l["duration_ms"])
		}
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(l["ts"].(string)) ||
			!strings.HasPrefix(l["remote_addr"].(string), "127.0.0.1:") {
			t.Errorf("%s: ts %v, remote_addr %v", id, l["ts"], l["remote_addr"])
		}
	}
	if l := lines["e2e-200"]; l["bytes_out"].(float64) != float64(len(answers["e2e-200"].body)) || l["bytes_in"].(float64) != 0 {
		t.Errorf("200: bytes_in %v, bytes_out %v; the answer had %d bytes", l["bytes_in"], l["bytes_out"], len(answers["e2e-200"].body))
	}
	// Each refusal's reason is its own: the words of the gateway's error, not a generic status text.
	for id, substr := range map[string]string{"e2e-401": "Authorization", "e2e-401-forged": "signature", "e2e-403": "tenant 5:0",
		"e2e-404": "no_such_api", "e2e-413": "bytes", "e2e-429": "rate limit exceeded", "e2e-502": "write upstream"} {
		if r, _ := lines[id]["reason"].(string); !strings.Contains(r, substr) {
			t.Errorf("%s: reason %q lacks %q", id, r, substr)
		}
	}
	// The 502 names the kind of upstream and the request id, not the address; the gateway's log has the address.
	e502 := answers["e2e-502"].err.Error
	if !strings.Contains(e502, "request id e2e-502") || strings.Contains(e502, strings.TrimPrefix(refused, "http://")) {
		t.Errorf("502 message %q: want the request id and no address", e502)
	}
	if !g.logged("request_id=e2e-502") || !strings.Contains(g.logs.String(), "upstream="+refused) {
		t.Errorf("the gateway's log lacks the failed upstream's address under request id e2e-502")
	}

	// Nothing secret in the log: no token, no signature, no upstream password, no query text without -accessLog.queries.
	data, _ := os.ReadFile(logPath)
	for name, tok := range tokens {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(string(data), tok) || strings.Contains(string(data), sig) {
			t.Errorf("the access log holds the %s token or its signature", name)
		}
	}
	for _, secret := range []string{"s3cr3t-pass", "reader:", "alice_private_query"} {
		if strings.Contains(string(data), secret) {
			t.Errorf("the access log holds %q", secret)
		}
	}

	// Rotation: the file is renamed, SIGHUP reopens the name, new lines go to the new file.
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := g.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !g.logged("SIGHUP: access log reopened") {
		t.Fatal("no log line for the reopened access log")
	}
	send(t, "GET", g.URL+"/api/v1/query?query=up", "", "e2e-after-rotation", bearer(alice)...)
	fresh := waitLines(t, logPath, false, "e2e-after-rotation")
	if len(fresh) != 1 {
		t.Errorf("the new file has %d lines, want only the request after the rotation: %v", len(fresh), fresh)
	}
	if old := accessLines(t, rotated, false); old["e2e-200"] == nil || old["e2e-after-rotation"] != nil {
		t.Errorf("the rotated file must keep the lines before the SIGHUP and only those")
	}
}

// TestRequestIDs: a well-formed client id goes upstream and comes back; any other is replaced by one the upstream
// and the client both see; -accessLog.queries adds the query, and skipped statuses get no line.
func TestRequestIDs(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-accessLog.path="+logPath,
		"-accessLog.queries", "-accessLog.skipStatusCodes=204")
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	var seen []string
	for _, tc := range []struct {
		sent string
		keep bool
		// hop: the client names the id a hop-by-hop header, which must not take it from the upstream request.
		hop bool
	}{
		{"grafana-7f3a:panel.12_x", true, false},
		{strings.Repeat("a", 128), true, false},
		{strings.Repeat("a", 129), false, false},
		{"bad id", false, false},
		{"quote\"d", false, false},
		{"", false, false},
		{"hop-1", true, true},
		{"", false, true},
	} {
		var header []string
		if tc.hop {
			header = []string{"Connection", "X-Request-Id, X-Other"}
		}
		a := send(t, "GET", g.URL+"/api/v1/query?query=sum(rate(x[5m]))%20%3E%201", "", tc.sent, header...)
		reqs := rec.Requests()
		if a.code != 200 || len(reqs) != 1 {
			t.Fatalf("id %q: %d %s, %d upstream requests", tc.sent, a.code, a.body, len(reqs))
		}
		back, up := a.header.Values("X-Request-Id"), reqs[0].Header.Values("X-Request-Id")
		if len(back) != 1 || len(up) != 1 || back[0] != up[0] {
			t.Fatalf("id %q: the answer carries %q, the upstream got %q; want one and the same", tc.sent, back, up)
		}
		if tc.keep && back[0] != tc.sent || !tc.keep && !generated.MatchString(back[0]) {
			t.Fatalf("id %q: got %q (kept: %v)", tc.sent, back[0], tc.keep)
		}
		seen = append(seen, back[0])
	}
	if seen[2] == seen[3] {
		t.Fatal("two generated ids alike")
	}
	// An error of the gateway carries the id in its JSON and its header.
	a := send(t, "GET", g.URL+"/api/v1/no_such_api", "", "client-err-1")
	if a.code != 404 || a.err.RequestID != "client-err-1" || a.header.Get("X-Request-Id") != "client-err-1" {
		t.Fatalf("404: %d %q, header %q", a.code, a.body, a.header.Get("X-Request-Id"))
	}
	send(t, "GET", g.URL+"/api/v1/export?match[]=up&match[]=%7Bjob%3D%22a%22%7D", "", "export-1")
	rec.Respond(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	send(t, "POST", g.URL+"/api/v1/import/prometheus", "m 1\n", "skipped-204", "Content-Type", "text/plain")
	rec.Respond(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"status":"success"}`) })
	form := "query=" + url.QueryEscape(`count(up{a="<&>"})`)
	if a := send(t, "POST", g.URL+"/api/v1/query", form, "form-1"); a.code != 200 {
		t.Fatalf("form query: %d %s", a.code, a.body)
	}
	lines := waitLines(t, logPath, true, append(seen, "client-err-1", "export-1", "form-1")...)
	if l := lines["form-1"]; l["bytes_in"] != float64(len(form)) || l["query"] != `count(up{a="<&>"})` || l["bytes_out"] != float64(len(`{"status":"success"}`)) {
		t.Errorf("form query: bytes_in %v (want %d), query %v, bytes_out %v", l["bytes_in"], len(form), l["query"], l["bytes_out"])
	}
	if q := lines[seen[0]]["query"]; q != "sum(rate(x[5m])) > 1" {
		t.Errorf("query field %q", q)
	}
	if q := lines["export-1"]["query"]; q != `up or {job="a"}` {
		t.Errorf("export query field %q", q)
	}
	if lines["skipped-204"] != nil {
		t.Errorf("a skipped status got a line: %v", lines["skipped-204"])
	}
	if lines["client-err-1"]["upstream"] != "" || lines[seen[0]]["upstream"] != rec.URL {
		t.Errorf("upstream fields: %v, %v", lines["client-err-1"]["upstream"], lines[seen[0]]["upstream"])
	}
}

// TestPlainUpstreamErrorsWrapped: the errors VictoriaMetrics answers in plain text (federate, export, remote
// write), gzipped or not, reach the client as JSON errors with their status and message, in 1.79.5 and in the
// current release; VictoriaMetrics' own JSON errors pass unchanged.
func TestPlainUpstreamErrorsWrapped(t *testing.T) {
	for _, v := range []struct {
		name  string
		start func(testing.TB, ...string) *vmtest.VM
	}{{"1.79.5", vmtest.Start}, {vmtest.CurrentVersion, vmtest.StartCurrent}} {
		t.Run(v.name, func(t *testing.T) {
			vm := v.start(t)
			g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL)
			for _, tc := range []struct {
				method, path, body, ctype string
				gzip                      bool
				code                      int
				msg                       string
			}{
				{"GET", "/federate", "", "", false, 400, "missing `match[]` arg"},
				{"GET", "/federate", "", "", true, 400, "missing `match[]` arg"},
				{"GET", "/api/v1/export?match[]=up%7B", "", "", true, 400, "cannot parse"},
				{"POST", "/api/v1/write", "not snappy", "application/x-protobuf", false, 400, "snappy"},
			} {
				header := []string{"X-Request-Id", "wrap-1"}
				if tc.ctype != "" {
					header = append(header, "Content-Type", tc.ctype)
				}
				code, h, body := rawDo(t, tc.method, g.URL+tc.path, tc.body, tc.gzip, header...)
				var e struct{ Status, ErrorType, Error, RequestID string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || h.Get("Content-Type") != "application/json" {
					t.Errorf("%s %s (gzip %v): %d %q is not a JSON error (%v)", tc.method, tc.path, tc.gzip, code, body, err)
					continue
				}
				if code != tc.code || e.Status != "error" || e.ErrorType != "bad_data" || !strings.Contains(e.Error, tc.msg) ||
					e.RequestID != "wrap-1" || strings.Contains(e.Error, "remoteAddr") {
					t.Errorf("%s %s (gzip %v): %d %+v; want %d with %q, request id wrap-1 and no remoteAddr prefix", tc.method, tc.path, tc.gzip, code, e, tc.code, tc.msg)
				}
			}
			// VictoriaMetrics' JSON errors are its own: passed as they came (no requestId added).
			code, _, body := rawDo(t, "GET", g.URL+"/api/v1/query", "", false)
			if code/100 != 4 || !strings.Contains(body, "missing `query` arg") || strings.Contains(body, "requestId") {
				t.Errorf("JSON error of VictoriaMetrics: %d %s", code, body)
			}
		})
	}
}

// rawDo sends a request with or without Accept-Encoding: gzip, decoding a gzip answer itself, so the test sees
// what the gateway sent.
func rawDo(t *testing.T, method, u, body string, acceptGzip bool, header ...string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// Set either way: without it Go's transport would ask for gzip and decode the answer out of the test's sight.
	req.Header.Set("Accept-Encoding", "identity")
	if acceptGzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		rd = zr
	}
	b, _ := io.ReadAll(rd)
	return resp.StatusCode, resp.Header, string(b)
}

// TestAccessLogStdoutAndFlagErrors: -accessLog.path=stdout writes the lines to the process's output; flags that
// shape an access log that is off, bad statuses and a path that cannot be opened stop the start with a message
// naming the flag.
func TestAccessLogStdoutAndFlagErrors(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-accessLog.path=stdout")
	if a := send(t, "GET", g.URL+"/api/v1/labels", "", "to-stdout-1"); a.code != 200 {
		t.Fatalf("labels: %d %s", a.code, a.body)
	}
	if !g.logged(`"request_id":"to-stdout-1","remote_addr":"127.0.0.1:`) {
		t.Fatalf("no access-log line on stdout")
	}

	base := []string{"-read.url=http://x", "-write.url=http://x", "-httpListenAddr=127.0.0.1:0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-accessLog.queries"}, "-accessLog.skipStatusCodes and -accessLog.queries shape the access log, which is off: set -accessLog.path"},
		{[]string{"-accessLog.skipStatusCodes=200"}, "set -accessLog.path"},
		{[]string{"-accessLog.path=stdout", "-accessLog.skipStatusCodes=2xx"}, `-accessLog.skipStatusCodes: "2xx" is not an HTTP status code`},
		{[]string{"-accessLog.path=stdout", "-accessLog.skipStatusCodes=1000"}, `-accessLog.skipStatusCodes: 1000 is not an HTTP status code`},
		{[]string{"-accessLog.path=" + filepath.Join(t.TempDir(), "no", "such", "dir", "a.log")}, "-accessLog.path: cannot open"},
	} {
		out, err := exec.Command(gatewayBin, append(append([]string{}, base...), tc.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: want a failed start mentioning %q, got err=%v:\n%s", tc.args, tc.want, err, out)
		}
	}
}

// TestAccessLogReasonsWithoutQueryText: a refusal whose error quotes the client's query (a query that does not
// parse, a URL query with a bad escape, a match[] that is no selector) gets the whole message, query included, while
// the access log's reason elides the query text unless -accessLog.queries is set.
func TestAccessLogReasonsWithoutQueryText(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	const secret = "team_secret_metric"
	refusals := map[string]string{
		"bad-query":  "/select/0/prometheus/api/v1/query?query=" + url.QueryEscape("sum(rate("+secret+"[5m]) by"),
		"bad-escape": "/select/0/prometheus/api/v1/query?query=" + secret + "%zz",
		"bad-match":  "/select/0/prometheus/api/v1/series?match[]=" + url.QueryEscape("sum("+secret+")"),
	}
	for _, queries := range []bool{false, true} {
		logPath := filepath.Join(t.TempDir(), "access.log")
		flags := []string{"-clusterMode", "-read.url=" + rec.URL, "-write.url=" + rec.URL, "-accessLog.path=" + logPath}
		if queries {
			flags = append(flags, "-accessLog.queries")
		}
		g := startGateway(t, flags...)
		ids := []string{}
		for id, path := range refusals {
			a := send(t, "GET", g.URL+path, "", id)
			if a.code != http.StatusBadRequest || !strings.Contains(a.err.Error, secret) {
				t.Fatalf("queries=%v %s: %d %q; want 400 quoting the query to the client", queries, id, a.code, a.body)
			}
			ids = append(ids, id)
		}
		lines := waitLines(t, logPath, queries, ids...)
		for _, id := range ids {
			reason, _ := lines[id]["reason"].(string)
			if queries != strings.Contains(reason, secret) || !queries && !strings.Contains(reason, httperr.Elided) {
				t.Errorf("queries=%v %s: reason %q", queries, id, reason)
			}
		}
		data, _ := os.ReadFile(logPath)
		if !queries && strings.Contains(string(data), secret) {
			t.Errorf("without -accessLog.queries the log holds query text:\n%s", data)
		}
		if n := len(rec.Requests()); n != 0 {
			t.Fatalf("%d refused requests were forwarded", n)
		}
		g.stop(syscall.SIGTERM)
	}
}

// TestServerRefusalsLogged: a request the HTTP server refuses itself (a malformed head, one past the head's hard
// cap, an unknown Expect, a bad request line) gets a request id in its answer and its JSON error, and an access-log
// line under it whose reason leaves out what the message quotes of the request; nothing reaches the upstream.
func TestServerRefusalsLogged(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-accessLog.path="+logPath, "-accessLog.queries",
		"-http.maxHeaderBytes=1024")
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	type refusal struct {
		name, head           string
		status               int
		method, path, reason string
	}
	big := "X-Big: " + strings.Repeat("b", 1<<20) + "\r\n"
	ids := map[string]refusal{}
	for _, tc := range []refusal{
		{"header line without a colon", "GET /api/v1/query?query=secret_query HTTP/1.1\r\nHost: gw\r\nAuthorization Bearer SECRETTOKEN\r\n\r\n",
			400, "GET", "/api/v1/query", `cannot parse the HTTP request: malformed header line "<elided>": missing colon`},
		{"bad request line", "GET /api/v1/query?query=secret_query HTTP/9.x\r\nHost: gw\r\n\r\n",
			400, "", "", `cannot parse the HTTP request: malformed HTTP version "<elided>"`},
		{"head past the hard cap", "GET /api/v1/labels HTTP/1.1\r\nHost: gw\r\n" + big + "\r\n",
			431, "", "", "the request line and headers are larger than 1048576 bytes; at most 1024 are accepted (-http.maxHeaderBytes): send a shorter URL, fewer cookies or a smaller token"},
		{"unknown Expect", "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: gw\r\nExpect: 200-ok\r\nContent-Length: 4\r\n\r\nm 1\n",
			417, "POST", "/api/v1/import/prometheus", "unsupported Expect header: only 100-continue is known"},
	} {
		c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, tc.head)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		var e struct{ Status, Error, RequestID string }
		if err := json.Unmarshal(b, &e); err != nil || e.Status != "error" || resp.StatusCode != tc.status {
			t.Fatalf("%s: %d %q; want a JSON error with %d", tc.name, resp.StatusCode, b, tc.status)
		}
		id := resp.Header.Get("X-Request-Id")
		if !generated.MatchString(id) || e.RequestID != id {
			t.Fatalf("%s: X-Request-Id %q, requestId %q; want one generated id in both", tc.name, id, e.RequestID)
		}
		ids[id] = tc
	}
	lines := waitLines(t, logPath, true, slices.Collect(maps.Keys(ids))...)
	for id, tc := range ids {
		l := lines[id]
		if l["status"] != float64(tc.status) || l["method"] != tc.method || l["path"] != tc.path || l["api"] != "" || l["reason"] != tc.reason {
			t.Errorf("%s: line %v; want status %d, method %q, path %q, no api, reason %q", tc.name, l, tc.status, tc.method, tc.path, tc.reason)
		}
	}
	if raw, err := os.ReadFile(logPath); err != nil || strings.Contains(string(raw), "SECRETTOKEN") || strings.Contains(string(raw), "secret_query") {
		t.Errorf("the access log keeps what the refused requests sent (%v):\n%s", err, raw)
	}
	if n := len(rec.Requests()); n != 0 {
		t.Errorf("%d refused requests reached the upstream", n)
	}
}
