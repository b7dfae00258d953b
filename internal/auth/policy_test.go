package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/golang-jwt/jwt/v5"
)

func TestPolicyClaimPath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want claimPath
		err  string
	}{
		{"groups", claimPath{"groups"}, ""},
		{"realm_access.roles", claimPath{"realm_access", "roles"}, ""},
		{`"kubernetes.io".serviceaccount.name`, claimPath{"kubernetes.io", "serviceaccount", "name"}, ""},
		{`"https://acme.example/groups"`, claimPath{"https://acme.example/groups"}, ""},
		{`"a\"b\\c".d-e_f`, claimPath{`a"b\c`, "d-e_f"}, ""},
		{"", nil, "empty"},
		{"a..b", nil, "must be double-quoted"},
		{"a.", nil, "ends with '.'"},
		{".a", nil, "must be double-quoted"},
		{"kubernetes.io/x", nil, "must be double-quoted"},
		{`"unterminated`, nil, "unterminated"},
		{`""`, nil, "empty quoted segment"},
		{`"a"b`, nil, "separated by '.'"},
		{`"a\n"`, nil, "only \\\" and \\\\ are escapes"},
		{"\"a\tb\"", nil, "control character"},
		{"a b", nil, "must be double-quoted"},
		{strings.Repeat("a.", 40) + "a", nil, "more than 32 segments"},
		{strings.Repeat("a", 2000), nil, "at most 1024"},
		{"\xff", nil, "UTF-8"},
	} {
		got, err := parseClaimPath(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseClaimPath(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseClaimPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if again, err := parseClaimPath(got.String()); err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("%q does not survive String(): %q -> %q, %v", tc.in, got.String(), again, err)
		}
	}
	claims := map[string]any{"a": map[string]any{"b": []any{"x"}}, "s": "v"}
	for _, tc := range []struct{ path, missing string }{
		{"a.b", ""}, {"a.c", "a.c is missing"}, {"s.x", "s is a string, not an object"}, {"a.b.c", "a.b is a list, not an object"}, {"z", "z is missing"},
	} {
		p, _ := parseClaimPath(tc.path)
		if _, missing := p.lookup(claims); missing != tc.missing {
			t.Errorf("lookup(%s): missing %q, want %q", tc.path, missing, tc.missing)
		}
	}
}

// policyVerifier verifies HS256 tokens with the policies in the file at path.
func policyVerifier(t testing.TB, path string, mod ...func(*Config)) (*Verifier, *clock) {
	t.Helper()
	clk := newClock()
	cfg := Config{HMACSecretFiles: []string{writeFile(t, "secret", hmacSecret())}, PolicyFile: path, CacheSize: 100}
	for _, m := range mod {
		m(&cfg)
	}
	return newTestVerifier(t, cfg, clk), clk
}

func policyToken(t testing.TB, clk *clock, claims map[string]any) string {
	t.Helper()
	c := jwt.MapClaims{"exp": clk.now().Add(time.Hour).Unix(), "iat": clk.now().Unix()}
	for k, v := range claims {
		c[k] = v
	}
	return sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c)
}

