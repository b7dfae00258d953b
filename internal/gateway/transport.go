package gateway

import (
	"net"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// NewTransport returns the tuned keep-alive transport for one upstream. responseTimeout bounds the wait for the
// upstream's response headers only, so a long export that keeps streaming is never cut.
func NewTransport(flagPrefix string, tc tlsclient.Options, responseTimeout time.Duration) (*http.Transport, error) {
	tlsCfg, err := tlsclient.Config(flagPrefix, tc)
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
