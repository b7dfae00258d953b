package main

import (
	"flag"
	"time"

	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/ratelimit"
)

var (
	enableRateLimit       = flag.Bool("enable.rateLimit", false, "Enables the rate limiter: per-tenant limits from -ratelimit.config, usage from -datasource.url")
	rateLimitConfig       = flag.String("ratelimit.config", "", "Path or http(s) URL of the limits config (YAML with a limits: list)")
	rateLimitCheckEvery   = flag.Duration("ratelimit.configCheckInterval", 0, "How often to re-read -ratelimit.config. Zero re-reads it only on SIGHUP. An invalid config is logged and counted, and the previous limits stay in force")
	rateLimitExtraLabels  = flagutil.NewArray("ratelimit.extraLabels", "Label filters added to every datasource query, e.g. job=\"vmcluster\"")
	rateLimitRefresh      = flag.Duration("ratelimit.refreshInterval", 5*time.Second, "How often tenant usage is queried from -datasource.url")
	rateLimitMaxUsageAge  = flag.Duration("ratelimit.maxUsageAge", time.Minute, "How long the last usage stays in force while datasource refreshes fail; after that -ratelimit.failClosed decides. Must be at least -ratelimit.refreshInterval")
	rateLimitFailClosed   = flag.Bool("ratelimit.failClosed", false, "Once usage is older than -ratelimit.maxUsageAge, reject requests that a limit applies to with 503 instead of allowing them")
	rateLimitValidateOnly = flag.Bool("ratelimit.validateConfig", false, "Check -ratelimit.config, print every error with its line and exit: 0 when valid, 1 otherwise")

	dsURL             = flag.String("datasource.url", "", "Datasource compatible with Prometheus HTTP API holding the vm_tenant_* metrics, e.g. http://127.0.0.1:8428; /api/v1/query is appended. Required with -enable.rateLimit")
	dsUser            = flag.String("datasource.basicAuth.username", "", "Optional basic auth username for -datasource.url")
	dsPassword        = flagutil.NewSecret("datasource.basicAuth.password", "Optional basic auth password for -datasource.url")
	dsUserFile        = flag.String("datasource.basicAuth.usernameFile", "", "Optional path to basic auth username to use for -datasource.url; re-read on every query")
	dsPasswordFile    = flag.String("datasource.basicAuth.passwordFile", "", "Optional path to basic auth password to use for -datasource.url; re-read on every query")
	dsBearerToken     = flagutil.NewSecret("datasource.bearerToken", "Optional bearer auth token to use for -datasource.url")
	dsBearerTokenFile = flag.String("datasource.bearerTokenFile", "", "Optional path to bearer token file to use for -datasource.url; re-read on every query")
	dsHeaders         = flag.String("datasource.headers", "", "Optional HTTP extraHeaders to send with each request to -datasource.url, e.g. -datasource.headers='My-Auth:foobar'. Multiple headers must be delimited by '^^': -datasource.headers='header1:value1^^header2:value2'")
	dsTLSCAFile       = flag.String("datasource.tlsCAFile", "", "Optional path to TLS CA file to use for verifying connections to -datasource.url. By default, system CA is used")
	dsTLSCertFile     = flag.String("datasource.tlsCertFile", "", "Optional path to client-side TLS certificate file to use when connecting to -datasource.url")
	dsTLSKeyFile      = flag.String("datasource.tlsKeyFile", "", "Optional path to client-side TLS certificate key to use when connecting to -datasource.url")
	dsTLSServerName   = flag.String("datasource.tlsServerName", "", "Optional TLS server name to use for connections to -datasource.url. By default, the server name from -datasource.url is used")
	dsTLSInsecure     = flag.Bool("datasource.tlsInsecureSkipVerify", false, "Whether to skip tls verification when connecting to -datasource.url")
	dsQueryStep       = flag.Duration("datasource.queryStep", 5*time.Minute, "The step param sent with every datasource query; 0 means none")
	dsTimeout         = flag.Duration("datasource.timeout", 30*time.Second, "Timeout of one datasource query")
)

func rateLimitCfg() ratelimit.Config {
	return ratelimit.Config{
		ConfigPath:          *rateLimitConfig,
		ConfigCheckInterval: *rateLimitCheckEvery,
		RefreshInterval:     *rateLimitRefresh,
		ExtraLabels:         *rateLimitExtraLabels,
		MaxUsageAge:         *rateLimitMaxUsageAge,
		FailClosed:          *rateLimitFailClosed,
		Datasource: datasource.Config{
			URL:                   *dsURL,
			BasicAuthUsername:     *dsUser,
			BasicAuthPassword:     dsPassword.Get(),
			BasicAuthUsernameFile: *dsUserFile,
			BasicAuthPasswordFile: *dsPasswordFile,
			BearerToken:           dsBearerToken.Get(),
			BearerTokenFile:       *dsBearerTokenFile,
			Headers:               *dsHeaders,
			TLSCAFile:             *dsTLSCAFile,
			TLSCertFile:           *dsTLSCertFile,
			TLSKeyFile:            *dsTLSKeyFile,
			TLSServerName:         *dsTLSServerName,
			TLSInsecureSkipVerify: *dsTLSInsecure,
			Timeout:               *dsTimeout,
			QueryStep:             *dsQueryStep,
		},
	}
}

// newGate builds the rate limiter when -enable.rateLimit is set; nil when it is not.
func newGate() (*ratelimit.Gate, error) {
	if !*enableRateLimit {
		return nil, nil
	}
	return ratelimit.New(rateLimitCfg())
}
