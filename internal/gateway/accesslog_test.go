package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestAccessLogThroughThePipeline: with several backends the line names every backend a request went to (the
// balancer records them through the request's context), without credentials; with -accessLog.queries a read's
// line carries its query as the client sent it.
func TestAccessLogThroughThePipeline(t *testing.T) {
	logCapture(t)
	rec := vmtest.NewRecorder(t)
	refused := "http://" + vmtest.FreePort(t)
	ok, _ := url.Parse(strings.Replace(rec.URL, "http://", "http://u:pw@", 1))
	dead, _ := url.Parse(refused)
	rt, err := tlsclient.NewTransport("read", tlsclient.Options{}, 10*time.Second, tlsclient.DefaultDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := accesslog.Open(accesslog.Config{Path: path, Queries: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ReadURLs: []*url.URL{dead, ok}, WriteURLs: []*url.URL{ok}, ReadTransport: rt, WriteTransport: rt,
		Backends: BackendOptions{Policy: FirstAvailable, FailTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	srv := httptest.NewServer(accesslog.Wrap(g, l))
	t.Cleanup(srv.Close)

	for _, id := range []string{"first", "second"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/query?query="+url.QueryEscape(`rate(x{a="<b>"}[5m])`), nil)
		req.Header.Set("X-Request-Id", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", id, resp.StatusCode)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := vmtest.JSONLines(t, path, "request_id")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	good := "http://" + ok.Host
	// The first request found the first backend down and went on to the second; the second skipped the broken one.
	for id, want := range map[string]string{"first": refused + "," + good, "second": good} {
		if got := lines[id]["upstream"]; got != want {
			t.Errorf("%s: upstream %v, want %s", id, got, want)
		}
		if got := lines[id]["query"]; got != `rate(x{a="<b>"}[5m])` {
			t.Errorf("%s: query %v", id, got)
		}
	}
	if strings.Contains(string(data), "pw") {
		t.Errorf("the log holds a backend's password:\n%s", data)
	}
}