// providerTokens are claims shaped as the identity providers emit them, and what testdata/policies.yaml grants.
var providerTokens = []struct {
	name    string
	claims  map[string]any
	policy  string
	tenant  string
	mode    Mode
	enforce string // Enforcer.String()
}{
	{"keycloak group", map[string]any{
		"iss": "https://sso.example.com/realms/acme", "sub": "f81d4fae", "preferred_username": "alice",
		"groups": []any{"/metrics/ops", "/metrics/dev"}, "realm_access": map[string]any{"roles": []any{"offline_access"}},
	}, "keycloak-dev", "15:5", ModeRead, `labels {team="dev"} filters []`},
	{"keycloak realm role", map[string]any{
		"iss": "https://sso.example.com/realms/acme", "groups": []any{"/other"},
		"realm_access": map[string]any{"roles": []any{"offline_access", "metrics-admin"}},
	}, "keycloak-admin", "15:5", ModeFull, "unrestricted"},
	{"entra app role", map[string]any{
		"iss": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
		"oid": "00000000-0000-0000-0000-000000000001", "roles": []any{"Metrics.Write"},
	}, "entra-writers", "0:0", ModeWrite, `labels {team="ops"} filters []`},
	{"entra group GUID", map[string]any{
		"tid": "72f988bf-86f1-41af-91ab-2d7cd011db47", "groups": []any{"11111111-2222-3333-4444-555555555555", "5a1b2c3d-0000-4000-8000-00000000abcd"},
	}, "entra-readers", "0:0", ModeRead, `labels {team="ops"} filters []`},
	{"okta group and team claim", map[string]any{
		"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"Everyone", "metrics-dev"}, "team": "dev",
	}, "okta-teams", "0:0", ModeRead, `labels {team="dev"} filters []`},
	{"auth0 namespaced claim", map[string]any{
		"iss": "https://acme.eu.auth0.com/", "https://acme.example/groups": []any{"metrics-stage"},
	}, "auth0-qa", "0:0", ModeRead, `labels {team="qa"} filters []`},
	{"google workspace", map[string]any{
		"iss": "https://accounts.google.com", "hd": "acme.example", "email": "bob@acme.example", "email_verified": true,
	}, "google-owner", "0:0", ModeRead, `labels {} filters [{owner="bob@acme.example"}]`},
	{"gitlab ci", map[string]any{
		"iss": "https://gitlab.example.com", "namespace_path": "acme/platform", "project_path": "acme/platform/api", "ref_protected": "true",
	}, "gitlab-ci", "0:0", ModeWrite, `labels {project="acme/platform/api"} filters []`},
	{"github actions", map[string]any{
		"iss": "https://token.actions.githubusercontent.com", "repository": "acme/web.app", "repository_owner": "acme",
	}, "github-actions", "0:0", ModeRead, `labels {} filters [{repo=~"acme/web\\.app(/.*)?"}]`},
	{"kubernetes service account", map[string]any{
		"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:team-dev:vmagent",
		"kubernetes.io": map[string]any{"namespace": "team-dev", "serviceaccount": map[string]any{"name": "vmagent", "uid": "u"}},
	}, "k8s-vmagent", "0:0", ModeWrite, `labels {team="dev"} filters []`},
}

func TestPolicyProviders(t *testing.T) {
	v, clk := policyVerifier(t, "testdata/policies.yaml")
	for _, tc := range providerTokens {
		a, err := v.Verify(policyToken(t, clk, tc.claims))
		if err != nil {
			t.Errorf("%s: %s", tc.name, err)
			continue
		}
		if a.Policy != tc.policy || a.Tenant.String() != tc.tenant || a.Mode != tc.mode || a.Enforcer.String() != tc.enforce {
			t.Errorf("%s: policy %q tenant %s mode %s enforcer %s; want %q %s %s %s", tc.name, a.Policy, a.Tenant, a.Mode, a.Enforcer, tc.policy, tc.tenant, tc.mode, tc.enforce)
		}
		if a.Claims["iss"] != tc.claims["iss"] {
			t.Errorf("%s: Access.Claims lack the token's claims: %v", tc.name, a.Claims)
		}
	}
}

