package querylimits

import (
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

const sample = `limits:
  - max_total_query_length: 1d
    max_query_lookback: 30d
    blocked_queries:
      - pattern: 'count({__name__=~".+"})'
  - account_id: 7
    max_total_query_length: 1h
    min_step: 30s
    max_query_expression_size_bytes: 4096
    query_timeout: 30s
    blocked_queries:
      - pattern: '.*__name__=~"\.[*+]".*'
        regex: true
  - account_id: 7
    key: claim:sub
    max_query_lookback: 2d
  - account_id: 8
    project_id: 3
    blocked_queries: []
`

func TestParseSelection(t *testing.T) {
	c, err := parseConfig([]byte(sample), "limits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	values := func(rs *ruleSet, f field) (out []int64) {
		for _, r := range rs.rules[f] {
			out = append(out, r.v)
		}
		return out
	}
	eq := func(got, want []int64) bool {
		return strings.Trim(strings.Join(strs(got), ","), ",") == strings.Join(strs(want), ",")
	}
	h, d := int64(3600000), int64(86400000)

	def := c.forTenant(tenant.ID{AccountID: 1})
	if !eq(values(def, maxTotalQueryLength), []int64{d}) || !eq(values(def, maxQueryLookback), []int64{30 * d}) || len(def.blocked) != 1 {
		t.Errorf("default tenant: length %v lookback %v blocked %d", values(def, maxTotalQueryLength), values(def, maxQueryLookback), len(def.blocked))
	}
	// Tenant 7: its own keyless values replace the defaults field by field; the default lookback stays; the keyed
	// entry adds its own rule; its blocked list replaces the default one.
	t7 := c.forTenant(tenant.ID{AccountID: 7})
	if !eq(values(t7, maxTotalQueryLength), []int64{h}) {
		t.Errorf("tenant 7 length %v, want its own 1h only", values(t7, maxTotalQueryLength))
	}
	if !eq(values(t7, maxQueryLookback), []int64{30 * d, 2 * d}) {
		t.Errorf("tenant 7 lookback %v, want the default 30d and its per-sub 2d", values(t7, maxQueryLookback))
	}
	if len(t7.blocked) != 1 || c.patterns[t7.blocked[0].patterns[0]].re == nil {
		t.Errorf("tenant 7 blocked %+v, want its own regexp only", t7.blocked)
	}
	if len(t7.rules[maxQueryLookback]) != 2 || t7.rules[maxQueryLookback][1].e.key != (limitfile.Key{Claim: "sub"}) {
		t.Errorf("tenant 7's 2d lookback should come from its claim:sub entry")
	}
	// Tenant 8:3 clears the default blocked queries and keeps the other defaults.
	t8 := c.forTenant(tenant.ID{AccountID: 8, ProjectID: 3})
	if len(t8.blocked) != 0 || !eq(values(t8, maxQueryLookback), []int64{30 * d}) {
		t.Errorf("tenant 8:3 blocked %d lookback %v", len(t8.blocked), values(t8, maxQueryLookback))
	}
	// Tenant 8:0 is not 8:3.
	if c.forTenant(tenant.ID{AccountID: 8}) != c.defaults {
		t.Errorf("tenant 8:0 should get the defaults")
	}
}

func strs(vs []int64) (out []string) {
	for _, v := range vs {
		out = append(out, fmtDuration(v))
	}
	return out
}

func TestParseNoDefaults(t *testing.T) {
	c, err := parseConfig([]byte("limits:\n  - account_id: 1\n    min_step: 1m\n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	if c.forTenant(tenant.ID{}) != nil || c.forTenant(tenant.ID{AccountID: 1}).empty() {
		t.Errorf("only tenant 1 has limits")
	}
	c, err = parseConfig([]byte("limits: []\n"), "x")
	if err != nil || !c.forTenant(tenant.ID{}).empty() {
		t.Errorf("limits: [] is no limits: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "is empty"},
		{"limits: {}\n", "x:1: limits: want a list of entries, got a mapping"},
		{"limit: []\n", `x:1: unknown key "limit"`},
		{"limits:\n  - max_query_lookback: 30\n", `x:2: max_query_lookback: want a positive duration such as 30s, 1h or 30d, got 30`},
		{"limits:\n  - max_query_lookback: 5i\n", `want a positive duration`},
		{"limits:\n  - max_query_lookback: -1h\n", `want a positive duration`},
		{"limits:\n  - max_query_expression_size_bytes: \"100\"\n", `got "100" (a quoted string)`},
		{"limits:\n  - max_query_expression_size_bytes: 0\n", `want a positive integer, got 0`},
		{"limits:\n  - account_id: 1\n", `x:2: the entry sets no limit`},
		{"limits:\n  - project_id: 1\n    min_step: 1m\n", `project_id without account_id`},
		{"limits:\n  - account_id: -1\n    min_step: 1m\n", `account_id: want an integer in [0..4294967295], got -1`},
		{"limits:\n  - min_step: 1m\n  - min_step: 2m\n", `x:3: duplicate entry: the default for all tenants already has one at line 2`},
		{"limits:\n  - min_step: 1m\n    key: sub\n", `key: want claim:<name>`},
		{"limits:\n  - min_stp: 1m\n", `unknown key "min_stp"`},
		{"limits:\n  - blocked_queries:\n      - pattern: 'sum(('\n", `x:3: pattern: not a valid MetricsQL query`},
		{"limits:\n  - blocked_queries:\n      - pattern: '(('\n        regex: true\n", `pattern: not a valid regexp`},
		{"limits:\n  - blocked_queries:\n      - pattern: 'up'\n        regex: yes please\n", `regex: want true or false`},
		{"limits:\n  - blocked_queries:\n      - regex: true\n", `a blocked query without pattern`},
		{"limits:\n  - blocked_queries: up\n", `want a list of {pattern`},
		{"limits: []\n---\nlimits: []\n", "a second YAML document"},
	} {
		_, err := parseConfig([]byte(tc.in), "x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	// Every problem is reported, each with its line.
	_, err := parseConfig([]byte("limits:\n  - min_stp: 1m\n  - max_query_lookback: 1\n"), "x")
	if err == nil || !strings.Contains(err.Error(), "2 errors") || !strings.Contains(err.Error(), "x:2:") || !strings.Contains(err.Error(), "x:3:") {
		t.Errorf("want both errors with lines, got %v", err)
	}
}
