package main

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/enforce/corpus"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// issuer signs whatever JSON it is given, as an identity provider whose claim template an attacker can steer (a
// user attribute pasted into vm_access) would: the tokens below are genuinely signed.
type issuer struct {
	key *rsa.PrivateKey
	pub string // -auth.publicKeyFiles
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(t.TempDir(), "issuer.pem")
	writePublicKey(t, pub, &key.PublicKey)
	return &issuer{key: key, pub: pub}
}

// sign signs the header and payload JSON texts exactly as given.
func (is *issuer) sign(t *testing.T, header, payload string) string {
	t.Helper()
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodRS256.Sign(input, is.key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// claims is a payload valid for an hour with vm_access given as JSON text.
func claims(vmAccess string) string {
	return fmt.Sprintf(`{"sub":"mallory","exp":%d,"vm_access":%s}`, time.Now().Add(time.Hour).Unix(), vmAccess)
}

// TestClaimsRefusedAgainstVictoriaMetrics: tokens whose claims grant more than their issuer meant (team dev's claim
// with a second vm_access, a null that lifts the label, a logs-only vmauth claim, a filter matching "") get 401 with
// their own reason and never see another team's series in the real VictoriaMetrics; the same issuer's honest dev
// token still sees dev's data.
func TestClaimsRefusedAgainstVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	writeTeamsDirect(t, vm)
	is := newIssuer(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+is.pub)
	const rs256 = `{"alg":"RS256","typ":"JWT"}`
	query := g.URL + "/api/v1/query?query=" + url.QueryEscape(`{__name__=~".+"}`)

	honest := is.sign(t, rs256, claims(`{"extra_labels":{"team":"dev"},"mode":1}`))
	code, _, body := do(t, "GET", query, nil, bearer(honest)...)
	if code != 200 || !strings.Contains(body, "dev_only_metric_total") {
		t.Fatalf("the honest dev token: %d %.300s", code, body)
	}
	for _, f := range corpus.Forbidden {
		if strings.Contains(body, f) {
			t.Fatalf("the honest dev token sees %s: %.500s", f, body)
		}
	}

	for _, tc := range []struct {
		name, token, reason, msg string
	}{
		{"a second vm_access after dev's", is.sign(t, rs256, fmt.Sprintf(`{"sub":"mallory","exp":%d,"vm_access":{"extra_labels":{"team":"dev"},"mode":1},"vm_access":{"mode":0}}`, time.Now().Add(time.Hour).Unix())),
			"duplicate_key", `the token payload has the key "vm_access" twice (in the top-level object)`},
		{"a second, empty extra_labels", is.sign(t, rs256, claims(`{"extra_labels":{"team":"dev"},"extra_labels":{}}`)),
			"duplicate_key", `the token payload has the key "extra_labels" twice (in the object at vm_access)`},
		{"team twice: dev, then ops", is.sign(t, rs256, claims(`{"extra_labels":{"team":"dev","team":"ops"}}`)),
			"duplicate_key", `the key "team" twice (in the object at vm_access.extra_labels)`},
		{"an attribute injected into a vm_access string", is.sign(t, rs256, claims(`"{\"extra_labels\":{\"team\":\"dev\"},\"mode\":1,\"extra_labels\":{}}"`)),
			"duplicate_key", `vm_access (a JSON string) has the key "extra_labels" twice`},
		{"alg twice in the header", is.sign(t, `{"alg":"RS256","alg":"none"}`, claims(`{"extra_labels":{"team":"dev"}}`)),
			"duplicate_key", `the token header has the key "alg" twice`},
		{"extra_labels null", is.sign(t, rs256, claims(`{"extra_labels":null,"mode":1}`)),
			"null_in_vm_access", "vm_access.extra_labels is null"},
		{"mode null", is.sign(t, rs256, claims(`{"extra_labels":{"team":"dev"},"mode":null}`)),
			"null_in_vm_access", "vm_access.mode is null"},
		{"vmauth labels null", is.sign(t, rs256, claims(`{"metrics_account_id":0,"metrics_extra_labels":null}`)),
			"null_in_vm_access", "vm_access.metrics_extra_labels is null"},
		{"vmauth labels empty (a mapper's user without a team)", is.sign(t, rs256, claims(`{"metrics_extra_labels":[],"mode":1}`)),
			"empty_restriction", "vm_access.metrics_extra_labels is empty"},
		{"extra_labels empty", is.sign(t, rs256, claims(`{"extra_labels":{},"mode":1}`)),
			"empty_restriction", "vm_access.extra_labels is empty"},
		{"extra_filters empty", is.sign(t, rs256, claims(`{"extra_filters":[],"mode":1}`)),
			"empty_restriction", "vm_access.extra_filters is empty"},
		{"a vmauth claim for logs only", is.sign(t, rs256, claims(`{"logs_account_id":0,"logs_extra_filters":["{\"team\":\"dev\"}"]}`)),
			"logs_only_vm_access", "it restricts only logs and would be unrestricted for metrics"},
		{"team=~.*", is.sign(t, rs256, claims(`{"extra_filters":["{team=~\".*\"}"]}`)),
			"filter_matches_empty", `the regexp of team=~".*" matches the empty string`},
		{"team=~dev|", is.sign(t, rs256, claims(`{"extra_filters":["{team=~\"dev|\"}"]}`)),
			"filter_matches_empty", `team=~"dev|" matches the empty string`},
		{"team=~(dev)? in the vmauth shape", is.sign(t, rs256, claims(`{"metrics_extra_filters":["{team=~\"(dev)?\"}"]}`)),
			"filter_matches_empty", "matches the empty string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := do(t, "GET", query, nil, bearer(tc.token)...)
			if code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %.500s", code, body)
			}
			for _, f := range corpus.Forbidden {
				if strings.Contains(body, f) {
					t.Fatalf("the answer carries %s: %.500s", f, body)
				}
			}
			typ, msg := decodeError(t, body)
			if typ != "unauthorized" || !strings.Contains(msg, tc.msg) {
				t.Fatalf("error %q %q; want it to say %q", typ, msg, tc.msg)
			}
			if want := strings.ReplaceAll(tc.msg, `"`, `'`); !strings.Contains(h.Get("WWW-Authenticate"), want) {
				t.Fatalf("WWW-Authenticate %q does not say %q", h.Get("WWW-Authenticate"), want)
			}
		})
	}
	_, _, metrics := do(t, "GET", g.URL+"/metrics", nil)
	for reason, want := range map[string]int{"duplicate_key": 5, "null_in_vm_access": 3, "logs_only_vm_access": 1, "filter_matches_empty": 3} {
		if got := counterIn(t, metrics, fmt.Sprintf(`vmgateway_auth_rejects_total{reason=%q}`, reason)); got != want {
			t.Errorf("vmgateway_auth_rejects_total{reason=%q} = %d, want %d", reason, got, want)
		}
	}
}

