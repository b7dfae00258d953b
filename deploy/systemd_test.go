package deploy

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

const unitFile = "systemd/vmgateway.service"

// TestSystemdUnit: systemd-analyze accepts the unit (with ExecStart pointing at the binary under test) and rates
// its sandbox at most 2.0 ("OK"); the hardening the docs promise is there; and ExecStart's flags start a working
// gateway against a real VictoriaMetrics.
func TestSystemdUnit(t *testing.T) {
	analyze := vmtest.Require(t, "systemd-analyze")
	unit := readFile(t, unitFile)
	const installed = "/usr/local/bin/vmgateway"
	if !strings.Contains(unit, "ExecStart="+installed+" ") {
		t.Fatalf("ExecStart must run %s", installed)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "vmgateway.service")
	writeFile(t, path, strings.ReplaceAll(unit, installed, gatewayBin))
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=true", "--threshold=20", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security rates the unit's exposure above 2.0: %v\n%s", err, tail(string(out), 3000))
	}
	if m := regexp.MustCompile(`Overall exposure level for \S+: (\S+)`).FindStringSubmatch(string(out)); m != nil {
		t.Logf("systemd-analyze security: exposure %s", m[1])
	}

	settings := map[string][]string{}
	var execStart string
	lines := strings.Split(strings.ReplaceAll(unit, "\\\n", " "), "\n")
	for _, l := range lines {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		settings[k] = append(settings[k], v)
		if k == "ExecStart" {
			execStart = v
		}
	}
	for k, want := range map[string]string{
		"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
		"PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
		"SystemCallFilter": "@system-service", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	} {
		if !slices.Contains(settings[k], want) {
			t.Errorf("%s=%s is missing (has %q)", k, want, settings[k])
		}
	}

	// ExecStart's flags: the paths under /etc/vmgateway (ConfigurationDirectory) get the test's files, the
	// upstreams a real VictoriaMetrics.
	vm := vmtest.Start(t)
	key, pub, _ := writeKeyPair(t, dir, "issuer")
	writeFile(t, filepath.Join(dir, "etc", "pub.pem"), readFile(t, pub))
	args := strings.Fields(execStart)[1:]
	for i, a := range args {
		args[i] = strings.NewReplacer("/etc/vmgateway/", dir+"/etc/", "http://127.0.0.1:8428", vm.URL).Replace(a)
	}
	gw, _ := startGateway(t, args)
	token := mint(t, key, "-mode=read")
	if st, body := call(t, http.MethodGet, gw+"/api/v1/query?query=1", token, ""); st != http.StatusOK {
		t.Errorf("a query through the gateway started with ExecStart's flags: %d %s", st, body)
	}
	if st, _ := call(t, http.MethodGet, gw+"/api/v1/query?query=1", "", ""); st != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", st)
	}
}
