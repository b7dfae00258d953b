package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce/corpus"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// writeTeamsDirect writes the three teams' data straight into VictoriaMetrics, bypassing the gateway.
func writeTeamsDirect(t *testing.T, vm *vmtest.VM) {
	t.Helper()
	code, _, body := do(t, "POST", vm.URL+"/api/v1/import/prometheus", strings.NewReader(corpus.TeamData(time.Now())), "Content-Type", "text/plain")
	if code/100 != 2 {
		t.Fatalf("direct import: %d %s", code, body)
	}
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		_, _, body := do(t, "GET", vm.URL+"/api/v1/series?start=-1d&match[]="+url.QueryEscape(`{__name__=~".+"}`), nil)
		n := strings.Count(body, `"__name__"`)
		return n == corpus.SeriesCount, fmt.Sprintf("%d series visible, want %d", n, corpus.SeriesCount)
	})
}

// TestAdversarialCorpusThroughGateway sends the shared corpus of hostile requests through the real gateway with
// restricted team=dev tokens, into Debian's 1.79.5 and into the current release: no answer may carry another
// team's series, label name or value. The current release also evaluates tokens with several extra_filters, which
// the gateway rewrites to `or` filters that 1.79.5 cannot parse.
func TestAdversarialCorpusThroughGateway(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  func(testing.TB, ...string) *vmtest.VM
		modern bool
	}{
		{"debian-1.79.5", vmtest.Start, false},
		{"current-" + vmtest.CurrentVersion, vmtest.StartCurrent, true},
	} {
		t.Run(tc.name, func(t *testing.T) { adversarialCorpus(t, tc.start(t), tc.modern) })
	}
}

func adversarialCorpus(t *testing.T, vm *vmtest.VM, modern bool) {
	writeTeamsDirect(t, vm)
	priv, pub := keyPair(t, "rsa")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	entries, err := corpus.Load()
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{
		"labels":        mint(t, priv, "-mode=full", "-extraLabels=team=dev"),
		"labels+filter": mint(t, priv, "-mode=full", "-extraLabels=team=dev", `-extraFilters={instance=~"dev-.*"}`),
		"filter only":   mint(t, priv, "-mode=full", `-extraFilters={team="dev",instance="dev-host"}`),
		"vmauth shape":  mint(t, priv, "-mode=read", "-claimShape=vmauth", "-extraLabels=team=dev"),
	}
	if modern {
		tokens["two filters (or)"] = mint(t, priv, "-mode=full", `-extraFilters={team="dev",instance="dev-host"}`, `-extraFilters={team="dev",job="api"}`)
		tokens["labels+two filters (or)"] = mint(t, priv, "-mode=full", "-extraLabels=team=dev", `-extraFilters={instance="dev-host"}`, `-extraFilters={job=~"api|web"}`)
	}
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			forwarded, refused := 0, 0
			for _, c := range entries {
				req, err := c.Request(g.URL)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("%s: %s", c.Name, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body := string(b)
				switch {
				case resp.StatusCode/100 == 2:
					forwarded++
				case resp.StatusCode/100 == 4:
					refused++
				}
				// Admin APIs are off limits for the read-only vmauth-shaped token: a refusal is right there.
				if name == "vmauth shape" && resp.StatusCode == http.StatusForbidden && strings.Contains(body, `mode "read"`) {
					continue
				}
				switch c.Want {
				case "ok":
					if resp.StatusCode/100 != 2 {
						t.Errorf("%s: want 2xx, got %d %.300s", c.Name, resp.StatusCode, body)
					}
				case "refused":
					if resp.StatusCode/100 != 4 || !strings.Contains(body, `"status":"error"`) {
						t.Errorf("%s: want a 4xx JSON error from the gateway, got %d %.300s", c.Name, resp.StatusCode, body)
					}
				}
				if resp.StatusCode/100 != 2 {
					continue
				}
				for _, leak := range c.Leaks(body) {
					t.Errorf("LEAK %s: the answer carries %s:\n%.1500s", c.Name, leak, body)
				}
				if c.DevMarker != "" && !strings.Contains(body, c.DevMarker) {
					t.Errorf("%s: the answer lacks dev's own data %s: %.500s", c.Name, c.DevMarker, body)
				}
			}
			t.Logf("%d requests: %d forwarded and answered 2xx, %d refused with 4xx", len(entries), forwarded, refused)
		})
	}
	// Nothing deleted anything of another team along the way.
	_, _, body := do(t, "GET", vm.URL+"/api/v1/series?start=-1d&match[]="+url.QueryEscape(`{team=~"ops|sec"}`), nil)
	if n := strings.Count(body, `"__name__"`); n != 8 {
		t.Fatalf("other teams' series: %d left, want 8: %s", n, body)
	}
}

// onlyOnes matches an export whose values are all 1.
var onlyOnes = regexp.MustCompile(`"values":\[1(,1)*\]`)

