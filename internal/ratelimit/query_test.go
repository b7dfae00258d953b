package ratelimit

import (
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

func TestUsageQuery(t *testing.T) {
	const f = `job="vmcluster", instance=~"vmselect-.*"`
	for _, tc := range []struct {
		m       meter
		filters string
		want    string
	}{
		{meter{limitfile.Queries, limitfile.Minute}, "", `sum(increase(vm_tenant_select_requests_total[1m])) by (accountID, projectID)`},
		{meter{limitfile.Queries, limitfile.Hour}, f, `sum(increase(vm_tenant_select_requests_total{job="vmcluster", instance=~"vmselect-.*"}[1h])) by (accountID, projectID)`},
		{meter{limitfile.RowsInserted, limitfile.Minute}, `job="vmcluster"`, `sum(increase(vm_tenant_inserted_rows_total{job="vmcluster"}[1m])) by (accountID, projectID)`},
		{meter{limitfile.RowsInserted, limitfile.Hour}, "", `sum(increase(vm_tenant_inserted_rows_total[1h])) by (accountID, projectID)`},
		{meter{limitfile.NewSeries, limitfile.Minute}, "", `sum(increase(vm_tenant_timeseries_created_total[1m])) by (accountID, projectID)`},
		{meter{limitfile.NewSeries, limitfile.Hour}, `job="vmcluster"`, `sum(increase(vm_tenant_timeseries_created_total{job="vmcluster"}[1h])) by (accountID, projectID)`},
		{meter{limitfile.ActiveSeries, 0}, "", `sum(vm_tenant_active_timeseries) by (accountID, projectID)`},
		{meter{limitfile.ActiveSeries, 0}, `job="vmcluster"`, `sum(vm_tenant_active_timeseries{job="vmcluster"}) by (accountID, projectID)`},
	} {
		got := usageQuery(tc.m, tc.filters)
		if got != tc.want {
			t.Errorf("%v: got  %s\nwant %s", tc.m, got, tc.want)
		}
		if _, err := metricsql.Parse(got); err != nil {
			t.Errorf("%s does not parse: %s", got, err)
		}
	}
}

func TestParseExtraLabels(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{""}, ""},
		{[]string{`job="vmcluster"`}, `job="vmcluster"`},
		{[]string{`job=vmcluster`}, `job="vmcluster"`},
		{[]string{` job = "vmcluster" `, `env!="dev"`}, `job="vmcluster", env!="dev"`},
		{[]string{`instance=~"vmselect-.*",az!~"b|c"`}, `instance=~"vmselect-.*", az!~"b|c"`},
		{[]string{`job='single quotes'`}, `job="single quotes"`},
		{[]string{`job="a\"b"`}, `job="a\"b"`},
		{[]string{`cluster=`}, `cluster=""`},
	} {
		got, err := parseExtraLabels(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want string
	}{
		{`job="a"} or vector(1) or {x="y"`, "not a list of label filters"},
		{`job="a" or x="b"`, "not a list of label filters"},
		{`__name__="up"`, "a metric name filter"},
		{`__name__=up`, "a metric name filter"},
		{`job=~"(unclosed"`, "invalid regexp"},
		{`job`, "cannot use"},
		{`job=~bad`, "cannot use"},
		{`{}`, "cannot use"},
		{`a=b,c=d`, "cannot use"},
	} {
		_, err := parseExtraLabels([]string{tc.in})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-ratelimit.extraLabels") {
			t.Errorf("%q: got %v, want an error about -ratelimit.extraLabels with %q", tc.in, err, tc.want)
		}
	}
}
