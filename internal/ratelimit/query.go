package ratelimit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// The per-tenant metrics of the VictoriaMetrics cluster (enterprise per-tenant statistics).
var typeMetrics = [...]string{
	limitfile.Queries:      "vm_tenant_select_requests_total",
	limitfile.RowsInserted: "vm_tenant_inserted_rows_total",
	limitfile.NewSeries:    "vm_tenant_timeseries_created_total",
	limitfile.ActiveSeries: "vm_tenant_active_timeseries",
}

// usageQuery is the MetricsQL query that measures m for every tenant. filters are rendered label filters
// (from parseExtraLabels), added to the selector.
func usageQuery(m meter, filters string) string {
	sel := typeMetrics[m.typ]
	if filters != "" {
		sel += "{" + filters + "}"
	}
	switch m.res {
	case limitfile.Minute:
		sel = "increase(" + sel + "[1m])"
	case limitfile.Hour:
		sel = "increase(" + sel + "[1h])"
	}
	return "sum(" + sel + ") by (accountID, projectID)"
}

var plainLabel = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)=([^"'{}=~,]*)$`)

// parseExtraLabels checks -ratelimit.extraLabels and renders them as label filters for usageQuery.
// Each item is one or more MetricsQL label filters (job="vmcluster", instance=~"vmselect-.*"),
// or name=value without quotes. metricsql checks the regexps.
func parseExtraLabels(items []string) (string, error) {
	var out []string
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		filters := item
		if m := plainLabel.FindStringSubmatch(item); m != nil {
			// The unquoted form, as other VictoriaMetrics flags write labels.
			filters = m[1] + "=" + strconv.Quote(m[2])
		}
		fs, err := parseFilters(filters)
		if err != nil {
			return "", fmt.Errorf("-ratelimit.extraLabels: cannot use %q: %s; want label filters such as job=\"vmcluster\"", item, err)
		}
		out = append(out, fs...)
	}
	return strings.Join(out, ", "), nil
}

func parseFilters(item string) ([]string, error) {
	e, err := metricsql.Parse("{" + item + "}")
	if err != nil {
		return nil, err
	}
	me, ok := e.(*metricsql.MetricExpr)
	if !ok || len(me.LabelFilterss) != 1 {
		return nil, fmt.Errorf("not a list of label filters")
	}
	var fs []string
	for _, lf := range me.LabelFilterss[0] {
		if lf.Label == "__name__" {
			return nil, fmt.Errorf("a metric name filter would replace the vm_tenant_* metric the limiter reads")
		}
		fs = append(fs, string(lf.AppendString(nil)))
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("no label filter")
	}
	return fs, nil
}
