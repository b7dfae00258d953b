package enforce

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestSiblingGuards: a token whose labels or filters name a label that VictoriaMetrics' storage sorts as one with
// another name (siblings.go) reads only series without those other names, in the rewrite and in the args
// VictoriaMetrics enforces again; its writes carry no guard, and a client's extra_label of a sibling name is dropped.
// A restriction naming two siblings is refused.
func TestSiblingGuards(t *testing.T) {
	for _, tc := range []struct {
		name           string
		labels         []Label
		filters        []string
		query, want    string
		readLabelArgs  []string
		extraFilterArg []string
	}{
		{"no sibling", []Label{{"team", "dev"}}, nil, `up`, `up{team="dev"}`, []string{"team=dev"}, nil},
		// The guards of the raw sort keys go to VictoriaMetrics alone: in a query they would need escapes.
		{"a label with one sibling", []Label{{"namespace", "dev"}}, nil, `up`, `up{namespace="dev",Namespace=""}`,
			[]string{"namespace=dev", "Namespace=", "\x00\x00\x00="}, nil},
		{"a capitalised label", []Label{{"Tenant", "dev"}}, nil, `up{Tenant="x"}`, `up{Tenant="x",Tenant="dev",tenant=""}`,
			[]string{"Tenant=dev", "tenant=", "\x00\x01\x30="}, nil},
		{"a label with two siblings", []Label{{"sensor_type", "a"}}, nil, `up`, `up{sensor_type="a",SensorType="",Sensor_type=""}`,
			[]string{"sensor_type=a", "SensorType=", "Sensor_type=", "\x00\x00\x38="}, nil},
		{"a filter's names guard its own branch", []Label{{"team", "dev"}}, []string{`{job=~"a|b"}`, `{region="eu"}`}, `up`,
			`union(up{team="dev",job=~"a|b",Job=""}, up{team="dev",region="eu"})`, []string{"team=dev", "\x00\x00\x20="},
			[]string{`{job=~"a|b",Job=""}`, `{region="eu"}`}},
		{"a filter that asks for the siblings' absence itself", nil, []string{`{env="prod",Env="",\x00\x00\x0d=""}`}, `up`, `up{env="prod",Env="",\x00\x00\x0d=""}`,
			nil, []string{`{env="prod",Env="",\x00\x00\x0d=""}`}},
		{"a filter that asks for one sibling's absence", nil, []string{`{env="prod",Env=""}`}, `up`, `up{env="prod",Env=""}`,
			[]string{"\x00\x00\x0d="}, []string{`{env="prod",Env=""}`}},
	} {
		e, err := New(tc.labels, tc.filters)
		if err != nil {
			t.Fatalf("%s: %s", tc.name, err)
		}
		got, err := e.Query(tc.query)
		if err != nil || got != tc.want {
			t.Errorf("%s: Query(%s) = %s, %v; want %s", tc.name, tc.query, got, err, tc.want)
		}
		q := url.Values{}
		e.EnforceArgs(q)
		if !slices.Equal(q["extra_label"], tc.readLabelArgs) || !slices.Equal(q["extra_filters[]"], tc.extraFilterArg) {
			t.Errorf("%s: read args %v; want extra_label %q and extra_filters[] %q", tc.name, q, tc.readLabelArgs, tc.extraFilterArg)
		}
	}

	// Writes: the token's labels alone, a client's sibling of one dropped, other client labels kept before them.
	e := mustNew(t, []Label{{"namespace", "dev"}}, nil)
	out, _, err := e.Request(rtWrite, Args{URL: url.Values{"extra_label": {"Namespace=x", "zone=a", "\x00\x00\x00=x", "namespace=prod"}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.URL["extra_label"]; !slices.Equal(got, []string{"zone=a", "namespace=dev"}) {
		t.Errorf("a write's extra_label: %q; want the client's zone=a, then the token's namespace=dev, and no sibling", got)
	}

	for _, tc := range []struct {
		labels  []Label
		filters []string
	}{
		{[]Label{{"env", "a"}, {"Env", "b"}}, nil},
		{[]Label{{"namespace", "dev"}}, []string{`{Namespace=~"x|y"}`}},
		{nil, []string{`{sensor_type="a",SensorType!="b"}`}},
		{nil, []string{`{job="a",\x00\x00\ =~"b|c"}`}},
	} {
		if _, err := New(tc.labels, tc.filters); err == nil || !strings.Contains(err.Error(), "which VictoriaMetrics' storage orders as one label") {
			t.Errorf("New(%v, %v): %v; want the two sibling names refused", tc.labels, tc.filters, err)
		}
	}
	// Siblings in different branches are each guarded in their own.
	e = mustNew(t, nil, []string{`{env="a"}`, `{Env="b"}`})
	if got, err := e.Query(`up`); err != nil || got != `union(up{env="a",Env=""}, up{Env="b",env=""})` {
		t.Errorf("siblings in two branches: %s, %v", got, err)
	}
}
