package main

import (
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/gateway"
)

var (
	readURLs            = flagutil.NewArray("read.url", "Read access URLs: vmselect (e.g. http://vmselect:8481) with -clusterMode, or single-node VictoriaMetrics (e.g. http://localhost:8428). Several URLs (each with its own path prefix and credentials) are balanced per -loadBalancingPolicy, with failover and retries")
	writeURLs           = flagutil.NewArray("write.url", "Write access URLs: vminsert (e.g. http://vminsert:8480) with -clusterMode, or single-node VictoriaMetrics (e.g. http://localhost:8428). Several URLs (each with its own path prefix and credentials) are balanced per -loadBalancingPolicy; a write is retried on another only if none of its body was sent")
	loadBalancingPolicy = flag.String("loadBalancingPolicy", "least_loaded", "How requests are spread over several -read.url or -write.url backends: least_loaded (the one with the fewest requests in flight, ties rotated) or first_available (the first one that is not broken; the rest are spares)")
	failTimeout         = flag.Duration("failTimeout", 3*time.Second, "How long a backend that refused a connection, timed out on connect or answered a -retryStatusCodes status is skipped; then it is tried again. When every backend is broken, requests still go to one of them")
	retryStatusCodes    = flagutil.NewArray("retryStatusCodes", "Backend answer statuses after which a request is tried on another backend of its kind, e.g. 502,503; reads always can be, writes only when none of the body was sent yet. By default only connection failures are retried")
	discoverBackendIPs  = flag.Bool("discoverBackendIPs", false, "Whether to resolve the host of each -read.url and -write.url every -discoverBackendIPsInterval and balance over all the addresses found, e.g. for a Kubernetes headless service. With https, set -read.tlsServerName / -write.tlsServerName, since connections go to IP addresses")
	discoverInterval    = flag.Duration("discoverBackendIPsInterval", 10*time.Second, "How often to resolve backend hosts with -discoverBackendIPs")
)

// backendURLs parses every URL of -read.url or -write.url.
func backendURLs(name string, vals []string) ([]*url.URL, error) {
	if len(vals) == 0 {
		vals = []string{""}
	}
	us := make([]*url.URL, len(vals))
	for i, v := range vals {
		u, err := parseUpstreamURL(name, v)
		if err != nil {
			return nil, err
		}
		us[i] = u
	}
	return us, nil
}

// backendOptions is the gateway.BackendOptions the flags describe.
func backendOptions() (gateway.BackendOptions, error) {
	var o gateway.BackendOptions
	p, err := gateway.ParsePolicy(*loadBalancingPolicy)
	if err != nil {
		return o, fmt.Errorf("-loadBalancingPolicy: %w", err)
	}
	o.Policy = p
	if *failTimeout < 0 {
		return o, fmt.Errorf("-failTimeout=%s must not be negative", *failTimeout)
	}
	o.FailTimeout = *failTimeout
	for _, s := range *retryStatusCodes {
		c, err := strconv.Atoi(s)
		if err != nil || c < 100 || c > 599 {
			return o, fmt.Errorf("-retryStatusCodes: %q is not an HTTP status code (want e.g. 502,503)", s)
		}
		if c < 400 {
			return o, fmt.Errorf("-retryStatusCodes: %d is not an error status; a request answered %d is done", c, c)
		}
		o.RetryStatusCodes = append(o.RetryStatusCodes, c)
	}
	if *discoverBackendIPs {
		if *discoverInterval <= 0 {
			return o, fmt.Errorf("-discoverBackendIPsInterval=%s must be positive with -discoverBackendIPs", *discoverInterval)
		}
		o.DiscoverInterval = *discoverInterval
	}
	return o, nil
}
