package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issue 17: tokens as identity providers issue them, without vm_access, get their access from -auth.policyFile.
// Each provider signs with its own key, published as JWKS by a fake provider the gateway fetches from.

// idp is a fake identity provider: a signing key published at its JWKS path.
type idp struct {
	name   string
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

var policyIdPs = sync.OnceValue(func() map[string]*idp {
	rsaKey := func() crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	ecKey := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	m := map[string]*idp{}
	for _, p := range []idp{
		{name: "keycloak", method: jwt.SigningMethodRS256, key: rsaKey()},
		{name: "entra", method: jwt.SigningMethodRS256, key: rsaKey()},
		{name: "okta", method: jwt.SigningMethodES256, key: ecKey()},
		{name: "auth0", method: jwt.SigningMethodES256, key: ecKey()},
		{name: "google", method: jwt.SigningMethodES256, key: ecKey()},
		{name: "gitlab", method: jwt.SigningMethodES256, key: ecKey()},
		{name: "github", method: jwt.SigningMethodES256, key: ecKey()},
		{name: "kubernetes", method: jwt.SigningMethodRS256, key: rsaKey()},
		{name: "stranger", method: jwt.SigningMethodES256, key: ecKey()}, // published nowhere
	} {
		p.kid = p.name + "-key-1"
		m[p.name] = &p
	}
	return m
})

// jwksServer publishes each provider's key at /<name>/jwks (not the stranger's) and returns the JWKS URLs.
func jwksServer(t *testing.T) []string {
	t.Helper()
	mux := http.NewServeMux()
	var urls []string
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for name, p := range policyIdPs() {
		if name == "stranger" {
			continue
		}
		body, err := json.Marshal(map[string]any{"keys": []any{policyJWK(t, p)}})
		if err != nil {
			t.Fatal(err)
		}
		mux.HandleFunc("/"+name+"/jwks", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		})
		urls = append(urls, srv.URL+"/"+name+"/jwks")
	}
	sort.Strings(urls)
	return urls
}

func policyJWK(t *testing.T, p *idp) map[string]any {
	t.Helper()
	e := b64
	m := map[string]any{"kid": p.kid, "use": "sig", "alg": p.method.Alg()}
	switch k := p.key.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", e.EncodeToString(k.N.Bytes()), e.EncodeToString(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", e.EncodeToString(b[1:33]), e.EncodeToString(b[33:])
	}
	return m
}

