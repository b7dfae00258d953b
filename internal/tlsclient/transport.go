package tlsclient

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/proxyclient"
)

// DefaultDialTimeout bounds the TCP connect of a transport whose flags do not set it (-read.dialTimeout,
// -write.dialTimeout): the datasource's.
const DefaultDialTimeout = 10 * time.Second

// NewTransport returns the tuned keep-alive transport for one upstream, its TLS config from o (flagPrefix names
// the flags in errors). responseTimeout bounds the wait for the upstream's response headers only, so a long export
// that keeps streaming is never cut; 0 means no bound (the datasource client bounds the whole query instead).
// dialTimeout bounds the TCP connect, so that a backend that drops connection attempts is given up on (and another
// tried) long before the response timeout; it must be positive.
func NewTransport(flagPrefix string, o Options, responseTimeout, dialTimeout time.Duration) (*http.Transport, error) {
	tlsCfg, err := upstreamTLS(flagPrefix, o, dialTimeout)
	if err != nil {
		return nil, err
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
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
func NewUpstream(flagPrefix string, o Options, responseTimeout, dialTimeout time.Duration) (*proxyclient.Client, error) {
	tlsCfg, err := upstreamTLS(flagPrefix, o, dialTimeout)
	if err != nil {
		return nil, err
	}
	return proxyclient.New(tlsCfg, responseTimeout, dialTimeout), nil
}

// upstreamTLS checks dialTimeout and builds the TLS config, for either client of an upstream.
func upstreamTLS(flagPrefix string, o Options, dialTimeout time.Duration) (*tls.Config, error) {
	if dialTimeout <= 0 {
		return nil, fmt.Errorf("-%s.dialTimeout=%s: want a positive duration such as 3s", flagPrefix, dialTimeout)
	}
	return Config(flagPrefix, o)
}
