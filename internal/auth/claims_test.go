package auth

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

func TestVMAccessUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     VMAccess
		err      string
	}{
		{"enterprise shape", `{"tenant_id":{"account_id":1,"project_id":5},"extra_labels":{"team":"dev","project":"mobile"},` +
			`"extra_filters":["{env=~\"prod|dev\",team!=\"test\"}"],"mode":1}`,
			VMAccess{Tenant: tenant.ID{AccountID: 1, ProjectID: 5}, ExtraLabels: map[string]string{"team": "dev", "project": "mobile"},
				ExtraFilters: []string{`{env=~"prod|dev",team!="test"}`}, Mode: ModeRead}, ""},
		{"as a string", `"{\"tenant_id\":{\"account_id\":1,\"project_id\":5},\"mode\":2}"`,
			VMAccess{Tenant: tenant.ID{AccountID: 1, ProjectID: 5}, Mode: ModeWrite}, ""},
		{"vmauth shape", `{"metrics_account_id":1,"metrics_project_id":5,"metrics_extra_labels":["team=dev","project=mobile"],` +
			`"metrics_extra_filters":["{env=~\"prod|dev\",team!=\"test\"}"]}`,
			VMAccess{Tenant: tenant.ID{AccountID: 1, ProjectID: 5}, ExtraLabels: map[string]string{"team": "dev", "project": "mobile"},
				ExtraFilters: []string{`{env=~"prod|dev",team!="test"}`}, Mode: ModeFull}, ""},
		{"vmauth shape with logs fields and mode", `{"metrics_account_id":3,"mode":1,"logs_account_id":2,"logs_project_id":3,` +
			`"logs_extra_filters":["{\"namespace\":\"my-app\"}"],"logs_extra_stream_filters":[]}`,
			VMAccess{Tenant: tenant.ID{AccountID: 3}, Mode: ModeRead}, ""},
		{"vmauth label value with =", `{"metrics_extra_labels":["expr=a=b"]}`, VMAccess{Mode: ModeFull, ExtraLabels: map[string]string{"expr": "a=b"}}, ""},
		{"empty", `{}`, VMAccess{Mode: ModeFull}, ""},
		{"minimum enterprise form", `{"tenant_id":{}}`, VMAccess{Mode: ModeFull}, ""},
		{"mode 0 is full", `{"mode":0}`, VMAccess{Mode: ModeFull}, ""},
		{"mode 2 is write", `{"mode":2}`, VMAccess{Mode: ModeWrite}, ""},
		{"empty labels refused", `{"extra_labels":{}}`, VMAccess{}, "vm_access.extra_labels is empty; an empty restriction reads as none"},
		{"empty filters refused", `{"extra_filters":[]}`, VMAccess{}, "vm_access.extra_filters is empty"},
		{"tenant 0", `{"tenant_id":{"account_id":0,"project_id":0}}`, VMAccess{Mode: ModeFull}, ""},
		{"tenant max", `{"tenant_id":{"account_id":4294967295,"project_id":4294967295}}`,
			VMAccess{Mode: ModeFull, Tenant: tenant.ID{AccountID: 4294967295, ProjectID: 4294967295}}, ""},
		{"vmauth tenant max", `{"metrics_account_id":4294967295}`, VMAccess{Mode: ModeFull, Tenant: tenant.ID{AccountID: 4294967295}}, ""},

		{"tenant 2^32", `{"tenant_id":{"account_id":4294967296}}`, VMAccess{}, "vm_access.tenant_id: account_id: must be an integer in [0, 4294967295], got 4294967296"},
		{"tenant -1", `{"tenant_id":{"project_id":-1}}`, VMAccess{}, "project_id: must be an integer in [0, 4294967295], got -1"},
		{"tenant 1.5", `{"tenant_id":{"account_id":1.5}}`, VMAccess{}, "got 1.5"},
		{"tenant 1.0", `{"tenant_id":{"account_id":1.0}}`, VMAccess{}, "got 1.0"},
		{"tenant 1e3", `{"tenant_id":{"account_id":1e3}}`, VMAccess{}, "got 1e3"},
		{"tenant string", `{"tenant_id":{"account_id":"1"}}`, VMAccess{}, `got the string "1"`},
		{"tenant bool", `{"tenant_id":{"account_id":true}}`, VMAccess{}, "got a boolean"},
		{"tenant huge", `{"tenant_id":{"account_id":123456789012345678901234567890}}`, VMAccess{}, "must be an integer"},
		{"vmauth tenant -1", `{"metrics_project_id":-1}`, VMAccess{}, "vm_access.metrics_project_id: must be an integer"},
		{"tenant_id a number", `{"tenant_id":1}`, VMAccess{}, "vm_access.tenant_id: must be an object"},
		{"tenant_id unknown field", `{"tenant_id":{"accountID":1}}`, VMAccess{}, "vm_access.tenant_id: accountID: unknown field"},
		{"mode 3", `{"mode":3}`, VMAccess{}, "vm_access.mode: must be 0 (full), 1 (read) or 2 (write), got 3"},
		{"mode -1", `{"mode":-1}`, VMAccess{}, "vm_access.mode: must be an integer"},
		{"mode string", `{"mode":"read"}`, VMAccess{}, `vm_access.mode: must be an integer in [0, 4294967295], got the string "read"`},
		{"mode 1.0", `{"mode":1.0}`, VMAccess{}, "vm_access.mode: must be an integer"},
		{"unknown field", `{"extra_label":{"team":"dev"}}`, VMAccess{}, "vm_access.extra_label: unknown field"},
		{"role is not mode", `{"tenant_id":{},"role":1}`, VMAccess{}, "vm_access.role: unknown field"},
		{"mixed shapes", `{"tenant_id":{"account_id":1},"metrics_account_id":2}`, VMAccess{}, "mixes the vmgateway field tenant_id and the vmauth field metrics_account_id"},
		{"mixed shapes: labels", `{"extra_labels":{"a":"b"},"metrics_extra_filters":["{a=\"b\"}"]}`, VMAccess{}, "use one shape"},
		{"extra_labels a list", `{"extra_labels":["team=dev"]}`, VMAccess{}, "vm_access.extra_labels: must be an object"},
		{"extra_labels number value", `{"extra_labels":{"team":1}}`, VMAccess{}, `vm_access.extra_labels: "team": the value must be a string, got the number 1`},
		{"extra_filters a string", `{"extra_filters":"{a=\"b\"}"}`, VMAccess{}, "vm_access.extra_filters: must be an array of strings"},
		{"extra_filters element", `{"extra_filters":["{a=\"b\"}",{}]}`, VMAccess{}, "element 1 must be a string, got an object"},
		{"vmauth label without =", `{"metrics_extra_labels":["team"]}`, VMAccess{}, `"team": want name=value`},
		{"vmauth label without name", `{"metrics_extra_labels":["=dev"]}`, VMAccess{}, "want name=value"},
		{"vmauth label twice", `{"metrics_extra_labels":["team=a","team=b"]}`, VMAccess{}, `the label "team" is given twice`},
		{"a number", `7`, VMAccess{}, "vm_access must be a JSON object or a string holding one, got the number 7"},
		{"an array", `[]`, VMAccess{}, "got an array"},
		{"string holding a string", `"\"{}\""`, VMAccess{}, "vm_access is a string holding the string"},
		{"string not JSON", `"tenant=1"`, VMAccess{}, "vm_access is a string that is not JSON"},
		{"string with trailing data", `"{} {}"`, VMAccess{}, "unexpected data after the JSON value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got VMAccess
			err := json.Unmarshal([]byte(tc.in), &got)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestVMAccessMarshal(t *testing.T) {
	for _, tc := range []struct {
		in   VMAccess
		want string
	}{
		{VMAccess{Mode: ModeFull}, `{"tenant_id":{"account_id":0,"project_id":0},"mode":0}`},
		{VMAccess{Tenant: tenant.ID{AccountID: 1, ProjectID: 5}, ExtraLabels: map[string]string{"team": "dev", "env": "prod"},
			ExtraFilters: []string{`{env=~"prod|dev"}`}, Mode: ModeRead},
			`{"tenant_id":{"account_id":1,"project_id":5},"extra_labels":{"env":"prod","team":"dev"},"extra_filters":["{env=~\"prod|dev\"}"],"mode":1}`},
	} {
		b, err := json.Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Fatalf("Marshal(%+v) = %s, want %s", tc.in, b, tc.want)
		}
		var back VMAccess
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tc.in) {
			t.Fatalf("round trip of %s: %+v, %v", b, back, err)
		}
	}
}

