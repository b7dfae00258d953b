package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestClaimShapesRefused: each claim shape that would grant more than its issuer meant is a 401 with a reason of
// its own, in the message, in WWW-Authenticate and in vmgateway_auth_rejects_total. The tokens are signed with the
// gateway's key: the issuer really issued them.
func TestClaimShapesRefused(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}}, clk)
	exp := clk.now().Add(time.Hour).Unix()
	// payload is a token payload with vm_access given as JSON text, so that shapes no encoder writes can be tried.
	payload := func(vmAccess string) string {
		return fmt.Sprintf(`{"sub":"alice","exp":%d,"vm_access":%s}`, exp, vmAccess)
	}
	claimsWith := func(k string, val any) jwt.MapClaims {
		c := claimsAt(clk.now())
		c[k] = val
		return c
	}
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, hmacSecret(), "", c) }

	for _, tc := range []struct {
		name, token, reason, msg string
	}{
		// Duplicate keys: encoding/json keeps the last, other parsers the first.
		{"vm_access twice", hsRaw(t, fmt.Sprintf(`{"exp":%d,"vm_access":{"extra_labels":{"team":"dev"},"mode":1},"vm_access":{"mode":0}}`, exp)),
			reasonDuplicateKey, `the token payload has the key "vm_access" twice (in the top-level object)`},
		{"extra_labels twice", hsRaw(t, payload(`{"extra_labels":{"team":"dev"},"extra_labels":{}}`)),
			reasonDuplicateKey, `the token payload has the key "extra_labels" twice (in the object at vm_access)`},
		{"a label twice", hsRaw(t, payload(`{"extra_labels":{"team":"dev","team":"ops"}}`)),
			reasonDuplicateKey, `the key "team" twice (in the object at vm_access.extra_labels)`},
		{"tenant account_id twice", hsRaw(t, payload(`{"tenant_id":{"account_id":1,"account_id":2}}`)),
			reasonDuplicateKey, `the key "account_id" twice (in the object at vm_access.tenant_id)`},
		{"mode twice in a vm_access string", hsRaw(t, payload(`"{\"extra_labels\":{\"team\":\"dev\"},\"mode\":1,\"mode\":0}"`)),
			reasonDuplicateKey, `vm_access (a JSON string) has the key "mode" twice (in the top-level object)`},
		{"vmauth labels twice in a string", hsRaw(t, payload(`"{\"metrics_extra_labels\":[\"team=dev\"],\"metrics_extra_labels\":[]}"`)),
			reasonDuplicateKey, `vm_access (a JSON string) has the key "metrics_extra_labels" twice`},
		{"exp twice", hsRaw(t, fmt.Sprintf(`{"exp":1,"exp":%d,"vm_access":{}}`, exp)),
			reasonDuplicateKey, `the key "exp" twice (in the top-level object)`},
		{"deep in another claim", hsRaw(t, fmt.Sprintf(`{"exp":%d,"vm_access":{},"realm":{"roles":[{"a":1},{"b":1,"b":2}]}}`, exp)),
			reasonDuplicateKey, `the key "b" twice (in the object at realm.roles[1])`},
		{"alg twice in the header", rawToken(`{"alg":"HS256","alg":"none"}`, payload(`{}`), []byte("sig")),
			reasonDuplicateKey, `the token header has the key "alg" twice (in the top-level object)`},
		{"kid twice in the header", rawToken(`{"alg":"HS256","kid":"a","kid":"b"}`, payload(`{}`), []byte("sig")),
			reasonDuplicateKey, `the token header has the key "kid" twice`},
		// Go's struct decoding matches names without regard to case, other readers exactly (an attacker's review):
		// such a key would be read as the claim by one and not by the other.
		{"ALG beside alg in the header", rawToken(`{"alg":"HS256","ALG":"RS256"}`, payload(`{}`), []byte("sig")),
			reasonMalformed, `the token header has the key "ALG"; its names are case-sensitive`},
		{"Kid alone in the header", rawToken(`{"alg":"HS256","Kid":"a"}`, payload(`{}`), []byte("sig")),
			reasonMalformed, `the token header has the key "Kid"`},
		{"kid with the Kelvin sign", rawToken(`{"alg":"HS256","\u212aid":"a"}`, payload(`{}`), []byte("sig")),
			reasonMalformed, "the token header has the key \"\u212aid\""},
		{"VM_ACCESS beside vm_access", hsRaw(t, fmt.Sprintf(`{"exp":%d,"vm_access":{"extra_labels":{"team":"dev"},"mode":1},"VM_ACCESS":{"mode":0}}`, exp)),
			reasonMalformed, `the token payload has the claim "VM_ACCESS"; claim names are case-sensitive`},
		{"Vm_Access alone", hsRaw(t, fmt.Sprintf(`{"exp":%d,"Vm_Access":{"mode":0}}`, exp)),
			reasonMalformed, `would read it as that claim`},
		{"EXP beside exp", hsRaw(t, fmt.Sprintf(`{"exp":%d,"EXP":1,"vm_access":{}}`, exp)),
			reasonMalformed, `the claim "EXP"`},

		// null reads as absent, and absent lifts a restriction.
		{"extra_labels null", hsRaw(t, payload(`{"extra_labels":null,"mode":1}`)), reasonNullInVMAccess, "vm_access.extra_labels is null"},
		{"extra_filters null", hsRaw(t, payload(`{"extra_labels":{"team":"dev"},"extra_filters":null}`)), reasonNullInVMAccess, "vm_access.extra_filters is null"},
		{"mode null", hsRaw(t, payload(`{"extra_labels":{"team":"dev"},"mode":null}`)), reasonNullInVMAccess, "vm_access.mode is null"},
		{"tenant_id null", hsRaw(t, payload(`{"tenant_id":null}`)), reasonNullInVMAccess, "vm_access.tenant_id is null"},
		{"account_id null", hsRaw(t, payload(`{"tenant_id":{"account_id":null}}`)), reasonNullInVMAccess, "vm_access.tenant_id.account_id is null"},
		{"label value null", hsRaw(t, payload(`{"extra_labels":{"team":null}}`)), reasonNullInVMAccess, "vm_access.extra_labels.team is null"},
		{"null in the filter list", hsRaw(t, payload(`{"extra_filters":["{a=\"b\"}",null]}`)), reasonNullInVMAccess, "vm_access.extra_filters[1] is null"},
		{"vmauth labels null", hsRaw(t, payload(`{"metrics_account_id":1,"metrics_extra_labels":null}`)), reasonNullInVMAccess, "vm_access.metrics_extra_labels is null"},
		{"vmauth filters null", hsRaw(t, payload(`{"metrics_extra_labels":["team=dev"],"metrics_extra_filters":null}`)), reasonNullInVMAccess, "vm_access.metrics_extra_filters is null"},
		{"vmauth logs field null", hsRaw(t, payload(`{"metrics_extra_labels":["team=dev"],"logs_extra_filters":null}`)), reasonNullInVMAccess, "vm_access.logs_extra_filters is null"},
		{"null in a vm_access string", hs(claimsWith("vm_access", `{"extra_labels":null}`)), reasonNullInVMAccess, "vm_access.extra_labels is null"},

		// A vmauth claim written for VictoriaLogs only.
		{"logs only", hs(claimsWith("vm_access", map[string]any{"logs_account_id": 1, "logs_extra_filters": []string{`{"namespace":"dev"}`}})),
			reasonLogsOnly, "restricts only logs and would be unrestricted for metrics"},
		{"logs only with a mode", hsRaw(t, payload(`{"mode":1,"logs_project_id":2}`)), reasonLogsOnly, "the VictoriaLogs field logs_project_id"},
		{"logs and empty metrics lists", hsRaw(t, payload(`{"metrics_extra_labels":[],"metrics_extra_filters":[],"logs_extra_stream_filters":["{app=\"x\"}"]}`)),
			reasonEmptyRestriction, "vm_access.metrics_extra_filters is empty"},

		// Empty restrictions, which an identity provider's mapper emits for a user without the attribute it maps (an
		// attacker's review read every team's series with metrics_extra_labels: []).
		{"extra_labels {}", hsRaw(t, payload(`{"extra_labels":{},"mode":1}`)), reasonEmptyRestriction,
			"vm_access.extra_labels is empty; an empty restriction reads as none, which would give every series of the tenant"},
		{"extra_filters []", hsRaw(t, payload(`{"tenant_id":{"account_id":1},"extra_filters":[]}`)), reasonEmptyRestriction, "vm_access.extra_filters is empty"},
		{"extra_filters [] beside labels", hsRaw(t, payload(`{"extra_labels":{"team":"dev"},"extra_filters":[]}`)), reasonEmptyRestriction, "vm_access.extra_filters is empty"},
		{"vmauth labels []", hsRaw(t, payload(`{"metrics_extra_labels":[],"mode":1}`)), reasonEmptyRestriction, "vm_access.metrics_extra_labels is empty"},
		{"vmauth filters []", hsRaw(t, payload(`{"metrics_account_id":1,"metrics_extra_filters":[]}`)), reasonEmptyRestriction, "vm_access.metrics_extra_filters is empty"},
		{"empty in a vm_access string", hs(claimsWith("vm_access", `{"extra_labels":{}}`)), reasonEmptyRestriction, "vm_access.extra_labels is empty"},
		{"logs only, as a string", hs(claimsWith("vm_access", `{"logs_account_id":3,"logs_extra_filters":["x"]}`)), reasonLogsOnly, "unrestricted for metrics"},

		// Regexp matchers that match "" admit every series without the label.
		{"team=~.*", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`{team=~".*"}`}})),
			reasonFilterMatchesEmpty, `the regexp of team=~".*" matches the empty string, so the filter admits every series without the label team`},
		{"team=~dev|", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`{team=~"dev|"}`}})), reasonFilterMatchesEmpty, `team=~"dev|" matches the empty string`},
		{"team=~(dev)?", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`{team=~"(dev)?"}`}})), reasonFilterMatchesEmpty, "matches the empty string"},
		{"team=~empty", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`up{team=~""}`}})), reasonFilterMatchesEmpty, "matches the empty string"},
		{"case-insensitive alternative", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`{team=~"(?i)DEV|"}`}})), reasonFilterMatchesEmpty, "matches the empty string"},
		{"beside a real matcher", hs(claimsWith("vm_access", map[string]any{"extra_labels": map[string]string{"team": "dev"}, "extra_filters": []string{`{env="prod",app=~"a*"}`}})),
			reasonFilterMatchesEmpty, `app=~"a*" matches the empty string`},
		{"in an or-branch", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`{env="prod" or team=~".*"}`}})), reasonFilterMatchesEmpty, "matches the empty string"},
		{"second filter", hs(claimsWith("vm_access", map[string]any{"extra_filters": []string{`{env="prod"}`, `{team=~".*"}`}})), reasonFilterMatchesEmpty, "matches the empty string"},
		{"vmauth filter", hs(claimsWith("vm_access", map[string]any{"metrics_extra_filters": []string{`{team=~".*"}`}})), reasonFilterMatchesEmpty, "matches the empty string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rejects[tc.reason].Get()
			a, err := v.Verify(tc.token)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.reason)
			}
			if a != nil {
				t.Fatalf("Access %+v returned with an error", a)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("message %q does not contain %q", err, tc.msg)
			}
			if got := rejects[tc.reason].Get(); got != before+1 {
				t.Fatalf("vmgateway_auth_rejects_total{reason=%q} = %d, want %d", tc.reason, got, before+1)
			}
			var e *Error
			errors.As(err, &e)
			if want := headerSafe(tc.msg); !strings.Contains(e.WWWAuthenticate(), want) {
				t.Fatalf("WWW-Authenticate %s does not say %s", e.WWWAuthenticate(), want)
			}
			// token explain without keys says the same.
			if got := reasonOf(t, Inspect(tc.token)); got != tc.reason {
				t.Fatalf("Inspect: reason %q, want %q", got, tc.reason)
			}
		})
	}
}

