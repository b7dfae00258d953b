package route

import (
	"net/http"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Lookup classifies a client path: the request path after -http.pathPrefix is stripped, still percent-encoded
// (r.URL.EscapedPath()). It canonicalises the path first and refuses what the table does not know with 404;
// errors carry HTTPStatus(). Single-node shapes ("/api/v1/query", "/prometheus/api/v1/query", "/influx/write")
// and cluster shapes ("/select/<tenant>/prometheus/api/v1/query", ...) are accepted; the latter set PathTenant.
func Lookup(path string) (Route, error) {
	p, err := canonical(path)
	if err != nil {
		return Route{}, err
	}
	if hasMultitenant(p) {
		return Route{}, errorf(http.StatusForbidden, `path %s names the "multitenant" pseudo-tenant: multitenant endpoints `+
			`are never reachable through vmgateway, which takes the tenant from the token`, quote(path))
	}
	var (
		r  Route
		ok bool
	)
	if root, rest, cluster := cutRoot(p); cluster {
		id, suffix, err := splitTenant(root, rest, path)
		if err != nil {
			return Route{}, err
		}
		switch root {
		case "select":
			r, ok = selectRoute(suffix)
		case "insert":
			r, ok = insertRoute(suffix)
		case "delete":
			r, ok = deleteRoute(suffix)
		}
		r.PathTenant, r.HasPathTenant = id, true
	} else {
		r, ok = singleRoute(p[1:])
	}
	if !ok {
		return Route{}, errorf(http.StatusNotFound, "unsupported path %s: vmgateway forwards only the VictoriaMetrics APIs "+
			"in its route table (paths are case-sensitive; see the route table in the docs)", quote(path))
	}
	// The upstream path re-escapes the suffix, which can triple it: what the gateway forwards stays within the
	// length it accepts itself.
	if n := len(longestUpstreamPrefix) + escapedLenBound(r.Suffix); n > maxPathLen {
		return Route{}, errorf(http.StatusRequestURITooLong, "path %s would be %d bytes once re-escaped for the upstream, "+
			"longer than the %d bytes vmgateway accepts", quote(path), n, maxPathLen)
	}
	return r, nil
}

// longestUpstreamPrefix is the longest root Upstream puts before a suffix.
const longestUpstreamPrefix = "/select/4294967295:4294967295/"

// escapedLenBound bounds the length of escapeSegments(s) without building it: an escaped byte takes three.
func escapedLenBound(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if !httpsyntax.IsUnreserved(s[i]) && s[i] != '/' {
			n += 2
		}
	}
	return n
}

// spec declares one API. paths are relative to the family's root; the first is canonical (it becomes the Suffix
// and the upstream path), the others are aliases VictoriaMetrics serves the same way.
type spec struct {
	api   string
	kind  Kind
	args  Args
	paths []string
}

// promReads are served by vmselect below /select/<tenant>/prometheus/ and by single-node with or without the
// /prometheus prefix. api/v1/label/<name>/values and vmui are matched in promRead.
var promReads = build("prometheus/", []spec{
	{"query", Read, QueryArg, []string{"api/v1/query"}},
	{"query_range", Read, QueryArg, []string{"api/v1/query_range"}},
	{"query_exemplars", Read, QueryArg, []string{"api/v1/query_exemplars"}},
	{"series", Read, MatchArgs, []string{"api/v1/series"}},
	// VictoriaMetrics ignores match[] and extra_filters[] here and counts every series of the tenant.
	{"series_count", Read, Unenforceable, []string{"api/v1/series/count"}},
	{"labels", Read, MatchArgs, []string{"api/v1/labels"}},
	{"export", Read, MatchArgs, []string{"api/v1/export"}},
	{"export_csv", Read, MatchArgs, []string{"api/v1/export/csv"}},
	{"export_native", Read, MatchArgs, []string{"api/v1/export/native"}},
	{"federate", Read, MatchArgs, []string{"federate"}},
	{"status_tsdb", Read, MatchArgs, []string{"api/v1/status/tsdb"}},
	// Metric names and help texts of every series in the tenant.
	{"metadata", Read, Unenforceable, []string{"api/v1/metadata"}},
	// Other clients' queries, verbatim.
	{"status_active_queries", Read, Unenforceable, []string{"api/v1/status/active_queries"}},
	{"status_top_queries", Read, Unenforceable, []string{"api/v1/status/top_queries"}},
	// Grafana probes buildinfo to pick API features; it says nothing about series.
	{"status_buildinfo", Read, NoSelectors, []string{"api/v1/status/buildinfo"}},
	{"metric_relabel_debug", Read, Unenforceable, []string{"metric-relabel-debug"}},
	// vmui helpers that only rewrite the query text they are given; they never read storage.
	{"expand_with_exprs", Read, QueryText, []string{"expand-with-exprs"}},
	{"prettify_query", Read, QueryText, []string{"prettify-query"}},
	// Placeholders, or vmalert's rules and alerts of every tenant with -vmalert.proxyURL.
	{"rules", Read, Unenforceable, []string{"api/v1/rules"}},
	{"alerts", Read, Unenforceable, []string{"api/v1/alerts"}},
})