// TestVMAccessMarshalVMAuth: vmauth's shape is written as vmauth reads it, and reads back as the same access.
func TestVMAccessMarshalVMAuth(t *testing.T) {
	for _, tc := range []struct {
		in   VMAccess
		want string
	}{
		{VMAccess{Mode: ModeFull}, `{"metrics_account_id":0,"metrics_project_id":0}`},
		{VMAccess{Tenant: tenant.ID{AccountID: 1, ProjectID: 5}, ExtraLabels: map[string]string{"team": "dev", "env": "a=b"},
			ExtraFilters: []string{`{env=~"prod|dev"}`}, Mode: ModeWrite},
			`{"metrics_account_id":1,"metrics_extra_filters":["{env=~\"prod|dev\"}"],"metrics_extra_labels":["env=a=b","team=dev"],"metrics_project_id":5,"mode":2}`},
	} {
		b, err := tc.in.MarshalVMAuth()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Fatalf("MarshalVMAuth(%+v) = %s, want %s", tc.in, b, tc.want)
		}
		var back VMAccess
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tc.in) {
			t.Fatalf("round trip of %s: %+v, %v", b, back, err)
		}
	}
	if _, err := (VMAccess{}).MarshalVMAuth(); err == nil {
		t.Fatal("MarshalVMAuth wrote a claim without a mode, which would read as full")
	}
}

