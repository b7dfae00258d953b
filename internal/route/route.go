// Package route is the table of VictoriaMetrics HTTP APIs the gateway forwards: a client path maps to a Route,
// and a Route builds the upstream path for single-node or cluster VictoriaMetrics.
package route

import (
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Kind says what an API does to data: which access mode it needs, which rate limits gate it and, with
// Route.Insert, which upstream serves it.
type Kind uint8

const (
	// Read APIs only read data; they go to -read.url (vmselect).
	Read Kind = iota + 1
	// Write APIs add samples or series; they go to -write.url (vminsert), except the few Route.Insert names.
	Write
	// Admin APIs (delete_series and the like) delete data or span tenants; they go to -read.url and need a
	// full-mode token.
	Admin
)

func (k Kind) String() string {
	switch k {
	case Read:
		return "read"
	case Write:
		return "write"
	case Admin:
		return "admin"
	}
	return "unknown"
}

// Args says where an API carries series selectors, so the enforcer knows what to rewrite.
type Args uint8

const (
	// NoSelectors: the API carries no series selectors (static vmui assets, health-like reads).
	NoSelectors Args = iota
	// QueryArg: MetricsQL in the `query` arg (query, query_range, query_exemplars).
	QueryArg
	// MatchArgs: series selectors in `match[]` (series, export, federate, labels, label values, tsdb status, delete).
	MatchArgs
	// WriteArgs: a write API; the enforcer sets `extra_label` args and never touches the body.
	WriteArgs
	// Unenforceable: the API cannot be limited to a token's series (graphite, top_queries, ...):
	// only unrestricted tokens may call it.
	Unenforceable
	// QueryText: MetricsQL in the `query` arg that VictoriaMetrics only parses and prints, never runs (vmui's
	// expand and prettify buttons). It reads no series, so it is not rewritten; but VictoriaMetrics parses it like
	// any query, and panics and exits on what the gateway refuses in one, so it is checked like one for every token.
	QueryText
)

// HasQuery reports whether the API's `query` arg is MetricsQL the gateway parses.
func (a Args) HasQuery() bool { return a == QueryArg || a == QueryText }

// Route is one classified client request path.
type Route struct {
	// API is a stable short name for metrics and logs, e.g. "query_range" or "import_prometheus".
	API  string
	Kind Kind
	Args Args
	// Suffix is the canonical path below the API root, as in the cluster URL format,
	// e.g. "prometheus/api/v1/query", "prometheus/api/v1/write", "influx/write", "vmui/assets/x.js".
	// It is percent-decoded; Upstream escapes it again.
	Suffix string
	// PathTenant is the tenant named in a cluster-shaped client path (/select/<tenant>/...), if any.
	PathTenant    tenant.ID
	HasPathTenant bool
}

// errorf is a client path the gateway refuses, sent as a Prometheus-style JSON error: 400 for a malformed path or
// tenant, 403 for multitenant paths, 404 for paths the table does not know, 414 for overlong paths.
func errorf(status int, format string, args ...any) error {
	return httperr.Errorf(status, format, args...)
}