// idpToken signs claims (an hour of validity is added) with the named provider's key.
func idpToken(t *testing.T, provider string, claims map[string]any) string {
	t.Helper()
	p := policyIdPs()[provider]
	c := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for k, v := range claims {
		c[k] = v
	}
	tok := jwt.NewWithClaims(p.method, c)
	tok.Header["kid"] = p.kid
	s, err := tok.SignedString(p.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// e2ePolicies maps each provider's claims to a team; reads and writes are confined to it.
const e2ePolicies = `policies:
  - name: keycloak
    match:
      iss: https://sso.example.com/realms/acme
      groups: /metrics/keycloak
    vm_access: {extra_labels: {team: keycloak}, mode: 0}
  - name: keycloak-viewer
    match:
      iss: https://sso.example.com/realms/acme
      realm_access.roles: metrics-viewer
    vm_access: {extra_labels: {team: keycloak}, mode: 1}
  - name: entra
    match:
      tid: 72f988bf-86f1-41af-91ab-2d7cd011db47
      roles: Metrics.ReadWrite
    vm_access: {extra_labels: {team: entra}, mode: 0}
  - name: entra-group-readers
    match:
      tid: 72f988bf-86f1-41af-91ab-2d7cd011db47
      groups: =~0f9e6f4c-6a1d-4f3b-9d59-0c2d5a0d1e11|5a1b2c3d-0000-4000-8000-00000000abcd
    vm_access: {extra_labels: {team: entra}, mode: 1}
  - name: okta
    match:
      iss: https://acme.okta.com/oauth2/default
      groups: =~metrics-.+
    vm_access: {extra_labels: {team: '{{claim "team"}}'}, mode: 0}
  - name: auth0
    match:
      '"https://acme.example/groups"': =~metrics-(qa|stage)
    vm_access: {extra_labels: {team: '{{claim ` + "`" + `"https://acme.example/team"` + "`" + `}}'}, mode: 0}
  - name: google
    match:
      iss: https://accounts.google.com
      hd: acme.example
      email_verified: true
    vm_access: {extra_labels: {team: google, owner: '{{claim "email"}}'}, mode: 0}
  - name: gitlab-ci
    match:
      iss: https://gitlab.example.com
      namespace_path: =~acme(/.+)?
      ref_protected: "true"
    vm_access: {extra_labels: {team: gitlab, project: '{{claim "project_path"}}'}, mode: 0}
  - name: github-actions
    match:
      iss: https://token.actions.githubusercontent.com
      repository_owner: acme
    vm_access:
      extra_labels: {team: github}
      extra_filters: ['{repo=~"{{claim "repository"}}(/.*)?"}']
      mode: 0
  - name: k8s-vmagent
    match:
      '"kubernetes.io".namespace': team-k8s
      '"kubernetes.io".serviceaccount.name': vmagent
    vm_access: {extra_labels: {team: k8s}, mode: 2}
`

func writePolicyFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// policyCase is a provider's token and exactly what its policy lets it do.
type policyCase struct {
	name     string
	provider string
	claims   map[string]any
	writes   string   // import lines, written with the token
	canWrite bool     // the write is accepted (else 403)
	reads    []string // the series `policy_e2e` returns to the token, as sorted label lists; nil: reading is refused
}

var policyCases = []policyCase{
	{"keycloak group", "keycloak", map[string]any{
		"iss": "https://sso.example.com/realms/acme", "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "preferred_username": "alice",
		"groups": []any{"/staff", "/metrics/keycloak"}, "realm_access": map[string]any{"roles": []any{"offline_access"}},
	}, `policy_e2e{case="keycloak"} 1`, true, []string{"case=keycloak,team=keycloak"}},
	{"keycloak realm role (read only)", "keycloak", map[string]any{
		"iss": "https://sso.example.com/realms/acme", "groups": []any{"/staff"},
		"realm_access": map[string]any{"roles": []any{"offline_access", "metrics-viewer"}},
	}, `policy_e2e{case="keycloak-viewer"} 1`, false, []string{"case=keycloak,team=keycloak"}},
	{"entra app role", "entra", map[string]any{
		"iss": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
		"oid": "3f1b0c6e-0000-4000-8000-000000000001", "roles": []any{"Metrics.ReadWrite"},
	}, `policy_e2e{case="entra"} 1`, true, []string{"case=entra,team=entra"}},
	{"entra group GUID (read only)", "entra", map[string]any{
		"iss": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
		"groups": []any{"11111111-2222-3333-4444-555555555555", "5a1b2c3d-0000-4000-8000-00000000abcd"},
	}, `policy_e2e{case="entra-group"} 1`, false, []string{"case=entra,team=entra"}},
	{"okta dev", "okta", map[string]any{
		"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"Everyone", "metrics-dev"}, "team": "okta-dev",
	}, `policy_e2e{case="okta-dev"} 1`, true, []string{"case=okta-dev,team=okta-dev"}},
	{"okta ops", "okta", map[string]any{
		"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"metrics-ops"}, "team": "okta-ops",
	}, `policy_e2e{case="okta-ops"} 1`, true, []string{"case=okta-ops,team=okta-ops"}},
	{"auth0 namespaced claims", "auth0", map[string]any{
		"iss": "https://acme.eu.auth0.com/", "sub": "auth0|5f7c", "https://acme.example/groups": []any{"metrics-stage"},
		"https://acme.example/team": "qa",
	}, `policy_e2e{case="auth0"} 1`, true, []string{"case=auth0,team=qa"}},
	{"google bob", "google", map[string]any{
		"iss": "https://accounts.google.com", "hd": "acme.example", "email": "bob@acme.example", "email_verified": true,
	}, `policy_e2e{case="google-bob"} 1`, true, []string{"case=google-bob,owner=bob@acme.example,team=google"}},
	{"google carol", "google", map[string]any{
		"iss": "https://accounts.google.com", "hd": "acme.example", "email": "carol@acme.example", "email_verified": true,
	}, `policy_e2e{case="google-carol"} 1`, true, []string{"case=google-carol,owner=carol@acme.example,team=google"}},
	{"gitlab ci", "gitlab", map[string]any{
		"iss": "https://gitlab.example.com", "namespace_path": "acme/platform", "project_path": "acme/platform/api",
		"ref": "main", "ref_protected": "true", "pipeline_source": "push",
	}, `policy_e2e{case="gitlab"} 1`, true, []string{"case=gitlab,project=acme/platform/api,team=gitlab"}},
	// The filter's template is escaped for the regexp: the dot in web.app matches a dot only.
	{"github actions", "github", map[string]any{
		"iss": "https://token.actions.githubusercontent.com", "repository": "acme/web.app", "repository_owner": "acme",
		"ref": "refs/heads/main", "workflow": "deploy",
	}, "policy_e2e{case=\"github\",repo=\"acme/web.app\"} 1\npolicy_e2e{case=\"github\",repo=\"acme/web.app/sub\"} 1\n" +
		"policy_e2e{case=\"github\",repo=\"acme/webXapp\"} 1\npolicy_e2e{case=\"github\",repo=\"evil/web.app\"} 1",
		true, []string{"case=github,repo=acme/web.app,team=github", "case=github,repo=acme/web.app/sub,team=github"}},
	{"kubernetes vmagent (write only)", "kubernetes", map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:team-k8s:vmagent",
		"aud": []any{"vmgateway"}, "kubernetes.io": map[string]any{
			"namespace": "team-k8s", "serviceaccount": map[string]any{"name": "vmagent", "uid": "9c4d"}, "pod": map[string]any{"name": "vmagent-0"},
		},
	}, `policy_e2e{case="k8s"} 1`, true, nil},
}

// policySeries queries q with tok and returns each series' labels (without __name__) as sorted name=value lists.
func policySeries(t *testing.T, g *gw, tok, q string) (int, []string, string) {
	t.Helper()
	code, _, body := do(t, "GET", g.URL+"/api/v1/query?query="+url.QueryEscape(q), nil, bearer(tok)...)
	if code != 200 {
		return code, nil, body
	}
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("query %s: %s: %s", q, err, body)
	}
	var out []string
	for _, r := range resp.Data.Result {
		var ls []string
		for k, v := range r.Metric {
			if k != "__name__" {
				ls = append(ls, k+"="+v)
			}
		}
		sort.Strings(ls)
		out = append(out, strings.Join(ls, ","))
	}
	sort.Strings(out)
	return code, out, body
}

