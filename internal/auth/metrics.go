package auth

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/redact"
)

var (
	rejects = func() map[string]*metrics.Counter {
		m := make(map[string]*metrics.Counter, len(allReasons))
		for _, r := range allReasons {
			// Created up front so dashboards and alerts see every reason at 0.
			m[r] = metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_auth_rejects_total{reason=%q}`, r))
		}
		return m
	}()

	cacheHits   = metrics.GetOrCreateCounter(`vmgateway_auth_cache_hits_total`)
	cacheMisses = metrics.GetOrCreateCounter(`vmgateway_auth_cache_misses_total`)
	// negativeCacheHits are requests refused from the negative cache; they are counted in rejects too.
	negativeCacheHits = metrics.GetOrCreateCounter(`vmgateway_auth_negative_cache_hits_total`)

	verificationDisabled = metrics.GetOrCreateGauge(`vmgateway_auth_signature_verification_disabled`, nil)
	keysLoaded           = metrics.GetOrCreateGauge(`vmgateway_auth_keys`, nil)
)

func countReject(reason string) {
	if c := rejects[reason]; c != nil {
		c.Inc()
	}
}

func keyFetches(url string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_auth_key_fetches_total{url=%q}`, redact.String(url)))
}

func keyFetchErrors(url string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_auth_key_fetch_errors_total{url=%q}`, redact.String(url)))
}

func keyFetchLastSuccess(url string) *metrics.Gauge {
	return metrics.GetOrCreateGauge(fmt.Sprintf(`vmgateway_auth_key_last_successful_fetch_timestamp_seconds{url=%q}`, redact.String(url)), nil)
}
