package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/labelguard"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// guardedGateway is a gateway whose write backend truncates at limit (0: none truncates), with a write token for
// team dev.
func guardedGateway(t *testing.T, limit func(context.Context) (int, error), labels ...enforce.Label) (*Gateway, *vmtest.Recorder) {
	t.Helper()
	e, err := enforce.New(labels, nil)
	if err != nil {
		t.Fatal(err)
	}
	write := vmtest.NewRecorder(t)
	wu, _ := url.Parse(write.URL)
	g, err := New(Config{ReadURL: wu, WriteURL: wu, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: fixedAuth{a: &auth.Access{Mode: auth.ModeWrite, Enforcer: e, Subject: "dev-agent"}}, LabelLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	return g, write
}

func limitOf(n int) func(context.Context) (int, error) {
	return func(context.Context) (int, error) { return n, nil }
}

func postBody(g http.Handler, target string, body []byte, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, req)
	return rec
}

// seriesLine is a Prometheus text line of a series with n labels besides its name, one of them team="ops".
func seriesLine(n int) string {
	var b strings.Builder
	b.WriteString(`injected{team="ops"`)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, `,l%d="x"`, i)
	}
	b.WriteString("} 1\n")
	return b.String()
}

var dev = enforce.Label{Name: "team", Value: "dev"}

func TestLabelGuardDropsSeriesOverLimit(t *testing.T) {
	g, write := guardedGateway(t, limitOf(30), dev)
	before := droppedOverLimit.Get()
	// 28 labels, the name and the token's team: 30, kept. One more would leave team="dev" cut off.
	body := seriesLine(28) + seriesLine(29) + "up 1\n"
	rec := postBody(g, "/api/v1/import/prometheus", []byte(body))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	reqs := write.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests forwarded", len(reqs))
	}
	if want := seriesLine(28) + "up 1\n"; reqs[0].Body != want {
		t.Errorf("forwarded %q; want %q", reqs[0].Body, want)
	}
	if got := reqs[0].Query["extra_label"]; len(got) != 1 || got[0] != "team=dev" {
		t.Errorf("extra_label %q", got)
	}
	if d := droppedOverLimit.Get() - before; d != 1 {
		t.Errorf("vmgateway_write_series_dropped_total{reason=\"too_many_labels\"} grew by %d; want 1", d)
	}

	// gzip: the backend gets the checked lines, uncompressed.
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write([]byte(body))
	_ = zw.Close()
	rec = postBody(g, "/api/v1/import/prometheus", zb.Bytes(), "Content-Encoding", "gzip")
	reqs = write.Requests()
	if rec.Code != http.StatusOK || len(reqs) != 1 || reqs[0].Body != seriesLine(28)+"up 1\n" || reqs[0].Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip: status %d, forwarded %+v", rec.Code, reqs)
	}
}

// TestLabelGuardCountsClientExtraLabels: the client's own extra_label args the enforcer keeps add labels too, before
// the token's, so they count against the backend's limit; one that names the token's label is replaced, not counted.
func TestLabelGuardCountsClientExtraLabels(t *testing.T) {
	g, write := guardedGateway(t, limitOf(30), dev)
	before := droppedOverLimit.Get()
	// 27 labels, the name, env and the token's team: 30, kept; 28 would leave team="dev" cut off.
	body := seriesLine(27) + seriesLine(28)
	rec := postBody(g, "/api/v1/import/prometheus?extra_label=env=prod&extra_label=team=ops&extra_label=empty=", []byte(body))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	reqs := write.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests forwarded", len(reqs))
	}
	if reqs[0].Body != seriesLine(27) {
		t.Errorf("forwarded %q; want only the series of 27 labels", reqs[0].Body)
	}
	if got := reqs[0].Query["extra_label"]; strings.Join(got, "&") != "env=prod&empty=&team=dev" {
		t.Errorf("extra_label %q; want the client's env and empty (which adds no label, and is not counted), then the token's team", got)
	}
	if d := droppedOverLimit.Get() - before; d != 1 {
		t.Errorf("vmgateway_write_series_dropped_total{reason=\"too_many_labels\"} grew by %d; want 1", d)
	}
}

