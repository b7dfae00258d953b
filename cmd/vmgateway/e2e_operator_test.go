package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// What an operator sees: the start summary, the flag errors, /-/reload and key rotation (issue 19).

func writeText(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logLine returns the first log line holding every part, waiting for it to come through the pipe.
func (g *gw) logLine(t *testing.T, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range strings.Split(g.logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line holds all of %q; logs:\n%s", parts, g.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartSummaryWithAuth: the start log names the listener, the mode, the upstreams without their credentials,
// auth with each key source, its key count and ids, issuer and audience, the policies, rate limiting with its
// limits, datasource and Redis, and the query limits.
func TestStartSummaryWithAuth(t *testing.T) {
	vm := vmtest.Start(t)
	_, pub := keyPair(t, "rsa")
	secret := filepath.Join(t.TempDir(), "hmac.secret")
	writeText(t, secret, strings.Repeat("k", 32))
	limits := writeFile(t, "limits.yaml", "limits:\n  - {type: queries, value: 100, resolution: minute}\n  - {type: queries, value: 1000, resolution: hour}\n")
	ql := writeFile(t, "ql.yaml", "limits:\n  - max_query_lookback: 1d\n")
	policies := writePolicyFile(t, "policies:\n  - {name: dev, match: {sub: dev}, vm_access: {mode: 1}}\n")
	u, _ := url.Parse(vm.URL)
	withCreds := "http://admin:s3cr3t-pw@" + u.Host
	g := startGateway(t, "-read.url="+withCreds, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-auth.hmacSecretFiles="+secret, "-auth.issuer=https://sso.example.com", "-auth.audience=vmgateway",
		"-auth.policyFile="+policies, "-enable.rateLimit", "-ratelimit.config="+limits, "-datasource.url=http://ds:pw@"+u.Host,
		"-querylimits.config="+ql)

	gu, _ := url.Parse(g.URL)
	g.logLine(t, `msg="start summary: serving"`, "listen=http://"+gu.Host, "tls=false", "mode=single-node",
		"read=http://"+u.Host, "write="+vm.URL)
	g.logLine(t, `msg="start summary: auth is on"`, "keySources=2", "issuer=https://sso.example.com", "audience=vmgateway", "policies=1")
	g.logLine(t, `msg="start summary: key source"`, `source="-auth.publicKeyFiles `+pub+`"`, "keys=1", `ids="RSA-2048 `)
	g.logLine(t, `msg="start summary: key source"`, `source="-auth.hmacSecretFiles `+secret+`"`, "keys=1", `ids="32-byte HMAC secret `)
	g.logLine(t, `msg="start summary: rate limiting is on"`, "limits=2", "datasource=http://"+u.Host, `redis="none`)
	g.logLine(t, `msg="start summary: query limits are on"`, "limits=1")
	if logs := g.logs.String(); strings.Contains(logs, "s3cr3t-pw") || strings.Contains(logs, "ds:pw") || strings.Contains(logs, strings.Repeat("k", 32)) {
		t.Errorf("the start log shows a credential:\n%s", logs)
	}
	if strings.Contains(g.logs.String(), "auth is OFF") {
		t.Error("the auth-off warning with -enable.auth")
	}
	// Open to every team, /metrics tells one team of the others' activity.
	g.logLine(t, "level=WARN", "/metrics is open to anyone who reaches the gateway", "-metricsAuthKey")
	keyed := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub, "-metricsAuthKey=k")
	keyed.logLine(t, `msg="start summary: auth is on"`)
	if strings.Contains(keyed.logs.String(), "/metrics is open") {
		t.Error("the open /metrics warning with -metricsAuthKey")
	}
	if v := metricValue(t, g, "vmgateway_auth_enabled"); v != 1 {
		t.Errorf("vmgateway_auth_enabled = %v with -enable.auth, want 1", v)
	}
}

// TestStartSummaryWithoutAuth: without -enable.auth the gateway says, as a WARN, that it forwards anything to
// anyone, and vmgateway_auth_enabled is 0.
func TestStartSummaryWithoutAuth(t *testing.T) {
	vm := vmtest.Start(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL)
	g.logLine(t, "level=WARN", "auth is OFF", "forwards any request from anyone")
	g.logLine(t, `msg="start summary: rate limiting is off"`)
	if v := metricValue(t, g, "vmgateway_auth_enabled"); v != 0 {
		t.Errorf("vmgateway_auth_enabled = %v without -enable.auth, want 0", v)
	}
	if strings.Contains(g.logs.String(), "query limits are on") {
		t.Error("query limits reported without -querylimits.config")
	}
	// /status is open like /metrics when no key and no basic auth are set, and says auth is off at the top.
	code, h, body := do(t, "GET", g.URL+"/status", nil)
	if code != 200 || h.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(body, `<div class="alert alert-danger" id="auth-off"><b>Auth is off</b>`) ||
		!strings.Contains(body, "Rate limiting is off.") || !strings.Contains(body, "No request refused since the start.") {
		t.Errorf("/status without auth: %d %q\n%s", code, h.Get("Content-Type"), body)
	}
	if code, _, _ := do(t, "POST", g.URL+"/status", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d, want 405", code)
	}
}

// runGatewayExit runs the binary to its end (it must not start serving) and returns its exit code and output.
func runGatewayExit(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(gatewayBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stdout.String(), stderr.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, stdout.String(), stderr.String()
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("vmgateway %q did not exit", args)
	}
	return 0, "", ""
}

// TestFlagErrorLines: a bad flag is one line naming the flag and what it wants, and points at -help; -help lists
// the token modes; a flag without effect warns, and an auth key flag without -enable.auth refuses to start.
func TestFlagErrorLines(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-read.timeout=10"}, `vmgateway: -read.timeout="10": want a duration such as 10s, 1m30s or 2h; see ` + "`vmgateway -help`\n"},
		{[]string{"-maxConcurrentRequests=lots"}, `vmgateway: -maxConcurrentRequests="lots": want an integer such as 100; see ` + "`vmgateway -help`\n"},
		{[]string{"-enable.auth=yes please"}, `vmgateway: -enable.auth="yes please": want true or false; see ` + "`vmgateway -help`\n"},
		{[]string{"-read.urls=http://vm:8428"}, "vmgateway: -read.urls is not a flag of vmgateway; did you mean -read.url?; see `vmgateway -help`\n"},
		{[]string{"-write.url"}, "vmgateway: -write.url needs a value: -write.url=<value>; see `vmgateway -help`\n"},
	} {
		code, stdout, stderr := runGatewayExit(t, tc.args...)
		if code != 2 || stderr != tc.want || stdout != "" {
			t.Errorf("vmgateway %q: exit %d, stderr %q, stdout %q; want exit 2 and %q", tc.args, code, stderr, stdout, tc.want)
		}
	}
	code, stdout, stderr := runGatewayExit(t, "-envflag.enable", "-envflag.prefix=VMGW_")
	if code != 1 || strings.Count(stderr, "\n") != 1 || stdout != "" {
		t.Errorf("a start without -read.url: exit %d, stderr %q, stdout %q; want exit 1 and one line on stderr", code, stderr, stdout)
	}
	cmd := exec.Command(gatewayBin, "-envflag.enable")
	cmd.Env = append(os.Environ(), "read_timeout=10")
	out, _ := cmd.CombinedOutput()
	if want := `vmgateway: -read.timeout="10" (from environment variable read_timeout): want a duration such as 10s, 1m30s or 2h; see ` + "`vmgateway -help`\n"; string(out) != want {
		t.Errorf("a bad environment variable: %q, want %q", out, want)
	}

	code, stdout, stderr = runGatewayExit(t, "-help")
	help := stdout + stderr
	if code != 0 || !strings.Contains(help, "vmgateway token mint [flags]") || !strings.Contains(help, "vmgateway token explain [gateway flags] TOKEN") ||
		!strings.Contains(help, "-read.timeout") {
		t.Errorf("-help: exit %d, want the flags and the token modes:\n%s", code, help)
	}

	code, _, stderr = runGatewayExit(t, "-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1", "-auth.publicKeyFiles=/etc/pub.pem")
	if want := "vmgateway: cannot start: -auth.publicKeyFiles has no effect without -enable.auth: no token is checked and every request is forwarded; add -enable.auth or drop -auth.publicKeyFiles\n"; code != 1 || stderr != want {
		t.Errorf("a key file without -enable.auth: exit %d, %q; want 1 and %q", code, stderr, want)
	}
	vm := vmtest.Start(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-ratelimit.headers=both", "-querylimits.configCheckInterval=1m")
	g.logLine(t, "level=WARN", `"-ratelimit.headers has no effect without -enable.rateLimit: no rate limit is applied"`)
	g.logLine(t, "level=WARN", `"-querylimits.configCheckInterval has no effect without -querylimits.config: no query limit is applied"`)
}

type reloadAnswer struct {
	Status    string
	Changes   []string
	ErrorType string
	Error     string
	Errors    []string
	RequestID string
	// header is the answer's X-Request-Id.
	header string
}

func postReload(t *testing.T, g *gw, key string) (int, reloadAnswer) {
	t.Helper()
	code, h, body := do(t, "POST", g.URL+"/-/reload?authKey="+url.QueryEscape(key), nil)
	var a reloadAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("/-/reload answered %d %q: %s", code, body, err)
	}
	a.header = h.Get("X-Request-Id")
	return code, a
}

func hasChange(a reloadAnswer, part string) bool {
	for _, c := range a.Changes {
		if strings.Contains(c, part) {
			return true
		}
	}
	return false
}

// TestReloadEveryFile: /-/reload re-reads the rate limits, the query limits, the policies, the PEM keys and the
// HMAC secrets against a real VictoriaMetrics, answers what changed, and with any bad file answers 400 with every
// error and keeps the config in force.
func TestReloadEveryFile(t *testing.T) {
	vm := vmtest.Start(t)
	dir := t.TempDir()
	privA, pub := keyPair(t, "rsa")
	privB, pubB := keyPair(t, "rsa")
	pubBText, err := os.ReadFile(pubB)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "hmac.secret")
	oldSecret, newSecret := strings.Repeat("o", 32), strings.Repeat("n", 32)
	writeText(t, secret, oldSecret)
	limits := filepath.Join(dir, "limits.yaml")
	writeText(t, limits, "limits:\n  - {type: queries, value: 1000, resolution: minute}\n")
	ql := filepath.Join(dir, "ql.yaml")
	writeText(t, ql, "limits:\n  - max_query_expression_size_bytes: 1000\n")
	policies := filepath.Join(dir, "policies.yaml")
	writeText(t, policies, "policies:\n  - {name: everyone, match: {sub: alice}, vm_access: {mode: 0}}\n")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-auth.hmacSecretFiles="+secret, "-auth.keyFilesCheckInterval=0", "-auth.policyFile="+policies, "-auth.policy.ignoreTokenAccess",
		"-enable.rateLimit", "-ratelimit.config="+limits, "-datasource.url="+vm.URL, "-querylimits.config="+ql, "-reloadAuthKey=rk")

	hs := func(s, sub string) string {
		f := filepath.Join(t.TempDir(), "s")
		writeText(t, f, s)
		tok, err := mintToken([]string{"-hmacSecretFile=" + f, "-subject=" + sub}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	query := func(tok, q string) int {
		code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query="+url.QueryEscape(q), nil, bearer(tok)...)
		return code
	}
	aliceA, bobA, bobB := mint(t, privA, "-subject=alice"), mint(t, privA, "-subject=bob"), mint(t, privB, "-subject=bob")
	if c := query(aliceA, "up"); c != 200 {
		t.Fatalf("before any reload: %d", c)
	}

	// The endpoint: POST with the key only.
	if code, _, body := do(t, "GET", g.URL+"/-/reload?authKey=rk", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload: %d %s", code, body)
	}
	if code, _, body := do(t, "POST", g.URL+"/-/reload?authKey=wrong", nil); code != http.StatusUnauthorized || !strings.Contains(body, "-reloadAuthKey") {
		t.Errorf("POST /-/reload with a wrong key: %d %s", code, body)
	}
	if code, a := postReload(t, g, "rk"); code != 200 || a.Status != "success" || len(a.Changes) != 0 {
		t.Errorf("a reload of unchanged files: %d %+v", code, a)
	}

	// Policies: alice's policy becomes bob's.
	writeText(t, policies, "policies:\n  - {name: everyone, match: {sub: bob}, vm_access: {mode: 0}}\n")
	if code, a := postReload(t, g, "rk"); code != 200 || !hasChange(a, "-auth.policyFile="+policies) || len(a.Changes) != 1 {
		t.Fatalf("policy reload: %d %+v", code, a)
	}
	if c := query(aliceA, "up"); c != http.StatusForbidden {
		t.Errorf("alice after her policy went: %d, want 403", c)
	}
	if c := query(bobA, "up"); c != 200 {
		t.Errorf("bob after his policy came: %d", c)
	}

	// PEM keys: the file now holds key B.
	writeText(t, pub, string(pubBText))
	if code, a := postReload(t, g, "rk"); code != 200 || !hasChange(a, "-auth.publicKeyFiles "+pub) || len(a.Changes) != 1 {
		t.Fatalf("key file reload: %d %+v", code, a)
	}
	if c := query(bobA, "up"); c != http.StatusUnauthorized {
		t.Errorf("a token of the replaced key: %d, want 401", c)
	}
	if c := query(bobB, "up"); c != 200 {
		t.Errorf("a token of the new key: %d", c)
	}

	// HMAC secrets.
	oldHS, newHS := hs(oldSecret, "bob"), hs(newSecret, "bob")
	if c := query(oldHS, "up"); c != 200 {
		t.Fatalf("a token of the secret in force: %d", c)
	}
	writeText(t, secret, newSecret+"\n")
	if code, a := postReload(t, g, "rk"); code != 200 || !hasChange(a, "-auth.hmacSecretFiles "+secret) || len(a.Changes) != 1 {
		t.Fatalf("secret reload: %d %+v", code, a)
	}
	if c := query(oldHS, "up"); c != http.StatusUnauthorized {
		t.Errorf("a token of the replaced secret: %d, want 401", c)
	}
	if c := query(newHS, "up"); c != 200 {
		t.Errorf("a token of the new secret: %d", c)
	}

	// Query limits: expressions over 20 bytes are refused after the reload.
	long := `sum(rate(reload_probe_metric_total[5m]))`
	if c := query(bobB, long); c != 200 {
		t.Fatalf("a long query before the query limits change: %d", c)
	}
	writeText(t, ql, "limits:\n  - max_query_expression_size_bytes: 20\n")
	if code, a := postReload(t, g, "rk"); code != 200 || !hasChange(a, "-querylimits.config="+ql) || len(a.Changes) != 1 {
		t.Fatalf("query limits reload: %d %+v", code, a)
	}
	if c := query(bobB, long); c != http.StatusUnprocessableEntity {
		t.Errorf("a long query after the query limits change: %d, want 422", c)
	}

	// Every file bad at once: 400 naming each, nothing changes.
	writeText(t, limits, "limits:\n  - {type: queries, value: -1}\n")
	writeText(t, policies, "policies: [\n")
	writeText(t, pub, "not a key\n")
	writeText(t, secret, "short\n")
	code, a := postReload(t, g, "rk")
	if code != http.StatusBadRequest || a.Status != "error" || !strings.Contains(a.Error, "previous config stays") {
		t.Fatalf("a reload of bad files: %d %+v", code, a)
	}
	// The shape of every gateway error, the list of problems besides.
	if a.ErrorType != "bad_data" || a.RequestID == "" || a.RequestID != a.header {
		t.Errorf("a reload of bad files: errorType %q, requestId %q, X-Request-Id %q; want bad_data and the same id", a.ErrorType, a.RequestID, a.header)
	}
	for _, want := range []string{"-ratelimit.config=" + limits, "-auth.policyFile=" + policies, "-auth.publicKeyFiles " + pub, "-auth.hmacSecretFiles " + secret} {
		found := false
		for _, e := range a.Errors {
			found = found || strings.Contains(e, want)
		}
		if !found {
			t.Errorf("the 400 does not name %s: %q", want, a.Errors)
		}
	}
	if c := query(bobB, "up"); c != 200 {
		t.Errorf("after a failed reload the config in force changed: %d", c)
	}
	if c := query(newHS, "up"); c != 200 {
		t.Errorf("after a failed reload the secret in force changed: %d", c)
	}

	// Rate limits: 2 queries a minute, so a burst of 5 meets 429.
	writeText(t, policies, "policies:\n  - {name: everyone, match: {sub: bob}, vm_access: {mode: 0}}\n")
	writeText(t, pub, string(pubBText))
	writeText(t, secret, newSecret+"\n")
	writeText(t, limits, "limits:\n  - {type: queries, value: 2, resolution: minute}\n")
	code, a = postReload(t, g, "rk")
	if code != 200 || !hasChange(a, "-ratelimit.config="+limits+": 1 limits (was 1)") {
		t.Fatalf("rate limits reload: %d %+v", code, a)
	}
	limited := false
	for i := 0; i < 5 && !limited; i++ {
		limited = query(bobB, "up") == http.StatusTooManyRequests
	}
	if !limited {
		t.Error("no 429 within 5 queries after the limit became 2 a minute")
	}
	g.logLine(t, `msg="/-/reload: reloaded"`, "-ratelimit.config=")
}

// TestReloadDisabledWithoutKey: without -reloadAuthKey (or basic auth) /-/reload is refused and says how to
// enable it.
func TestReloadDisabledWithoutKey(t *testing.T) {
	vm := vmtest.Start(t)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL)
	if code, _, body := do(t, "POST", g.URL+"/-/reload", nil); code != http.StatusForbidden || !strings.Contains(body, "-reloadAuthKey") {
		t.Errorf("/-/reload without -reloadAuthKey: %d %s", code, body)
	}
}

