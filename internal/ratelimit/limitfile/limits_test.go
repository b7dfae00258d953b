package limitfile

import (
	"errors"
	"fmt"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

func TestParseLimitsValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []Limit
	}{
		{"enterprise example", `
limits:
  - type: queries
    value: 1000
    resolution: minute
  - type: queries
    value: 10000
    resolution: hour
  - type: queries
    value: 10
    resolution: minute
    project_id: 5
    account_id: 1
`, []Limit{
			{Type: Queries, Resolution: Minute, Value: 1000},
			{Type: Queries, Resolution: Hour, Value: 10000},
			{Type: Queries, Resolution: Minute, Value: 10, Tenant: tenant.ID{AccountID: 1, ProjectID: 5}, HasTenant: true},
		}},
		{"defaults and account alone", `
limits:
  - {type: rows_inserted, value: 100000}
  - {type: new_series, value: 1000, resolution: hour}
  - {type: active_series, value: 100000}
  - {type: queries, value: 1, account_id: 15}
  - {type: queries, value: 2, account_id: 4294967295, project_id: 4294967295}
  - {type: queries, value: 9223372036854775807, account_id: 0x10, project_id: 0}
`, []Limit{
			{Type: RowsInserted, Resolution: Minute, Value: 100000},
			{Type: NewSeries, Resolution: Hour, Value: 1000},
			{Type: ActiveSeries, Value: 100000},
			{Type: Queries, Resolution: Minute, Value: 1, Tenant: tenant.ID{AccountID: 15}, HasTenant: true},
			{Type: Queries, Resolution: Minute, Value: 2, Tenant: tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}, HasTenant: true},
			{Type: Queries, Resolution: Minute, Value: 9223372036854775807, Tenant: tenant.ID{AccountID: 16}, HasTenant: true},
		}},
		{"no limits", "limits: []\n", nil},
		{"aliases", `
limits:
  - {type: queries, value: &v 5}
  - {type: queries, value: *v, account_id: 1}
`, []Limit{
			{Type: Queries, Resolution: Minute, Value: 5},
			{Type: Queries, Resolution: Minute, Value: 5, Tenant: tenant.ID{AccountID: 1}, HasTenant: true},
		}},
		{"cost limits", `
limits:
  - {type: series_fetched, value: 100000}
  - {type: query_time_ms, value: 600000, resolution: hour, key: label:team}
  - {type: series_fetched, value: 500, account_id: 3}
`, []Limit{
			{Type: SeriesFetched, Resolution: Minute, Value: 100000},
			{Type: QueryTimeMs, Resolution: Hour, Value: 600000, Key: Key{Label: "team"}},
			{Type: SeriesFetched, Resolution: Minute, Value: 500, Tenant: tenant.ID{AccountID: 3}, HasTenant: true},
		}},
		{"same meter for different tenants", `
limits:
  - {type: queries, value: 5, account_id: 1}
  - {type: queries, value: 5, account_id: 1, project_id: 1}
  - {type: queries, value: 5, account_id: 2}
  - {type: queries, value: 5}
`, []Limit{
			{Type: Queries, Resolution: Minute, Value: 5, Tenant: tenant.ID{AccountID: 1}, HasTenant: true},
			{Type: Queries, Resolution: Minute, Value: 5, Tenant: tenant.ID{AccountID: 1, ProjectID: 1}, HasTenant: true},
			{Type: Queries, Resolution: Minute, Value: 5, Tenant: tenant.ID{AccountID: 2}, HasTenant: true},
			{Type: Queries, Resolution: Minute, Value: 5},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse([]byte(tc.in), "limits.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l.All(), tc.want) {
				t.Errorf("got  %+v\nwant %+v", l.All(), tc.want)
			}
		})
	}
}

