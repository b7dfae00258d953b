package main

import (
	"log/slog"
	"net/url"
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/redact"
)

// authEnabled is 0 while the gateway runs without -enable.auth, forwarding anything to anyone: an alert can
// catch a gateway started that way by mistake.
var authEnabled = metrics.NewGauge(`vmgateway_auth_enabled`, nil)

// logSummary logs what the gateway runs with, so that the start log answers what it protects and how: listeners,
// upstreams, auth and its keys, rate and query limits. URLs are shown without credentials.
func (a *app) logSummary() {
	var listen []string
	for i, addr := range a.srv.Addrs() {
		scheme := "http"
		if tlsEnable.Get(i) {
			scheme = "https"
		}
		listen = append(listen, scheme+"://"+addr.String()+*pathPrefix)
	}
	mode := "single-node"
	if *clusterMode {
		mode = "cluster"
	}
	slog.Info("start summary: serving", "listen", strings.Join(listen, ", "), "tls", anyTrue(*tlsEnable), "mode", mode,
		"read", showURLs(*readURLs), "write", showURLs(*writeURLs))
	if a.verifier == nil {
		authEnabled.Set(0)
		slog.Warn("start summary: auth is OFF (-enable.auth is not set): the gateway forwards any request from anyone to the upstreams, " +
			"with access to every tenant and series; set -enable.auth with a key source unless something in front of it checks every client")
	} else {
		authEnabled.Set(1)
		sources := a.verifier.KeySources()
		attrs := []any{"keySources", len(sources), "issuer", orNone(*authIssuer), "audience", orNone(*authAudience)}
		if *authSkipVerify {
			attrs = append(attrs, "signatures", "NOT VERIFIED (-auth.skipVerify)")
		}
		if *authPolicyFile != "" {
			_, n := a.verifier.PolicyConfig()
			attrs = append(attrs, "policyFile", showSource(*authPolicyFile), "policies", n)
		}
		slog.Info("start summary: auth is on", attrs...)
		for _, s := range sources {
			attrs := []any{"source", s.Source, "keys", len(s.Keys), "ids", strings.Join(s.Keys, ", ")}
			if s.Error != "" {
				attrs = append(attrs, "error", s.Error)
			}
			slog.Info("start summary: key source", attrs...)
		}
		if metricsAuthKey.Get() == "" && *httpAuthUsername == "" {
			// Its totals span every team: a team that reads them around its own requests learns when the others read
			// and write, and how many series each of their queries selected (an attacker's review).
			slog.Warn("start summary: /metrics is open to anyone who reaches the gateway (no -metricsAuthKey, no -httpAuth.*): " +
				"its totals tell one team when the others read and write and how many series their queries select; set " +
				"-metricsAuthKey (and authKey in the scrape config) unless the listener is reachable by the operator only")
		}
	}
	if a.gate == nil {
		slog.Info("start summary: rate limiting is off")
	} else {
		redis := "none (each replica counts alone)"
		if *redisURL != "" {
			redis = showURL(*redisURL) + " under the key prefix " + *redisKeyPrefix
		}
		_, n := a.gate.Config()
		slog.Info("start summary: rate limiting is on", "config", showSource(*rateLimitConfig), "limits", n,
			"datasource", showURL(*dsURL), "redis", redis, "dryRun", *rateLimitDryRun, "failClosed", *rateLimitFailClosed)
	}
	if a.qlimits != nil {
		_, n := a.qlimits.Config()
		slog.Info("start summary: query limits are on", "config", showSource(*queryLimitsConfig), "limits", n)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(not checked)"
	}
	return s
}

// showURL is a URL without its credentials and query, or a note when it does not parse.
func showURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return redact.URL(u)
}

func showURLs(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = showURL(s)
	}
	return strings.Join(out, ", ")
}

func showSource(s string) string { return confsource.Show(s) }
