package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/ratelimit"
	"github.com/vmgateway/vmgateway/internal/server"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
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
	rateLimitHeaders      = flag.String("ratelimit.headers", "none", "Rate-limit headers on responses to requests under queries limits, allowed and rejected alike: none, "+
		"draft03 (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset), ietf (the structured RateLimit-Policy and RateLimit of the current IETF draft) or both")
	rateLimitDryRun        = flag.Bool("ratelimit.dryRun", false, "Evaluate the limits, log (at most every 10s) and count in vmgateway_ratelimit_dryrun_would_reject_total what would be rejected, but reject nothing. For rolling out new limits")
	rateLimitStatusAuthKey = flagutil.NewSecret("ratelimit.statusAuthKey", "Auth key for /ratelimit/status, which lists every tenant's and key's usage against its limits as JSON. It must be passed via authKey query arg. It overrides -httpAuth.*. Without it (or -httpAuth.*), the page is disabled")

	redisURL       = flag.String("ratelimit.redis.url", "", "Optional Redis that gateway replicas share their counts through, so that a limit holds across replicas: redis://[user:password@]host:port[/db], or rediss:// for TLS. Without it each replica counts alone")
	redisPassword  = flagutil.NewSecret("ratelimit.redis.password", "Optional password for -ratelimit.redis.url; replaces the URL's password")
	redisTimeout   = flag.Duration("ratelimit.redis.timeout", 500*time.Millisecond, "Timeout of one Redis call. A request waits at most this long for Redis before the gateway falls back to counting locally until Redis answers again")
	redisKeyPrefix = flag.String("ratelimit.redis.keyPrefix", "", "Prefix of every key the gateway writes in -ratelimit.redis.url; required with it. "+
		"Gateways under one prefix share every tenant's counts: give each deployment (the gateways in front of one VictoriaMetrics, whose tenants are its own customers) "+
		"its own, e.g. vmgateway:prod-eu, and every replica of a deployment the same. vmgateway:ratelimit keeps the counts of an earlier release's replicas")
	redisBatchSize = flag.Int("ratelimit.redis.batchSize", 100, "The most units of a limit a replica takes from Redis at once and admits without asking Redis again (at most a quarter of what the limit has left). Larger means fewer Redis calls; units unused by the end of the second are given back")

	dsURL             = flag.String("datasource.url", "", "Datasource compatible with Prometheus HTTP API holding the vm_tenant_* metrics, e.g. http://127.0.0.1:8428; /api/v1/query is appended. Required with -enable.rateLimit")
	dsUser            = flag.String("datasource.basicAuth.username", "", "Optional basic auth username for -datasource.url")
	dsPassword        = flagutil.NewSecret("datasource.basicAuth.password", "Optional basic auth password for -datasource.url")
	dsUserFile        = flag.String("datasource.basicAuth.usernameFile", "", "Optional path to basic auth username to use for -datasource.url; re-read on every query")
	dsPasswordFile    = flag.String("datasource.basicAuth.passwordFile", "", "Optional path to basic auth password to use for -datasource.url; re-read on every query")
	dsBearerToken     = flagutil.NewSecret("datasource.bearerToken", "Optional bearer auth token to use for -datasource.url")
	dsBearerTokenFile = flag.String("datasource.bearerTokenFile", "", "Optional path to bearer token file to use for -datasource.url; re-read on every query")
	dsHeaders         = flag.String("datasource.headers", "", "Optional HTTP extraHeaders to send with each request to -datasource.url, e.g. -datasource.headers='My-Auth:foobar'. Multiple headers must be delimited by '^^': -datasource.headers='header1:value1^^header2:value2'")
	dsQueryStep       = flag.Duration("datasource.queryStep", 5*time.Minute, "The step param sent with every datasource query; 0 means none")
	dsTimeout         = flag.Duration("datasource.timeout", 30*time.Second, "Timeout of one datasource query")

	redisTLS = tlsclient.NewFlags("ratelimit.redis", "the rediss:// -ratelimit.redis.url")
	dsTLS    = tlsclient.NewFlags("datasource", "-datasource.url")
)