// TestPolicyProvidersAgainstVictoriaMetrics: every provider's token writes and reads a real VictoriaMetrics with
// exactly the access its policy gives, and nothing more.
func TestPolicyProvidersAgainstVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	jwks := jwksServer(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth",
		"-auth.jwksEndpoints="+strings.Join(jwks, ","), "-auth.policyFile="+writePolicyFile(t, e2ePolicies))
	// A token with its own vm_access keeps it: the operator's unrestricted token sees everything.
	admin := idpToken(t, "keycloak", map[string]any{"sub": "admin", "vm_access": map[string]any{"mode": 0}})

	wantAll := 0
	for _, tc := range policyCases {
		tok := idpToken(t, tc.provider, tc.claims)
		code, _, body := do(t, "POST", g.URL+"/api/v1/import/prometheus", strings.NewReader(tc.writes+"\n"), append(bearer(tok), "Content-Type", "text/plain")...)
		switch {
		case tc.canWrite && code != http.StatusNoContent:
			t.Errorf("%s: write: %d %s", tc.name, code, body)
		case !tc.canWrite && code != http.StatusForbidden:
			t.Errorf("%s: write: %d %s, want 403", tc.name, code, body)
		case tc.canWrite:
			wantAll += strings.Count(tc.writes, "\n") + 1
		}
	}
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		_, all, body := policySeries(t, g, admin, "policy_e2e")
		return len(all) == wantAll, fmt.Sprintf("%d series, want %d: %s", len(all), wantAll, body)
	})
	_, all, _ := policySeries(t, g, admin, "policy_e2e")
	t.Logf("stored: %s", strings.Join(all, " | "))
	for _, tc := range policyCases {
		tok := idpToken(t, tc.provider, tc.claims)
		code, got, body := policySeries(t, g, tok, "policy_e2e")
		if tc.reads == nil {
			if code != http.StatusForbidden {
				t.Errorf("%s: read: %d %s, want 403", tc.name, code, body)
			}
			continue
		}
		if code != 200 || !slices.Equal(got, tc.reads) {
			t.Errorf("%s: read %d %v, want exactly %v (%s)", tc.name, code, got, tc.reads, body)
		}
		// A client matcher for another team selects nothing: it is ANDed with the policy's labels.
		if _, other, _ := policySeries(t, g, tok, `policy_e2e{team="keycloak"} or policy_e2e{team="k8s"}`); tc.provider != "keycloak" && len(other) != 0 {
			t.Errorf("%s: reached other teams' series: %v", tc.name, other)
		}
	}
	if !slices.Contains(all, "case=k8s,team=k8s") {
		t.Errorf("the kubernetes service account's write was not stored with its team: %v", all)
	}
	for _, p := range []string{"keycloak", "okta", "google", "github-actions", "k8s-vmagent"} {
		if v := metricValue(t, g, fmt.Sprintf(`vmgateway_auth_policy_matches_total{policy=%q}`, p)); v < 1 {
			t.Errorf("vmgateway_auth_policy_matches_total{policy=%q} = %v", p, v)
		}
	}
}

