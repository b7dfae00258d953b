package limitfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"reflect"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Key
		err  string
	}{
		{"claim:sub", Key{Claim: "sub"}, ""},
		{"claim:https://example.com/team", Key{Claim: "https://example.com/team"}, ""},
		{"label:team", Key{Label: "team"}, ""},
		{"label:_a1", Key{Label: "_a1"}, ""},
		{"sub", Key{}, "want claim:<name> (a token claim such as claim:sub) or label:<name>"},
		{"claim:", Key{}, "want a claim name after claim:"},
		{"claim: sub", Key{}, "without surrounding spaces"},
		{"claim:" + strings.Repeat("x", 257), Key{}, "at most 256 bytes"},
		{"claim:a\tb", Key{}, "has a control character"},
		{"label:", Key{}, "want a label name"},
		{"label:1team", Key{}, "want a label name ([a-zA-Z_][a-zA-Z0-9_]*) after label:"},
		{"label:a-b", Key{}, "want a label name"},
		{"header:x", Key{}, `unknown key source "header"`},
	} {
		k, err := ParseKey(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || k != tc.want || k.String() != tc.in {
			t.Errorf("%q: got %+v (%q), %v", tc.in, k, k.String(), err)
		}
	}
}

func TestKeyValue(t *testing.T) {
	enf, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &auth.Access{Enforcer: enf, Claims: map[string]any{
		"sub": "alice", "n": json.Number("42"), "admin": true, "f": 1.5,
		"obj": map[string]any{"a": "b"}, "list": []any{"x"}, "null": nil, "empty": "",
	}}
	for _, tc := range []struct {
		key  Key
		a    *auth.Access
		want string
	}{
		{Key{Claim: "sub"}, a, "alice"},
		{Key{Claim: "n"}, a, "42"},
		{Key{Claim: "admin"}, a, "true"},
		{Key{Claim: "f"}, a, "1.5"},
		{Key{Label: "team"}, a, "dev"},
		// Without the key: the "" bucket, shared by all such callers of the tenant.
		{Key{Claim: "obj"}, a, ""},
		{Key{Claim: "list"}, a, ""},
		{Key{Claim: "null"}, a, ""},
		{Key{Claim: "missing"}, a, ""},
		{Key{Claim: "empty"}, a, ""},
		{Key{Label: "env"}, a, ""},
		{Key{Label: "team"}, &auth.Access{}, ""},
		{Key{Claim: "sub"}, nil, ""},
	} {
		if got := tc.key.Value(tc.a); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestParseLimitsKeys(t *testing.T) {
	l, err := Parse([]byte(`
limits:
  - {type: queries, value: 100}
  - {type: queries, value: 10, key: claim:sub}
  - {type: queries, value: 50, key: label:team, resolution: hour}
  - {type: queries, value: 5, key: claim:sub, account_id: 1}
  - {type: queries, value: 7, key: label:team, account_id: 1}
`), "limits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sub, team := Key{Claim: "sub"}, Key{Label: "team"}
	want := []Limit{
		{Type: Queries, Resolution: Minute, Value: 100},
		{Type: Queries, Resolution: Minute, Value: 10, Key: sub},
		{Type: Queries, Resolution: Hour, Value: 50, Key: team},
		{Type: Queries, Resolution: Minute, Value: 5, Key: sub, Tenant: tenant.ID{AccountID: 1}, HasTenant: true},
		{Type: Queries, Resolution: Minute, Value: 7, Key: team, Tenant: tenant.ID{AccountID: 1}, HasTenant: true},
	}
	if !reflect.DeepEqual(l.All(), want) {
		t.Fatalf("got  %+v\nwant %+v", l.All(), want)
	}
	// A tenant's own keyed limit replaces the default of the same meter and key only.
	for _, tc := range []struct {
		id   tenant.ID
		want []uint64
	}{
		{tenant.ID{AccountID: 1}, []uint64{5, 7, 100, 50}},
		{tenant.ID{AccountID: 2}, []uint64{100, 10, 50}},
	} {
		var got []uint64
		for _, lim := range l.ForTenant(tc.id) {
			got = append(got, lim.Value)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("tenant %s: values %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestParseLimitsKeyErrors(t *testing.T) {
	in := `limits:
  - {type: queries, value: 1, key: sub}
  - {type: queries, value: 1, key: label:a-b}
  - {type: rows_inserted, value: 1, key: claim:sub}
  - {type: active_series, value: 1, key: label:team}
  - {type: queries, value: 1, key: [claim:sub]}
  - {type: queries, value: 1, key: claim:sub}
  - {type: queries, value: 2, key: claim:sub}
  - {type: queries, value: 3, key: claim:sub, resolution: hour}
  - {type: queries, value: 4, key: claim:email}
  - {type: queries, value: 1, key: }
`
	want := []problem{
		{2, "key: want claim:<name> (a token claim such as claim:sub) or label:<name>"},
		{3, `key: want a label name ([a-zA-Z_][a-zA-Z0-9_]*) after label:, e.g. label:team; got "label:a-b"`},
		{4, "key: only queries, series_fetched and query_time_ms limits can have a key: the gateway counts requests and query costs per key itself, but it never sees the rows_inserted of a write"},
		{5, "key: only queries, series_fetched and query_time_ms limits can have a key"},
		{6, "key: want claim:<name> or label:<name>, got a list"},
		{8, "duplicate limit: the default for all tenants already has a limit on queries per minute by claim:sub at line 7"},
		{11, "key: want claim:<name> or label:<name>, got nothing"},
	}
	_, err := Parse([]byte(in), "limits.yaml")
	var ce *confsource.Problems
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a configError", err)
	}
	var got []string
	for _, p := range ce.List {
		got = append(got, fmt.Sprintf("%d: %s", p.Line, p.Msg))
	}
	if len(ce.List) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if ce.List[i].Line != w.line || !strings.Contains(ce.List[i].Msg, w.msg) {
			t.Errorf("problem %d: got %q, want line %d with %q", i, got[i], w.line, w.msg)
		}
	}
}

// FuzzParseLimits: any input gives limits or errors, never a panic; accepted limits keep the config's rules.
func FuzzParseLimits(f *testing.F) {
	for _, s := range []string{
		"limits: []\n",
		"limits:\n  - {type: queries, value: 10, key: claim:sub}\n",
		"limits:\n  - {type: queries, value: 5, key: label:team, account_id: 1, project_id: 2, resolution: hour}\n",
		"limits:\n  - {type: active_series, value: 1}\n  - {type: rows_inserted, value: 2, resolution: hour}\n",
		"limits:\n  - &a {type: queries, value: 1}\n  - *a\n",
		"limits:\n  - {type: queries, value: 1, key: claim:}\n",
		"limits:\n  - {type: series_fetched, value: 1000, key: label:team}\n  - {type: query_time_ms, value: 60000, resolution: hour}\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := Parse([]byte(in), "fuzz.yaml")
		if err != nil {
			return
		}
		for _, lim := range l.All() {
			if lim.Value == 0 || lim.Type == 0 || (lim.Type == ActiveSeries) != (lim.Resolution == 0) {
				t.Fatalf("accepted a bad limit %+v from %q", lim, in)
			}
			if !lim.Key.IsZero() {
				if !lim.Type.Counted() {
					t.Fatalf("accepted a key on %s from %q", lim.Type, in)
				}
				if k, err := ParseKey(lim.Key.String()); err != nil || k != lim.Key {
					t.Fatalf("key %+v does not round-trip: %v", lim.Key, err)
				}
			}
		}
	})
}