func TestPolicyRefusals(t *testing.T) {
	v, clk := policyVerifier(t, "testdata/policies.yaml")
	okta := func(team any) map[string]any {
		return map[string]any{"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"metrics-dev"}, "team": team}
	}
	google := func(email any) map[string]any {
		return map[string]any{"iss": "https://accounts.google.com", "hd": "acme.example", "email_verified": true, "email": email}
	}
	for _, tc := range []struct {
		name   string
		claims map[string]any
		reason string
		msg    string
	}{
		{"no claims at all", map[string]any{"sub": "x"}, reasonNoPolicyMatch, "no access policy matches"},
		{"issuer of another realm", map[string]any{"iss": "https://sso.example.com/realms/other", "groups": []any{"/metrics/dev"}}, reasonNoPolicyMatch, ""},
		{"group not a member", map[string]any{"iss": "https://sso.example.com/realms/acme", "groups": []any{"/metrics/devops"}}, reasonNoPolicyMatch, ""},
		// Anchored: =~metrics-(qa|stage) must not match inside a longer value.
		{"regexp would match a part", map[string]any{"https://acme.example/groups": []any{"not-metrics-qa", "metrics-qa-admins"}}, reasonNoPolicyMatch, ""},
		{"alternation is anchored as a whole", map[string]any{"tid": "72f988bf-86f1-41af-91ab-2d7cd011db47", "groups": []any{"x0f9e6f4c-6a1d-4f3b-9d59-0c2d5a0d1e11"}}, reasonNoPolicyMatch, ""},
		{"matched claim is an object", map[string]any{"https://acme.example/groups": map[string]any{"a": "metrics-qa"}}, reasonNoPolicyMatch, ""},
		{"boolean compared by its JSON text", map[string]any{"iss": "https://accounts.google.com", "hd": "acme.example", "email_verified": "yes", "email": "a@b"}, reasonNoPolicyMatch, ""},
		{"k8s namespace of another team", map[string]any{"kubernetes.io": map[string]any{"namespace": "team-ops", "serviceaccount": map[string]any{"name": "vmagent"}}}, reasonNoPolicyMatch, ""},
		{"template claim missing", okta(nil), reasonPolicyClaim, `{{claim "team"}}: the claim team is missing`},
		{"template claim empty", okta(""), reasonPolicyClaim, "is empty"},
		{"template claim a list", okta([]any{"dev"}), reasonPolicyClaim, "is a list, not a string"},
		{"template claim a number", okta(7), reasonPolicyClaim, "is a number, not a string"},
		{"template claim a boolean", okta(true), reasonPolicyClaim, "is a boolean, not a string"},
		{"template claim with a quote", okta(`dev"}`), reasonPolicyClaim, "has a quote, a brace or a backslash"},
		{"template claim with a brace", okta("dev{"), reasonPolicyClaim, "has a quote, a brace or a backslash"},
		{"template claim with a backslash", okta(`dev\`), reasonPolicyClaim, "has a quote, a brace or a backslash"},
		{"template claim with a newline", okta("dev\n"), reasonPolicyClaim, "control character"},
		{"template claim too long", okta(strings.Repeat("d", 2000)), reasonPolicyClaim, "longer than"},
		{"filter claim breaking out of the string", google(`x"} or {owner=~".*`), reasonPolicyClaim, "has a quote"},
		{"filter claim with a single quote", google(`x'`), reasonPolicyClaim, "has a quote"},
		{"filter claim missing", google(nil), reasonPolicyClaim, "the claim email is missing"},
	} {
		claims := map[string]any{}
		for k, v := range tc.claims {
			if v != nil {
				claims[k] = v
			}
		}
		_, err := v.Verify(policyToken(t, clk, claims))
		if reasonOf(t, err) != tc.reason {
			t.Errorf("%s: %v (reason %q), want reason %q", tc.name, err, reasonOf(t, err), tc.reason)
			continue
		}
		var e *Error
		errors.As(err, &e)
		if e.HTTPStatus() != http.StatusForbidden || !strings.Contains(e.WWWAuthenticate(), `error="insufficient_scope"`) {
			t.Errorf("%s: status %d, WWW-Authenticate %q", tc.name, e.HTTPStatus(), e.WWWAuthenticate())
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %q does not say %q", tc.name, err, tc.msg)
		}
		// A refusal never repeats the token's claim values.
		for _, val := range tc.claims {
			if s, ok := val.(string); ok && len(s) > 2 && strings.Contains(err.Error(), s) && !strings.HasPrefix(s, "https://") {
				t.Errorf("%s: the refusal %q shows the claim value %q", tc.name, err, s)
			}
		}
	}
}

func TestPolicyOwnAccessAndIgnoreTokenAccess(t *testing.T) {
	own := map[string]any{"iss": "https://sso.example.com/realms/acme", "groups": []any{"/metrics/dev"},
		"vm_access": map[string]any{"mode": 0, "tenant_id": map[string]any{"account_id": 99}}}
	v, clk := policyVerifier(t, "testdata/policies.yaml")
	a, err := v.Verify(policyToken(t, clk, own))
	if err != nil || a.Policy != "" || a.Tenant.AccountID != 99 {
		t.Fatalf("a token's own vm_access must win without -auth.policy.ignoreTokenAccess: %+v %v", a, err)
	}
	v, clk = policyVerifier(t, "testdata/policies.yaml", func(c *Config) { c.IgnoreTokenAccess = true })
	a, err = v.Verify(policyToken(t, clk, own))
	if err != nil || a.Policy != "keycloak-dev" || a.Tenant.AccountID != 15 || a.Mode != ModeRead {
		t.Fatalf("with -auth.policy.ignoreTokenAccess the policy decides: %+v %v", a, err)
	}
	own["groups"] = []any{"/nothing"}
	if _, err := v.Verify(policyToken(t, clk, own)); reasonOf(t, err) != reasonNoPolicyMatch || !strings.Contains(err.Error(), "ignoreTokenAccess") {
		t.Fatalf("with -auth.policy.ignoreTokenAccess and no match: %v", err)
	}
	if _, err := newVerifier(Config{SkipVerify: true, IgnoreTokenAccess: true}, time.Now); err == nil || !strings.Contains(err.Error(), "-auth.policyFile") {
		t.Fatalf("-auth.policy.ignoreTokenAccess without a policy file: %v", err)
	}
	// Without a policy file, a token without vm_access is refused as before: 401.
	v2 := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}}, clk)
	if _, err := v2.Verify(policyToken(t, clk, map[string]any{"groups": []any{"/metrics/dev"}})); reasonOf(t, err) != reasonMissingVMAccess {
		t.Fatalf("no policy file: %v", err)
	}
}