// TestPolicyRefusals: every way a token can fail the policies is refused before anything reaches VictoriaMetrics,
// with its own reason, and without repeating the token's claim values.
func TestPolicyRefusals(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	jwks := jwksServer(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth",
		"-auth.jwksEndpoints="+strings.Join(jwks, ","), "-auth.policyFile="+writePolicyFile(t, e2ePolicies))
	okta := func(team any) map[string]any {
		return map[string]any{"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"metrics-dev"}, "team": team}
	}
	for _, tc := range []struct {
		name     string
		provider string
		claims   map[string]any
		code     int
		msg      string
	}{
		{"wrong issuer", "keycloak", map[string]any{"iss": "https://sso.example.com/realms/evil", "groups": []any{"/metrics/keycloak"}}, 403, "no access policy matches"},
		{"no match", "okta", map[string]any{"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"Everyone"}, "team": "okta-dev"}, 403, "no access policy matches"},
		{"regexp not anchored by accident", "auth0", map[string]any{"https://acme.example/groups": []any{"not-metrics-qa", "metrics-qa-admins"}, "https://acme.example/team": "qa"}, 403, "no access policy matches"},
		{"alternation anchored as a whole", "entra", map[string]any{"tid": "72f988bf-86f1-41af-91ab-2d7cd011db47", "groups": []any{"0f9e6f4c-6a1d-4f3b-9d59-0c2d5a0d1e11-x"}}, 403, "no access policy matches"},
		{"k8s service account of another namespace", "kubernetes", map[string]any{"kubernetes.io": map[string]any{"namespace": "team-ops", "serviceaccount": map[string]any{"name": "vmagent"}}}, 403, "no access policy matches"},
		{"email not verified", "google", map[string]any{"iss": "https://accounts.google.com", "hd": "acme.example", "email": "eve@acme.example", "email_verified": false}, 403, "no access policy matches"},
		{"template claim missing", "okta", okta(nil), 403, `{{claim \"team\"}}: the claim team is missing`},
		{"template claim empty", "okta", okta(""), 403, "is empty"},
		{"template claim a list", "okta", okta([]any{"okta-dev"}), 403, "is a list, not a string"},
		{"template claim a number", "okta", okta(42), 403, "is a number, not a string"},
		{"template claim with quotes", "okta", okta(`okta-dev",team="okta-ops`), 403, "has a quote, a brace or a backslash"},
		{"template claim with braces", "okta", okta("okta-dev}"), 403, "has a quote, a brace or a backslash"},
		{"filter claim breaking out of its string", "github", map[string]any{"iss": "https://token.actions.githubusercontent.com", "repository_owner": "acme", "repository": `x"} or {repo=~".*`}, 403, "has a quote"},
		{"signed by a key no JWKS publishes", "stranger", map[string]any{"iss": "https://sso.example.com/realms/acme", "groups": []any{"/metrics/keycloak"}}, 401, "unknown key id"},
	} {
		claims := map[string]any{}
		for k, v := range tc.claims {
			if v != nil {
				claims[k] = v
			}
		}
		tok := idpToken(t, tc.provider, claims)
		for _, r := range []struct{ method, path, body string }{
			{"GET", "/api/v1/query?query=up", ""},
			{"POST", "/api/v1/import/prometheus", "policy_e2e 1\n"},
		} {
			code, h, body := do(t, r.method, g.URL+r.path, strings.NewReader(r.body), bearer(tok)...)
			if code != tc.code {
				t.Errorf("%s: %s %s: %d %s, want %d", tc.name, r.method, r.path, code, body, tc.code)
				continue
			}
			typ, msg := decodeError(t, body)
			if !strings.Contains(body, tc.msg) {
				t.Errorf("%s: %q does not say %q", tc.name, msg, tc.msg)
			}
			if code == 403 && (typ != "forbidden" || !strings.Contains(h.Get("WWW-Authenticate"), `error="insufficient_scope"`)) {
				t.Errorf("%s: %q, WWW-Authenticate %q", tc.name, typ, h.Get("WWW-Authenticate"))
			}
			for _, v := range []string{"okta-dev", "metrics-qa", "evil", "team-ops", "eve@", "0f9e6f4c", "okta-ops"} {
				if strings.Contains(msg, v) {
					t.Errorf("%s: the refusal shows the claim value %q: %s", tc.name, v, msg)
				}
			}
		}
	}
	if reqs := rec.Requests(); len(reqs) != 0 {
		t.Errorf("%d refused requests reached the upstream, the first %s %s", len(reqs), reqs[0].Method, reqs[0].Path)
	}
	if v := metricValue(t, g, `vmgateway_auth_rejects_total{reason="no_policy_match"}`); v != 12 {
		t.Errorf(`vmgateway_auth_rejects_total{reason="no_policy_match"} = %v, want 12`, v)
	}
	if v := metricValue(t, g, `vmgateway_auth_rejects_total{reason="policy_claim"}`); v != 14 {
		t.Errorf(`vmgateway_auth_rejects_total{reason="policy_claim"} = %v, want 14`, v)
	}
}

// TestPolicyClusterMode: a policy's tenant picks the cluster tenant exactly as a token's vm_access does.
func TestPolicyClusterMode(t *testing.T) {
	sel, ins := vmtest.NewRecorder(t), vmtest.NewRecorder(t)
	jwks := jwksServer(t)
	policies := `policies:
  - name: keycloak-tenant
    match: {iss: https://sso.example.com/realms/acme, groups: /metrics/dev}
    vm_access: {tenant_id: {account_id: 15, project_id: 5}, extra_labels: {team: '{{claim "team"}}'}, mode: 0}
`
	g := startGateway(t, "-read.url="+sel.URL, "-write.url="+ins.URL, "-clusterMode", "-enable.auth",
		"-auth.jwksEndpoints="+strings.Join(jwks, ","), "-auth.policyFile="+writePolicyFile(t, policies))
	tok := idpToken(t, "keycloak", map[string]any{"iss": "https://sso.example.com/realms/acme", "groups": []any{"/metrics/dev"}, "team": "dev"})
	hostile := append(bearer(tok), "AccountID", "16", "ProjectID", "7")
	if code, _, body := do(t, "GET", g.URL+"/api/v1/query?query=up&extra_label=team=ops", nil, hostile...); code != 200 {
		t.Fatalf("read: %d %s", code, body)
	}
	r := sel.Requests()
	if len(r) != 1 || r[0].Path != "/select/15:5/prometheus/api/v1/query" || r[0].Query.Get("query") != `up{team="dev"}` ||
		!slices.Equal(r[0].Query["extra_label"], []string{"team=dev"}) || r[0].Header.Get("AccountID") != "" {
		t.Fatalf("read forwarded as %+v", r)
	}
	if code, _, body := do(t, "POST", g.URL+"/api/v1/import/prometheus?extra_label=team=ops", strings.NewReader("x 1\n"), hostile...); code != 200 {
		t.Fatalf("write: %d %s", code, body)
	}
	w := ins.Requests()
	if len(w) != 1 || w[0].Path != "/insert/15:5/prometheus/api/v1/import/prometheus" || !slices.Equal(w[0].Query["extra_label"], []string{"team=dev"}) {
		t.Fatalf("write forwarded as %+v", w)
	}
	// The tenant in the path must be the policy's.
	if code, _, _ := do(t, "GET", g.URL+"/select/16/prometheus/api/v1/query?query=up", nil, bearer(tok)...); code != 403 {
		t.Errorf("another tenant in the path: %d", code)
	}
	other := idpToken(t, "keycloak", map[string]any{"iss": "https://sso.example.com/realms/acme", "groups": []any{"/metrics/ops"}, "team": "dev"})
	if code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(other)...); code != 403 {
		t.Errorf("no policy matches: %d", code)
	}
	if n := len(sel.Requests()) + len(ins.Requests()); n != 0 {
		t.Errorf("%d refused requests were forwarded", n)
	}
}

// TestPolicyRateLimitClaimKey: per-identity limits keyed by a claim count the tokens a policy admits by that claim.
func TestPolicyRateLimitClaimKey(t *testing.T) {
	vm := vmtest.Start(t)
	jwks := jwksServer(t)
	limits := filepath.Join(t.TempDir(), "limits.yaml")
	if err := os.WriteFile(limits, []byte("limits:\n  - {type: queries, value: 2, key: claim:email}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth",
		"-auth.jwksEndpoints="+strings.Join(jwks, ","), "-auth.policyFile="+writePolicyFile(t, e2ePolicies),
		"-enable.rateLimit", "-ratelimit.config="+limits, "-datasource.url="+vm.URL)
	for _, email := range []string{"bob@acme.example", "carol@acme.example"} {
		tok := idpToken(t, "google", map[string]any{"iss": "https://accounts.google.com", "hd": "acme.example", "email": email, "email_verified": true})
		for i := 1; i <= 3; i++ {
			code, _, body := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
			if i <= 2 && code != 200 || i == 3 && (code != 429 || !strings.Contains(body, `claim:email=\"`+email+`\"`)) {
				t.Errorf("%s's request %d: %d %s", email, i, code, body)
			}
		}
	}
}

// TestPolicyReloadOnSIGHUP: a valid new file takes effect on SIGHUP, for tokens already seen too; an invalid one
// is logged with its lines and counted, and the previous policies stay.
func TestPolicyReloadOnSIGHUP(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	jwks := jwksServer(t)
	path := writePolicyFile(t, "policies:\n  - {name: dev, match: {groups: dev}, vm_access: {extra_labels: {team: dev}, mode: 1}}\n")
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth",
		"-auth.jwksEndpoints="+strings.Join(jwks, ","), "-auth.policyFile="+path)
	tok := idpToken(t, "okta", map[string]any{"groups": []any{"dev"}})
	read := func() int {
		code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
		return code
	}
	if code := read(); code != 200 {
		t.Fatalf("before reload: %d", code)
	}
	rewrite := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := g.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	rewrite("policies:\n  - {name: dev, match: {groups: dev}, vm_access: {extra_labels: {team: dev}, mode: 2}}\n")
	vmtest.Eventually(t, func() (bool, string) { return read() == 403, "the cached token still reads after the reload" })
	rewrite("policies:\n  - {name: dev, match: {groups: dev}, vm_access: {mode: 1}}\n  - {name: x, match: {}, vm_access: {mode: 1}}\n  - {name: y, match: {g: '=~('}, vm_access: {mode: 1}}\n")
	vmtest.Eventually(t, func() (bool, string) {
		return metricValue(t, g, `vmgateway_auth_policy_config_reloads_total{status="error"}`) == 1, g.logs.String()
	})
	for _, want := range []string{"cannot reload the policy file; the previous policies stay in force", "policies.yaml:3:", "policies.yaml:4:", "SIGHUP: keeping the previous access policies"} {
		if !g.logged(want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if code := read(); code != 403 {
		t.Errorf("after an invalid reload the previous (write-only) policy must stay: read %d", code)
	}
	if v := metricValue(t, g, `vmgateway_auth_policy_config_last_reload_successful`); v != 0 {
		t.Errorf("last_reload_successful = %v after a failed reload", v)
	}
}

// TestPolicyReloadFromURL: a policy file served over HTTP is re-read every -auth.policyCheckInterval.
func TestPolicyReloadFromURL(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	jwks := jwksServer(t)
	var content atomic.Value
	var status atomic.Int32
	content.Store("policies:\n  - {name: dev, match: {groups: dev}, vm_access: {mode: 1}}\n")
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte(content.Load().(string)))
	}))
	t.Cleanup(srv.Close)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth",
		"-auth.jwksEndpoints="+strings.Join(jwks, ","), "-auth.policyFile="+srv.URL+"/policies.yaml?token=secret", "-auth.policyCheckInterval=100ms")
	tok := idpToken(t, "okta", map[string]any{"groups": []any{"dev"}})
	read := func() int {
		code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
		return code
	}
	if code := read(); code != 200 {
		t.Fatalf("before reload: %d", code)
	}
	status.Store(500)
	vmtest.Eventually(t, func() (bool, string) {
		return metricValue(t, g, `vmgateway_auth_policy_config_reloads_total{status="error"}`) >= 1, g.logs.String()
	})
	if code := read(); code != 200 {
		t.Errorf("an unreachable policy URL dropped the policies: %d", code)
	}
	if strings.Contains(g.logs.String(), "secret") {
		t.Errorf("the logs show the policy URL's query")
	}
	content.Store("policies: []\n")
	status.Store(200)
	vmtest.Eventually(t, func() (bool, string) { return read() == 403, "the policy removed at the URL still grants" })
}