// promWrites are served by vminsert below /insert/<tenant>/prometheus/ and by single-node with or without the
// /prometheus prefix. The pushgateway form of import/prometheus is matched in promWrite.
var promWrites = build("prometheus/", []spec{
	{"remote_write", Write, WriteArgs, []string{"api/v1/write", "api/v1/push"}},
	{"import", Write, WriteArgs, []string{"api/v1/import"}},
	{"import_csv", Write, WriteArgs, []string{"api/v1/import/csv"}},
	{"import_native", Write, WriteArgs, []string{"api/v1/import/native"}},
	{"import_prometheus", Write, WriteArgs, []string{"api/v1/import/prometheus"}},
})

// promDeletes are served by vmselect below /delete/<tenant>/prometheus/.
var promDeletes = build("prometheus/", []spec{
	{"delete_series", Admin, MatchArgs, []string{"api/v1/admin/tsdb/delete_series"}},
})

// graphiteAPIs are served by vmselect below /select/<tenant>/graphite/ and by single-node with or without the
// /graphite prefix. Graphite queries carry no Prometheus selectors, so none of them can be limited to a token's
// series. tags/<name> and functions/<name> are matched in graphiteRoute.
var graphiteAPIs = build("graphite/", []spec{
	{"graphite_render", Read, Unenforceable, []string{"render"}},
	{"graphite_metrics_find", Read, Unenforceable, []string{"metrics/find", "metrics/find/"}},
	{"graphite_metrics_expand", Read, Unenforceable, []string{"metrics/expand", "metrics/expand/"}},
	{"graphite_metrics_index", Read, Unenforceable, []string{"metrics/index.json", "metrics/index.json/"}},
	{"graphite_tags", Read, Unenforceable, []string{"tags"}},
	{"graphite_tags_find_series", Read, Unenforceable, []string{"tags/findSeries"}},
	{"graphite_tags_autocomplete_tags", Read, Unenforceable, []string{"tags/autoComplete/tags"}},
	{"graphite_tags_autocomplete_values", Read, Unenforceable, []string{"tags/autoComplete/values"}},
	// Tag registration creates series, so it is a write (write mode, write limits), though vmselect and the query
	// side of single-node serve it, never vminsert (see Route.Insert). VictoriaMetrics ignores extra_label here, and
	// the series name with its tags is the client's `path`: it cannot be limited to a token's labels or filters.
	{"graphite_tags_tag_series", Write, Unenforceable, []string{"tags/tagSeries"}},
	{"graphite_tags_tag_multi_series", Write, Unenforceable, []string{"tags/tagMultiSeries"}},
	// Deletes series: an operator's action, like delete_series.
	{"graphite_tags_del_series", Admin, Unenforceable, []string{"tags/delSeries"}},
	{"graphite_functions", Read, NoSelectors, []string{"functions"}},
})

