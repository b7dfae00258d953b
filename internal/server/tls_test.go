package server_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/server"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// serverCert writes a self-signed certificate for 127.0.0.1 and returns its files and a pool trusting it.
func serverCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	return writeServerCert(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "vmgateway-test")
}

func writeServerCert(t *testing.T, certFile, keyFile, cn string) (string, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// withTLS makes a conformance server listen with TLS and returns the client's config.
func withTLS(t *testing.T) func(cfg *server.Config) *tls.Config {
	return func(cfg *server.Config) *tls.Config {
		certFile, keyFile, pool := serverCert(t)
		cfg.TLS = func(int) bool { return true }
		cfg.TLSCertFile = func(int) string { return certFile }
		cfg.TLSKeyFile = func(int) string { return keyFile }
		return &tls.Config{RootCAs: pool}
	}
}

// TestConformanceTLS runs the conformance suite over a TLS listener: the server's own answers (malformed requests,
// 431, 501, 505) are the same JSON errors there, counted the same.
func TestConformanceTLS(t *testing.T) {
	e := startConformanceWith(t, withTLS(t))
	var cases []confCase
	for _, tc := range conformanceCases() {
		// The one case that differs by scheme: the upstream is told X-Forwarded-Proto: https.
		if !strings.Contains(tc.name, "X-Forwarded-*") {
			cases = append(cases, tc)
		}
	}
	if len(cases) != len(conformanceCases())-1 {
		t.Fatalf("%d cases over TLS; want all but the X-Forwarded-Proto one", len(cases))
	}
	runConformance(t, e, cases)
}

// TestHTTP2ClientsFallBack: the server offers only http/1.1 by ALPN, so clients that prefer HTTP/2 (Go's with
// ForceAttemptHTTP2, curl --http2) settle on HTTP/1.1 in the handshake and get their answers.
func TestHTTP2ClientsFallBack(t *testing.T) {
	e := startConformanceWith(t, withTLS(t))
	url := "https://" + e.addr + "/api/v1/query?query=up"

	c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.tls.RootCAs, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN chose %q; want http/1.1", p)
	}
	c.Close()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.tls.RootCAs}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Errorf("Go's client with ForceAttemptHTTP2: %d over %s; want 200 over HTTP/1.1", resp.StatusCode, resp.Proto)
	}

	curl := vmtest.Require(t, "curl")
	out, err := exec.Command(curl, "--http2", "-k", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url).CombinedOutput()
	if err != nil || string(out) != "1.1 200" {
		t.Errorf("curl --http2: %q %v; want HTTP/1.1 200", out, err)
	}
	if fw := e.rec.Requests(); len(fw) != 2 {
		t.Errorf("%d requests forwarded; want the two", len(fw))
	}
}

// rejected reads vmgateway_requests_rejected_total{reason=...}; a series that is not exported fails the test.
func rejected(t *testing.T, reason string) float64 {
	t.Helper()
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	prefix := `vmgateway_requests_rejected_total{reason="` + reason + `"} `
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", prefix)
	return 0
}

// TestRefusalsCounted: what the server refuses itself is counted as malformed_request or headers_too_large on plain
// and TLS listeners alike.
func TestRefusalsCounted(t *testing.T) {
	for _, e := range []*confEnv{startConformance(t), startConformanceWith(t, withTLS(t))} {
		for _, tc := range []struct{ reason, raw string }{
			{"malformed_request", "GET /q HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
			{"malformed_request", "POST /q HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"},
			{"headers_too_large", "GET /q HTTP/1.1\r\nHost: a\r\nX-Pad: " + strings.Repeat("p", 2<<20) + "\r\n\r\n"},
		} {
			before := rejected(t, tc.reason)
			if resps, _ := e.exchange(t, 1, 0, tc.raw); len(resps) != 1 || !isJSONError(resps[0].body) {
				t.Fatalf("tls %v, %q: %+v; want one JSON error", e.tls != nil, tc.raw[:20], resps)
			}
			if got := rejected(t, tc.reason); got != before+1 {
				t.Errorf("tls %v, %q: %s went from %v to %v; want one more", e.tls != nil, tc.raw[:20], tc.reason, before, got)
			}
		}
	}
}

// TestPlainHTTPOnTLSListener: plain HTTP sent to a TLS listener gets a JSON 400 saying to use https.
func TestPlainHTTPOnTLSListener(t *testing.T) {
	e := startConformanceWith(t, withTLS(t))
	before := rejected(t, "malformed_request")
	resp, err := http.Get("http://" + e.addr + "/api/v1/query?query=up")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !isJSONError(string(b)) || !strings.Contains(string(b), "https://") {
		t.Fatalf("%d %q; want a JSON 400 naming https://", resp.StatusCode, b)
	}
	if got := rejected(t, "malformed_request"); got != before+1 {
		t.Errorf("malformed_request went from %v to %v; want one more", before, got)
	}
	if fw := e.rec.Requests(); len(fw) != 0 {
		t.Errorf("forwarded %+v", fw)
	}
}

// TestCertificateReload: a certificate renewed on disk is served to new connections without a restart.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeServerCert(t, certFile, keyFile, "first")
	srv, err := server.New(server.Config{ListenAddrs: []string{"127.0.0.1:0"}, MaxGracefulShutdown: time.Second, ReadHeaderTimeout: 5 * time.Second,
		TLS: func(int) bool { return true }, TLSCertFile: func(int) string { return certFile }, TLSKeyFile: func(int) string { return keyFile },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	served := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", srv.Addrs()[0].String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /api/v1/query HTTP/1.1\r\nHost: gw\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%v %v", resp, err)
		}
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("served %q; want first", cn)
	}
	writeServerCert(t, certFile, keyFile, "renewed")
	later := time.Now().Add(2 * time.Second)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for served() != "renewed" {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not served after 5s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Copied in with their times kept (cp -p, rsync -a, tar), renewed files can be older than those they replace.
	writeServerCert(t, certFile, keyFile, "copied")
	earlier := time.Now().Add(-time.Hour)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, earlier, earlier); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	for served() != "copied" {
		if time.Now().After(deadline) {
			t.Fatal("a certificate with an older modification time is not served after 5s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
