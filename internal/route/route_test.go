package route

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// shape is where a family of APIs lives: the single-node prefixes and the cluster prefixes (with %s for the tenant).
type shape struct{ single, cluster []string }

var shapes = map[string]shape{
	"promRead":   {[]string{"/", "/prometheus/"}, []string{"/select/%s/prometheus/"}},
	"promWrite":  {[]string{"/", "/prometheus/"}, []string{"/insert/%s/prometheus/"}},
	"promDelete": {[]string{"/", "/prometheus/"}, []string{"/delete/%s/prometheus/"}},
	"graphite":   {[]string{"/", "/graphite/"}, []string{"/select/%s/graphite/"}},
	"ingest":     {[]string{"/"}, []string{"/insert/%s/"}},
	"vmui":       {[]string{"/", "/prometheus/"}, []string{"/select/%s/", "/select/%s/prometheus/"}},
	// Shapes only one flavour of VictoriaMetrics serves.
	"insertRoot": {nil, []string{"/insert/%s/"}},
	"singleRoot": {[]string{"/"}, nil},
}

// want is the test's own statement of the table: each API, its family, the paths below the family root that
// must reach it (static paths, then examples of the dynamic ones), and the Route they give.
type want struct {
	family string
	paths  []string
	api    string
	kind   Kind
	args   Args
	suffix string
}