// ingestAPIs are served by vminsert below /insert/<tenant>/ and by single-node at the root. The handshakes
// (NoSelectors) are answered by vminsert itself, so they are writes: the agent that calls them holds a write token.
var ingestAPIs = build("", []spec{
	{"influx_write", Write, WriteArgs, []string{"influx/write"}},
	{"influx_v2_write", Write, WriteArgs, []string{"influx/api/v2/write"}},
	{"influx_query", Write, NoSelectors, []string{"influx/query"}},
	{"influx_health", Write, NoSelectors, []string{"influx/health"}},
	{"opentelemetry", Write, WriteArgs, []string{"opentelemetry/v1/metrics", "opentelemetry/api/v1/push"}},
	{"datadog_series", Write, WriteArgs, []string{"datadog/api/v1/series"}},
	{"datadog_series_v2", Write, WriteArgs, []string{"datadog/api/v2/series"}},
	{"datadog_sketches", Write, WriteArgs, []string{"datadog/api/beta/sketches"}},
	{"datadog_validate", Write, NoSelectors, []string{"datadog/api/v1/validate"}},
	{"datadog_check_run", Write, NoSelectors, []string{"datadog/api/v1/check_run"}},
	{"datadog_intake", Write, NoSelectors, []string{"datadog/intake"}},
	{"datadog_metadata", Write, NoSelectors, []string{"datadog/api/v1/metadata"}},
	{"newrelic_check", Write, NoSelectors, []string{"newrelic"}},
	{"newrelic_inventory", Write, NoSelectors, []string{"newrelic/inventory/deltas"}},
	{"newrelic_write", Write, WriteArgs, []string{"newrelic/infra/v2/metrics/events/bulk"}},
	// Served on vminsert's and single-node's -opentsdbHTTPListenAddr, not on their main port.
	{"opentsdb_put", Write, WriteArgs, []string{"opentsdb/api/put"}},
})

// singleAliases are root paths single-node VictoriaMetrics serves besides the canonical ones.
var singleAliases = map[string]Route{
	"write":        ingestAPIs["influx/write"],
	"api/v2/write": ingestAPIs["influx/api/v2/write"],
	"query":        ingestAPIs["influx/query"],
	"api/put":      ingestAPIs["opentsdb/api/put"],
}

// adminTenants lists the tenants that hold data: vmselect serves it at /admin/tenants, outside any tenant. It tells
// every tenant's ID, so it is an Admin API: a read-only token of one tenant must not learn the others.
var adminTenants = Route{API: "admin_tenants", Kind: Admin, Args: Unenforceable, Suffix: "admin/tenants"}

func build(prefix string, specs []spec) map[string]Route {
	m := make(map[string]Route)
	for _, s := range specs {
		r := Route{API: s.api, Kind: s.kind, Args: s.args, Suffix: prefix + s.paths[0]}
		for _, p := range s.paths {
			if _, dup := m[p]; dup {
				panic("route: duplicate path " + prefix + p)
			}
			m[p] = r
		}
	}
	return m
}

func singleRoute(s string) (Route, bool) {
	if x, ok := strings.CutPrefix(s, "prometheus/"); ok {
		if r, ok := promRead(x, s); ok {
			return r, true
		}
		if r, ok := promWrite(x, s); ok {
			return r, true
		}
		r, ok := promDeletes[x]
		return r, ok
	}
	if x, ok := strings.CutPrefix(s, "graphite/"); ok {
		return graphiteRoute(x, s)
	}
	if r, ok := promRead(s, ""); ok {
		return r, true
	}
	if r, ok := promWrite(s, ""); ok {
		return r, true
	}
	if r, ok := promDeletes[s]; ok {
		return r, true
	}
	if r, ok := graphiteRoute(s, ""); ok {
		return r, true
	}
	if r, ok := ingestRoute(s); ok {
		return r, true
	}
	if r, ok := singleAliases[s]; ok {
		return r, true
	}
	if s == adminTenants.Suffix {
		return adminTenants, true
	}
	return Route{}, false
}

func selectRoute(s string) (Route, bool) {
	if x, ok := strings.CutPrefix(s, "prometheus/"); ok {
		return promRead(x, s)
	}
	if x, ok := strings.CutPrefix(s, "graphite/"); ok {
		return graphiteRoute(x, s)
	}
	return vmuiRoute(s)
}

func insertRoute(s string) (Route, bool) {
	// vminsert takes Prometheus remote write at the bare prometheus root too.
	if s == "prometheus" || s == "prometheus/" {
		return promWrites["api/v1/write"], true
	}
	if x, ok := strings.CutPrefix(s, "prometheus/"); ok {
		return promWrite(x, s)
	}
	return ingestRoute(s)
}

