package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// serveGateway runs a gateway in front of upstream (both upstreams) on a real loopback server, so the proxy
// behaves as in production (it aborts broken responses only under a real server).
func serveGateway(t *testing.T, upstream string, tc tlsclient.Options, mod func(*Config)) *httptest.Server {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := tlsclient.NewTransport("read", tc, 10*time.Second, tlsclient.DefaultDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.CloseIdleConnections)
	cfg := Config{ReadURL: u, WriteURL: u, ReadTransport: rt, WriteTransport: rt}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv
}

func counter(name string) uint64 { return metrics.GetOrCreateCounter(name).Get() }

type jsonError struct{ Status, ErrorType, Error string }

func get(t *testing.T, url string, header ...string) (int, http.Header, jsonError, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return send(t, req)
}

func send(t *testing.T, req *http.Request) (int, http.Header, jsonError, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %s", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e jsonError
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, resp.Header, e, string(b)
}

// logCapture sends the default logger to a buffer for one test.
func logCapture(t *testing.T) *vmtest.Buffer {
	t.Helper()
	buf := &vmtest.Buffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return buf
}

// panickingLimiter panics while armed: a stand-in for a bug in any step of the pipeline.
type panickingLimiter struct{ armed atomic.Bool }

func (l *panickingLimiter) Admit(*auth.Access, route.Route, http.Header) error {
	if l.armed.Load() {
		panic("limiter bug: index out of range")
	}
	return nil
}

// panickingTransport panics in the middle of forwarding, after the request took its concurrency slot.
type panickingTransport struct {
	armed atomic.Bool
	next  http.RoundTripper
}

func (p *panickingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if p.armed.Load() {
		panic("transport bug: nil map")
	}
	return p.next.RoundTrip(r)
}

// TestPanicAnswers500AndKeepsServing: a panic in one request answers 500 with a JSON error, is logged with its
// stack and counted, and the next request is served; a panic after the concurrency slot was taken gives it back.
func TestPanicAnswers500AndKeepsServing(t *testing.T) {
	logs := logCapture(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"success"}`)
	}))
	t.Cleanup(upstream.Close)
	lim := &panickingLimiter{}
	pt := &panickingTransport{next: http.DefaultTransport}
	gw := serveGateway(t, upstream.URL, tlsclient.Options{}, func(c *Config) {
		c.Limiter = lim
		c.ReadTransport = pt
		// One slot: a panic that did not give its slot back would refuse every request after it.
		c.Limits = Limits{MaxConcurrentRequests: 1, MaxConcurrentPerTenantRequests: 1}
	})

	for _, tc := range []struct {
		name  string
		arm   *atomic.Bool
		where string
	}{
		{"limiter", &lim.armed, "panickingLimiter"},
		{"transport, after the slot was taken", &pt.armed, "panickingTransport"},
	} {
		before := panicsTotal.Get()
		tc.arm.Store(true)
		code, _, e, body := get(t, gw.URL+"/api/v1/query?query=up")
		tc.arm.Store(false)
		if code != http.StatusInternalServerError || e.Status != "error" || e.ErrorType != "internal" {
			t.Fatalf("%s: panic answered %d %s; want a JSON 500", tc.name, code, body)
		}
		if strings.Contains(body, "bug") {
			t.Errorf("%s: the panic value leaked to the client: %s", tc.name, body)
		}
		if got := panicsTotal.Get() - before; got != 1 {
			t.Errorf("%s: vmgateway_panics_total grew by %d, want 1", tc.name, got)
		}
		l := logs.String()
		if !strings.Contains(l, "panic while handling a request") || !strings.Contains(l, "bug") || !strings.Contains(l, tc.where) {
			t.Errorf("%s: the log lacks the panic or its stack through %s:\n%s", tc.name, tc.where, l)
		}
		for i := 0; i < 3; i++ {
			if code, _, _, body := get(t, gw.URL+"/api/v1/query?query=up"); code != http.StatusOK {
				t.Fatalf("%s: request %d after the panic: %d %s", tc.name, i, code, body)
			}
		}
	}
	// The handler gives its slot back just after the answer went out.
	waitFor(t, func() bool { return inFlight.Load() == 0 }, "no request counted in flight")
}

// TestClientCancellationReachesUpstream: when the client goes away, the upstream's request context ends too,
// both while the upstream thinks and while it streams.
func TestClientCancellationReachesUpstream(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		name := map[bool]string{false: "before the answer", true: "while streaming"}[streaming]
		t.Run(name, func(t *testing.T) {
			started, canceled := make(chan struct{}), make(chan struct{})
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if streaming {
					w.WriteHeader(http.StatusOK)
					_, _ = io.WriteString(w, "first line\n")
					w.(http.Flusher).Flush()
				}
				close(started)
				<-r.Context().Done()
				close(canceled)
			}))
			t.Cleanup(upstream.Close)
			gw := serveGateway(t, upstream.URL, tlsclient.Options{}, nil)
			before := counter(`vmgateway_upstream_errors_total{upstream="read",reason="client_canceled"}`)

			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw.URL+"/api/v1/export?match[]=up", nil)
			done := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				done <- err
			}()
			<-started
			cancel()
			select {
			case <-canceled:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request was not canceled after the client went away")
			}
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("client: %v", err)
			}
			waitFor(t, func() bool {
				return counter(`vmgateway_upstream_errors_total{upstream="read",reason="client_canceled"}`) == before+1
			}, "vmgateway_upstream_errors_total{reason=\"client_canceled\"} to count the cancellation")
		})
	}
}

// TestUpstreamBreaksOffResponse: an upstream that resets the connection mid-response gives the client an
// incomplete response (never a silently truncated "complete" one), is counted as aborted_response, not as a
// client cancellation, and the gateway keeps serving.
func TestUpstreamBreaksOffResponse(t *testing.T) {
	logCapture(t)
	var broken atomic.Bool
	broken.Store(true)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !broken.Load() {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"metric":{"__name__":"up"},"values":[1`)
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.(*net.TCPConn).SetLinger(0) // RST, as a crashed upstream
		_ = conn.Close()
	}))
	t.Cleanup(upstream.Close)
	gw := serveGateway(t, upstream.URL, tlsclient.Options{}, nil)
	aborted := `vmgateway_upstream_errors_total{upstream="read",reason="aborted_response"}`
	canceled := `vmgateway_upstream_errors_total{upstream="read",reason="client_canceled"}`
	beforeAborted, beforeCanceled := counter(aborted), counter(canceled)

	for i := 0; i < 3; i++ {
		// The broken response fails at the client either before its headers (they sat in the server's buffer
		// when the upstream broke off) or while reading the body; it must never read as complete.
		resp, err := http.Get(gw.URL + "/api/v1/export?match[]=up")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("a response broken off by the upstream read as complete (status %d)", resp.StatusCode)
			}
		}
	}
	waitFor(t, func() bool { return counter(aborted) == beforeAborted+3 }, "three aborted_response counts")
	if got := counter(canceled) - beforeCanceled; got != 0 {
		t.Errorf("upstream resets were counted as %d client cancellations", got)
	}
	broken.Store(false)
	if code, _, _, body := get(t, gw.URL+"/api/v1/export?match[]=up"); code != 200 || body != "ok\n" {
		t.Fatalf("after the resets: %d %q", code, body)
	}
}