var wants = []want{
	{"promRead", []string{"api/v1/query"}, "query", Read, QueryArg, "prometheus/api/v1/query"},
	{"promRead", []string{"api/v1/query_range"}, "query_range", Read, QueryArg, "prometheus/api/v1/query_range"},
	{"promRead", []string{"api/v1/query_exemplars"}, "query_exemplars", Read, QueryArg, "prometheus/api/v1/query_exemplars"},
	{"promRead", []string{"api/v1/series"}, "series", Read, MatchArgs, "prometheus/api/v1/series"},
	{"promRead", []string{"api/v1/series/count"}, "series_count", Read, Unenforceable, "prometheus/api/v1/series/count"},
	{"promRead", []string{"api/v1/labels"}, "labels", Read, MatchArgs, "prometheus/api/v1/labels"},
	{"promRead", []string{"api/v1/label/job/values"}, "label_values", Read, MatchArgs, "prometheus/api/v1/label/job/values"},
	{"promRead", []string{"api/v1/label/__name__/values"}, "label_values", Read, MatchArgs, "prometheus/api/v1/label/__name__/values"},
	{"promRead", []string{"api/v1/metadata"}, "metadata", Read, Unenforceable, "prometheus/api/v1/metadata"},
	{"promRead", []string{"api/v1/export"}, "export", Read, MatchArgs, "prometheus/api/v1/export"},
	{"promRead", []string{"api/v1/export/csv"}, "export_csv", Read, MatchArgs, "prometheus/api/v1/export/csv"},
	{"promRead", []string{"api/v1/export/native"}, "export_native", Read, MatchArgs, "prometheus/api/v1/export/native"},
	{"promRead", []string{"federate"}, "federate", Read, MatchArgs, "prometheus/federate"},
	{"promRead", []string{"api/v1/status/tsdb"}, "status_tsdb", Read, MatchArgs, "prometheus/api/v1/status/tsdb"},
	{"promRead", []string{"api/v1/status/active_queries"}, "status_active_queries", Read, Unenforceable, "prometheus/api/v1/status/active_queries"},
	{"promRead", []string{"api/v1/status/top_queries"}, "status_top_queries", Read, Unenforceable, "prometheus/api/v1/status/top_queries"},
	{"promRead", []string{"api/v1/status/buildinfo"}, "status_buildinfo", Read, NoSelectors, "prometheus/api/v1/status/buildinfo"},
	{"promRead", []string{"metric-relabel-debug"}, "metric_relabel_debug", Read, Unenforceable, "prometheus/metric-relabel-debug"},
	{"promRead", []string{"expand-with-exprs"}, "expand_with_exprs", Read, QueryText, "prometheus/expand-with-exprs"},
	{"promRead", []string{"prettify-query"}, "prettify_query", Read, QueryText, "prometheus/prettify-query"},
	{"promRead", []string{"api/v1/rules"}, "rules", Read, Unenforceable, "prometheus/api/v1/rules"},
	{"promRead", []string{"api/v1/alerts"}, "alerts", Read, Unenforceable, "prometheus/api/v1/alerts"},

	{"vmui", []string{"vmui"}, "vmui", Read, NoSelectors, "vmui"},
	{"vmui", []string{"vmui/"}, "vmui", Read, NoSelectors, "vmui/"},
	{"vmui", []string{"vmui/index.html"}, "vmui", Read, NoSelectors, "vmui/index.html"},
	{"vmui", []string{"vmui/static/js/main.4a1b2c.js"}, "vmui", Read, NoSelectors, "vmui/static/js/main.4a1b2c.js"},
	{"vmui", []string{"vmui/custom-dashboards"}, "vmui", Read, NoSelectors, "vmui/custom-dashboards"},

	{"promDelete", []string{"api/v1/admin/tsdb/delete_series"}, "delete_series", Admin, MatchArgs, "prometheus/api/v1/admin/tsdb/delete_series"},

	{"graphite", []string{"render"}, "graphite_render", Read, Unenforceable, "graphite/render"},
	{"graphite", []string{"metrics/find", "metrics/find/"}, "graphite_metrics_find", Read, Unenforceable, "graphite/metrics/find"},
	{"graphite", []string{"metrics/expand", "metrics/expand/"}, "graphite_metrics_expand", Read, Unenforceable, "graphite/metrics/expand"},
	{"graphite", []string{"metrics/index.json", "metrics/index.json/"}, "graphite_metrics_index", Read, Unenforceable, "graphite/metrics/index.json"},
	{"graphite", []string{"tags"}, "graphite_tags", Read, Unenforceable, "graphite/tags"},
	{"graphite", []string{"tags/env"}, "graphite_tag_values", Read, Unenforceable, "graphite/tags/env"},
	{"graphite", []string{"tags/findSeries"}, "graphite_tags_find_series", Read, Unenforceable, "graphite/tags/findSeries"},
	{"graphite", []string{"tags/autoComplete/tags"}, "graphite_tags_autocomplete_tags", Read, Unenforceable, "graphite/tags/autoComplete/tags"},
	{"graphite", []string{"tags/autoComplete/values"}, "graphite_tags_autocomplete_values", Read, Unenforceable, "graphite/tags/autoComplete/values"},
	{"graphite", []string{"tags/tagSeries"}, "graphite_tags_tag_series", Write, Unenforceable, "graphite/tags/tagSeries"},
	{"graphite", []string{"tags/tagMultiSeries"}, "graphite_tags_tag_multi_series", Write, Unenforceable, "graphite/tags/tagMultiSeries"},
	{"graphite", []string{"tags/delSeries"}, "graphite_tags_del_series", Admin, Unenforceable, "graphite/tags/delSeries"},
	{"graphite", []string{"functions"}, "graphite_functions", Read, NoSelectors, "graphite/functions"},
	{"graphite", []string{"functions/sumSeries"}, "graphite_functions", Read, NoSelectors, "graphite/functions/sumSeries"},

	{"promWrite", []string{"api/v1/write", "api/v1/push"}, "remote_write", Write, WriteArgs, "prometheus/api/v1/write"},
	{"insertRoot", []string{"prometheus", "prometheus/"}, "remote_write", Write, WriteArgs, "prometheus/api/v1/write"},
	{"promWrite", []string{"api/v1/import"}, "import", Write, WriteArgs, "prometheus/api/v1/import"},
	{"promWrite", []string{"api/v1/import/csv"}, "import_csv", Write, WriteArgs, "prometheus/api/v1/import/csv"},
	{"promWrite", []string{"api/v1/import/native"}, "import_native", Write, WriteArgs, "prometheus/api/v1/import/native"},
	{"promWrite", []string{"api/v1/import/prometheus"}, "import_prometheus", Write, WriteArgs, "prometheus/api/v1/import/prometheus"},
	{"promWrite", []string{"api/v1/import/prometheus/metrics/job/backup"}, "import_prometheus", Write, WriteArgs,
		"prometheus/api/v1/import/prometheus/metrics/job/backup"},
	{"promWrite", []string{"api/v1/import/prometheus/metrics/job/backup/instance/db1"}, "import_prometheus", Write, WriteArgs,
		"prometheus/api/v1/import/prometheus/metrics/job/backup/instance/db1"},
	{"promWrite", []string{"api/v1/import/prometheus/metrics/job@base64/YmFja3Vw/path@base64/L3Zhcg"}, "import_prometheus", Write, WriteArgs,
		"prometheus/api/v1/import/prometheus/metrics/job@base64/YmFja3Vw/path@base64/L3Zhcg"},

	{"ingest", []string{"influx/write"}, "influx_write", Write, WriteArgs, "influx/write"},
	{"singleRoot", []string{"write"}, "influx_write", Write, WriteArgs, "influx/write"},
	{"ingest", []string{"influx/api/v2/write"}, "influx_v2_write", Write, WriteArgs, "influx/api/v2/write"},
	{"singleRoot", []string{"api/v2/write"}, "influx_v2_write", Write, WriteArgs, "influx/api/v2/write"},
	{"ingest", []string{"influx/query"}, "influx_query", Write, NoSelectors, "influx/query"},
	{"singleRoot", []string{"query"}, "influx_query", Write, NoSelectors, "influx/query"},
	{"ingest", []string{"influx/health"}, "influx_health", Write, NoSelectors, "influx/health"},
	{"ingest", []string{"opentelemetry/v1/metrics", "opentelemetry/api/v1/push"}, "opentelemetry", Write, WriteArgs, "opentelemetry/v1/metrics"},
	{"ingest", []string{"datadog/api/v1/series", "datadog/api/v1/series/"}, "datadog_series", Write, WriteArgs, "datadog/api/v1/series"},
	{"ingest", []string{"datadog/api/v2/series", "datadog/api/v2/series/"}, "datadog_series_v2", Write, WriteArgs, "datadog/api/v2/series"},
	{"ingest", []string{"datadog/api/beta/sketches", "datadog/api/beta/sketches/"}, "datadog_sketches", Write, WriteArgs, "datadog/api/beta/sketches"},
	{"ingest", []string{"datadog/api/v1/validate", "datadog/api/v1/validate/"}, "datadog_validate", Write, NoSelectors, "datadog/api/v1/validate"},
	{"ingest", []string{"datadog/api/v1/check_run"}, "datadog_check_run", Write, NoSelectors, "datadog/api/v1/check_run"},
	{"ingest", []string{"datadog/intake", "datadog/intake/"}, "datadog_intake", Write, NoSelectors, "datadog/intake"},
	{"ingest", []string{"datadog/api/v1/metadata"}, "datadog_metadata", Write, NoSelectors, "datadog/api/v1/metadata"},
	{"ingest", []string{"newrelic"}, "newrelic_check", Write, NoSelectors, "newrelic"},
	{"ingest", []string{"newrelic/inventory/deltas"}, "newrelic_inventory", Write, NoSelectors, "newrelic/inventory/deltas"},
	{"ingest", []string{"newrelic/infra/v2/metrics/events/bulk"}, "newrelic_write", Write, WriteArgs, "newrelic/infra/v2/metrics/events/bulk"},
	{"ingest", []string{"opentsdb/api/put"}, "opentsdb_put", Write, WriteArgs, "opentsdb/api/put"},
	{"singleRoot", []string{"api/put"}, "opentsdb_put", Write, WriteArgs, "opentsdb/api/put"},

	{"singleRoot", []string{"admin/tenants"}, "admin_tenants", Admin, Unenforceable, "admin/tenants"},
}