// TestPolicyValidateFlag: -auth.validatePolicyFile checks the file and exits 0 or 1 without starting.
func TestPolicyValidateFlag(t *testing.T) {
	good := writePolicyFile(t, e2ePolicies)
	out, err := exec.Command(gatewayBin, "-auth.validatePolicyFile", "-auth.policyFile="+good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Errorf("a valid file: %v\n%s", err, out)
	}
	bad := writePolicyFile(t, strings.Replace(e2ePolicies, "groups: /metrics/keycloak", "groups: '=~[' ", 1)+
		"  - {name: okta, match: {a: b}, vm_access: {mode: 1, extra_labels: {'{{claim \"x\"}}': v}}}\n")
	out, err = exec.Command(gatewayBin, "-auth.validatePolicyFile", "-auth.policyFile="+bad).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("an invalid file: %v\n%s", err, out)
	}
	for _, want := range []string{"2 errors in the policy file", "policies.yaml:5: policy \"keycloak\": match groups: invalid regexp", "policies.yaml:56: policy \"okta\": vm_access: the label name \"{{claim \\\"x\\\"}}\" has a template"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(gatewayBin, "-auth.validatePolicyFile").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "set -auth.policyFile") {
		t.Errorf("no file given: %v\n%s", err, out)
	}
	out, err = exec.Command(gatewayBin, "-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1", "-auth.policyFile="+good, "-httpListenAddr=127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-auth.policyFile needs -enable.auth") {
		t.Errorf("started with policies but without -enable.auth: %v\n%s", err, out)
	}
	// The gateway refuses to start with an invalid file.
	out, err = exec.Command(gatewayBin, "-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1", "-enable.auth", "-auth.skipVerify",
		"-auth.policyFile="+bad, "-httpListenAddr=127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "invalid regexp") {
		t.Errorf("started with an invalid policy file: %v\n%s", err, out)
	}
}