// TestParseLimitsErrors checks every error the parser reports, with its line, and that all of a file's errors
// are reported at once.
func TestParseLimitsErrors(t *testing.T) {
	type p = problem
	for _, tc := range []struct {
		name string
		in   string
		want []problem // line and a part of the message, in order
	}{
		{"not a mapping", "- a\n- b\n", []p{{1, "want a mapping with a `limits:` list, got a list"}}},
		{"scalar root", "hello\n", []p{{1, `want a mapping with a ` + "`limits:`" + ` list, got "hello"`}}},
		{"no limits key", "other: 1\n", []p{{1, `unknown key "other"`}, {1, "no `limits:` key"}}},
		{"limits empty", "limits:\n", []p{{1, "limits: want a list of limits, got nothing"}}},
		{"limits a mapping", "limits:\n  type: queries\n", []p{{2, "limits: want a list of limits, got a mapping"}}},
		{"duplicate top key", "limits: []\nlimits: []\n", []p{{2, `duplicate key "limits" (first at line 1)`}}},
		{"item not a mapping", "limits:\n  - queries\n", []p{{2, `want a limit (a mapping with type and value), got "queries"`}}},
		{"unknown key", `limits:
  - type: queries
    value: 1
    tenant: 5
`, []p{{4, `unknown key "tenant": a limit has type, value, resolution, account_id and project_id`}}},
		{"duplicate key", `limits:
  - type: queries
    value: 1
    value: 2
`, []p{{4, `duplicate key "value" (first at line 3)`}}},
		{"missing type and value", "limits:\n  - resolution: hour\n", []p{
			{2, "the limit has no type"}, {2, "the limit has no value: want a positive integer"}}},
		{"bad type", "limits:\n  - {type: querys, value: 1}\n", []p{
			{2, `type: want one of queries, rows_inserted, new_series, active_series, series_fetched, query_time_ms, got "querys"`}}},
		{"type not a string", "limits:\n  - {type: [queries], value: 1}\n", []p{{2, "type: want one of queries, rows_inserted, new_series, active_series, series_fetched, query_time_ms, got a list"}}},
		{"unlimited without a tenant", "limits:\n  - {type: queries, value: unlimited}\n", []p{
			{2, "value: unlimited lifts a default for one tenant (give account_id)"}}},
		{"unlimited cased", "limits:\n  - {type: queries, value: 5}\n  - {type: queries, value: Unlimited, account_id: 2}\n", []p{
			{3, `value: want a positive integer (or unlimited, in a tenant's limit), got "Unlimited"`}}},
		{"unlimited lifts nothing", `limits:
  - {type: queries, value: 5, resolution: hour}
  - {type: queries, value: unlimited, account_id: 1}
  - {type: queries, value: 5, key: claim:sub}
  - {type: queries, value: unlimited, account_id: 1, resolution: hour, key: claim:team}
`, []p{
			{3, "value: unlimited lifts, for tenant 1:0, the default of the same type, resolution and key, and the defaults have no limit on queries per minute"},
			{5, "the defaults have no limit on queries per hour by claim:team"}}},
		{"unlimited of a tenant that does not parse", "limits:\n  - {type: queries, value: 5}\n  - {type: queries, value: unlimited, account_id: -1}\n  - {type: queries, value: unlimited, project_id: 2}\n", []p{
			{3, "account_id: want an integer in [0..4294967295]"},
			{4, "project_id without account_id"}}},
		{"unlimited and a value for one place", `limits:
  - {type: queries, value: 5}
  - {type: queries, value: unlimited, account_id: 1}
  - {type: queries, value: 9, account_id: 1}
`, []p{{4, "duplicate limit: tenant 1:0 already has a limit on queries per minute at line 3"}}},
		{"bad values", `limits:
  - {type: queries, value: 0}
  - {type: queries, value: -5}
  - {type: queries, value: 1.5}
  - {type: queries, value: "100"}
  - {type: queries, value: lots}
  - {type: queries, value: 9223372036854775808}
  - {type: queries, value: }
  - {type: queries, value: true}
`, []p{
			{2, "value: want a positive integer (or unlimited, in a tenant's limit), got 0"},
			{3, "value: want a positive integer (or unlimited, in a tenant's limit), got -5"},
			{4, "value: want a positive integer (or unlimited, in a tenant's limit), got 1.5"},
			{5, `value: want a positive integer (or unlimited, in a tenant's limit), got "100" (a quoted string)`},
			{6, `value: want a positive integer (or unlimited, in a tenant's limit), got "lots"`},
			{7, "value: want a positive integer (or unlimited, in a tenant's limit), got 9223372036854775808"},
			{8, "value: want a positive integer (or unlimited, in a tenant's limit), got nothing"},
			{9, "value: want a positive integer (or unlimited, in a tenant's limit), got true"},
		}},
		{"bad resolution", `limits:
  - {type: queries, value: 1, resolution: day}
  - {type: queries, value: 1, resolution: Minute}
  - {type: rows_inserted, value: 1, resolution: 60}
`, []p{
			{2, `resolution: want minute or hour, got "day"`},
			{3, `resolution: want minute or hour, got "Minute"`},
			{4, "resolution: want minute or hour, got 60"},
		}},
		{"resolution on active_series", `limits:
  - {type: active_series, value: 1, resolution: hour}
  - {type: active_series, value: 1, resolution: minute}
`, []p{
			{2, "resolution: active_series is a current count, not a sum over a window: remove the resolution"},
			{3, "resolution: active_series is a current count"},
		}},
		{"bad ids", `limits:
  - {type: queries, value: 1, account_id: -1}
  - {type: queries, value: 1, account_id: 4294967296}
  - {type: queries, value: 1, account_id: "7"}
  - {type: queries, value: 1, account_id: 1, project_id: 99999999999999999999}
  - {type: queries, value: 1, account_id: 1, project_id: 1.0}
`, []p{
			{2, "account_id: want an integer in [0..4294967295], got -1"},
			{3, "account_id: want an integer in [0..4294967295], got 4294967296"},
			{4, `account_id: want an integer in [0..4294967295], got "7" (a quoted string)`},
			{5, "project_id: want an integer in [0..4294967295], got 99999999999999999999"},
			{6, "project_id: want an integer in [0..4294967295], got 1.0"},
		}},
		{"project without account", "limits:\n  - {type: queries, value: 1, project_id: 3}\n", []p{
			{2, "project_id without account_id"}}},
		{"duplicate limits", `limits:
  - {type: queries, value: 1}
  - {type: queries, value: 2, resolution: minute}
  - {type: queries, value: 3, resolution: hour}
  - {type: queries, value: 1, account_id: 1}
  - {type: queries, value: 1, account_id: 1, project_id: 0}
  - {type: active_series, value: 5}
  - {type: active_series, value: 6}
`, []p{
			{3, "duplicate limit: the default for all tenants already has a limit on queries per minute at line 2"},
			{6, "duplicate limit: tenant 1:0 already has a limit on queries per minute at line 5"},
			{8, "duplicate limit: the default for all tenants already has a limit on active_series at line 7"},
		}},
		{"two documents", "limits: []\n---\nlimits: []\n", []p{{2, "a second YAML document"}}},
		{"many problems at once", `limits:
  - type: queries
    value: 100
  - type: rows_inserted
    value: -1
    resolution: week
  - type: queries
    value: 100
    extra: x
foo: bar
`, []p{
			{5, "value: want a positive integer (or unlimited, in a tenant's limit), got -1"},
			{6, `resolution: want minute or hour, got "week"`},
			{9, `unknown key "extra"`},
			{10, `unknown key "foo"`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "limits.yaml")
			var ce *confsource.Problems
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a configError", err)
			}
			var got []string
			for _, p := range ce.List {
				got = append(got, fmt.Sprintf("%d: %s", p.Line, p.Msg))
			}
			if len(ce.List) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if ce.List[i].Line != w.line || !strings.Contains(ce.List[i].Msg, w.msg) {
					t.Errorf("problem %d: got %q, want line %d with %q", i, got[i], w.line, w.msg)
				}
				// The message shows each problem as file:line.
				if !strings.Contains(err.Error(), fmt.Sprintf("limits.yaml:%d: ", w.line)) {
					t.Errorf("error %q does not show limits.yaml:%d", err, w.line)
				}
			}
		})
	}
}

func TestParseLimitsFileErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "the limits config limits.yaml is empty"},
		{"only comments", "# nothing here\n", "the limits config limits.yaml is empty"},
		{"syntax", "limits:\n  - {type: queries\n", "cannot parse the limits config limits.yaml: yaml: line 1: did not find expected ',' or '}'"},
		{"tabs", "limits:\n\t- type: queries\n", "cannot parse the limits config limits.yaml: yaml: line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "limits.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestForTenant(t *testing.T) {
	l, err := Parse([]byte(`
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 1000, resolution: hour}
  - {type: rows_inserted, value: 50}
  - {type: queries, value: 10, account_id: 1}
  - {type: active_series, value: 7, account_id: 1}
  - {type: rows_inserted, value: 5, account_id: 2, project_id: 3}
  - {type: queries, value: unlimited, account_id: 4}
  - {type: rows_inserted, value: unlimited, account_id: 4}
  - {type: queries, value: 20, account_id: 5, key: claim:sub}
  - {type: queries, value: unlimited, account_id: 5}
  - {type: queries, value: 100, key: claim:sub}
`), "x")
	if err != nil {
		t.Fatal(err)
	}
	// The lifts are no limits: All leaves them out, Tenants lists their tenants, whom the defaults would bind.
	if n := len(l.All()); n != 8 {
		t.Errorf("All has %d limits; want the 8 with values", n)
	}
	if !slices.Contains(l.Tenants(), tenant.ID{AccountID: 4}) {
		t.Errorf("Tenants %v lacks 4:0, whose lifts take the defaults' place", l.Tenants())
	}
	for _, tc := range []struct {
		id   tenant.ID
		want []uint64 // values, own limits first, then the defaults not replaced
	}{
		{tenant.ID{AccountID: 1}, []uint64{10, 7, 1000, 50, 100}},
		{tenant.ID{AccountID: 2, ProjectID: 3}, []uint64{5, 100, 1000, 100}},
		{tenant.ID{AccountID: 2}, []uint64{100, 1000, 50, 100}},
		{tenant.ID{AccountID: 1, ProjectID: 1}, []uint64{100, 1000, 50, 100}},
		// Lifted: queries per minute and rows; the hour and the per-user defaults stay.
		{tenant.ID{AccountID: 4}, []uint64{1000, 100}},
		// Its own per-user limit replaces the default one, its lift the tenant-wide minute.
		{tenant.ID{AccountID: 5}, []uint64{20, 1000, 50}},
	} {
		var got []uint64
		for _, lim := range l.ForTenant(tc.id) {
			got = append(got, lim.Value)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("tenant %s: got values %v, want %v", tc.id, got, tc.want)
		}
	}
}

// problem is one expected config error: its line and a part of its message.
type problem struct {
	line int
	msg  string
}