// TestKeyRotationByFileChange: a rewritten key file takes effect by itself within -auth.keyFilesCheckInterval;
// a half-written file keeps the keys in force.
func TestKeyRotationByFileChange(t *testing.T) {
	vm := vmtest.Start(t)
	privA, pub := keyPair(t, "rsa")
	privB, pubB := keyPair(t, "ec")
	pubBText, err := os.ReadFile(pubB)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub,
		"-auth.keyFilesCheckInterval=100ms")
	tokA, tokB := mint(t, privA), mint(t, privB)
	query := func(tok string) int {
		code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
		return code
	}
	if query(tokA) != 200 || query(tokB) != http.StatusUnauthorized {
		t.Fatal("before the rotation only key A verifies")
	}
	writeText(t, pub, string(pubBText[:len(pubBText)/2]))
	g.logLine(t, "cannot reload the key files", pub)
	if query(tokA) != 200 {
		t.Fatal("a half-written key file dropped the key in force")
	}
	writeText(t, pub, string(pubBText))
	vmtest.Eventually(t, func() (bool, string) {
		a, b := query(tokA), query(tokB)
		return a == http.StatusUnauthorized && b == 200, "old key token " + http.StatusText(a) + ", new key token " + http.StatusText(b)
	})
	g.logLine(t, `msg="reloaded a key file"`, "EC P-256")
}