// TestWritesCarryTheTokensLabels: in every write format, a body labelled team="ops" and a client extra_label for ops
// end up stored with the token's team="dev", and the client's extra_label args of other labels are kept. vmagent and
// vmalert, real clients, write and read with bearer tokens.
func TestWritesCarryTheTokensLabels(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	read := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	now := time.Now().UnixMilli()
	for _, w := range []struct{ path, ctype, body string }{
		{"/api/v1/import/prometheus?extra_label=team=ops&extra_label=site=eu", "text/plain", `wr_prom{team="ops"} 1` + "\n"},
		{"/prometheus/api/v1/import/prometheus?extra_label=team=ops&extra_label=team=sec", "text/plain", `wr_prom_prefixed{team="ops"} 2` + "\n"},
		{"/api/v1/import?extra_label=team=ops", "application/json", fmt.Sprintf(`{"metric":{"__name__":"wr_json","team":"ops"},"values":[3],"timestamps":[%d]}`, now) + "\n"},
		{"/api/v1/import/csv?format=1:label:team,2:metric:wr_csv&extra_label=team=ops", "text/csv", "ops,4\n"},
		{"/influx/write?extra_label=team=ops", "text/plain", "wr_influx,team=ops value=5\n"},
		{"/datadog/api/v1/series?extra_label=team=ops", "application/json", fmt.Sprintf(`{"series":[{"metric":"wr_datadog","points":[[%d,6]],"tags":["team:ops"]}]}`, now/1000)},
	} {
		code, _, body := do(t, "POST", g.URL+w.path, strings.NewReader(w.body), append(bearer(write), "Content-Type", w.ctype)...)
		if code/100 != 2 {
			t.Fatalf("write %s: %d %s", w.path, code, body)
		}
	}
	// vmagent forwards with the write token; the sample claims team ops.
	agent := startVMAgent(t, g.URL+"/api/v1/write?extra_label=site=eu&extra_label=team=ops", "-remoteWrite.bearerToken="+write)
	if code, _, body := do(t, "POST", agent+"/api/v1/import/prometheus", strings.NewReader(`wr_vmagent{team="ops"} 7`+"\n"), "Content-Type", "text/plain"); code/100 != 2 {
		t.Fatalf("vmagent import: %d %s", code, body)
	}
	vm.Flush(t)
	for _, name := range []string{"wr_prom", "wr_prom_prefixed", "wr_json", "wr_csv", "wr_influx_value", "wr_datadog", "wr_vmagent"} {
		site := name == "wr_prom" || name == "wr_vmagent"
		vmtest.Eventually(t, func() (bool, string) {
			vm.Flush(t)
			_, _, body := do(t, "GET", vm.URL+"/api/v1/export?match[]="+name, nil)
			return strings.Contains(body, `"team":"dev"`) && !strings.Contains(body, `"ops"`) && !strings.Contains(body, `"sec"`) &&
					strings.Contains(body, `"site":"eu"`) == site,
				fmt.Sprintf("%s stored as %s (site=eu from the client's extra_label: %v)", name, body, site)
		})
	}

	// vmalert evaluates a recording rule through the gateway with the read token and writes the result back with
	// the write token: it sees dev's series only, and its output is dev's.
	do(t, "POST", vm.URL+"/api/v1/import/prometheus", strings.NewReader(`rule_input{team="ops"} 100`+"\n"+`rule_input{team="dev"} 1`+"\n"), "Content-Type", "text/plain")
	vm.Flush(t)
	rules := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(rules, []byte("groups:\n- name: dev\n  interval: 1s\n  rules:\n  - record: dev:rule_input:sum\n    expr: sum(rule_input)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startVMAlert(t, "-rule="+rules, "-datasource.url="+g.URL, "-datasource.bearerToken="+read,
		"-remoteWrite.url="+g.URL, "-remoteWrite.bearerToken="+write, "-evaluationInterval=1s")
	vmtest.Eventually(t, func() (bool, string) {
		vm.Flush(t)
		_, _, body := do(t, "GET", vm.URL+"/api/v1/export?match[]="+url.QueryEscape("dev:rule_input:sum"), nil)
		// Every value is dev's 1, never 101 with ops' (the timestamps may hold "101" as digits).
		return strings.Contains(body, `"team":"dev"`) && onlyOnes.MatchString(body), "vmalert's recording through the gateway: " + body
	})
}

// TestArgPaddingThroughGateway: a team=dev token pads its URL query to url.ParseQuery's bound of 10,000 args, so
// that the args the gateway adds for it would push the query past and have it dropped whole on the way to the
// real VictoriaMetrics: the listing APIs would then answer every team's names and values. Past the bound the
// gateway refuses; just under it the answer is dev's alone.
func TestArgPaddingThroughGateway(t *testing.T) {
	vm := vmtest.Start(t)
	writeTeamsDirect(t, vm)
	priv, pub := keyPair(t, "rsa")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	tok := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	pad := func(n int) string { return strings.Repeat("x&", n-1) + "x" }
	for _, path := range []string{"/api/v1/label/team/values", "/api/v1/labels", "/api/v1/label/instance/values"} {
		code, _, body := do(t, "GET", g.URL+path+"?"+pad(9999), nil, "Authorization", "Bearer "+tok)
		if code != http.StatusBadRequest || !strings.Contains(body, "would drop them all") {
			t.Errorf("%s padded past the bound: %d %.300s; want a 400 naming the bound", path, code, body)
		}
		code, _, body = do(t, "GET", g.URL+path+"?"+pad(9990), nil, "Authorization", "Bearer "+tok)
		if code != http.StatusOK {
			t.Errorf("%s padded under the bound: %d %.300s", path, code, body)
			continue
		}
		for _, leak := range corpus.Forbidden {
			if strings.Contains(body, leak) {
				t.Errorf("LEAK %s padded under the bound: the answer carries %s: %.500s", path, leak, body)
			}
		}
	}
}