func TestLabelGuardRefusals(t *testing.T) {
	g, write := guardedGateway(t, limitOf(30), dev)
	format := "1:metric:m"
	for i := range 29 {
		format += fmt.Sprintf(",%d:label:l%d", i+2, i)
	}
	for _, tc := range []struct {
		name, target string
		header       []string
		status       int
		says         string
	}{
		{"native", "/api/v1/import/native", nil, http.StatusForbidden, "cannot count them in the import_native API's format"},
		{"opentelemetry", "/opentelemetry/v1/metrics", nil, http.StatusForbidden, "opentelemetry"},
		{"csv with too many label columns", "/api/v1/import/csv?format=" + url.QueryEscape(format), nil, http.StatusBadRequest,
			"the format arg gives each series 30 labels"},
		{"zstd", "/api/v1/import/prometheus", []string{"Content-Encoding", "zstd"}, http.StatusUnsupportedMediaType, `Content-Encoding "zstd"`},
		{"remote write, not snappy", "/api/v1/write", nil, http.StatusBadRequest, "cannot parse the remote-write body"},
	} {
		rec := postBody(g, tc.target, []byte("x"), tc.header...)
		if rec.Code != tc.status || !strings.Contains(errorOf(t, rec), tc.says) {
			t.Errorf("%s: %d %s; want %d saying %q", tc.name, rec.Code, rec.Body, tc.status, tc.says)
		}
		if reqs := write.Requests(); len(reqs) != 0 {
			t.Errorf("%s: forwarded %d requests", tc.name, len(reqs))
		}
	}
}

func TestLabelGuardOnlyWhenNeeded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  func(context.Context) (int, error)
		labels []enforce.Label
	}{
		{"no backend truncates", limitOf(0), []enforce.Label{dev}},
		{"the check is off", nil, []enforce.Label{dev}},
		{"a token without extra labels", limitOf(30), nil},
	} {
		g, write := guardedGateway(t, tc.limit, tc.labels...)
		body := seriesLine(40)
		rec := postBody(g, "/api/v1/import/prometheus", []byte(body))
		reqs := write.Requests()
		if rec.Code != http.StatusOK || len(reqs) != 1 || reqs[0].Body != body {
			t.Errorf("%s: status %d, forwarded %+v; want the body as sent", tc.name, rec.Code, reqs)
		}
		rec = postBody(g, "/api/v1/import/native", []byte("x"))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: native import %d", tc.name, rec.Code)
		}
	}
}

func TestLabelGuardLimitUnknown(t *testing.T) {
	g, write := guardedGateway(t, func(context.Context) (int, error) { return 0, errors.New("gave up waiting") }, dev)
	rec := postBody(g, "/api/v1/import/prometheus", []byte("up 1\n"))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(errorOf(t, rec), "whether the write backend truncates") {
		t.Errorf("status %d %s; want a 503", rec.Code, rec.Body)
	}
	if reqs := write.Requests(); len(reqs) != 0 {
		t.Errorf("forwarded %d requests", len(reqs))
	}
}

// A line too long to hold is found while the body streams: the upstream request is cut off unfinished, and the
// client learns why.
func TestLabelGuardLineTooLong(t *testing.T) {
	g, write := guardedGateway(t, limitOf(30), dev)
	write.Respond(func(w http.ResponseWriter, r *http.Request) {
		// The recorder has read what came; a request cut off is not answered as if whole.
		w.WriteHeader(http.StatusNoContent)
	})
	body := "up 1\n" + strings.Repeat("a", labelguard.MaxLine+10) + " 1\n"
	rec := postBody(g, "/api/v1/import/prometheus", []byte(body))
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(errorOf(t, rec), "split it") {
		t.Errorf("status %d %.300s; want a 413", rec.Code, rec.Body)
	}
	for _, r := range write.Requests() {
		if strings.Contains(r.Body, "aaaa") {
			t.Errorf("part of the long line reached the backend (%d bytes)", len(r.Body))
		}
	}
}

// The backend answers as soon as it has the first line, without reading the rest (a busy vminsert's 503, a proxy's
// 413). The upstream client is then still in the guarded body's Read, waiting on the client, when the request ends
// and the guard's memory is given back: the buffer must outlive that Read, and the memory come back once.
func TestLabelGuardEarlyAnswer(t *testing.T) {
	got := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadFull(r.Body, make([]byte, 5))
		_ = http.NewResponseController(w).EnableFullDuplex()
		got <- struct{}{}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer up.Close()
	e, _ := enforce.New([]enforce.Label{dev}, nil)
	wu, _ := url.Parse(up.URL)
	g, err := New(Config{ReadURL: wu, WriteURL: wu, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: fixedAuth{a: &auth.Access{Mode: auth.ModeWrite, Enforcer: e, Subject: "dev-agent"}}, LabelLimit: limitOf(30),
		Limits: Limits{LabelGuardMemory: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/import/prometheus", pr)
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { g.ServeHTTP(rec, req); close(done) }()
	_, _ = pw.Write([]byte("up 1\n"))
	<-got
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not answered")
	}
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d; want the backend's 503", rec.Code)
	}
	// The upstream client's Read resumes after the request ended: no panic, and an end.
	_, _ = pw.Write([]byte("up 2\nup 3\n"))
	_ = pw.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.labelBudget.Free() != 1<<30 {
		if time.Now().After(deadline) {
			t.Fatalf("the guard's memory was not given back: %d of %d free", g.labelBudget.Free(), 1<<30)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