// clusterTenants are the tenants every cluster shape is tried with: as written in the path, and as parsed.
var clusterTenants = []struct {
	s  string
	id tenant.ID
}{
	{"0", tenant.ID{}},
	{"0:0", tenant.ID{}},
	{"15", tenant.ID{AccountID: 15}},
	{"15:0", tenant.ID{AccountID: 15}},
	{"4294967295:4294967295", tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}},
}

// TestLookupTable tries every path of the table in every shape and every tenant.
func TestLookupTable(t *testing.T) {
	shapesSeen := 0
	apis := map[string]bool{}
	for _, w := range wants {
		sh, ok := shapes[w.family]
		if !ok {
			t.Fatalf("test table: unknown family %q", w.family)
		}
		apis[w.api] = true
		base := Route{API: w.api, Kind: w.kind, Args: w.args, Suffix: w.suffix}
		for _, p := range w.paths {
			for _, prefix := range sh.single {
				shapesSeen++
				check(t, prefix+p, base)
			}
			for _, prefix := range sh.cluster {
				shapesSeen++
				for _, ct := range clusterTenants {
					r := base
					r.PathTenant, r.HasPathTenant = ct.id, true
					check(t, fmt.Sprintf(prefix, ct.s)+p, r)
				}
			}
		}
	}
	t.Logf("%d APIs, %d path shapes (each cluster shape tried with %d tenants)", len(apis), shapesSeen, len(clusterTenants))
}

func check(t *testing.T, path string, want Route) {
	t.Helper()
	got, err := Lookup(path)
	if err != nil {
		t.Errorf("Lookup(%q): unexpected error %v", path, err)
		return
	}
	if got != want {
		t.Errorf("Lookup(%q)\n got %+v\nwant %+v", path, got, want)
	}
}

// TestTableIsCovered makes a route added to the table without a test fail: every static path of the
// implementation must be in wants, under the same API.
func TestTableIsCovered(t *testing.T) {
	tested := map[string]string{}
	for _, w := range wants {
		for _, p := range w.paths {
			tested[w.family+" "+p] = w.api
		}
	}
	for family, m := range map[string]map[string]Route{
		"promRead": promReads, "promWrite": promWrites, "promDelete": promDeletes,
		"graphite": graphiteAPIs, "ingest": ingestAPIs, "singleRoot": singleAliases,
	} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if api, ok := tested[family+" "+k]; !ok || api != m[k].API {
				t.Errorf("%s path %q (API %q) is not in the test table wants", family, k, m[k].API)
			}
		}
	}
}

