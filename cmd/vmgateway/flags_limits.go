package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/gateway"
)

var (
	maxConcurrentRequests          = flag.Int("maxConcurrentRequests", 1000, "The maximum number of requests the gateway forwards at once, all tenants together. Others wait up to -maxQueueDuration for a free slot, then get 429 Too Many Requests with Retry-After. Zero means no limit")
	maxConcurrentPerTenantRequests = flag.Int("maxConcurrentPerTenantRequests", 300, "The maximum number of requests the gateway forwards at once for one tenant, so one busy tenant cannot take every slot of -maxConcurrentRequests. Others wait up to -maxQueueDuration, then get 429. Zero means no per-tenant limit")
	maxQueueDuration               = flag.Duration("maxQueueDuration", time.Second, "How long a request waits for a free slot under -maxConcurrentRequests / -maxConcurrentPerTenantRequests before it gets 429. Zero refuses at once")
	searchMaxQueryLen              = flag.Int("search.maxQueryLen", 16*1024, "The maximum length of a query / match[] arg of a read request, in the URL or in a form body; longer ones get 400 without being forwarded. Zero means no limit")
	maxReadBodySize                = flag.Int("maxReadBodySize", 4*1024*1024, "The maximum size of the body of a read or admin request (form-encoded query args); larger bodies get 413 without being forwarded. Write bodies are never limited: they stream through. Zero means no limit")
	authMaxTokenSize               = flag.Int("auth.maxTokenSize", 16*1024, "The maximum size of a JWT token; longer tokens get 401 before any work on them")
)

// gatewayLimits is the gateway.Limits the flags describe. It also sets the enforcer's form body limit, so
// -maxReadBodySize is the one limit for read bodies wherever they are read.
func gatewayLimits() (gateway.Limits, error) {
	for _, f := range []struct {
		name string
		v    int
	}{{"maxConcurrentRequests", *maxConcurrentRequests}, {"maxConcurrentPerTenantRequests", *maxConcurrentPerTenantRequests},
		{"search.maxQueryLen", *searchMaxQueryLen}, {"maxReadBodySize", *maxReadBodySize}, {"auth.maxTokenSize", *authMaxTokenSize}} {
		if f.v < 0 {
			return gateway.Limits{}, fmt.Errorf("-%s=%d must not be negative", f.name, f.v)
		}
	}
	if *maxQueueDuration < 0 {
		return gateway.Limits{}, fmt.Errorf("-maxQueueDuration=%s must not be negative", *maxQueueDuration)
	}
	if *maxReadBodySize > 0 {
		enforce.MaxFormBodySize = *maxReadBodySize
	} else {
		// No limit for the gateway; the enforcer still needs a bound on what it holds in memory.
		enforce.MaxFormBodySize = 1 << 30
	}
	return gateway.Limits{
		MaxConcurrentRequests:          *maxConcurrentRequests,
		MaxConcurrentPerTenantRequests: *maxConcurrentPerTenantRequests,
		MaxQueueDuration:               *maxQueueDuration,
		MaxQueryLen:                    *searchMaxQueryLen,
		MaxReadBodySize:                int64(*maxReadBodySize),
	}, nil
}