// TestVMAccessValidate: Validate refuses what the verifier refuses in a token's vm_access, with the same reason.
func TestVMAccessValidate(t *testing.T) {
	for _, tc := range []struct {
		in     VMAccess
		reason string
	}{
		{VMAccess{Mode: ModeRead, ExtraLabels: map[string]string{"team": "dev"}, ExtraFilters: []string{`{env="prod"}`}}, ""},
		{VMAccess{}, reasonBadVMAccess},
		{VMAccess{Mode: ModeFull, ExtraFilters: []string{"sum(up)"}}, reasonBadVMAccess},
		{VMAccess{Mode: ModeFull, ExtraLabels: map[string]string{"bad-name": "x"}}, reasonBadVMAccess},
		{VMAccess{Mode: ModeFull, ExtraFilters: []string{`{team=~".*"}`}}, reasonFilterMatchesEmpty},
	} {
		if got := reasonOf(t, tc.in.Validate()); got != tc.reason {
			t.Errorf("Validate(%+v): reason %q, want %q", tc.in, got, tc.reason)
		}
	}
}

// TestDecode: Decode reads a token as the verifier does, without keys: the header, the claims with exact numbers,
// the time claims and vm_access, and refuses with the verifier's reasons what the verifier refuses to decode.
func TestDecode(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	claims := claimsAt(now)
	claims["groups"] = []any{"dev"}
	claims["big"] = json.Number("12345678901234567890")
	tok, err := Decode(sign(t, jwt.SigningMethodES256, p256Key(), "k1", claims))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Alg != "ES256" || tok.Kid != "k1" || tok.Claims["sub"] != "alice" || tok.Claims["big"] != json.Number("12345678901234567890") ||
		!reflect.DeepEqual(tok.Claims["groups"], []any{"dev"}) {
		t.Fatalf("Decode: %+v", tok)
	}
	if exp, err := tok.Time("exp"); err != nil || !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("exp: %s, %v", exp, err)
	}
	if nbf, err := tok.Time("nbf"); err != nil || !nbf.IsZero() {
		t.Fatalf("an absent nbf: %s, %v", nbf, err)
	}
	va, ok, err := tok.VMAccess()
	if err != nil || !ok || va.Mode != ModeRead || va.Tenant != (tenant.ID{AccountID: 1, ProjectID: 2}) {
		t.Fatalf("vm_access: %+v %v %v", va, ok, err)
	}

	delete(claims, "vm_access")
	delete(claims, "exp")
	claims["iat"] = "yesterday"
	tok, err = Decode(sign(t, jwt.SigningMethodHS256, hmacSecret(), "", claims))
	if err != nil {
		t.Fatalf("a token without exp or vm_access must decode (the verifier refuses it later): %s", err)
	}
	if _, ok, err := tok.VMAccess(); ok || err != nil {
		t.Fatalf("an absent vm_access: %v %v", ok, err)
	}
	if _, err := tok.Time("iat"); err == nil || !strings.Contains(err.Error(), "the iat claim must be a number") {
		t.Fatalf("iat as a string: %v", err)
	}

	for _, tc := range []struct{ token, reason string }{
		{"a.b", reasonMalformed},
		{rawToken(`{"alg":"HS256","alg":"none"}`, `{}`, nil), reasonDuplicateKey},
		{rawToken(`{"alg":"HS256","crit":["exp"]}`, `{}`, nil), reasonMalformed},
		{rawToken(`{"alg":"HS256"}`, `{"sub":"a"} {}`, nil), reasonMalformed},
		{rawToken(`{"alg":"HS256"}`, `{"vm_access":{"mode":1,"mode":0}}`, nil), reasonDuplicateKey},
	} {
		if _, err := Decode(tc.token); reasonOf(t, err) != tc.reason {
			t.Errorf("Decode(%s): %v, want reason %s", tc.token, err, tc.reason)
		}
	}
}