// TestUpstream states the upstream path of every API for single-node and cluster, written out in full.
func TestUpstream(t *testing.T) {
	for _, tc := range []struct{ path, single, cluster string }{
		{"/api/v1/query", "/prometheus/api/v1/query", "/select/15:0/prometheus/api/v1/query"},
		{"/prometheus/api/v1/query_range", "/prometheus/api/v1/query_range", "/select/15:0/prometheus/api/v1/query_range"},
		{"/api/v1/query_exemplars", "/prometheus/api/v1/query_exemplars", "/select/15:0/prometheus/api/v1/query_exemplars"},
		{"/api/v1/series", "/prometheus/api/v1/series", "/select/15:0/prometheus/api/v1/series"},
		{"/api/v1/series/count", "/prometheus/api/v1/series/count", "/select/15:0/prometheus/api/v1/series/count"},
		{"/api/v1/labels", "/prometheus/api/v1/labels", "/select/15:0/prometheus/api/v1/labels"},
		{"/api/v1/label/job/values", "/prometheus/api/v1/label/job/values", "/select/15:0/prometheus/api/v1/label/job/values"},
		{"/api/v1/metadata", "/prometheus/api/v1/metadata", "/select/15:0/prometheus/api/v1/metadata"},
		{"/api/v1/export", "/prometheus/api/v1/export", "/select/15:0/prometheus/api/v1/export"},
		{"/api/v1/export/csv", "/prometheus/api/v1/export/csv", "/select/15:0/prometheus/api/v1/export/csv"},
		{"/api/v1/export/native", "/prometheus/api/v1/export/native", "/select/15:0/prometheus/api/v1/export/native"},
		{"/federate", "/prometheus/federate", "/select/15:0/prometheus/federate"},
		{"/api/v1/status/tsdb", "/prometheus/api/v1/status/tsdb", "/select/15:0/prometheus/api/v1/status/tsdb"},
		{"/api/v1/status/active_queries", "/prometheus/api/v1/status/active_queries", "/select/15:0/prometheus/api/v1/status/active_queries"},
		{"/api/v1/status/top_queries", "/prometheus/api/v1/status/top_queries", "/select/15:0/prometheus/api/v1/status/top_queries"},
		{"/api/v1/status/buildinfo", "/prometheus/api/v1/status/buildinfo", "/select/15:0/prometheus/api/v1/status/buildinfo"},
		{"/metric-relabel-debug", "/prometheus/metric-relabel-debug", "/select/15:0/prometheus/metric-relabel-debug"},
		{"/expand-with-exprs", "/prometheus/expand-with-exprs", "/select/15:0/prometheus/expand-with-exprs"},
		{"/prettify-query", "/prometheus/prettify-query", "/select/15:0/prometheus/prettify-query"},
		{"/api/v1/rules", "/prometheus/api/v1/rules", "/select/15:0/prometheus/api/v1/rules"},
		{"/api/v1/alerts", "/prometheus/api/v1/alerts", "/select/15:0/prometheus/api/v1/alerts"},
		{"/vmui", "/vmui", "/select/15:0/vmui"},
		{"/prometheus/vmui/", "/vmui/", "/select/15:0/vmui/"},
		{"/select/0/prometheus/vmui/static/css/main.css", "/vmui/static/css/main.css", "/select/15:0/vmui/static/css/main.css"},
		{"/api/v1/admin/tsdb/delete_series", "/prometheus/api/v1/admin/tsdb/delete_series", "/delete/15:0/prometheus/api/v1/admin/tsdb/delete_series"},
		{"/render", "/graphite/render", "/select/15:0/graphite/render"},
		{"/graphite/metrics/find/", "/graphite/metrics/find", "/select/15:0/graphite/metrics/find"},
		{"/metrics/expand", "/graphite/metrics/expand", "/select/15:0/graphite/metrics/expand"},
		{"/metrics/index.json", "/graphite/metrics/index.json", "/select/15:0/graphite/metrics/index.json"},
		{"/tags", "/graphite/tags", "/select/15:0/graphite/tags"},
		{"/tags/env", "/graphite/tags/env", "/select/15:0/graphite/tags/env"},
		{"/tags/findSeries", "/graphite/tags/findSeries", "/select/15:0/graphite/tags/findSeries"},
		{"/tags/autoComplete/tags", "/graphite/tags/autoComplete/tags", "/select/15:0/graphite/tags/autoComplete/tags"},
		{"/tags/autoComplete/values", "/graphite/tags/autoComplete/values", "/select/15:0/graphite/tags/autoComplete/values"},
		{"/tags/tagSeries", "/graphite/tags/tagSeries", "/select/15:0/graphite/tags/tagSeries"},
		{"/tags/tagMultiSeries", "/graphite/tags/tagMultiSeries", "/select/15:0/graphite/tags/tagMultiSeries"},
		{"/tags/delSeries", "/graphite/tags/delSeries", "/select/15:0/graphite/tags/delSeries"},
		{"/functions", "/graphite/functions", "/select/15:0/graphite/functions"},
		{"/api/v1/write", "/prometheus/api/v1/write", "/insert/15:0/prometheus/api/v1/write"},
		{"/insert/0/prometheus", "/prometheus/api/v1/write", "/insert/15:0/prometheus/api/v1/write"},
		{"/api/v1/push", "/prometheus/api/v1/write", "/insert/15:0/prometheus/api/v1/write"},
		{"/api/v1/import", "/prometheus/api/v1/import", "/insert/15:0/prometheus/api/v1/import"},
		{"/api/v1/import/csv", "/prometheus/api/v1/import/csv", "/insert/15:0/prometheus/api/v1/import/csv"},
		{"/api/v1/import/native", "/prometheus/api/v1/import/native", "/insert/15:0/prometheus/api/v1/import/native"},
		{"/api/v1/import/prometheus", "/prometheus/api/v1/import/prometheus", "/insert/15:0/prometheus/api/v1/import/prometheus"},
		{"/api/v1/import/prometheus/metrics/job/j/instance/i", "/prometheus/api/v1/import/prometheus/metrics/job/j/instance/i",
			"/insert/15:0/prometheus/api/v1/import/prometheus/metrics/job/j/instance/i"},
		{"/write", "/influx/write", "/insert/15:0/influx/write"},
		{"/influx/api/v2/write", "/influx/api/v2/write", "/insert/15:0/influx/api/v2/write"},
		{"/query", "/influx/query", "/insert/15:0/influx/query"},
		{"/influx/health", "/influx/health", "/insert/15:0/influx/health"},
		{"/opentelemetry/api/v1/push", "/opentelemetry/v1/metrics", "/insert/15:0/opentelemetry/v1/metrics"},
		{"/datadog/api/v1/series/", "/datadog/api/v1/series", "/insert/15:0/datadog/api/v1/series"},
		{"/datadog/api/v2/series", "/datadog/api/v2/series", "/insert/15:0/datadog/api/v2/series"},
		{"/datadog/api/beta/sketches", "/datadog/api/beta/sketches", "/insert/15:0/datadog/api/beta/sketches"},
		{"/datadog/api/v1/validate", "/datadog/api/v1/validate", "/insert/15:0/datadog/api/v1/validate"},
		{"/datadog/api/v1/check_run", "/datadog/api/v1/check_run", "/insert/15:0/datadog/api/v1/check_run"},
		{"/datadog/intake", "/datadog/intake", "/insert/15:0/datadog/intake"},
		{"/datadog/api/v1/metadata", "/datadog/api/v1/metadata", "/insert/15:0/datadog/api/v1/metadata"},
		{"/newrelic", "/newrelic", "/insert/15:0/newrelic"},
		{"/newrelic/inventory/deltas", "/newrelic/inventory/deltas", "/insert/15:0/newrelic/inventory/deltas"},
		{"/newrelic/infra/v2/metrics/events/bulk", "/newrelic/infra/v2/metrics/events/bulk", "/insert/15:0/newrelic/infra/v2/metrics/events/bulk"},
		{"/opentsdb/api/put", "/api/put", "/insert/15:0/opentsdb/api/put"},
		{"/api/put", "/api/put", "/insert/15:0/opentsdb/api/put"},
		{"/admin/tenants", "/admin/tenants", "/admin/tenants"},
		// The path tenant never reaches the upstream: only the tenant the caller passes does.
		{"/select/7:7/prometheus/api/v1/query", "/prometheus/api/v1/query", "/select/15:0/prometheus/api/v1/query"},
		{"/insert/7/influx/write", "/influx/write", "/insert/15:0/influx/write"},
		{"/delete/7/prometheus/api/v1/admin/tsdb/delete_series", "/prometheus/api/v1/admin/tsdb/delete_series",
			"/delete/15:0/prometheus/api/v1/admin/tsdb/delete_series"},
	} {
		r, err := Lookup(tc.path)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tc.path, err)
			continue
		}
		if got := r.Upstream(false, tenant.ID{AccountID: 99}); got != tc.single {
			t.Errorf("%q single-node upstream: got %q, want %q", tc.path, got, tc.single)
		}
		if got := r.Upstream(true, tenant.ID{AccountID: 15}); got != tc.cluster {
			t.Errorf("%q cluster upstream: got %q, want %q", tc.path, got, tc.cluster)
		}
	}
}