// rateLimitCfg is the ratelimit.Config the flags describe, checked as far as flags alone can be; ratelimit.New
// checks the rest (the limits file, the datasource and Redis settings). Without -enable.rateLimit nothing is
// checked: the flags have no effect, which a warning at start says.
func rateLimitCfg() (ratelimit.Config, error) {
	if !*enableRateLimit {
		return ratelimit.Config{}, nil
	}
	h, err := ratelimit.ParseHeaders(*rateLimitHeaders)
	if err != nil {
		return ratelimit.Config{}, err
	}
	if *redisBatchSize <= 0 {
		return ratelimit.Config{}, fmt.Errorf("-ratelimit.redis.batchSize=%d: want a positive number of units", *redisBatchSize)
	}
	prefix := *redisKeyPrefix
	switch {
	case *redisURL != "" && prefix == "":
		// A default would be shared by deployments that one Redis must keep apart (staging and production, two
		// clusters): a team of tenant 1 of one used up the limits of tenant 1 of the other (an attacker's review), and
		// a default made of the backends' names still matched where two clusters name them alike (a second review).
		return ratelimit.Config{}, errors.New("-ratelimit.redis.url needs -ratelimit.redis.keyPrefix: gateways under one prefix share every tenant's " +
			"counts, so give each deployment its own (e.g. vmgateway:prod-eu) and every replica of a deployment the same; vmgateway:ratelimit keeps " +
			"the counts of an earlier release's replicas")
	case len(prefix) > 200 || strings.ContainsAny(prefix, "{} \t\r\n"):
		// A brace would end the keys' Redis Cluster hash tag early.
		return ratelimit.Config{}, fmt.Errorf("-ratelimit.redis.keyPrefix=%.200q: give up to 200 bytes without braces or spaces", prefix)
	}
	return ratelimit.Config{
		ConfigPath:          *rateLimitConfig,
		ConfigCheckInterval: *rateLimitCheckEvery,
		RefreshInterval:     *rateLimitRefresh,
		ExtraLabels:         *rateLimitExtraLabels,
		MaxUsageAge:         *rateLimitMaxUsageAge,
		FailClosed:          *rateLimitFailClosed,
		DryRun:              *rateLimitDryRun,
		Headers:             h,
		Redis: ratelimit.RedisConfig{
			URL:       *redisURL,
			Password:  redisPassword.Get(),
			Timeout:   *redisTimeout,
			BatchSize: *redisBatchSize,
			KeyPrefix: prefix,
			TLS:       *redisTLS,
		},
		Datasource: datasource.Config{
			URL:                   *dsURL,
			BasicAuthUsername:     *dsUser,
			BasicAuthPassword:     dsPassword.Get(),
			BasicAuthUsernameFile: *dsUserFile,
			BasicAuthPasswordFile: *dsPasswordFile,
			BearerToken:           dsBearerToken.Get(),
			BearerTokenFile:       *dsBearerTokenFile,
			Headers:               *dsHeaders,
			TLS:                   *dsTLS,
			Timeout:               *dsTimeout,
			QueryStep:             *dsQueryStep,
		},
	}, nil
}

// newGate builds the rate limiter when -enable.rateLimit is set; nil when it is not.
func newGate(cfg ratelimit.Config) (*ratelimit.Gate, error) {
	if !*enableRateLimit {
		return nil, nil
	}
	return ratelimit.New(cfg)
}

// rateLimitStatus is the /ratelimit/status page, when the rate limiter is on.
func rateLimitStatus(g *ratelimit.Gate) []server.Endpoint {
	if g == nil {
		return nil
	}
	return []server.Endpoint{{Path: "/ratelimit/status", AuthKey: rateLimitStatusAuthKey.Get(), AuthKeyFlag: "-ratelimit.statusAuthKey", Handler: g.StatusHandler()}}
}
