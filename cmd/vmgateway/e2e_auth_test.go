package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// keyPair writes a fresh private key and its public key as PEM files and returns their paths.
func keyPair(t testing.TB, kind string) (priv, pub string) {
	t.Helper()
	var key any
	var err error
	switch kind {
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ec":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, kind+"-key.pem"), filepath.Join(dir, kind+"-pub.pem")
	writePEM(t, priv, "PRIVATE KEY", der)
	writePublicKey(t, pub, key.(crypto.Signer).Public())
	return priv, pub
}

// writePublicKey writes pub as a PKIX PEM file for -auth.publicKeyFiles.
func writePublicKey(t testing.TB, path string, pub crypto.PublicKey) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PUBLIC KEY", der)
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mint signs a token with the token tool, as an operator would.
func mint(t testing.TB, keyFile string, args ...string) string {
	t.Helper()
	tok, err := mintToken(append([]string{"-key=" + keyFile}, args...), io.Discard)
	if err != nil {
		t.Fatalf("mint %v: %s", args, err)
	}
	return tok
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// TestAuthModesAgainstVictoriaMetrics: a read token can query but not write, a write token the reverse, a full
// token both; bad tokens get 401 with the RFC 6750 header and a specific reason.
func TestAuthModesAgainstVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "rsa")
	ecPriv, ecPub := keyPair(t, "ec")
	_, otherPub := keyPair(t, "ed25519")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth",
		"-auth.publicKeyFiles="+pub, "-auth.publicKeyFiles="+ecPub+","+otherPub)

	read := mint(t, priv, "-mode=read")
	write := mint(t, ecPriv, "-mode=write")
	full := mint(t, priv, "-mode=full", "-claimShape=vmauth")

	importURL := g.URL + "/api/v1/import/prometheus"
	queryURL := g.URL + "/api/v1/query?query=" + url.QueryEscape("auth_modes_probe")

	if code, _, body := do(t, "POST", importURL, strings.NewReader("auth_modes_probe 7\n"), bearer(read)...); code != http.StatusForbidden {
		t.Errorf("read token writing: %d %s", code, body)
	} else if _, msg := decodeError(t, body); !strings.Contains(msg, `mode "read"`) {
		t.Errorf("read token writing: message %q does not name the mode", msg)
	}
	if code, _, body := do(t, "POST", importURL, strings.NewReader("auth_modes_probe 7\n"), append(bearer(write), "Content-Type", "text/plain")...); code/100 != 2 {
		t.Fatalf("write token writing: %d %s", code, body)
	}
	if code, _, body := do(t, "GET", queryURL, nil, bearer(write)...); code != http.StatusForbidden {
		t.Errorf("write token reading: %d %s", code, body)
	}
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, "GET", queryURL, nil, bearer(read)...)
		return code == 200 && strings.Contains(body, `"7"]`), body
	})
	if code, _, body := do(t, "GET", queryURL, nil, bearer(full)...); code != 200 || !strings.Contains(body, `"7"]`) {
		t.Errorf("full (vmauth-shaped) token reading: %d %s", code, body)
	}
	if code, _, body := do(t, "POST", importURL, strings.NewReader("auth_modes_probe 8\n"), bearer(full)...); code/100 != 2 {
		t.Errorf("full token writing: %d %s", code, body)
	}
	// Only full tokens may delete.
	del := g.URL + "/api/v1/admin/tsdb/delete_series?match[]=auth_modes_probe"
	if code, _, body := do(t, "POST", del, nil, bearer(read)...); code != http.StatusForbidden {
		t.Errorf("read token deleting: %d %s", code, body)
	}

	strangerKey, _ := keyPair(t, "rsa")
	hmacFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(hmacFile, []byte(strings.Repeat("s", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	hsToken, err := mintToken([]string{"-hmacSecretFile=" + hmacFile}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		header []string
		reason string
	}{
		{"no token", nil, "missing"},
		{"not a JWT", bearer("not-a-token"), ""},
		{"expired", bearer(mint(t, priv, "-lifetime=-1h")), "expired at"},
		{"unknown signer", bearer(mint(t, strangerKey)), ""},
		{"HMAC token, no secret configured", bearer(hsToken), ""},
		{"alg none", bearer(noneToken(t)), ""},
		// RFC 6750 §3.1: a request without Bearer credentials gets a bare challenge, no error code.
		{"Basic instead of Bearer", []string{"Authorization", "Basic dXNlcjpwYXNz"}, "Bearer <token>"},
	} {
		code, h, body := do(t, "GET", queryURL, nil, tc.header...)
		if code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401: %s", tc.name, code, body)
			continue
		}
		typ, msg := decodeError(t, body)
		if typ != "unauthorized" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(msg, tc.reason) {
			t.Errorf("%s: %q %q, WWW-Authenticate %q", tc.name, typ, msg, h.Get("WWW-Authenticate"))
		}
		if tc.header != nil && !strings.HasPrefix(tc.header[1], "Basic") && !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: WWW-Authenticate %q lacks error=\"invalid_token\"", tc.name, h.Get("WWW-Authenticate"))
		}
	}
	code, _, body := do(t, "GET", g.URL+"/metrics", nil)
	if code != 200 || !strings.Contains(body, `vmgateway_auth_rejects_total{reason="expired"} 1`) {
		t.Errorf("rejects not counted by reason in /metrics")
	}
}

