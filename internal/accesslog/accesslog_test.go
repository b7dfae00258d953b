package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

var fieldOrder = []string{"ts", "request_id", "remote_addr", "method", "path", "api", "tenant", "subject", "mode", "status",
	"duration_ms", "bytes_in", "bytes_out", "upstream", "reason"}

// decodeLines parses every line of a log strictly: each is one JSON object with exactly the documented fields.
func decodeLines(t *testing.T, data string, queries bool) []map[string]any {
	t.Helper()
	want := fieldOrder
	if queries {
		want = append(append([]string(nil), fieldOrder...), "query")
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(data, "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("line is not JSON: %s\n%s", err, line)
		}
		if len(m) != len(want) {
			t.Fatalf("line has %d fields, want %v:\n%s", len(m), want, line)
		}
		for _, f := range want {
			if _, ok := m[f]; !ok {
				t.Fatalf("line lacks %q:\n%s", f, line)
			}
		}
		out = append(out, m)
	}
	return out
}

func TestAppendLine(t *testing.T) {
	e := &Entry{remoteAddr: "10.1.2.3:5555", method: "GET", path: "/api/v1/query/\xff\"<b>&\n\t\x01\x7f\u0085\u009b\u2029é", api: "query",
		subject: "alice\u2028", mode: "read", status: 422, wroteHeader: true, bytesOut: 77, upstream: "http://vm:8428",
		reason: `cannot parse query "a<b && c>d"`, query: `sum(rate(x{a="b"}[5m])) > 1 & 2`}
	e.ids[0] = "req-1"
	e.tenant, e.hasTenant = tenant.ID{AccountID: 42, ProjectID: 7}, true
	e.body.n.Store(1234)
	for _, queries := range []bool{false, true} {
		line := appendLine(nil, e, e.Status(), queries)
		if bytes.Contains(line, []byte(`\u003c`)) || bytes.Contains(line, []byte(`\u0026`)) {
			t.Errorf("<, > and & must not be escaped: %s", line)
		}
		if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
			t.Errorf("want one line: %q", line)
		}
		// DEL, C1 controls and Unicode line ends are escaped, other characters kept: one line for every reader.
		if lines := strings.Split(strings.ReplaceAll(string(line), "\r\n", "\n"), "\n"); len(strings.FieldsFunc(string(line), func(r rune) bool {
			return r == 0x85 || r == 0x2028 || r == 0x2029 || r == 0x7f || r == 0x9b
		})) != 1 || len(lines) != 2 {
			t.Errorf("a line end or control character is written raw: %q", line)
		}
		for _, esc := range []string{`\u007f`, `\u0085`, `\u009b`, `\u2029`, `\u2028`} {
			if !bytes.Contains(line, []byte(esc)) {
				t.Errorf("want %s escaped in %q", esc, line)
			}
		}
		if !bytes.Contains(line, []byte("é")) {
			t.Errorf("é must stay as it is: %q", line)
		}
		m := decodeLines(t, string(line), queries)[0]
		want := map[string]string{"request_id": "req-1", "remote_addr": "10.1.2.3:5555", "method": "GET",
			"path": "/api/v1/query/\uFFFD\"<b>&\n\t\x01\x7f\u0085\u009b\u2029é", "api": "query", "tenant": "42:7", "subject": "alice\u2028", "mode": "read",
			"status": "422", "bytes_in": "1234", "bytes_out": "77", "upstream": "http://vm:8428", "reason": e.reason}
		if queries {
			want["query"] = e.query
		}
		for k, v := range want {
			if got := jsonString(m[k]); got != v {
				t.Errorf("queries=%v: %s = %q, want %q", queries, k, got, v)
			}
		}
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(m["ts"].(string)) {
			t.Errorf("ts %q is not RFC 3339 UTC with milliseconds", m["ts"])
		}
		if _, err := m["duration_ms"].(json.Number).Float64(); err != nil {
			t.Errorf("duration_ms %v: %s", m["duration_ms"], err)
		}
	}
	// Nothing known: an empty tenant, not 0:0, and 499 for a request that got no answer.
	m := decodeLines(t, string(appendLine(nil, &Entry{}, (&Entry{}).Status(), false)), false)[0]
	if m["tenant"] != "" || jsonString(m["status"]) != "499" {
		t.Errorf("empty entry: %v", m)
	}
}

func jsonString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return string(must(json.Marshal(v)))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRequestID(t *testing.T) {
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		name string
		sent []string
		keep bool
	}{
		{"none", nil, false},
		{"well-formed", []string{"abc-DEF_0.9:x"}, true},
		{"128 characters", []string{long}, true},
		{"129 characters", []string{long + "b"}, false},
		{"empty", []string{""}, false},
		{"space", []string{"a b"}, false},
		{"slash", []string{"a/b"}, false},
		{"quote", []string{`a"b`}, false},
		{"non-ASCII", []string{"é"}, false},
		{"twice", []string{"a", "b"}, false},
	} {
		var upstreamID []string
		h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			upstreamID = r.Header.Values("X-Request-Id")
			if got := From(w).RequestID(); len(upstreamID) != 1 || got != upstreamID[0] {
				t.Errorf("%s: entry id %q, request header %q", tc.name, got, upstreamID)
			}
		}), nil)
		r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
		for _, v := range tc.sent {
			r.Header.Add("X-Request-Id", v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		got := rec.Header().Values("X-Request-Id")
		if len(got) != 1 || len(upstreamID) != 1 || got[0] != upstreamID[0] {
			t.Errorf("%s: answer carries %q, upstream got %q; want one and the same id", tc.name, got, upstreamID)
			continue
		}
		if tc.keep && got[0] != tc.sent[0] {
			t.Errorf("%s: id %q replaced by %q", tc.name, tc.sent[0], got[0])
		}
		if !tc.keep && !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got[0]) {
			t.Errorf("%s: generated id %q is not 32 hex digits", tc.name, got[0])
		}
	}
	if a, b := newID(), newID(); a == b {
		t.Fatalf("two ids alike: %s", a)
	}
}