// TestUpstreamTLSFailures: every way a TLS handshake with the upstream fails gives a 502 that says it is TLS and
// names the flag to look at, and counts reason="tls"; the upstream's address and the handshake error are in the
// gateway's log, not in the client's message.
func TestUpstreamTLSFailures(t *testing.T) {
	logs := logCapture(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	tlsUp := httptest.NewTLSServer(ok)
	t.Cleanup(tlsUp.Close)
	mtlsUp := httptest.NewUnstartedServer(ok)
	mtlsUp.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	mtlsUp.StartTLS()
	t.Cleanup(mtlsUp.Close)
	plainUp := httptest.NewServer(ok)
	t.Cleanup(plainUp.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsUp.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	mtlsCA := filepath.Join(t.TempDir(), "mtls-ca.pem")
	if err := os.WriteFile(mtlsCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mtlsUp.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		upstream string
		tls      tlsclient.Options
		want     []string // in the message; nil means the request must succeed
	}{
		{"trusted", tlsUp.URL, tlsclient.Options{CAFile: caFile}, nil},
		{"unknown authority", tlsUp.URL, tlsclient.Options{}, []string{"certificate", "-read.tlsCAFile"}},
		{"wrong server name", tlsUp.URL, tlsclient.Options{CAFile: caFile, ServerName: "vmselect.internal"}, []string{"certificate", "-read.tlsServerName"}},
		{"plain HTTP upstream behind an https URL", strings.Replace(plainUp.URL, "http://", "https://", 1), tlsclient.Options{}, []string{"does not speak TLS", "http://"}},
		{"client certificate required", mtlsUp.URL, tlsclient.Options{CAFile: mtlsCA}, []string{"certificate", "-read.tlsCertFile"}},
	} {
		before := counter(`vmgateway_upstream_errors_total{upstream="read",reason="tls"}`)
		gw := serveGateway(t, tc.upstream, tc.tls, nil)
		code, _, e, body := get(t, gw.URL+"/api/v1/query?query=up")
		if tc.want == nil {
			if code != 200 || body != "ok" {
				t.Errorf("%s: %d %s", tc.name, code, body)
			}
			continue
		}
		host := strings.TrimPrefix(strings.TrimPrefix(tc.upstream, "https://"), "http://")
		if code != http.StatusBadGateway || e.ErrorType != "unavailable" || !strings.Contains(e.Error, "TLS handshake with the read upstream") ||
			strings.Contains(e.Error, host) {
			t.Errorf("%s: %d %s; want a 502 naming TLS and not the upstream %s", tc.name, code, body, host)
			continue
		}
		if !strings.Contains(logs.String(), `upstream TLS handshake failed" upstream=`+tc.upstream) {
			t.Errorf("%s: the log does not name the upstream %s:\n%s", tc.name, host, logs.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Error, w) {
				t.Errorf("%s: message %q lacks %q", tc.name, e.Error, w)
			}
		}
		if got := counter(`vmgateway_upstream_errors_total{upstream="read",reason="tls"}`) - before; got != 1 {
			t.Errorf("%s: reason=\"tls\" grew by %d, want 1", tc.name, got)
		}
	}
}