func deleteRoute(s string) (Route, bool) {
	x, ok := strings.CutPrefix(s, "prometheus/")
	if !ok {
		return Route{}, false
	}
	r, ok := promDeletes[x]
	return r, ok
}

// promRead matches x below a prometheus root; full is "prometheus/"+x when the caller has it, to save an allocation.
func promRead(x, full string) (Route, bool) {
	if r, ok := promReads[x]; ok {
		return r, true
	}
	if rest, ok := strings.CutPrefix(x, "api/v1/label/"); ok {
		name, ok := strings.CutSuffix(rest, "/values")
		if !ok || name == "" || strings.IndexByte(name, '/') >= 0 {
			return Route{}, false
		}
		return Route{API: "label_values", Kind: Read, Args: MatchArgs, Suffix: join("prometheus/", x, full)}, true
	}
	// vmselect serves vmui below the prometheus root as well.
	return vmuiRoute(x)
}

// vmuiRoute keeps the path below vmui as it is, trailing slash included: "vmui" is answered with a relative
// redirect to "vmui/", and the assets live below "vmui/".
func vmuiRoute(x string) (Route, bool) {
	if x != "vmui" && !strings.HasPrefix(x, "vmui/") {
		return Route{}, false
	}
	return Route{API: "vmui", Kind: Read, Args: NoSelectors, Suffix: x}, true
}

func promWrite(x, full string) (Route, bool) {
	if r, ok := promWrites[x]; ok {
		return r, true
	}
	if !isPushgateway(x) {
		return Route{}, false
	}
	r := promWrites["api/v1/import/prometheus"]
	r.Suffix = join("prometheus/", x, full)
	return r, true
}

// isPushgateway matches the Pushgateway form of import/prometheus: metrics/job/<job>{/<label>/<value>}, where a
// name may end in "@base64" for a base64-encoded value. VictoriaMetrics adds these labels before the extra_label
// args, so the extra_label args the enforcer appends still win.
func isPushgateway(x string) bool {
	rest, ok := strings.CutPrefix(x, "api/v1/import/prometheus/metrics/")
	if !ok || !(strings.HasPrefix(rest, "job/") || strings.HasPrefix(rest, "job@base64/")) {
		return false
	}
	n := 0
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "" || (n%2 == 0 && !isLabelName(strings.TrimSuffix(seg, "@base64"))) {
			return false
		}
		n++
	}
	return n%2 == 0
}

// Evaluates reports whether the API evaluates a MetricsQL query over time: /api/v1/query and /api/v1/query_range,
// whose answers VictoriaMetrics ends with the query's stats (the cost limits charge them) and whose memory grows
// with the points of each series.
func (r Route) Evaluates() bool { return r.API == "query" || r.API == "query_range" }

// Charged reports whether the cost limits charge the API: the queries, and the exports of raw samples, which cost a
// backend as much as an instant query of a range, whose answer is one.
func (r Route) Charged() bool {
	switch r.API {
	case "query", "query_range", "export", "export_csv", "export_native", "federate":
		return true
	}
	return false
}

// Timed reports whether the cost limits charge the API the time it took, and nothing else: the listing APIs, which
// read the index, not samples, and have no stats, but whose work a team could otherwise send without end (an
// attacker's review: 148 ms of 1.79.5's CPU a label values request, charged none, with another team's dashboard 8 times
// slower beside it).
func (r Route) Timed() bool {
	switch r.API {
	case "series", "series_count", "labels", "label_values", "status_tsdb", "graphite_metrics_find", "graphite_metrics_expand",
		"graphite_metrics_index", "graphite_tags", "graphite_tags_find_series", "graphite_tags_autocomplete_tags",
		"graphite_tags_autocomplete_values", "graphite_tag_values":
		return true
	}
	return false
}

// Deletes reports whether the API deletes series, which resets caches VictoriaMetrics shares between tenants.
func (r Route) Deletes() bool { return r.API == "delete_series" || r.API == "graphite_tags_del_series" }