func TestParseClaims(t *testing.T) {
	for _, tc := range []struct {
		name, payload, reason, msg string
		exp, nbf, iat              string // RFC 3339 with fraction, when parsed
		aud                        []string
	}{
		{name: "integers", payload: `{"exp":1772366400,"nbf":1772366300,"iat":1772366200,"aud":"a"}`,
			exp: "2026-03-01T12:00:00Z", nbf: "2026-03-01T11:58:20Z", iat: "2026-03-01T11:56:40Z", aud: []string{"a"}},
		{name: "fractions", payload: `{"exp":1772366400.25,"aud":["a","b"]}`, exp: "2026-03-01T12:00:00.25Z", aud: []string{"a", "b"}},
		{name: "exponent", payload: `{"exp":1.7723664e9}`, exp: "2026-03-01T12:00:00Z"},
		{name: "epoch", payload: `{"exp":0}`, exp: "1970-01-01T00:00:00Z"},
		{name: "null claims are absent", payload: `{"exp":1772366400,"nbf":null,"iat":null,"iss":null,"sub":null,"aud":null}`, exp: "2026-03-01T12:00:00Z"},
		{name: "no exp", payload: `{"vm_access":{}}`, reason: reasonMissingExp, msg: "no exp claim"},
		{name: "exp null", payload: `{"exp":null}`, reason: reasonMissingExp, msg: "no exp claim"},
		{name: "exp string", payload: `{"exp":"1772366400"}`, reason: reasonMalformed, msg: `the exp claim must be a number of seconds since 1970, got the string "1772366400"`},
		{name: "nbf bool", payload: `{"exp":1,"nbf":true}`, reason: reasonMalformed, msg: "the nbf claim must be a number"},
		{name: "iat huge", payload: `{"exp":1,"iat":1e20}`, reason: reasonMalformed, msg: "the iat claim 1e20 is out of range"},
		{name: "aud list of numbers", payload: `{"exp":1,"aud":[1]}`, reason: reasonMalformed, msg: "element 0 must be a string"},
		{name: "not an object", payload: `"x"`, reason: reasonMalformed, msg: "must be a JSON object"},
		{name: "null", payload: `null`, reason: reasonMalformed, msg: "must be a JSON object, got null"},
		{name: "not JSON", payload: `{"exp":1,}`, reason: reasonMalformed, msg: "not JSON"},
		{name: "empty", payload: ``, reason: reasonMalformed, msg: "not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseClaims([]byte(tc.payload))
			if tc.reason != "" {
				if err == nil || err.Reason != tc.reason || !strings.Contains(err.msg, tc.msg) {
					t.Fatalf("error = %v, want %s containing %q", err, tc.reason, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			format := func(tm time.Time) string {
				if tm.IsZero() {
					return ""
				}
				return tm.Format(time.RFC3339Nano)
			}
			if format(c.exp) != tc.exp || format(c.nbf) != tc.nbf || format(c.iat) != tc.iat || !slices.Equal(c.aud, tc.aud) {
				t.Fatalf("exp %s nbf %s iat %s aud %q; want %s %s %s %q", format(c.exp), format(c.nbf), format(c.iat), c.aud, tc.exp, tc.nbf, tc.iat, tc.aud)
			}
		})
	}
}

// FuzzClaims: for any payload the claim parser either rejects it with a known reason or yields an Access that
// agrees with the payload's vm_access read on its own, and whose vm_access survives a marshal/unmarshal round trip.
func FuzzClaims(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzClaims.
	reasons := make(map[string]bool)
	for _, r := range allReasons {
		reasons[r] = true
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := parseClaims(payload)
		if err == nil {
			var a *Access
			if a, err = accessOf(c); err == nil {
				checkAccess(t, c, a)
				return
			}
		}
		if !reasons[err.Reason] || err.msg == "" {
			t.Fatalf("rejection with reason %q and message %q", err.Reason, err.msg)
		}
	})
}

func checkAccess(t *testing.T, c *claims, a *Access) {
	t.Helper()
	if a.Mode < ModeFull || a.Mode > ModeWrite {
		t.Fatalf("mode %d", a.Mode)
	}
	if p := nullPath(c.all["vm_access"], "vm_access"); p != "" {
		t.Fatalf("accepted a vm_access with %s null", p)
	}
	if !a.ExpiresAt.Equal(c.exp) || a.ExpiresAt.IsZero() || a.Subject != c.sub || a.Claims["vm_access"] == nil {
		t.Fatalf("Access %+v does not match the claims %+v", a, c)
	}
	va, e := vmAccessFrom(c.all["vm_access"])
	if e != nil {
		t.Fatalf("accepted vm_access does not parse on its own: %s", e)
	}
	if va.Tenant != a.Tenant || va.Mode != a.Mode {
		t.Fatalf("Access %+v, vm_access %+v", a, va)
	}
	if (a.Enforcer != nil) != (len(va.ExtraLabels)+len(va.ExtraFilters) > 0) || (a.Enforcer != nil && !a.Enforcer.Restricted()) {
		t.Fatalf("enforcer %v for vm_access %+v", a.Enforcer, va)
	}
	labels := a.Enforcer.Labels()
	if len(labels) != len(va.ExtraLabels) || !slices.IsSortedFunc(labels, func(x, y enforce.Label) int { return strings.Compare(x.Name, y.Name) }) {
		t.Fatalf("enforcer labels %v for %v", labels, va.ExtraLabels)
	}
	for _, l := range labels {
		if va.ExtraLabels[l.Name] != l.Value {
			t.Fatalf("enforcer labels %v for %v", labels, va.ExtraLabels)
		}
	}
	if !slices.Equal(a.Enforcer.Filters(), va.ExtraFilters) {
		t.Fatalf("enforcer filters %q for %q", a.Enforcer.Filters(), va.ExtraFilters)
	}
	b, err := json.Marshal(va)
	if err != nil {
		t.Fatal(err)
	}
	var back VMAccess
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%s does not unmarshal: %s", b, err)
	}
	if back.Tenant != va.Tenant || back.Mode != va.Mode || !maps.Equal(back.ExtraLabels, va.ExtraLabels) || !slices.Equal(back.ExtraFilters, va.ExtraFilters) {
		t.Fatalf("round trip %+v -> %s -> %+v", va, b, back)
	}
}