// TestPolicyTokenExplain: `token explain` names the policy that matched and, for each earlier one, the entry that
// failed.
func TestPolicyTokenExplain(t *testing.T) {
	jwks := jwksServer(t)
	pf := writePolicyFile(t, e2ePolicies)
	run := func(tok string) (int, string) {
		var out strings.Builder
		code := runTokenIsolated(t, []string{"explain", "-auth.jwksEndpoints=" + strings.Join(jwks, ","), "-auth.policyFile=" + pf, tok}, &out)
		return code, out.String()
	}
	code, out := run(idpToken(t, "google", map[string]any{"iss": "https://accounts.google.com", "hd": "acme.example", "email": "bob@acme.example", "email_verified": true}))
	for _, want := range []string{
		"missing — the access policies of -auth.policyFile decide",
		`YES: tenant 0:0, mode full (from the access policy "google")`,
		`owner="bob@acme.example"`,
		`keycloak                 line 2     does not match: iss: the claim's value is not "https://sso.example.com/realms/acme"`,
		"entra                    line 12    does not match: tid: the claim tid is missing",
		`auth0                    line 27    does not match: "https://acme.example/groups": the claim "https://acme.example/groups" is missing`,
		"google                   line 31    MATCHES",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("explain: exit %d, want %q in:\n%s", code, want, out)
		}
	}
	code, out = run(idpToken(t, "okta", map[string]any{"iss": "https://acme.okta.com/oauth2/default", "groups": []any{"metrics-dev"}}))
	if code != 1 || !strings.Contains(out, "NO: 403") || !strings.Contains(out, "MATCHES, but cannot apply to this token (403): {{claim \"team\"}}: the claim team is missing") {
		t.Errorf("explain of a token missing a template's claim: exit %d:\n%s", code, out)
	}
	// Refused before the policies (401): they are not shown.
	code, out = run(idpToken(t, "stranger", map[string]any{"iss": "https://accounts.google.com", "hd": "acme.example", "email": "bob@acme.example", "email_verified": true}))
	if code != 1 || !strings.Contains(out, "NO: 401, unknown key id") || strings.Contains(out, "Access policies") {
		t.Errorf("explain of a token with an unknown key: exit %d:\n%s", code, out)
	}
	code, out = run(idpToken(t, "okta", map[string]any{"groups": []any{"x"}}))
	if code != 1 || !strings.Contains(out, "NO: 403") || !strings.Contains(out, "no policy matches: every request gets 403") ||
		!strings.Contains(out, "k8s-vmagent              line 51    does not match: \"kubernetes.io\".namespace: the claim \"kubernetes.io\" is missing") {
		t.Errorf("explain of a token no policy matches: exit %d:\n%s", code, out)
	}
}