// PathLabels is the number of labels the path adds to every series written: the Pushgateway form's pairs, job
// included. VictoriaMetrics stores those with a value; all are counted.
func (r Route) PathLabels() int {
	_, rest, ok := strings.Cut(r.Suffix, "api/v1/import/prometheus/metrics/")
	if !ok || r.API != "import_prometheus" {
		return 0
	}
	return (strings.Count(rest, "/") + 1) / 2
}

func isLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func graphiteRoute(x, full string) (Route, bool) {
	if r, ok := graphiteAPIs[x]; ok {
		return r, true
	}
	var r Route
	switch {
	case isNamed(x, "tags/"):
		r = Route{API: "graphite_tag_values", Kind: Read, Args: Unenforceable}
	case isNamed(x, "functions/"):
		r = graphiteAPIs["functions"]
	default:
		return Route{}, false
	}
	r.Suffix = join("graphite/", x, full)
	return r, true
}

// isNamed reports whether x is prefix followed by one non-empty segment (a tag or function name).
func isNamed(x, prefix string) bool {
	name, ok := strings.CutPrefix(x, prefix)
	return ok && name != "" && strings.IndexByte(name, '/') < 0
}

func ingestRoute(s string) (Route, bool) {
	if strings.HasPrefix(s, "datadog/") {
		// VictoriaMetrics drops a trailing slash on DataDog paths for older agents.
		s = strings.TrimSuffix(s, "/")
	}
	r, ok := ingestAPIs[s]
	return r, ok
}

// join returns prefix+x, reusing full when it already is that string.
func join(prefix, x, full string) string {
	if len(full) == len(prefix)+len(x) && strings.HasPrefix(full, prefix) && strings.HasSuffix(full, x) {
		return full
	}
	return prefix + x
}

// cutRoot splits a cluster-shaped path into its root (select, insert, delete) and what follows the root's slash.
func cutRoot(p string) (root, rest string, ok bool) {
	for _, root := range [...]string{"select", "insert", "delete"} {
		if len(p) > len(root)+1 && p[0] == '/' && p[1:len(root)+1] == root && p[len(root)+1] == '/' {
			return root, p[len(root)+2:], true
		}
	}
	return "", "", false
}

// splitTenant parses the tenant that follows a cluster root.
func splitTenant(root, rest, orig string) (tenant.ID, string, error) {
	s, suffix, _ := strings.Cut(rest, "/")
	if s == "" {
		return tenant.ID{}, "", errorf(http.StatusBadRequest, "path %s has no tenant after /%s/: want /%s/<accountID>[:<projectID>]/...",
			quote(orig), root, root)
	}
	id, err := tenant.Parse(s)
	if err == nil {
		return id, suffix, nil
	}
	if isFamily(s) {
		return tenant.ID{}, "", errorf(http.StatusBadRequest, "path %s has no tenant after /%s/: the tenant-less form that reads "+
			"the tenant from AccountID/ProjectID headers is not served, since vmgateway takes the tenant from the token; "+
			"use the single-node path (without /%s/) or /%s/<accountID>[:<projectID>]/%s", quote(orig), root, root, root, s)
	}
	return tenant.ID{}, "", errorf(http.StatusBadRequest, "path %s: %s; want /%s/<accountID>[:<projectID>]/... with numbers in [0..4294967295]",
		quote(orig), err, root)
}

// isFamily reports whether s starts a suffix, i.e. the path is the tenant-less header-based cluster shape.
func isFamily(s string) bool {
	switch s {
	case "prometheus", "graphite", "vmui", "influx", "datadog", "opentelemetry", "newrelic", "opentsdb":
		return true
	}
	return false
}

// hasMultitenant reports whether any segment of p is "multitenant", in any case. Besides the tenant position it
// could only be a label, tag or file name, and refusing those too keeps the rule simple to state and to test.
func hasMultitenant(p string) bool {
	const mt = "multitenant"
	for i := 0; i+len(mt) <= len(p); {
		j := strings.IndexByte(p[i:], '/')
		if j < 0 {
			j = len(p) - i
		}
		if j == len(mt) && strings.EqualFold(p[i:i+j], mt) {
			return true
		}
		i += j + 1
	}
	return false
}
