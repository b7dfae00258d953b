package main

import (
	"flag"

	"github.com/vmgateway/vmgateway/internal/querylimits"
)

var (
	queryLimitsConfig       = flag.String("querylimits.config", "", "Path or http(s) URL of the per-tenant query limits config (YAML with a limits: list): max_total_query_length, max_query_lookback, min_step, max_query_expression_size_bytes, query_timeout, blocked_queries. Requests over a limit get 422")
	queryLimitsCheckEvery   = flag.Duration("querylimits.configCheckInterval", 0, "How often to re-read -querylimits.config. Zero re-reads it only on SIGHUP. An invalid config is logged and counted, and the previous limits stay in force")
	queryLimitsValidateOnly = flag.Bool("querylimits.validateConfig", false, "Check -querylimits.config, print every error with its line and exit: 0 when valid, 1 otherwise")
)

// newQueryLimits loads -querylimits.config; nil when it is not set.
func newQueryLimits() (*querylimits.Limiter, error) {
	if *queryLimitsConfig == "" {
		return nil, nil
	}
	return querylimits.New(*queryLimitsConfig, *queryLimitsCheckEvery)
}