func TestPolicyFileErrors(t *testing.T) {
	const file = `policies:
  - name: ok
    match: {groups: a}
    vm_access: {mode: 1}
  - name: ok
    match: {groups: a}
    vm_access: {mode: 1}
  - match: {groups: a}
    vm_access: {mode: 1}
  - name: "bad name!"
    match: {groups: a}
    vm_access: {mode: 1}
  - name: no-match
    vm_access: {mode: 1}
  - name: empty-match
    match: {}
    vm_access: {mode: 1}
  - name: bad-path
    match: {"a..b": x}
    vm_access: {mode: 1}
  - name: bad-regexp
    match: {groups: "=~("}
    vm_access: {mode: 1}
  - name: number-spelling
    match: {tid: 0x10}
    vm_access: {mode: 1}
  - name: no-mode
    match: {groups: a}
    vm_access: {extra_labels: {team: a}}
  - name: string-mode
    match: {groups: a}
    vm_access: {mode: "1"}
  - name: template-in-name
    match: {groups: a}
    vm_access: {extra_labels: {'{{claim "n"}}': a}, mode: 1}
  - name: unknown-template
    match: {groups: a}
    vm_access: {extra_labels: {team: '{{env "HOME"}}'}, mode: 1}
  - name: template-outside-quotes
    match: {groups: a}
    vm_access: {extra_filters: ['{{claim "f"}}'], mode: 1}
  - name: template-in-label-name
    match: {groups: a}
    vm_access: {extra_filters: ['{"{{claim "f"}}"="x"}'], mode: 1}
  - name: empty-label
    match: {groups: a}
    vm_access: {extra_labels: {team: ""}, mode: 1}
  - name: tenant-label
    match: {groups: a}
    vm_access: {extra_labels: {vm_account_id: '{{claim "a"}}'}, mode: 1}
  - name: bad-filter
    match: {groups: a}
    vm_access: {extra_filters: ['sum(x{a="{{claim "a"}}"})'], mode: 1}
  - name: unknown-key
    match: {groups: a}
    vm_access: {mode: 1}
    tenant: 5
  - name: as-string
    match: {groups: a}
    vm_access: '{"mode":1}'
`
	_, err := parsePolicies([]byte(file), "p.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`p.yaml:5: duplicate policy name "ok"`,
		"p.yaml:8: the policy has no name",
		`p.yaml:10: name: want letters`,
		`p.yaml:13: policy "no-match": no match`,
		`p.yaml:16: policy "empty-match": match: no entries`,
		`p.yaml:19: policy "bad-path": match: unexpected`,
		`p.yaml:22: policy "bad-regexp": match groups: invalid regexp`,
		`p.yaml:25: policy "number-spelling": match tid: want a string`,
		`p.yaml:29: policy "no-mode": vm_access: no mode`,
		`p.yaml:32: policy "string-mode": vm_access.mode: must be an integer`,
		`policy "template-in-name": vm_access: the label name "{{claim \"n\"}}" has a template`,
		`policy "unknown-template": vm_access: the label team: unknown template`,
		`policy "template-outside-quotes": vm_access: extra filter #1: the filter "{{claim \"f\"}}": a template must stand inside the quoted value`,
		`policy "template-in-label-name": vm_access: extra filter #1`,
		`policy "empty-label": vm_access: invalid extra label "team=": the value is empty`,
		`policy "tenant-label": vm_access: invalid extra label`,
		`policy "bad-filter": vm_access: extra filter #1`,
		`unknown key "tenant"`,
		`policy "as-string": vm_access: want a mapping`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the errors lack %q:\n%s", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n  p.yaml:"); n != 19 {
		t.Errorf("%d errors listed, want 19:\n%s", n, err)
	}
	for _, tc := range []struct{ text, want string }{
		{"", "is empty"},
		{"# only a comment\n", "is empty"},
		{"policies: {}", "want a list"},
		{"rules: []", `unknown key "rules"`},
		{"[]", "want a mapping"},
		{"policies: []\n---\npolicies: []", "a second YAML document"},
		{"policies: [", "cannot parse"},
	} {
		if _, err := parsePolicies([]byte(tc.text), "p.yaml"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
	set, err := parsePolicies([]byte("policies: []"), "p.yaml")
	if err != nil || len(set.policies) != 0 {
		t.Errorf("an empty list of policies: %v", err)
	}
	// Unquoted JSON-spelt numbers and booleans are their text.
	set, err = parsePolicies([]byte("policies:\n- {name: a, match: {n: 15, b: true, f: 1.5}, vm_access: {mode: 1}}"), "p.yaml")
	if err != nil || set.policies[0].match[0].exact != "15" || set.policies[0].match[1].exact != "true" || set.policies[0].match[2].exact != "1.5" {
		t.Errorf("numbers and booleans as match values: %v", err)
	}
}

func TestPolicyTemplateExpansion(t *testing.T) {
	for _, tc := range []struct {
		filter, value, want string
	}{
		{`{team="{{claim "t"}}"}`, "dev", `{team="dev"}`},
		{`{team="team-{{ claim "t" }}"}`, "dev", `{team="team-dev"}`},
		{`{team=~"{{claim "t"}}|shared"}`, "a.b*", `{team=~"a\\.b\\*|shared"}`},
		{`{team!~"{{claim "t"}}"}`, "x+y", `{team!~"x\\+y"}`},
		{"{team='{{claim `t`}}'}", "dev", `{team="dev"}`},
		{`up{team="{{claim "t"}}" or owner="{{claim "t"}}"}`, "d", `up{team="d" or owner="d"}`},
		{`{a="{{claim "t"}}{{claim "t"}}"}`, "é|ü", `{a="é|ü"}` + ""},
	} {
		ft, err := parseFilterTemplate(tc.filter)
		if err != nil {
			t.Errorf("%s: %s", tc.filter, err)
			continue
		}
		cv := claimValues{}
		if err := cv.resolve(ft.t, map[string]any{"t": tc.value}); err != nil {
			t.Errorf("%s: %s", tc.filter, err)
			continue
		}
		want := tc.want
		if tc.value == "é|ü" {
			want = `{a="é|üé|ü"}`
		}
		if got := ft.expand(cv); got != want {
			t.Errorf("%s with %q: %s, want %s", tc.filter, tc.value, got, want)
		}
	}
	for _, bad := range []string{`{{claim "t"}}`, `{team={{claim "t"}}}`, `{{{claim "t"}}="x"}`, `{a="{{claim t}}"}`, `{a="{{claim "t"}"}`, `{a="{{ claim "a..b" }}"}`, "{a=`{{claim \"t\"}}`\x00}"} {
		if _, err := parseFilterTemplate(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestPolicyReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("policies:\n- {name: dev, match: {groups: dev}, vm_access: {extra_labels: {team: dev}, mode: 1}}\n")
	v, clk := policyVerifier(t, path)
	tok := policyToken(t, clk, map[string]any{"groups": []any{"dev"}})
	matches := metrics.GetOrCreateCounter(`vmgateway_auth_policy_matches_total{policy="dev"}`)
	before := matches.Get()
	var old *Access
	for range 3 {
		a, err := v.Verify(tok)
		if err != nil || a.Policy != "dev" {
			t.Fatalf("before reload: %+v %v", a, err)
		}
		old = a
	}
	if got := matches.Get() - before; got != 3 {
		t.Errorf("vmgateway_auth_policy_matches_total{policy=\"dev\"} rose by %d for 3 requests (2 of them cached), want 3", got)
	}
	reloadErrs := metrics.GetOrCreateCounter(`vmgateway_auth_policy_config_reloads_total{status="error"}`)
	errsBefore := reloadErrs.Get()
	// An invalid file: every problem with its line, counted, and the previous policies stay.
	write("policies:\n- {name: dev, match: {groups: dev}, vm_access: {extra_labels: {team: ops}, mode: 1}}\n- {name: x, match: {}, vm_access: {mode: 1}}\n- {name: y, match: {g: a}}\n")
	err := v.ReloadPolicies()
	if err == nil || !strings.Contains(err.Error(), "previous policies stay") || !strings.Contains(err.Error(), "policies.yaml:3:") || !strings.Contains(err.Error(), "policies.yaml:4:") {
		t.Fatalf("invalid reload: %v", err)
	}
	if reloadErrs.Get() != errsBefore+1 {
		t.Errorf("the failed reload was not counted")
	}
	if a, err := v.Verify(tok); err != nil || a.Enforcer.String() != `labels {team="dev"} filters []` {
		t.Fatalf("after an invalid reload the previous policy must stay: %+v %v", a, err)
	}
	// A valid file takes effect at once, for cached tokens too.
	if v.cache.len() == 0 {
		t.Fatal("nothing cached: the reload below would prove nothing")
	}
	write("policies:\n- {name: dev, match: {groups: dev}, vm_access: {extra_labels: {team: ops}, mode: 2}}\n")
	if err := v.ReloadPolicies(); err != nil {
		t.Fatal(err)
	}
	if n := v.cache.len(); n != 0 {
		t.Errorf("%d verified tokens still cached after new policies were loaded", n)
	}
	// A verification that began under the old policies may cache its verdict after the reload emptied the
	// cache: that verdict is not reused.
	v.cache.put(tok, old, minInt64, clk.now().Add(time.Hour).UnixNano())
	if a, err := v.Verify(tok); err != nil || a.Mode != ModeWrite || a.Enforcer.String() != `labels {team="ops"} filters []` {
		t.Fatalf("after a valid reload the cached token must be judged by the new policy: %+v %v", a, err)
	}
	write("policies: []\n")
	if err := v.ReloadPolicies(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); reasonOf(t, err) != reasonNoPolicyMatch {
		t.Fatalf("a policy removed by a reload still grants: %v", err)
	}
	// The periodic check: a changed file is picked up without a signal.
	write("policies:\n- {name: dev, match: {groups: dev}, vm_access: {mode: 1}}\n")
	v2, clk2 := policyVerifier(t, path, func(c *Config) { c.PolicyCheckInterval = 10 * time.Millisecond })
	tok2 := policyToken(t, clk2, map[string]any{"groups": []any{"dev"}})
	write("policies:\n- {name: dev, match: {groups: dev}, vm_access: {mode: 2}}\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := v2.Verify(tok2)
		if err == nil && a.Mode == ModeWrite {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("-auth.policyCheckInterval did not reload the file: %+v %v", a, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := ValidatePolicyFile(path); err != nil {
		t.Errorf("ValidatePolicyFile of a valid file: %v", err)
	}
	write("policies: [1]")
	if err := ValidatePolicyFile(path); err == nil || !strings.Contains(err.Error(), ":1: want a policy") {
		t.Errorf("ValidatePolicyFile of an invalid file: %v", err)
	}
	if _, err := newVerifier(Config{SkipVerify: true, PolicyFile: path}, time.Now); err == nil {
		t.Errorf("the gateway starts with an invalid policy file")
	}
	if _, err := newVerifier(Config{SkipVerify: true, PolicyFile: path + ".missing"}, time.Now); err == nil || !strings.Contains(err.Error(), "cannot read the policy file") {
		t.Errorf("a missing policy file: %v", err)
	}
}

func TestPolicyExplain(t *testing.T) {
	v, clk := policyVerifier(t, "testdata/policies.yaml")
	tok := policyToken(t, clk, map[string]any{"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"metrics-dev"}})
	verdicts, consulted, err := v.ExplainPolicies(tok)
	if err != nil || !consulted || len(verdicts) != 5 {
		t.Fatalf("%+v %v %v", verdicts, consulted, err)
	}
	for i, want := range []string{
		"iss: the claim's value is not \"https://sso.example.com/realms/acme\"",
		"iss: the claim's value is not \"https://sso.example.com/realms/acme\"",
		"tid: the claim tid is missing",
		"tid: the claim tid is missing",
	} {
		if verdicts[i].Matched || verdicts[i].Failed != want {
			t.Errorf("verdict %d: %+v, want failed %q", i, verdicts[i], want)
		}
	}
	last := verdicts[4]
	if !last.Matched || last.Policy != "okta-teams" || !strings.Contains(last.Unusable, "the claim team is missing") {
		t.Errorf("the matching policy: %+v", last)
	}
	own := policyToken(t, clk, map[string]any{"vm_access": map[string]any{"mode": 1}})
	if _, consulted, err := v.ExplainPolicies(own); consulted || err != nil {
		t.Errorf("a token with its own vm_access: consulted %v %v", consulted, err)
	}
}

func BenchmarkPolicyVerify(b *testing.B) {
	v, clk := policyVerifier(b, "testdata/policies.yaml", func(c *Config) { c.CacheSize = 0 })
	tok := policyToken(b, clk, providerTokens[len(providerTokens)-1].claims)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPolicyAccess is the policies' share of verifying a token without vm_access (on a cache miss): the
// claims run through the ten policies of testdata/policies.yaml, for the last policy (static access) and for one
// whose filter takes a claim (the enforcer is built per token).
func BenchmarkPolicyAccess(b *testing.B) {
	v, _ := policyVerifier(b, "testdata/policies.yaml")
	for _, name := range []string{"kubernetes service account", "github actions"} {
		var claims map[string]any
		for _, tc := range providerTokens {
			if tc.name == name {
				claims = tc.claims
			}
		}
		c, e := parseClaims([]byte(mustJSON(b, jwt.MapClaims(mergeClaims(claims, map[string]any{"exp": int64(4102444800)})))))
		if e != nil {
			b.Fatal(e)
		}
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.access(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mergeClaims(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestPolicyMatchWhy(t *testing.T) {
	set, err := parsePolicies([]byte("policies:\n- {name: a, match: {groups: dev, '\"x.y\".z': '=~a|b'}, vm_access: {mode: 1}}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	groups, xyz := &set.policies[0].match[0], &set.policies[0].match[1]
	for _, tc := range []struct {
		m      *matcher
		claims map[string]any
		holds  bool
		why    string
	}{
		{groups, map[string]any{"groups": []any{"ops", 7, map[string]any{}, "dev"}}, true, ""},
		{groups, map[string]any{"groups": []any{"ops", "devs"}}, false, `no element of the list is "dev"`},
		{groups, map[string]any{"groups": "devops"}, false, `the claim's value is not "dev"`},
		{groups, map[string]any{"groups": map[string]any{"dev": true}}, false, "the claim is an object; want a string, number, boolean or list"},
		{groups, map[string]any{}, false, "the claim groups is missing"},
		{xyz, map[string]any{"x.y": map[string]any{"z": "b"}}, true, ""},
		{xyz, map[string]any{"x.y": map[string]any{"z": "ab"}}, false, `the claim's value does not match "=~a|b"`},
		{xyz, map[string]any{"x.y": map[string]any{"z": []any{"c"}}}, false, `no element of the list matches "=~a|b"`},
		{xyz, map[string]any{"x.y": "z"}, false, `the claim "x.y" is a string, not an object`},
		{xyz, map[string]any{"x": map[string]any{"y": map[string]any{"z": "a"}}}, false, `the claim "x.y" is missing`},
	} {
		if got := tc.m.holds(tc.claims); got != tc.holds {
			t.Errorf("%s with %v: holds %v", tc.m.path, tc.claims, got)
		}
		if !tc.holds {
			if got := tc.m.why(tc.claims); got != tc.why {
				t.Errorf("%s with %v: why %q, want %q", tc.m.path, tc.claims, got, tc.why)
			}
		}
	}
}

// TestPolicyScalarClaims: numbers and booleans in a token are compared by their JSON text, as the token spells them.
func TestPolicyScalarClaims(t *testing.T) {
	path := writeFile(t, "p.yaml", []byte("policies:\n- {name: a, match: {project_id: 15, email_verified: true, ratio: '0.5'}, vm_access: {mode: 1}}\n"))
	v, clk := policyVerifier(t, path)
	for _, tc := range []struct {
		payload string
		ok      bool
	}{
		{`{"project_id":15,"email_verified":true,"ratio":0.5}`, true},
		{`{"project_id":[3,15],"email_verified":true,"ratio":0.5}`, true},
		{`{"project_id":"15","email_verified":"true","ratio":"0.5"}`, true},
		{`{"project_id":15.0,"email_verified":true,"ratio":0.5}`, false},
		{`{"project_id":1.5e1,"email_verified":true,"ratio":0.5}`, false},
		{`{"project_id":15,"email_verified":false,"ratio":0.5}`, false},
		{`{"project_id":15,"email_verified":true,"ratio":0.50}`, false},
	} {
		payload := strings.TrimSuffix(tc.payload, "}") + `,"exp":` + strconv.FormatInt(clk.now().Add(time.Hour).Unix(), 10) + "}"
		tok := rawToken(`{"alg":"HS256","typ":"JWT"}`, payload, nil)
		tok = signHS256Raw(t, tok)
		_, err := v.Verify(tok)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want accepted %v", tc.payload, err, tc.ok)
		}
	}
}

// signHS256Raw signs the header and payload of an unsigned token as they are, keeping the exact JSON spelling of
// its numbers.
func signHS256Raw(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	input := parts[0] + "." + parts[1]
	sig, err := jwt.SigningMethodHS256.Sign(input, hmacSecret())
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}