// noneToken is an unsigned token with alg "none", the classic bypass.
func noneToken(t testing.TB) string {
	t.Helper()
	enc := func(s string) string { return strings.TrimRight(b64.EncodeToString([]byte(s)), "=") }
	return enc(`{"alg":"none","typ":"JWT"}`) + "." + enc(`{"exp":4102444800,"vm_access":{"mode":0}}`) + "."
}

func TestAuthRequiresAKeyUnlessSkipVerify(t *testing.T) {
	out, err := exec.Command(gatewayBin, "-enable.auth", "-read.url=http://x", "-write.url=http://x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-auth.publicKeyFiles") || !strings.Contains(string(out), "-auth.skipVerify") {
		t.Fatalf("gateway with auth and no key started or did not say why: %v\n%s", err, out)
	}
	rec := vmtest.NewRecorder(t)
	g := startGateway(t, "-read.url="+rec.URL, "-write.url="+rec.URL, "-enable.auth", "-auth.skipVerify")
	if !g.logged("level=WARN") {
		t.Errorf("no warning logged for -auth.skipVerify:\n%s", g.logs.String())
	}
	code, _, body := do(t, "GET", g.URL+"/metrics", nil)
	if code != 200 || !strings.Contains(body, "vmgateway_auth_signature_verification_disabled 1") {
		t.Errorf("-auth.skipVerify not exposed in /metrics")
	}
	// Unverified, but still parsed: a token without exp is refused, one with a forged signature passes.
	if code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(noneToken(t))...); code != 200 {
		t.Errorf("skipVerify refused a well-formed token: %d", code)
	}
}

func TestTokenTool(t *testing.T) {
	priv, pub := keyPair(t, "ed25519")
	tok := mint(t, priv, "-tenant=15:3", "-extraLabels=team=dev", "-extraFilters={env=~\"prod|dev\"}", "-mode=read", "-subject=alice", "-issuer=idp", "-kid=k1")
	run := func(args ...string) (int, string) {
		var out strings.Builder
		code := runTokenIsolated(t, args, &out)
		return code, out.String()
	}
	code, out := run("explain", "-clusterMode", "-auth.publicKeyFiles="+pub, "-auth.issuer=idp", tok)
	for _, want := range []string{"EdDSA", `key id "k1"`, `"alice"`, "15:3", "read — may call read APIs only", `team="dev"`, `{env=~"prod|dev"}`, "YES: tenant 15:3, mode read"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("explain: exit %d, want %q in:\n%s", code, want, out)
		}
	}
	// The same token in front of single-node VictoriaMetrics: it verifies, but its tenant is refused.
	code, out = run("explain", "-auth.publicKeyFiles="+pub, "-auth.issuer=idp", tok)
	if code != 1 || !strings.Contains(out, "every request gets 403: the token is for tenant 15:3") {
		t.Errorf("explain of a tenant token for single-node: exit %d:\n%s", code, out)
	}
	code, out = run("explain", "-clusterMode", "-auth.publicKeyFiles="+pub, "-auth.issuer=other", tok)
	if code != 1 || !strings.Contains(out, "NO: 401") || !strings.Contains(out, "issuer") {
		t.Errorf("explain with the wrong issuer: exit %d:\n%s", code, out)
	}
	code, out = run("explain", tok)
	if code != 3 || !strings.Contains(out, "Cannot tell") {
		t.Errorf("explain without key flags: exit %d:\n%s", code, out)
	}
	if _, err := mintToken([]string{"-key=" + priv, "-extraFilters=sum(up)"}, io.Discard); err == nil {
		t.Error("mint accepted an extra filter that is not a series selector")
	}
	if _, err := mintToken([]string{"-key=" + priv, "-alg=RS256"}, io.Discard); err == nil {
		t.Error("mint accepted RS256 with an Ed25519 key")
	}
	if _, err := mintToken([]string{"-key=" + priv, "-mode=admin"}, io.Discard); err == nil {
		t.Error("mint accepted mode admin")
	}
}

// runTokenIsolated runs `vmgateway token ...` as a process: explain parses the process's global flags.
func runTokenIsolated(t *testing.T, args []string, out io.Writer) int {
	t.Helper()
	cmd := exec.Command(gatewayBin, append([]string{"token"}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

var b64 = base64.RawURLEncoding
