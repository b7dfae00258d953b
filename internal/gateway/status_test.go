package gateway

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestRefusals: refusals are counted by status and reason, concurrently, with the last message of each; the
// latest reason comes first.
func TestRefusals(t *testing.T) {
	g := &Gateway{}
	t0 := time.Unix(1000, 0)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 100; j++ {
				g.refused.add(httperr.New(http.StatusTooManyRequests, "limited"), t0)
			}
		})
	}
	wg.Wait()
	g.refused.add(httperr.New(http.StatusForbidden, "not yours"), t0.Add(time.Second))
	g.refused.add(errors.New("plain"), t0.Add(2*time.Second))
	got := g.Refusals()
	if len(got) != 3 {
		t.Fatalf("want 3 reasons, got %+v", got)
	}
	if got[0].Status != 500 || got[0].Reason != "internal server error" || got[0].LastMessage != "plain" {
		t.Errorf("latest first: %+v", got[0])
	}
	if got[1].Status != 403 || got[1].Reason != "forbidden" || got[1].Count != 1 {
		t.Errorf("403: %+v", got[1])
	}
	if got[2].Status != 429 || got[2].Reason != "too many requests" || got[2].Count != 800 || got[2].LastMessage != "limited" || !got[2].Last.Equal(t0) {
		t.Errorf("429: %+v", got[2])
	}
}

// BenchmarkRefusalsAdd is the cost the status page's refusal table adds to each refused request, from many
// goroutines at once as a flood of bad tokens would bring.
func BenchmarkRefusalsAdd(b *testing.B) {
	g := &Gateway{}
	err := httperr.New(http.StatusUnauthorized, "missing Authorization header with a Bearer token")
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.refused.add(err, now)
		}
	})
}

// TestRefusalsUpstreamFailures: a 502 of an upstream that cannot be reached and a 504 of one that does not answer in
// time are in the table under the upstream's kind and how it failed; a refusal quoting the client's query is shown
// without it.
func TestRefusalsUpstreamFailures(t *testing.T) {
	logCapture(t)
	dead, _ := url.Parse("http://" + vmtest.FreePort(t))
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	slowURL, _ := url.Parse(slow.URL)
	readRT, err := tlsclient.NewTransport("read", tlsclient.Options{}, 10*time.Second, tlsclient.DefaultDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	writeRT, err := tlsclient.NewTransport("write", tlsclient.Options{}, 200*time.Millisecond, tlsclient.DefaultDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ReadURLs: []*url.URL{dead}, WriteURLs: []*url.URL{slowURL}, ReadTransport: readRT, WriteTransport: writeRT})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	srv := httptest.NewServer(accesslog.Wrap(g, nil))
	t.Cleanup(srv.Close)
	for path, want := range map[string]int{"/api/v1/query?query=up": 502, "/api/v1/import/prometheus": 504} {
		method := http.MethodGet
		var body io.Reader
		if want == 504 {
			method, body = http.MethodPost, strings.NewReader("m 1\n")
		}
		req, _ := http.NewRequest(method, srv.URL+path, body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	g.refused.add(httperr.WithQuery(http.StatusBadRequest, `cannot parse query "secret{"`, "cannot parse query "+httperr.Elided), time.Now())
	got := map[string]RefusalCount{}
	for _, r := range g.Refusals() {
		got[r.Reason] = r
	}
	if r := got["read upstream: unreachable"]; r.Status != 502 || r.Count != 1 || !strings.Contains(r.LastMessage, "cannot reach the read upstream") {
		t.Errorf("502: %+v in %+v", r, got)
	}
	if r := got["write upstream: timeout"]; r.Status != 504 || r.Count != 1 || !strings.Contains(r.LastMessage, "did not answer in time") {
		t.Errorf("504: %+v in %+v", r, got)
	}
	if r := got["bad request"]; r.LastMessage != "cannot parse query "+httperr.Elided {
		t.Errorf("a refusal quoting the query: %+v", r)
	}
}