// TestTokenMintForPolicies: `token mint -claimShape=none` mints a token without vm_access, with the claims of
// -claim read as JSON when they parse as JSON; the gateway gives it the access of the policy its claims match.
// Flags that would shape a vm_access, claims other flags set, and a claim given twice are refused.
func TestTokenMintForPolicies(t *testing.T) {
	priv, pub := keyPair(t, "ec")
	pf := writePolicyFile(t, "policies:\n  - name: dev\n    match: {groups: metrics-dev, tid: '15'}\n"+
		"    vm_access: {extra_labels: {team: '{{claim \"team\"}}'}, mode: 1}\n")
	tok := mint(t, priv, "-claimShape=none", `-claim=groups=["metrics-dev","x"]`, "-claim=tid=15", "-claim=team=dev", `-claim=quoted="15"`, "-subject=bob")
	d, err := auth.Decode(tok)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"groups": []any{"metrics-dev", "x"}, "tid": json.Number("15"), "team": "dev", "quoted": "15", "sub": "bob"}
	for name, v := range want {
		if !reflect.DeepEqual(d.Claims[name], v) {
			t.Errorf("claim %s = %#v, want %#v", name, d.Claims[name], v)
		}
	}
	if _, ok := d.Claims["vm_access"]; ok {
		t.Errorf("-claimShape=none minted a vm_access: %v", d.Claims["vm_access"])
	}
	var out strings.Builder
	code := runTokenIsolated(t, []string{"explain", "-auth.publicKeyFiles=" + pub, "-auth.policyFile=" + pf, tok}, &out)
	if code != 0 || !strings.Contains(out.String(), `YES: tenant 0:0, mode read (from the access policy "dev"); the query `+"`up`"+` becomes `+"`up{team=\"dev\"}`") {
		t.Errorf("explain of a policy token: exit %d:\n%s", code, out.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-claimShape=none", "-mode=read", "-extraLabels=team=dev"}, "-extraLabels, -mode would not be in it"},
		{[]string{"-claim=exp=1"}, "the exp claim is set by -lifetime"},
		{[]string{"-claim=vm_access={}"}, "the vm_access claim is set by"},
		{[]string{"-claim=sub=x"}, "the sub claim is set by -subject"},
		{[]string{"-claim=a=1", "-claim=a=2"}, `the claim "a" is given twice`},
		{[]string{"-claim=nbf=soon"}, "nbf is a number of seconds"},
		{[]string{"-claim==x"}, "want name=value"},
		{[]string{"-claimShape=jwt"}, "want vmgateway, vmauth or none"},
	} {
		_, err := mintToken(append([]string{"-key=" + priv}, tc.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mint %v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// TestTokenExplainLoggerLevel: `token explain` keeps the loaders' INFO lines (the policies loaded) off stderr
// unless -loggerLevel asks for them; its report on stdout is the same either way.
func TestTokenExplainLoggerLevel(t *testing.T) {
	priv, pub := keyPair(t, "ec")
	pf := writePolicyFile(t, "policies:\n  - name: dev\n    match: {groups: metrics-dev}\n    vm_access: {mode: 1}\n")
	tok := mint(t, priv, "-claimShape=none", "-claim=groups=metrics-dev")
	run := func(extra ...string) (string, string) {
		var stdout, stderr strings.Builder
		cmd := exec.Command(gatewayBin, append(append([]string{"token", "explain", "-auth.publicKeyFiles=" + pub, "-auth.policyFile=" + pf}, extra...), tok)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("token explain %v: %v\n%s%s", extra, err, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	quiet, quietErr := run()
	loud, loudErr := run("-loggerLevel=INFO")
	if quietErr != "" {
		t.Errorf("without -loggerLevel, stderr: %q; want nothing", quietErr)
	}
	if !strings.Contains(loudErr, "level=INFO") || !strings.Contains(loudErr, "loaded the access policies") {
		t.Errorf("with -loggerLevel=INFO, stderr lacks the policy loader's line: %q", loudErr)
	}
	// The verdict and what follows it; the lines above say how long ago the token was issued, which can tick over.
	verdict := func(s string) string {
		_, v, _ := strings.Cut(s, "Would the gateway accept it?")
		return v
	}
	if !strings.Contains(quiet, `YES: tenant 0:0, mode read (from the access policy "dev")`) || verdict(quiet) != verdict(loud) {
		t.Errorf("the report differs with the log level or does not accept the token:\n%s\n---\n%s", quiet, loud)
	}
	var out strings.Builder
	if code := runTokenIsolated(t, []string{"explain", "-loggerLevel=LOUD", tok}, &out); code != 2 || !strings.Contains(out.String(), `invalid -loggerLevel="LOUD"`) {
		t.Errorf("a bad -loggerLevel: exit %d %q", code, out.String())
	}
}