// TestClaimShapesStillAccepted: the neighbours of the refused shapes keep working.
func TestClaimShapesStillAccepted(t *testing.T) {
	clk := newClock()
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{writeFile(t, "s", hmacSecret())}}, clk)
	exp := clk.now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name, payload string
		mode          Mode
	}{
		{"null registered claims outside vm_access", fmt.Sprintf(`{"exp":%d,"nbf":null,"iss":null,"vm_access":{"mode":1}}`, exp), ModeRead},
		{"the same key in sibling objects", fmt.Sprintf(`{"exp":%d,"a":{"x":1},"b":{"x":1},"vm_access":{"tenant_id":{"account_id":1},"extra_labels":{"account_id":"1"}}}`, exp), ModeFull},
		{"missing mode is full", fmt.Sprintf(`{"exp":%d,"vm_access":{"extra_labels":{"team":"dev"}}}`, exp), ModeFull},
		{"explicit team=\"\" selects series without the label", fmt.Sprintf(`{"exp":%d,"vm_access":{"extra_filters":["{team=\"\"}"]}}`, exp), ModeFull},
		{"deny-lists", fmt.Sprintf(`{"exp":%d,"vm_access":{"extra_filters":["{team!=\"ops\"}","{team!~\"ops|\"}"]}}`, exp), ModeFull},
		{"regexps that need a value", fmt.Sprintf(`{"exp":%d,"vm_access":{"extra_filters":["{team=~\".+\"}","{team=~\"dev|ops\"}","{team=~\"dev.*\"}"]}}`, exp), ModeFull},
		{"vmauth logs fields beside a metrics tenant", fmt.Sprintf(`{"exp":%d,"vm_access":{"metrics_account_id":3,"mode":1,"logs_account_id":2,"logs_extra_filters":["x"]}}`, exp), ModeRead},
		{"vmauth logs fields beside metrics labels", fmt.Sprintf(`{"exp":%d,"vm_access":{"metrics_extra_labels":["team=dev"],"logs_account_id":2}}`, exp), ModeFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := v.Verify(hsRaw(t, tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			if a.Mode != tc.mode {
				t.Fatalf("mode %s, want %s", a.Mode, tc.mode)
			}
		})
	}
}

