package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// TLSConfig is the client-side TLS for one upstream (-read.tls* or -write.tls*).
type TLSConfig struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// NewTransport returns the tuned keep-alive transport for one upstream. responseTimeout bounds the wait for the
// upstream's response headers only, so a long export that keeps streaming is never cut.
func NewTransport(flagPrefix string, tc TLSConfig, responseTimeout time.Duration) (*http.Transport, error) {
	tlsCfg := &tls.Config{ServerName: tc.ServerName, InsecureSkipVerify: tc.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if tc.CAFile != "" {
		pem, err := os.ReadFile(tc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read -%s.tlsCAFile: %w", flagPrefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-%s.tlsCAFile=%q holds no PEM certificate", flagPrefix, tc.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if tc.CertFile != "" || tc.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(tc.CertFile, tc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load -%s.tlsCertFile / -%s.tlsKeyFile: %w", flagPrefix, flagPrefix, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: responseTimeout,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Responses pass through as the upstream sent them; the client negotiates compression with VictoriaMetrics.
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}, nil
}