// TestUpstreamIDOverridden: the answer carries the gateway's id once, even when the upstream sets its own.
func TestUpstreamIDOverridden(t *testing.T) {
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("X-Request-Id", "upstream-id")
		w.WriteHeader(http.StatusOK)
	}), nil)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-Request-Id", "client-id")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if got := rec.Header().Values("X-Request-Id"); len(got) != 1 || got[0] != "client-id" {
		t.Fatalf("answer ids %q, want [client-id]", got)
	}
}

func openTestLog(t *testing.T, cfg Config) *Log {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// TestLogFile: the lines of a served request, skipped statuses, reopening after rotation and Close.
func TestLogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := openTestLog(t, Config{Path: path, SkipStatusCodes: []int{204}})
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := From(w)
		e.SetAPI("import")
		e.SetAccess(tenant.ID{AccountID: 1}, "team-a", "write")
		e.AddUpstream("http://a:8480")
		e.AddUpstream("http://b:8480")
		b, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("skip") != "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = w.Write(b[:3])
		_, _ = w.Write(b[3:])
	}), l)
	serve := func(q string) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/import"+q, strings.NewReader("0123456789"))
		r.RemoteAddr = "192.0.2.1:1234"
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	serve("")
	serve("?skip=1")
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	serve("?after=rotate")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	serve("?in=new")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old := decodeLines(t, string(must(os.ReadFile(rotated))), false)
	cur := decodeLines(t, string(must(os.ReadFile(path))), false)
	if len(old) != 2 || len(cur) != 1 {
		t.Fatalf("rotated file has %d lines (want 2: before the rename and before Reopen), new file %d (want 1)", len(old), len(cur))
	}
	m := old[0]
	for k, v := range map[string]string{"method": "POST", "path": "/api/v1/import", "api": "import", "tenant": "1:0", "subject": "team-a",
		"mode": "write", "status": "200", "bytes_in": "10", "bytes_out": "10", "upstream": "http://a:8480,http://b:8480", "reason": "",
		"remote_addr": "192.0.2.1:1234"} {
		if got := jsonString(m[k]); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	if l, err := Open(Config{}); l != nil || err != nil {
		t.Fatalf("no path: %v, %v; want no log", l, err)
	}
	if _, err := Open(Config{Path: filepath.Join(t.TempDir(), "missing", "a.log")}); err == nil || !strings.Contains(err.Error(), "-accessLog.path") {
		t.Fatalf("unwritable path: %v", err)
	}
	if _, err := Open(Config{Path: "stdout", SkipStatusCodes: []int{1000}}); err == nil || !strings.Contains(err.Error(), "-accessLog.skipStatusCodes") {
		t.Fatalf("bad status: %v", err)
	}
	// A nil log is what "no access log" is: every method is safe on it.
	var l *Log
	if l.Reopen() != nil || l.Close() != nil {
		t.Fatal("nil log")
	}
}

// TestAbortedResponseLogged: a handler that panics with http.ErrAbortHandler (the proxy, when an upstream breaks
// off) still gets its line, with the outcome it was counted with.
func TestAbortedResponseLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := openTestLog(t, Config{Path: path})
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("partial"))
		From(w).SetOutcome(http.StatusBadGateway, "the read upstream broke off the response")
		panic(http.ErrAbortHandler)
	}), l)
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("panic %v, want http.ErrAbortHandler passed on", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/v1/export", nil))
	}()
	_ = l.Close()
	lines := decodeLines(t, string(must(os.ReadFile(path))), false)
	if len(lines) != 1 || jsonString(lines[0]["status"]) != "502" || lines[0]["reason"] != "the read upstream broke off the response" {
		t.Fatalf("lines %v", lines)
	}
}

type recordingWriter struct{ writes []string }

func (w *recordingWriter) Write(b []byte) (int, error) {
	w.writes = append(w.writes, string(b))
	return len(b), nil
}

// TestWriteLines: stdout and stderr get whole lines in writes a pipe keeps whole; only a line longer than that
// is cut.
func TestWriteLines(t *testing.T) {
	line := strings.Repeat("x", 999) + "\n"
	long := strings.Repeat("y", 5000) + "\n"
	in := strings.Repeat(line, 10) + long + line
	w := &recordingWriter{}
	if err := writeLines(w, []byte(in)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(w.writes, "") != in {
		t.Fatal("the bytes written differ from the buffer")
	}
	for i, s := range w.writes {
		if len(s) > pipeBuf {
			t.Errorf("write %d has %d bytes", i, len(s))
		}
		if !strings.HasSuffix(s, "\n") && !strings.HasPrefix(long, s) {
			t.Errorf("write %d ends inside a short line: %q", i, s[len(s)-10:])
		}
	}
	// 4 lines, 4 lines, 2 lines, the first 4096 bytes of the long one, its rest with the last line.
	if got := fmt.Sprint(lens(w.writes)); got != "[4000 4000 2000 4096 1905]" {
		t.Errorf("write sizes %s", got)
	}
}

func lens(ss []string) []int {
	n := make([]int, len(ss))
	for i, s := range ss {
		n[i] = len(s)
	}
	return n
}