// TestInsert checks that every API goes to the upstream whose path it is given: the ingestion side (-write.url)
// exactly for /insert/ paths. Graphite tag registration is a write that the query side serves.
func TestInsert(t *testing.T) {
	for _, w := range wants {
		for _, p := range w.paths {
			path := "/" + p
			if sh := shapes[w.family]; len(sh.single) == 0 {
				path = fmt.Sprintf(sh.cluster[0], "1") + p
			} else if w.family == "graphite" {
				path = "/graphite/" + p
			}
			r, err := Lookup(path)
			if err != nil {
				t.Fatalf("Lookup(%q): %v", path, err)
			}
			up := r.Upstream(true, tenant.ID{AccountID: 1})
			if r.Insert() != strings.HasPrefix(up, "/insert/") {
				t.Errorf("%s (API %s, kind %s): Insert() = %v, but the cluster upstream path is %s", path, r.API, r.Kind, r.Insert(), up)
			}
			if r.Insert() && r.Kind != Write {
				t.Errorf("%s (API %s): sent to the ingestion side, but its kind is %s", path, r.API, r.Kind)
			}
		}
	}
	for _, path := range []string{"/tags/tagSeries", "/graphite/tags/tagMultiSeries", "/select/3/graphite/tags/tagSeries"} {
		r, err := Lookup(path)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", path, err)
		}
		if r.Kind != Write || r.Insert() || r.Args != Unenforceable {
			t.Errorf("%s: kind %s, Insert %v, args %d; want a write served by the query side, refused to restricted tokens",
				path, r.Kind, r.Insert(), r.Args)
		}
	}
}