// TestClaimsNegativeCache: a flood of one forged token and of one expired token gets the same 401 every time, every
// request is counted, and only the first of each is verified.
func TestClaimsNegativeCache(t *testing.T) {
	vm := vmtest.Start(t)
	is := newIssuer(t)
	forger := newIssuer(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+is.pub)
	const rs256 = `{"alg":"RS256","typ":"JWT"}`
	forged := forger.sign(t, rs256, claims(`{"mode":0}`))
	expired := is.sign(t, rs256, fmt.Sprintf(`{"exp":%d,"vm_access":{"mode":0}}`, time.Now().Add(-time.Hour).Unix()))
	query := g.URL + "/api/v1/query?query=up"
	for _, tc := range []struct{ token, msg string }{
		{forged, "the signature does not verify with any of the 1 keys for alg RS256"},
		{expired, "the token expired at"},
	} {
		first := ""
		for i := range 10 {
			code, _, body := do(t, "GET", query, nil, bearer(tc.token)...)
			_, msg := decodeError(t, body)
			if code != http.StatusUnauthorized || !strings.Contains(msg, tc.msg) {
				t.Fatalf("request %d: %d %q; want 401 saying %q", i+1, code, msg, tc.msg)
			}
			if first == "" {
				first = msg
			} else if msg != first {
				t.Fatalf("request %d: %q; the first answer was %q", i+1, msg, first)
			}
		}
	}
	_, _, metrics := do(t, "GET", g.URL+"/metrics", nil)
	for name, want := range map[string]int{
		`vmgateway_auth_rejects_total{reason="bad_signature"}`: 10,
		`vmgateway_auth_rejects_total{reason="expired"}`:       10,
		`vmgateway_auth_negative_cache_hits_total`:             18,
		`vmgateway_auth_cache_misses_total`:                    2,
	} {
		if got := counterIn(t, metrics, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// A valid token of the same issuer is not disturbed.
	if code, _, body := do(t, "GET", query, nil, bearer(is.sign(t, rs256, claims(`{"mode":1}`)))...); code != 200 {
		t.Fatalf("a valid token after the flood: %d %.300s", code, body)
	}
}

// TestClaimsTokenExplain: `token explain` names the reason and the message of each refused shape, with the key and
// without it (such shapes are refused whatever the keys).
func TestClaimsTokenExplain(t *testing.T) {
	is := newIssuer(t)
	const rs256 = `{"alg":"RS256","typ":"JWT"}`
	for _, tc := range []struct{ token, reason, msg string }{
		{is.sign(t, rs256, claims(`{"extra_labels":{"team":"dev","team":"ops"}}`)), "duplicate_key", `has the key "team" twice`},
		{is.sign(t, rs256, claims(`{"extra_labels":null}`)), "null_in_vm_access", "vm_access.extra_labels is null"},
		{is.sign(t, rs256, claims(`{"logs_account_id":1}`)), "logs_only_vm_access", "unrestricted for metrics"},
		{is.sign(t, rs256, claims(`{"extra_filters":["{team=~\".*\"}"]}`)), "filter_matches_empty", "matches the empty string"},
	} {
		for _, args := range [][]string{{"explain", "-auth.publicKeyFiles=" + is.pub, tc.token}, {"explain", tc.token}} {
			var out strings.Builder
			code := runTokenIsolated(t, args, &out)
			want := []string{"with reason " + tc.reason, fmt.Sprintf(`vmgateway_auth_rejects_total{reason=%q}`, tc.reason), "Would the gateway accept it? NO: 401, ", tc.msg}
			for _, w := range want {
				if code != 1 || !strings.Contains(out.String(), w) {
					t.Errorf("token %v: exit %d, want 1 and %q in:\n%s", args[:len(args)-1], code, w, out.String())
				}
			}
		}
	}
}

// counterIn reads an integer sample from a /metrics text; a missing sample fails the test rather than reading 0.
func counterIn(t *testing.T, metrics, name string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\d+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("/metrics has no sample %s", name)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
