package main

import (
	"flag"
	"fmt"
	"sort"
	"strings"
)

// needs lists flags that act only together with another: a flag set without its switch is a mistake in the
// setup, as VictoriaMetrics treats it. prefix matches every flag whose name starts with it.
var needs = []struct {
	prefix, switchFlag string
	on                 func() bool
	// fatal refuses to start: a key flag without -enable.auth would leave the gateway open while its operator
	// believes tokens are checked.
	fatal bool
	why   string
}{
	{prefix: "auth.publicKey", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, fatal: true, why: "no token is checked and every request is forwarded"},
	{prefix: "auth.hmacSecretFiles", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, fatal: true, why: "no token is checked and every request is forwarded"},
	{prefix: "auth.jwksEndpoints", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, fatal: true, why: "no token is checked and every request is forwarded"},
	{prefix: "auth.oidcDiscoveryEndpoints", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, fatal: true, why: "no token is checked and every request is forwarded"},
	{prefix: "auth.issuer", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, fatal: true, why: "no token is checked and every request is forwarded"},
	{prefix: "auth.audience", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, fatal: true, why: "no token is checked and every request is forwarded"},
	{prefix: "auth.", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, why: "no token is checked"},
	{prefix: "logInvalidAuthTokens", switchFlag: "enable.auth", on: func() bool { return *enableAuth }, why: "no token is checked"},
	{prefix: "ratelimit.", switchFlag: "enable.rateLimit", on: func() bool { return *enableRateLimit || *rateLimitValidateOnly }, why: "no rate limit is applied"},
	{prefix: "datasource.", switchFlag: "enable.rateLimit", on: func() bool { return *enableRateLimit }, why: "the datasource is only read for rate limits"},
	{prefix: "querylimits.", switchFlag: "querylimits.config", on: func() bool { return *queryLimitsConfig != "" }, why: "no query limit is applied"},
	{prefix: "discoverBackendIPsInterval", switchFlag: "discoverBackendIPs", on: func() bool { return *discoverBackendIPs }, why: "backend hosts are not resolved"},
	{prefix: "tlsCertFile", switchFlag: "tls", on: func() bool { return anyTrue(*tlsEnable) }, why: "the listeners serve plain http"},
	{prefix: "tlsKeyFile", switchFlag: "tls", on: func() bool { return anyTrue(*tlsEnable) }, why: "the listeners serve plain http"},
	{prefix: "tlsMinVersion", switchFlag: "tls", on: func() bool { return anyTrue(*tlsEnable) }, why: "the listeners serve plain http"},
	{prefix: "envflag.prefix", switchFlag: "envflag.enable", on: func() bool { return flag.Lookup("envflag.enable").Value.String() == "true" }, why: "flags are read from the command line only"},
}

// always are flags of a group that act on their own, beside the switch of their group.
var always = map[string]bool{
	"auth.maxTokenSize":        true, // bounds the Authorization header only with auth, but is one of the request limits
	"querylimits.config":       true,
	"ratelimit.validateConfig": true,
}

// flagsWithoutEffect checks every flag given (on the command line or from the environment) against the switch it
// needs: the fatal ones are the error, the others come back as warnings.
func flagsWithoutEffect() (warnings []string, err error) {
	var set []string
	flag.Visit(func(f *flag.Flag) { set = append(set, f.Name) })
	sort.Strings(set)
	var fatal []string
	for _, name := range set {
		if always[name] {
			continue
		}
		for _, n := range needs {
			if !strings.HasPrefix(name, n.prefix) || n.on() {
				continue
			}
			if name == n.switchFlag {
				break
			}
			msg := fmt.Sprintf("-%s has no effect without -%s: %s", name, n.switchFlag, n.why)
			if n.fatal {
				fatal = append(fatal, msg+"; add -"+n.switchFlag+" or drop -"+name)
			} else {
				warnings = append(warnings, msg)
			}
			break
		}
	}
	if len(fatal) > 0 {
		return warnings, fmt.Errorf("%s", strings.Join(fatal, "; "))
	}
	return warnings, nil
}

func anyTrue(bs []bool) bool {
	for _, b := range bs {
		if b {
			return true
		}
	}
	return false
}
