package datasource

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

func newTransport(cfg Config) (*http.Transport, error) {
	tc, err := newTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   5 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       time.Minute,
		ExpectContinueTimeout: time.Second,
	}, nil
}

func newTLSConfig(cfg Config) (*tls.Config, error) {
	return tlsclient.Config("datasource", tlsclient.Options{CAFile: cfg.TLSCAFile, CertFile: cfg.TLSCertFile,
		KeyFile: cfg.TLSKeyFile, ServerName: cfg.TLSServerName, InsecureSkipVerify: cfg.TLSInsecureSkipVerify})
}
