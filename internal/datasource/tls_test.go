package datasource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

func writePEM(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clientCert makes a self-signed client certificate and returns its cert and key files and the parsed cert.
func clientCert(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vmgateway-test-client"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	return writePEM(t, filepath.Join(dir, "client.crt"), "CERTIFICATE", der),
		writePEM(t, filepath.Join(dir, "client.key"), "EC PRIVATE KEY", keyDER), cert
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder(t, true, 200, okVector)
	caFile := writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", rec.Certificate().Raw)

	certFile, keyFile, cert := clientCert(t, dir)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	mtls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(okVector))
	}))
	mtls.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	mtls.Config.ErrorLog = log.New(io.Discard, "", 0)
	mtls.StartTLS()
	defer mtls.Close()

	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"unknown CA", Config{URL: rec.URL}, "certificate signed by unknown authority"},
		{"CA file", Config{URL: rec.URL, TLS: tlsclient.Options{CAFile: caFile}}, ""},
		{"insecure skip verify", Config{URL: rec.URL, TLS: tlsclient.Options{InsecureSkipVerify: true}}, ""},
		// The httptest certificate is valid for example.com and 127.0.0.1.
		{"server name", Config{URL: rec.URL, TLS: tlsclient.Options{CAFile: caFile, ServerName: "example.com"}}, ""},
		{"wrong server name", Config{URL: rec.URL, TLS: tlsclient.Options{CAFile: caFile, ServerName: "other.org"}}, "other.org"},
		{"client cert required", Config{URL: mtls.URL, TLS: tlsclient.Options{InsecureSkipVerify: true}}, "certificate required"},
		{"client cert", Config{URL: mtls.URL, TLS: tlsclient.Options{InsecureSkipVerify: true, CertFile: certFile, KeyFile: keyFile}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Query(context.Background(), "up", time.Now())
			if tc.wantErr == "" {
				if err != nil || len(got) != 1 {
					t.Fatalf("got %v, %v; want one sample", got, err)
				}
				return
			}
			wantErr(t, err, tc.wantErr, tc.cfg.URL)
		})
	}
}
