package ratelimit

import (
	"reflect"
	"testing"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// TestMeters: one datasource query per type and resolution of the limits without a key (the datasource knows
// no keys), none for cost limits.
func TestMeters(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []meter
	}{
		{`
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 1000, resolution: hour}
  - {type: rows_inserted, value: 50}
  - {type: queries, value: 10, account_id: 1}
  - {type: active_series, value: 7, account_id: 1}
  - {type: rows_inserted, value: 5, account_id: 2, project_id: 3}
`, []meter{{limitfile.Queries, limitfile.Minute}, {limitfile.Queries, limitfile.Hour}, {limitfile.RowsInserted, limitfile.Minute}, {limitfile.ActiveSeries, 0}}},
		{`
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 10, key: claim:sub}
  - {type: queries, value: 50, key: label:team, resolution: hour}
  - {type: queries, value: 5, key: claim:sub, account_id: 1}
  - {type: queries, value: 7, key: label:team, account_id: 1}
`, []meter{{limitfile.Queries, limitfile.Minute}}},
		// The datasource has no figure for the costs of queries: the gate counts them alone.
		{`
limits:
  - {type: series_fetched, value: 100}
  - {type: query_time_ms, value: 100, resolution: hour, account_id: 1}
`, nil},
	} {
		l, err := limitfile.Parse([]byte(tc.in), "limits.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if got := metersOf(l.All()); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("meters %v, want %v", got, tc.want)
		}
	}
}
