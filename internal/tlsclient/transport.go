package tlsclient

import (
	"net"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/proxyclient"
)

// NewTransport returns the tuned keep-alive transport for one upstream, its TLS config from o (flagPrefix names
// the flags in errors). responseTimeout bounds the wait for the upstream's response headers only, so a long export
// that keeps streaming is never cut; 0 means no bound (the datasource client bounds the whole query instead).
func NewTransport(flagPrefix string, o Options, responseTimeout time.Duration) (*http.Transport, error) {
	tlsCfg, err := Config(flagPrefix, o)
	if err != nil {
		return nil, err
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

// NewUpstream returns the client the gateway forwards with to one upstream kind: proxyclient's pooled connections
// with the TLS config from o. responseTimeout bounds the wait for the answer's headers only, as in NewTransport.
func NewUpstream(flagPrefix string, o Options, responseTimeout time.Duration) (*proxyclient.Client, error) {
	tlsCfg, err := Config(flagPrefix, o)
	if err != nil {
		return nil, err
	}
	return proxyclient.New(tlsCfg, responseTimeout), nil
}