// TestReloadAfterPollers: a change the periodic re-reads (-*CheckInterval) applied is not told again by the next
// /-/reload, which answers only what changed since: nothing, then at most the one file changed after the poll.
func TestReloadAfterPollers(t *testing.T) {
	vm := vmtest.Start(t)
	dir := t.TempDir()
	rl, ql := filepath.Join(dir, "limits.yaml"), filepath.Join(dir, "querylimits.yaml")
	writeText(t, rl, "limits:\n  - {type: queries, value: 100}\n")
	writeText(t, ql, "limits:\n  - max_query_expression_size_bytes: 1000\n")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+rlPublicKeyFile(t),
		"-enable.rateLimit", "-ratelimit.config="+rl, "-datasource.url="+vm.URL, "-ratelimit.configCheckInterval=200ms",
		"-querylimits.config="+ql, "-querylimits.configCheckInterval=200ms", "-reloadAuthKey=rk")
	writeText(t, rl, "limits:\n  - {type: queries, value: 100}\n  - {type: queries, value: 50, key: claim:sub}\n")
	writeText(t, ql, "limits:\n  - max_query_expression_size_bytes: 1000\n  - {account_id: 7, max_query_expression_size_bytes: 10}\n")
	g.logLine(t, "loaded the rate limits config", "limits=2")
	g.logLine(t, "loaded the query limits config", "entries=2")
	if code, a := postReload(t, g, "rk"); code != 200 || len(a.Changes) != 0 {
		t.Fatalf("after the pollers applied both files /-/reload answered %d %+v; want no change", code, a)
	}
	writeText(t, ql, "limits:\n  - max_query_expression_size_bytes: 1000\n")
	// The poller may apply it first: then the reload has nothing to tell, else it tells this change only.
	code, a := postReload(t, g, "rk")
	if code != 200 || len(a.Changes) > 1 || len(a.Changes) == 1 && !strings.Contains(a.Changes[0], "-querylimits.config="+ql+": 1 limits (was 2)") {
		t.Fatalf("after one more change /-/reload answered %d %+v", code, a)
	}
	if code, a := postReload(t, g, "rk"); code != 200 || len(a.Changes) != 0 {
		t.Fatalf("a second /-/reload answered %d %+v; want no change", code, a)
	}
}