func TestDecodeJSONStrict(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name, in, err string
	}{
		{"object", `{"a":1,"b":[1,{"c":null}],"d":"x"}`, ""},
		{"empty containers", `{"a":{},"b":[]}`, ""},
		{"sibling keys may repeat across objects", `[{"a":1},{"a":1}]`, ""},
		{"duplicate at the top", `{"a":1,"a":1}`, `the key "a" appears twice (in the top-level object)`},
		{"duplicate null", `{"a":null,"a":1}`, `the key "a" appears twice`},
		{"duplicate nested", `{"a":{"b":[0,{"c":{"d":1,"d":2}}]}}`, `the key "d" appears twice (in the object at a.b[1].c)`},
		{"duplicate in a top-level array", `[0,{"x":1,"x":2}]`, `the key "x" appears twice (in the object at [1])`},
		{"32 levels", deep(32), ""},
		{"33 levels", deep(33), "the JSON nests deeper than 32 levels"},
		{"deep objects", strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), "nests deeper"},
		{"trailing data", `{} {}`, "unexpected data after the JSON value"},
		{"cut", `{"a":[1,`, "unexpected EOF"},
		{"not JSON", `{a:1}`, "invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeJSON([]byte(tc.in))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

// TestDecodeJSONKeySpellings: a key is the same key however it is spelt, as Go decodes it.
func TestDecodeJSONKeySpellings(t *testing.T) {
	many := func(dupAt int) string {
		var sb strings.Builder
		sb.WriteString("{")
		for i := range 100 {
			if i > 0 {
				sb.WriteString(",")
			}
			k := i
			if i == dupAt {
				k = 3
			}
			fmt.Fprintf(&sb, `"k%d":%d`, k, i)
		}
		sb.WriteString("}")
		return sb.String()
	}
	for _, tc := range []struct {
		name, in, dupKey string
	}{
		{"escaped letter", `{"vm_access":1,"vm_acces\u0073":2}`, "vm_access"},
		{"escaped slash", `{"a/b":1,"a\/b":2}`, "a/b"},
		{"escaped quote", `{"a\"b":1,"a\"b":2}`, `a"b`},
		{"invalid UTF-8 reads as U+FFFD", "{\"\xff\":1,\"\xfe\":2}", "\ufffd"},
		{"U+FFFD and invalid UTF-8", "{\"\ufffd\":1,\"\xff\":2}", "\ufffd"},
		{"large object", many(99), "k3"},
		{"large object, no duplicate", many(-1), ""},
		{"whitespace everywhere", " {\n\t\"a\" : [ 1 , { \"b\" : 1 , \"b\" : 2 } ] \r\n} ", "b"},
		{"different case", `{"Mode":1,"mode":2}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeJSON([]byte(tc.in))
			var dup *duplicateKeyError
			if tc.dupKey == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.As(err, &dup) || dup.key != tc.dupKey {
				t.Fatalf("error %v; want the key %q twice", err, tc.dupKey)
			}
		})
	}
}

// FuzzDuplicateKeys: decodeJSON finds a duplicate key exactly when a reference decoder that walks json.Decoder
// tokens with a set of keys per object does, and refuses nothing else that Decode accepts (but deep nesting).
func FuzzDuplicateKeys(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`, `{"a":1,"\u0061":2}`, "{\"\xff\":1,\"\xfe\":2}",
		`[{"x":1},{"x":1}]`, `{"exp":1,"vm_access":"{\"mode\":1,\"mode\":0}"}`, ` { "a" : [ ] , "b" : { } } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := decodeJSON(b)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil || !json.Valid(b) {
			if err == nil {
				t.Fatalf("decodeJSON accepts %q, which is not one JSON value", b)
			}
			return
		}
		want, found, refErr := referenceDuplicate(b)
		if refErr != nil {
			t.Fatalf("the reference cannot walk valid JSON %q: %v", b, refErr)
		}
		var dup *duplicateKeyError
		switch {
		case found:
			if !errors.As(err, &dup) || dup.key != want {
				t.Fatalf("decodeJSON(%q) = %v; the reference finds %q twice", b, err, want)
			}
		case errors.As(err, &dup):
			t.Fatalf("decodeJSON(%q) finds %q twice; the reference finds no duplicate", b, dup.key)
		case err != nil && !strings.Contains(err.Error(), "nests deeper"):
			t.Fatalf("decodeJSON(%q) = %v; the reference accepts it", b, err)
		}
	})
}

// referenceDuplicate walks b with json.Decoder tokens and returns the first key given twice in one object.
func referenceDuplicate(b []byte) (key string, found bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var walk func() (string, bool, error)
	walk = func() (string, bool, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", false, err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", false, err
				}
				if seen[k.(string)] {
					return k.(string), true, nil
				}
				seen[k.(string)] = true
				if d, found, err := walk(); found || err != nil {
					return d, found, err
				}
			}
			_, err = dec.Token()
			return "", false, err
		case json.Delim('['):
			for dec.More() {
				if d, found, err := walk(); found || err != nil {
					return d, found, err
				}
			}
			_, err = dec.Token()
			return "", false, err
		}
		return "", false, nil
	}
	if key, found, err = walk(); found || err != nil {
		return key, found, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", false, errors.New("trailing data")
	}
	return "", false, nil
}