func TestUpstreamTenants(t *testing.T) {
	r, err := Lookup("/api/v1/write")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   tenant.ID
		want string
	}{
		{tenant.ID{}, "/insert/0:0/prometheus/api/v1/write"},
		{tenant.ID{AccountID: 15}, "/insert/15:0/prometheus/api/v1/write"},
		{tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}, "/insert/4294967295:4294967295/prometheus/api/v1/write"},
	} {
		if got := r.Upstream(true, tc.id); got != tc.want {
			t.Errorf("tenant %s: got %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestUpstreamEscaping checks that a label, tag or file name is re-escaped so it cannot split the upstream path
// or start a query, and that Path and RawPath agree the way net/url needs.
func TestUpstreamEscaping(t *testing.T) {
	for _, tc := range []struct{ path, name, rawPath string }{
		{"/api/v1/label/job/values", "job", ""},
		{"/api/v1/label/a%20b/values", "a b", "/select/1:2/prometheus/api/v1/label/a%20b/values"},
		{"/api/v1/label/a%3Fb/values", "a?b", "/select/1:2/prometheus/api/v1/label/a%3Fb/values"},
		{"/api/v1/label/a%23b/values", "a#b", "/select/1:2/prometheus/api/v1/label/a%23b/values"},
		{"/api/v1/label/a%25b/values", "a%b", "/select/1:2/prometheus/api/v1/label/a%25b/values"},
		{"/api/v1/label/a%252Fb/values", "a%2Fb", "/select/1:2/prometheus/api/v1/label/a%252Fb/values"},
		{"/api/v1/label/a;b/values", "a;b", "/select/1:2/prometheus/api/v1/label/a%3Bb/values"},
		{"/api/v1/label/%C3%BC/values", "ü", "/select/1:2/prometheus/api/v1/label/%C3%BC/values"},
		{"/api/v1/label/U__a_2e_b/values", "U__a_2e_b", ""},
		{"/api/v1/label/a:b/values", "a:b", ""},
	} {
		r, err := Lookup(tc.path)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tc.path, err)
			continue
		}
		wantPath := "/select/1:2/prometheus/api/v1/label/" + tc.name + "/values"
		path, rawPath := r.UpstreamPath(true, tenant.ID{AccountID: 1, ProjectID: 2})
		if path != wantPath || rawPath != tc.rawPath {
			t.Errorf("%q: got (%q, %q), want (%q, %q)", tc.path, path, rawPath, wantPath, tc.rawPath)
			continue
		}
		// The escaped form is what goes on the wire; it must decode to exactly the path the gateway chose.
		u, err := http.NewRequest("GET", "http://vmselect"+r.Upstream(true, tenant.ID{AccountID: 1, ProjectID: 2})+"?x=1", nil)
		if err != nil {
			t.Errorf("%q: upstream URL does not parse: %v", tc.path, err)
			continue
		}
		if u.URL.Path != wantPath || u.URL.RawQuery != "x=1" || u.URL.Fragment != "" {
			t.Errorf("%q: upstream URL reads back as path %q query %q fragment %q", tc.path, u.URL.Path, u.URL.RawQuery, u.URL.Fragment)
		}
	}
}

// TestLookupTricks feeds paths meant to fool the router, and plain mistakes.
func TestLookupTricks(t *testing.T) {
	for _, tc := range []struct {
		path   string
		status int    // 0: accepted
		api    string // when accepted
		suffix string // when accepted and not the API's static suffix
		tenant string // when accepted in cluster shape
	}{
		// Dot segments and empty segments are resolved before classification.
		{path: "/api/v1/../v1/query", api: "query"},
		{path: "//api//v1/query", api: "query"},
		{path: "/api/v1/./query", api: "query"},
		{path: "/api/v1/%2e%2e/v1/query", api: "query"},
		{path: "/api/v1/%2E%2E/v1/query", api: "query"},
		{path: "/api/v1/.%2e/v1/query", api: "query"},
		{path: "/vmui/../api/v1/query", api: "query"},
		{path: "/api/v1/status/top_queries/../../admin/tsdb/delete_series", api: "delete_series"},
		{path: "/%61pi/v1/query", api: "query"},
		{path: "/..", status: 400},
		{path: "/../api/v1/query", status: 400},
		{path: "/%2e%2e/api/v1/query", status: 400},
		{path: "/api/../../api/v1/query", status: 400},
		{path: "/api/v1/label/%2e%2e/values", status: 404},
		{path: "/api/v1/query/.", status: 404},
		{path: "/api/v1/query/x/..", status: 404},
		// The tenant is read after resolution, from the canonical path.
		{path: "/select/1/../2/prometheus/api/v1/query", api: "query", tenant: "2:0"},
		{path: "/select/0/vmui/../../1/prometheus/api/v1/query", api: "query", tenant: "1:0"},
		{path: "/select/%31:%32/prometheus/api/v1/query", api: "query", tenant: "1:2"},
		{path: "/select/007/prometheus/api/v1/query", api: "query", tenant: "7:0"},
		// multitenant is refused wherever it appears, in any case or encoding.
		{path: "/select/multitenant/prometheus/api/v1/query", status: 403},
		{path: "/insert/multitenant/prometheus/api/v1/write", status: 403},
		{path: "/delete/multitenant/prometheus/api/v1/admin/tsdb/delete_series", status: 403},
		{path: "/insert/1/../multitenant/prometheus/api/v1/write", status: 403},
		{path: "/select/MultiTenant/prometheus/api/v1/query", status: 403},
		{path: "/select/%6dultitenant/prometheus/api/v1/query", status: 403},
		{path: "/select/multitenant/vmui/", status: 403},
		{path: "/api/v1/label/multitenant/values", status: 403},
		{path: "/select/0/multitenant", status: 403},
		// Tenants that do not parse, and the header-based tenant-less shape.
		{path: "/select/prometheus/api/v1/query", status: 400},
		{path: "/insert/prometheus/api/v1/write", status: 400},
		{path: "/insert/influx/write", status: 400},
		{path: "/select/vmui/", status: 400},
		{path: "/select/graphite/render", status: 400},
		{path: "/select//prometheus/api/v1/query", status: 400},
		{path: "/select/", status: 400},
		{path: "/select/abc/prometheus/api/v1/query", status: 400},
		{path: "/select/4294967296/prometheus/api/v1/query", status: 400},
		{path: "/select/1:4294967296/prometheus/api/v1/query", status: 400},
		{path: "/insert/4294967296:0/prometheus/api/v1/write", status: 400},
		{path: "/select/-1/prometheus/api/v1/query", status: 400},
		{path: "/select/+1/prometheus/api/v1/query", status: 400},
		{path: "/select/1:/prometheus/api/v1/query", status: 400},
		{path: "/select/1:2:3/prometheus/api/v1/query", status: 400},
		// An API under the wrong root, or no API at all.
		{path: "/select/0", status: 404},
		{path: "/select/0/", status: 404},
		{path: "/select/0/prometheus", status: 404},
		{path: "/select/0/prometheus/api/v1/write", status: 404},
		{path: "/select/0/prometheus/api/v1/admin/tsdb/delete_series", status: 404},
		{path: "/select/0/influx/write", status: 404},
		{path: "/insert/0/prometheus/api/v1/query", status: 404},
		{path: "/insert/0/graphite/render", status: 404},
		{path: "/insert/0/vmui/", status: 404},
		{path: "/insert/0/write", status: 404},
		{path: "/delete/0/prometheus/api/v1/query", status: 404},
		{path: "/delete/0/api/v1/admin/tsdb/delete_series", status: 404},
		{path: "/select/0/admin/tenants", status: 404},
		{path: "/select", status: 404},
		// Paths are case-sensitive, as in VictoriaMetrics.
		{path: "/API/v1/query", status: 404},
		{path: "/Api/V1/Query", status: 404},
		{path: "/PROMETHEUS/api/v1/query", status: 404},
		{path: "/Select/0/prometheus/api/v1/query", status: 404},
		{path: "/VMUI/", status: 404},
		{path: "/insert/0/Prometheus", status: 404},
		{path: "/Graphite/render", status: 404},
		// Trailing slashes count only where VictoriaMetrics uses them.
		{path: "/api/v1/query/", status: 404},
		{path: "/federate/", status: 404},
		{path: "/api/v1/label/job/values/", status: 404},
		{path: "/influx/write/", status: 404},
		{path: "/admin/tenants/", status: 404},
		{path: "/vmui", api: "vmui", suffix: "vmui"},
		{path: "/vmui/", api: "vmui", suffix: "vmui/"},
		{path: "/vmui//", api: "vmui", suffix: "vmui/"},
		{path: "/vmui/.", api: "vmui", suffix: "vmui/"},
		{path: "/prometheus/vmui", api: "vmui", suffix: "vmui"},
		{path: "/select/0/prometheus/vmui/", api: "vmui", suffix: "vmui/", tenant: "0:0"},
		{path: "/insert/0/prometheus/", api: "remote_write", tenant: "0:0"},
		{path: "/datadog/api/v1/series/", api: "datadog_series"},
		{path: "/graphite/metrics/find/", api: "graphite_metrics_find"},
		// Bare roots and the gateway's own endpoints are not APIs.
		{path: "/", status: 404},
		{path: "/prometheus", status: 404},
		{path: "/prometheus/", status: 404},
		{path: "/graphite", status: 404},
		{path: "/graphite/", status: 404},
		{path: "/health", status: 404},
		{path: "/metrics", status: 404},
		{path: "/debug/pprof/", status: 404},
		// Operator endpoints of VictoriaMetrics are not in the table.
		{path: "/api/v1/status/config", status: 404},
		{path: "/api/v1/targets", status: 404},
		{path: "/-/reload", status: 404},
		{path: "/internal/force_flush", status: 404},
		{path: "/internal/force_merge", status: 404},
		{path: "/internal/resetRollupResultCache", status: 404},
		{path: "/snapshot/create", status: 404},
		{path: "/flags", status: 404},
		{path: "/vmalert/", status: 404},
		{path: "/graph", status: 404},
		{path: "/newrelic/api/v1", status: 404},
		{path: "/api/v1/labels/count", status: 404},
		// Dynamic paths: names are single segments, pushgateway labels come in name/value pairs.
		{path: "/api/v1/label//values", status: 404},
		{path: "/api/v1/label/values", status: 404},
		{path: "/api/v1/label/a/b/values", status: 404},
		{path: "/api/v1/label/x", status: 404},
		{path: "/graphite/tags/a/b", status: 404},
		{path: "/tags/autoComplete", api: "graphite_tag_values", suffix: "graphite/tags/autoComplete"},
		{path: "/graphite/functions/a/b", status: 404},
		{path: "/api/v1/import/prometheus/metrics/job", status: 404},
		{path: "/api/v1/import/prometheus/metrics/job/", status: 404},
		{path: "/api/v1/import/prometheus/metrics/job/j/", status: 404},
		{path: "/api/v1/import/prometheus/metrics/job/j/instance", status: 404},
		{path: "/api/v1/import/prometheus/metrics/instance/i", status: 404},
		{path: "/api/v1/import/prometheus/metrics/job/j/bad-name/v", status: 404},
		{path: "/api/v1/import/prometheus/metrics/job/j/1abc/v", status: 404},
		{path: "/api/v1/import/prometheus/extra", status: 404},
		{path: "/insert/0/prometheus/api/v1/import/prometheus/metrics/job/j/instance/i", api: "import_prometheus",
			suffix: "prometheus/api/v1/import/prometheus/metrics/job/j/instance/i", tenant: "0:0"},
		// Bad bytes and bad escapes.
		{path: "", status: 400},
		{path: "api/v1/query", status: 400},
		{path: "%2Fapi/v1/query", status: 400},
		{path: "/api%2Fv1/query", status: 400},
		{path: "/api%2fv1/query", status: 400},
		{path: "/api/v1/label/a%2Fb/values", status: 400},
		{path: "/api/v1/query%00", status: 400},
		{path: "/api/v1/query\x00", status: 400},
		{path: "/api/v1/query%0a", status: 400},
		{path: "/api/v1/query\n", status: 400},
		{path: "/api/v1/query%0D", status: 400},
		{path: "/api/v1/query%7f", status: 400},
		{path: "/api/v1/query\x7f", status: 400},
		{path: "/api%5cv1/query", status: 400},
		{path: "/api\\v1\\query", status: 400},
		{path: "/api/v1/query%", status: 400},
		{path: "/api/v1/query%4", status: 400},
		{path: "/api/v1/query%zz", status: 400},
		{path: "/api/v1/query%%30", status: 400},
		{path: "/api/v1/label/%ff/values", status: 400},
		{path: "/api/v1/label/\xc3/values", status: 400},
		{path: "/api/v1/label/%C3%BC/values", api: "label_values", suffix: "prometheus/api/v1/label/ü/values"},
		{path: "/api/v1/label/ü/values", api: "label_values", suffix: "prometheus/api/v1/label/ü/values"},
		// Length: long but valid passes, over the limit is refused before any other work.
		{path: "/api/v1/label/" + strings.Repeat("x", 8000) + "/values", api: "label_values",
			suffix: "prometheus/api/v1/label/" + strings.Repeat("x", 8000) + "/values"},
		{path: "/api/v1/label/" + strings.Repeat("x", 9000) + "/values", status: 414},
		{path: strings.Repeat("/a", 5000), status: 414},
		{path: strings.Repeat("/..", 3000), status: 414},
		{path: strings.Repeat("/a", 1000) + strings.Repeat("/..", 1000) + "/api/v1/query", api: "query"},
		{path: strings.Repeat("//", 4000) + "api/v1/query", api: "query"},
		{path: strings.Repeat("/a", 1000) + strings.Repeat("/..", 1001) + "/api/v1/query", status: 400},
	} {
		r, err := Lookup(tc.path)
		name := tc.path
		if len(name) > 80 {
			name = name[:80] + "..."
		}
		if tc.status != 0 {
			if err == nil {
				t.Errorf("Lookup(%q): want status %d, got route %+v", name, tc.status, r)
				continue
			}
			var se interface{ HTTPStatus() int }
			if !errors.As(err, &se) || se.HTTPStatus() != tc.status {
				t.Errorf("Lookup(%q): want status %d, got %v", name, tc.status, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Lookup(%q): unexpected error %v", name, err)
			continue
		}
		if r.API != tc.api {
			t.Errorf("Lookup(%q): API %q, want %q", name, r.API, tc.api)
		}
		if tc.suffix != "" && r.Suffix != tc.suffix {
			t.Errorf("Lookup(%q): Suffix %q, want %q", name, r.Suffix, tc.suffix)
		}
		gotTenant := ""
		if r.HasPathTenant {
			gotTenant = r.PathTenant.String()
		}
		if gotTenant != tc.tenant {
			t.Errorf("Lookup(%q): path tenant %q, want %q", name, gotTenant, tc.tenant)
		}
	}
}

// TestErrorMessages checks that every refusal names the path and says what to do.
func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/nope", `unsupported path "/nope"`},
		{"/select/multitenant/prometheus/api/v1/query", "multitenant endpoints are never reachable through vmgateway"},
		{"/select/prometheus/api/v1/query", "tenant-less form"},
		{"/select/4294967296/prometheus/api/v1/query", `"/select/4294967296/prometheus/api/v1/query"`},
		{"/select/4294967296/prometheus/api/v1/query", "[0..4294967295]"},
		{"/api%2Fv1/query", "encoded '/'"},
		{"/api/v1/query%00", "control character"},
		{"/api/v1/query%zz", `invalid percent-escape "%zz"`},
		{"/../x", "climbs above the root"},
		{"/" + strings.Repeat("a", 9000), "longer than the 8192 bytes"},
		{"/vmui/" + strings.Repeat(">", 3000), "once re-escaped for the upstream"},
	} {
		_, err := Lookup(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Lookup(%.60q): error %v, want it to contain %q", tc.path, err, tc.want)
		}
		if err != nil && len(err.Error()) > 700 {
			t.Errorf("Lookup(%.60q): error message of %d bytes is not cut short", tc.path, len(err.Error()))
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/", "/"},
		{"//", "/"},
		{"/a/b", "/a/b"},
		{"/a/b/", "/a/b/"},
		{"/a//b//", "/a/b/"},
		{"/a/./b", "/a/b"},
		{"/a/b/.", "/a/b/"},
		{"/a/b/..", "/a/"},
		{"/a/b/../c", "/a/c"},
		{"/a/..", "/"},
		{"/a/%2e", "/a/"},
		{"/a/%20b", "/a/ b"},
		{"/a/.../b", "/a/.../b"},
		{"/a/..b/c", "/a/..b/c"},
		{"/a/%252e%252e/b", "/a/%2e%2e/b"},
	} {
		got, err := canonical(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("canonical(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"query", "/api/v1/query"},
		{"query_range_prefixed", "/prometheus/api/v1/query_range"},
		{"write", "/api/v1/write"},
		{"import_prometheus", "/api/v1/import/prometheus"},
		{"cluster_query", "/select/15:0/prometheus/api/v1/query"},
		{"cluster_write", "/insert/15:0/prometheus/api/v1/write"},
		{"label_values", "/api/v1/label/job/values"},
		{"unclean", "//api/v1/../v1/query"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Lookup(bc.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestPathLabels(t *testing.T) {
	for path, want := range map[string]int{
		"/api/v1/import/prometheus":                                           0,
		"/api/v1/import/prometheus/metrics/job/j1":                            1,
		"/api/v1/import/prometheus/metrics/job/j1/instance/i1":                2,
		"/prometheus/api/v1/import/prometheus/metrics/job@base64/ajE/a/b/c/d": 3,
		"/insert/1:2/prometheus/api/v1/import/prometheus/metrics/job/j/x/y":   2,
		"/api/v1/import": 0,
		"/api/v1/query":  0,
	} {
		r, err := Lookup(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got := r.PathLabels(); got != want {
			t.Errorf("%s: PathLabels() = %d; want %d", path, got, want)
		}
	}
}
