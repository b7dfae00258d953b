package main

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// statusScreenshot is the screenshot docs/operations.md shows; UPDATE_DOCS=1 rewrites it.
const statusScreenshot = "../../docs/images/status.png"

// requireChromium is the Debian chromium binary; a test needing it skips only outside CI.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (Debian package chromium); .ci/run installs it")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// chromium runs headless Chromium with args on url and returns its stdout.
func chromium(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, bin, append(all, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %q: %s\n%s", args, err, tailLines(stderr.String(), 20))
	}
	return stdout.Bytes()
}

// TestStatusPageInChromium: a real browser loads /status through the gateway, which fronts a real VictoriaMetrics
// and a dead backend, with auth and a rate limit a tenant went over; the page shows the version and uptime, each
// backend's health, the key source, the tenant's usage bar and the refusals by reason.
func TestStatusPageInChromium(t *testing.T) {
	bin := requireChromium(t)
	vm := vmtest.Start(t)
	dead := "http://" + vmtest.FreePort(t)
	priv, pub := keyPair(t, "rsa")
	limits := writeFile(t, "limits.yaml", "limits:\n  - {type: queries, value: 4, resolution: minute}\n")
	g := startGateway(t, "-read.url="+vm.URL+","+dead, "-write.url="+vm.URL, "-failTimeout=1h", "-enable.auth",
		"-auth.publicKeyFiles="+pub, "-enable.rateLimit", "-ratelimit.config="+limits, "-datasource.url="+vm.URL,
		"-metricsAuthKey=mk")

	tok := mint(t, priv, "-subject=status-test")
	codes := map[int]int{}
	for i := 0; i < 8; i++ {
		code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
		codes[code]++
	}
	if codes[200] == 0 || codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("8 queries under a limit of 4 a minute: %v, want some 200 and some 429", codes)
	}
	expired := mint(t, priv, "-lifetime=-1h")
	if code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(expired)...); code != http.StatusUnauthorized {
		t.Fatalf("expired token: %d", code)
	}
	if code, _, _ := do(t, "GET", g.URL+"/api/v1/query?query=up", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _, body := do(t, "GET", g.URL+"/status", nil); code != http.StatusUnauthorized || !strings.Contains(body, "-metricsAuthKey") {
		t.Fatalf("/status without the key: %d %s", code, body)
	}

	page := g.URL + "/status?authKey=mk"
	dom := string(chromium(t, bin, page, "--dump-dom"))
	for _, want := range []string{
		"<title>vmgateway status</title>",
		"<span>version dev</span>",
		"<span>up ",
		`<td>read</td><td><code>` + vm.URL + `</code></td><td><span class="badge up">up</span>`,
		`<td>read</td><td><code>` + dead + `</code></td><td><span class="badge down">broken</span>`,
		`<td>write</td><td><code>` + vm.URL + `</code></td><td><span class="badge up">up</span>`,
		`<code>-auth.publicKeyFiles ` + pub + `</code></td><td>1<br><code>RSA-2048 `,
		`<tr class="over"><td>0:0</td><td></td><td>queries per minute</td><td><div class="bar"><div class="fill over" style="width:100%"></div></div> 4 / 4</td>`,
		`<td>401</td><td class="nw">expired</td><td>1</td>`,
		`<td>401</td><td class="nw">missing_token</td><td>1</td>`,
		`<td>429</td><td class="nw">too many requests</td><td>` + strconv.Itoa(codes[http.StatusTooManyRequests]) + `</td>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page Chromium rendered lacks %s\n%s", want, dom)
		}
	}
	if strings.Contains(dom, "<script") || strings.Contains(dom, tok) {
		t.Error("the page has a script or shows a token")
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	chromium(t, bin, page, "--screenshot="+shot, "--window-size=1200,900")
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("the screenshot is not a PNG of a rendered page: %d bytes, %v", len(png), err)
	}
	if os.Getenv("UPDATE_DOCS") != "" {
		if err := os.MkdirAll(filepath.Dir(statusScreenshot), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(statusScreenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatusOpenHidesTenants: /status served without a key or basic auth (open, as /metrics is) is readable by
// anyone who reaches the gateway, token or not. It must not show what /ratelimit/status keeps behind its own key
// (which tenant or team is near a limit) nor the refusals' messages, which quote other teams' queries and labels.
func TestStatusOpenHidesTenants(t *testing.T) {
	vm := vmtest.Start(t)
	g := rlGateway(t, vm.URL, vm.URL, "limits:\n  - {type: queries, value: 2, resolution: minute, key: label:team}\n")
	tok := respToken(t, auth.VMAccess{ExtraLabels: map[string]string{"team": "team-secret"}, Mode: auth.ModeRead})
	for i := 0; i < 3; i++ {
		do(t, "GET", g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
	}
	if code, _, body := do(t, "GET", g.URL+"/api/v1/query?query="+url.QueryEscape("secret_metric{"), nil, bearer(tok)...); code != http.StatusTooManyRequests {
		t.Fatalf("the team's fourth query: %d %s", code, body)
	}
	do(t, "GET", g.URL+"/api/v1/query?query="+url.QueryEscape("secret_metric{"), nil)
	code, _, body := do(t, "GET", g.URL+"/status", nil)
	if code != 200 || !strings.Contains(body, `<td>429</td><td class="nw">too many requests</td>`) || !strings.Contains(body, "-metricsAuthKey") {
		t.Fatalf("open /status: %d\n%s", code, body)
	}
	for _, secret := range []string{"team-secret", "rate limit exceeded", "missing "} {
		if strings.Contains(body, secret) {
			t.Errorf("open /status shows %q\n%s", secret, body)
		}
	}
}
