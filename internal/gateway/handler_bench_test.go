package gateway_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/ratelimit"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Run: go test -run '^$' -bench Handler -benchmem ./internal/gateway/
//
// The whole pipeline as the server calls it: a real RS256 verifier (cache on, as by default), a real rate-limit
// gate, the MetricsQL rewrite of an extra_labels token and the reverse proxy. The upstream answers from memory,
// so the figures are the gateway's own cost; "loopback" adds a real keep-alive TCP upstream. Each iteration also
// copies a prepared request (4 allocations), because the pipeline rewrites the request it is given.

// grafanaQuery is what a Grafana latency panel sends.
const grafanaQuery = `histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{job="api",handler=~"/api/v1/.*"}[5m])) by (le, handler))`

// promMatrix is a small query_range answer: one series, a few points.
var promMatrix = []byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"handler":"/api/v1/query"},"values":[[1700000000,"0.12"],[1700000015,"0.11"],[1700000030,"0.13"],[1700000045,"0.12"]]}]}}`)

// promMatrixStats is promMatrix as current VictoriaMetrics ends it: with the query's stats.
var promMatrixStats = append(bytes.TrimSuffix(promMatrix, []byte("}")), []byte(`,"stats":{"seriesFetched": "7","executionTimeMsec":3}}`)...)

var importBody = []byte(strings.Repeat("http_requests_total{job=\"api\",instance=\"10.0.0.1:8080\",code=\"200\"} 1027 1700000000000\n", 8))

func BenchmarkHandler(b *testing.B) {
	token, verifier := benchVerifier(b)
	gate := benchGate(b)
	mem := &memUpstream{}

	full := newGateway(b, gateway.Config{Auth: verifier, Limiter: gate}, mem)
	// As in front of VictoriaMetrics on 8 cores, whose capacity the gateway has read: every read takes a slot.
	full.SetReadSlots(16)
	open := newGateway(b, gateway.Config{}, mem)
	// With cost limits the stats at the end of each answer are read and counted for the caller.
	costGate := benchGate(b, "  - {type: series_fetched, value: 1000000000000}\n  - {type: query_time_ms, value: 1000000000000}\n")
	costed := newGateway(b, gateway.Config{Auth: verifier, Limiter: costGate, Costs: costGate}, &memUpstream{answer: promMatrixStats})

	readURL := "/api/v1/query_range?" + url.Values{
		"query": {grafanaQuery}, "start": {"1700000000"}, "end": {"1700003600"}, "step": {"15"},
	}.Encode()
	read := newRequest(b, http.MethodGet, readURL, nil, token)
	write := newRequest(b, http.MethodPost, "/api/v1/import/prometheus", importBody, token)
	write.Header.Set("Content-Type", "text/plain")

	// The figures mean something only if the pipeline really verified, rewrote and forwarded.
	serveOnce(b, full, read, nil)
	if q := mem.last().Query().Get("query"); !strings.Contains(q, `team="dev"`) {
		b.Fatalf("the upstream got query %q; want it rewritten with team=\"dev\"", q)
	}
	serveOnce(b, costed, read, nil)
	st := httptest.NewRecorder()
	costGate.StatusHandler().ServeHTTP(st, httptest.NewRequest(http.MethodGet, "/ratelimit/status", nil))
	if !strings.Contains(st.Body.String(), `"type": "series_fetched"`) || !strings.Contains(st.Body.String(), `"usage": 7,`) {
		b.Fatalf("the costed gateway did not count the answer's 7 series:\n%s", st.Body.String())
	}
	serveOnce(b, full, write, importBody)
	if got := mem.last().Query()["extra_label"]; len(got) == 0 || got[len(got)-1] != "team=dev" {
		b.Fatalf("the write reached the upstream with extra_label=%q; want team=dev last", got)
	}

	for _, bc := range []struct {
		name string
		h    http.Handler
		req  *http.Request
		body []byte
	}{
		{"read/auth+limit+rewrite", full, read, nil},
		{"read/no_auth", open, read, nil},
		{"read/auth+limit+cost+rewrite", costed, read, nil},
		{"write/auth+limit+extra_label", full, write, importBody},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := newDiscardWriter()
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				serve(b, bc.h, w, bc.req, bc.body)
			}
			cpu.report(b)
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := newDiscardWriter()
				for pb.Next() {
					serve(b, bc.h, w, bc.req, bc.body)
				}
			})
		})
	}

	// "loopback" forwards with the gateway's own client (proxyclient), "loopback/transport" with http.Transport.
	for _, lb := range []struct {
		name string
		rt   func() (http.RoundTripper, func(), error)
	}{
		{"read/auth+limit+rewrite/loopback", func() (http.RoundTripper, func(), error) {
			c, err := tlsclient.NewUpstream("read", tlsclient.Options{}, time.Minute, tlsclient.DefaultDialTimeout)
			if err != nil {
				return nil, nil, err
			}
			return c, c.CloseIdleConnections, nil
		}},
		{"read/auth+limit+rewrite/loopback/transport", func() (http.RoundTripper, func(), error) {
			tr, err := tlsclient.NewTransport("read", tlsclient.Options{}, time.Minute, tlsclient.DefaultDialTimeout)
			if err != nil {
				return nil, nil, err
			}
			return tr, tr.CloseIdleConnections, nil
		}},
	} {
		b.Run(lb.name, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(promMatrix)
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL)
			tr, closeIdle, err := lb.rt()
			if err != nil {
				b.Fatal(err)
			}
			defer closeIdle()
			g, err := gateway.New(gateway.Config{ReadURL: u, WriteURL: u, ReadTransport: tr, WriteTransport: tr, Auth: verifier, Limiter: gate})
			if err != nil {
				b.Fatal(err)
			}
			w := newDiscardWriter()
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				serve(b, g, w, read, nil)
			}
			cpu.report(b)
		})
	}
}

func newGateway(b *testing.B, cfg gateway.Config, rt http.RoundTripper) *gateway.Gateway {
	b.Helper()
	u, _ := url.Parse("http://upstream.invalid:8428")
	cfg.ReadURL, cfg.WriteURL = u, u
	cfg.ReadTransport, cfg.WriteTransport = rt, rt
	g, err := gateway.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// benchVerifier returns an RS256 token for tenant 0:0 with extra_labels team=dev and a verifier for its key.
func benchVerifier(b testing.TB) (string, *auth.Verifier) {
	b.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	v, err := auth.New(auth.Config{PublicKeys: []string{string(pub)}, CacheSize: 10000})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Stop)
	token, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"sub":       "grafana",
		"exp":       time.Now().Add(time.Hour).Unix(),
		"vm_access": auth.VMAccess{ExtraLabels: map[string]string{"team": "dev"}, Mode: auth.ModeFull},
	}).SignedString(key)
	if err != nil {
		b.Fatal(err)
	}
	return token, v
}

// benchGate is a real gate with limits no request reaches, and more limits if given. It is not started: usage
// stays empty, which costs the check exactly what a polled snapshot does.
func benchGate(b *testing.B, more ...string) *ratelimit.Gate {
	b.Helper()
	path := filepath.Join(b.TempDir(), "limits.yml")
	limits := "limits:\n  - {type: queries, value: 1000000000}\n  - {type: rows_inserted, value: 1000000000}\n" + strings.Join(more, "")
	if err := os.WriteFile(path, []byte(limits), 0o600); err != nil {
		b.Fatal(err)
	}
	g, err := ratelimit.New(ratelimit.Config{ConfigPath: path, Datasource: datasource.Config{URL: "http://127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

func newRequest(b *testing.B, method, target string, body []byte, token string) *http.Request {
	b.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	r.Header.Set("User-Agent", "Grafana/11.0.0")
	r.Header.Set("Accept-Encoding", "gzip")
	r.ContentLength = int64(len(body))
	return r
}

// serve runs the handler on a copy of base, as the server would hand it a fresh request.
func serve(b *testing.B, h http.Handler, w *discardWriter, base *http.Request, body []byte) {
	r := new(http.Request)
	*r = *base
	u := *base.URL
	r.URL = &u
	r.Header = base.Header.Clone()
	r.Body = http.NoBody
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	w.reset()
	h.ServeHTTP(w, r)
	if w.status != http.StatusOK && w.status != http.StatusNoContent {
		b.Fatalf("%s %s: status %d", base.Method, base.URL.Path, w.status)
	}
}

func serveOnce(b *testing.B, h http.Handler, base *http.Request, body []byte) {
	b.Helper()
	serve(b, h, newDiscardWriter(), base, body)
}

// memUpstream answers reads with answer (promMatrix when nil) and writes with 204, from memory; it reads and
// discards the body.
type memUpstream struct {
	answer  []byte
	lastURL atomic.Pointer[url.URL]
}

func (m *memUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	m.lastURL.Store(r.URL)
	resp := &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Request: r,
		Body: io.NopCloser(bytes.NewReader(promMatrix)), ContentLength: int64(len(promMatrix)),
	}
	if m.answer != nil {
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(m.answer)), int64(len(m.answer))
	}
	if r.Method == http.MethodPost {
		resp.StatusCode, resp.Header, resp.Body, resp.ContentLength = http.StatusNoContent, http.Header{}, http.NoBody, 0
	}
	return resp, nil
}

func (m *memUpstream) last() *url.URL { return m.lastURL.Swap(nil) }

// discardWriter is the cheapest ResponseWriter: the figures should be the gateway's, not a recorder's.
type discardWriter struct {
	h      http.Header
	status int
}

func newDiscardWriter() *discardWriter { return &discardWriter{h: http.Header{}} }

func (w *discardWriter) reset() {
	clear(w.h)
	w.status = 0
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}

func (w *discardWriter) Flush() {}

// cpuClock measures the CPU time the process spends, on every thread (the garbage collector's included): a figure
// that other processes sharing the machine disturb much less than the wall time of ns/op.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{start: vmtest.ProcessCPU()} }

// report adds the CPU time per iteration as cpu-ns/op.
func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(vmtest.ProcessCPU()-c.start)/float64(b.N), "cpu-ns/op")
}
