package deploy

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// composeFile is the part of the Compose specification deploy/compose uses; a key outside it fails the test.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]struct{}       `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context string            `yaml:"context"`
		Args    map[string]string `yaml:"args"`
	} `yaml:"build"`
	Command   []string `yaml:"command"`
	Volumes   []string `yaml:"volumes"`
	Ports     []string `yaml:"ports"`
	DependsOn []string `yaml:"depends_on"`
	Restart   string   `yaml:"restart"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var cf composeFile
	dec := yamlv3.NewDecoder(bytes.NewReader([]byte(readFile(t, "compose/docker-compose.yml"))))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("compose/docker-compose.yml: %s", err)
	}
	return cf
}

// TestCompose checks deploy/compose/docker-compose.yml, then runs what it describes without Docker: the same
// flags and files on a real VictoriaMetrics, the gateway binary and a real vmagent, and smoke.sh's own checks
// against them (smoke.sh without arguments runs those checks against the containers).
func TestCompose(t *testing.T) {
	cf := loadCompose(t)
	var names []string
	for name := range cf.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "victoriametrics,vmagent,vmgateway" {
		t.Fatalf("services %v, want victoriametrics, vmgateway, vmagent", names)
	}
	vmS, gwS, agentS := cf.Services["victoriametrics"], cf.Services["vmgateway"], cf.Services["vmagent"]

	pinned := regexp.MustCompile(`^victoriametrics/(victoria-metrics|vmagent):(v\d+\.\d+\.\d+)$`)
	mv, ma := pinned.FindStringSubmatch(vmS.Image), pinned.FindStringSubmatch(agentS.Image)
	if mv == nil || ma == nil || mv[1] != "victoria-metrics" || ma[1] != "vmagent" || mv[2] != ma[2] {
		t.Errorf("images %q and %q: want victoriametrics/victoria-metrics and victoriametrics/vmagent pinned to the same vX.Y.Z", vmS.Image, agentS.Image)
	}
	if gwS.Build == nil || gwS.Build.Args["VERSION"] == "" {
		t.Fatalf("the gateway must be built from the repository with a VERSION build arg: %+v", gwS.Build)
	}
	if _, err := os.Stat(filepath.Join("compose", gwS.Build.Context, "Dockerfile")); err != nil {
		t.Errorf("build context %s has no Dockerfile: %s", gwS.Build.Context, err)
	}
	if !regexp.MustCompile(`(?m)^ARG VERSION\b`).MatchString(readFile(t, filepath.Join("compose", gwS.Build.Context, "Dockerfile"))) {
		t.Error("the Dockerfile does not take the VERSION build arg the compose file passes")
	}
	wantPorts := map[string]string{"victoriametrics": "8428", "vmgateway": "8431", "vmagent": "8429"}
	for name, s := range cf.Services {
		if len(s.Ports) != 1 || s.Ports[0] != "127.0.0.1:"+wantPorts[name]+":"+wantPorts[name] {
			t.Errorf("%s publishes %v, want 127.0.0.1:%s:%[2]s only", name, s.Ports, wantPorts[name])
		}
	}

	// The keys and vmagent's token, as `smoke.sh keys` makes them for the containers.
	bash := vmtest.Require(t, "bash")
	vmtest.Require(t, "openssl")
	vmtest.Require(t, "curl")
	keys := t.TempDir()
	smokeEnv := append(os.Environ(), "KEYS_DIR="+keys, "VMGATEWAY="+gatewayBin)
	runSmoke(t, bash, smokeEnv, "keys")
	for file, mode := range map[string]os.FileMode{"key.pem": 0o600, "pub.pem": 0o644, "vmagent.token": 0o644} {
		st, err := os.Stat(filepath.Join(keys, file))
		if err != nil || st.Mode().Perm() != mode || st.Size() == 0 {
			t.Errorf("smoke.sh keys: %s: %v (mode %v), want a file with mode %v", file, err, st, mode)
		}
	}
	// Every bind mount's source is a file of the repository or one `smoke.sh keys` made; never the private key.
	hostPaths := map[string]string{}
	for name, s := range cf.Services {
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if !strings.HasPrefix(parts[0], "./") {
				if _, ok := cf.Volumes[parts[0]]; !ok {
					t.Errorf("%s mounts the undeclared volume %s", name, parts[0])
				}
				continue
			}
			src := filepath.Join("compose", parts[0])
			if k, ok := strings.CutPrefix(parts[0], "./keys/"); ok {
				src = filepath.Join(keys, k)
			}
			if strings.HasSuffix(parts[0], "key.pem") {
				t.Errorf("%s mounts the private key %s", name, parts[0])
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("%s mounts %s, which does not exist: %s", name, parts[0], err)
			}
			if len(parts) < 3 || parts[2] != "ro" {
				t.Errorf("%s mounts %s writable; mount files read-only", name, parts[0])
			}
			abs, err := filepath.Abs(src)
			if err != nil {
				t.Fatal(err)
			}
			hostPaths[parts[1]] = abs
		}
	}

	// VictoriaMetrics with the compose file's flags (the test owns the data dir and the address).
	var vmFlags []string
	for _, f := range vmS.Command {
		if !strings.HasPrefix(f, "-storageDataPath=") && !strings.HasPrefix(f, "-httpListenAddr=") {
			vmFlags = append(vmFlags, f)
		}
	}
	vm := vmtest.Start(t, vmFlags...)

	// The gateway with the compose file's flags: container paths and service names point at the test's.
	gwRepl := map[string]string{"http://victoriametrics:8428": vm.URL}
	for container, host := range hostPaths {
		gwRepl[container] = host
	}
	gwURL, _ := startGateway(t, replaceAll(gwS.Command, gwRepl))

	// vmagent with the compose file's flags, scraping the same three services at their test addresses.
	agentBin := vmtest.Require(t, "/usr/bin/vmagent")
	agentAddr := vmtest.FreePort(t)
	scrape := readFile(t, "compose/scrape.yml")
	scrape = strings.NewReplacer("vmgateway:8431", strings.TrimPrefix(gwURL, "http://"),
		"victoriametrics:8428", strings.TrimPrefix(vm.URL, "http://"), "vmagent:8429", agentAddr).Replace(scrape)
	scrapeFile := filepath.Join(t.TempDir(), "scrape.yml")
	writeFile(t, scrapeFile, scrape)
	_, agentPort, _ := net.SplitHostPort(agentAddr)
	agentRepl := map[string]string{
		"/etc/vmagent/scrape.yml": scrapeFile, "/keys/vmagent.token": hostPaths["/keys/vmagent.token"],
		"http://vmgateway:8431": gwURL, "/vmagentdata": t.TempDir(), ":8429": "127.0.0.1:" + agentPort,
	}
	agent := startProc(t, t.TempDir(), append([]string{agentBin, "-promscrape.config.strictParse", "-loggerLevel=WARN"},
		replaceAll(agentS.Command, agentRepl)...)...)
	if !agent.healthy(agentAddr) {
		t.Fatal("vmagent with the compose file's flags did not start")
	}

	out := runSmoke(t, bash, append(smokeEnv, "GATEWAY_URL="+gwURL, "VM_URL="+vm.URL), "check")
	t.Logf("smoke.sh check:\n%s", out)
	if !strings.Contains(out, "smoke test passed") {
		t.Errorf("smoke.sh check did not pass:\n%s", out)
	}
}

// TestComposeSmokeFails: smoke.sh check fails when the gateway does not isolate teams, so its success means
// something. The "gateway" here is VictoriaMetrics itself, which answers everything and adds no label.
func TestComposeSmokeFails(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	vmtest.Require(t, "curl")
	vm := vmtest.Start(t)
	keys := t.TempDir()
	env := append(os.Environ(), "KEYS_DIR="+keys, "VMGATEWAY="+gatewayBin, "GATEWAY_URL="+vm.URL, "VM_URL="+vm.URL)
	runSmoke(t, bash, env, "keys")
	cmd := exec.Command(bash, "compose/smoke.sh", "check")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL: a request without a token is not refused with 401") {
		t.Errorf("smoke.sh check against an unprotected VictoriaMetrics: %v\n%s", err, out)
	}
}

func runSmoke(t *testing.T, bash string, env []string, arg string) string {
	t.Helper()
	cmd := exec.Command(bash, "compose/smoke.sh", arg)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("smoke.sh %s: %v\n%s", arg, err, out)
	}
	return string(out)
}

// replaceAll applies every old → new replacement to each argument, longest old first.
func replaceAll(args []string, repl map[string]string) []string {
	var pairs []string
	olds := make([]string, 0, len(repl))
	for o := range repl {
		olds = append(olds, o)
	}
	sort.Slice(olds, func(i, j int) bool { return len(olds[i]) > len(olds[j]) })
	for _, o := range olds {
		pairs = append(pairs, o, repl[o])
	}
	r := strings.NewReplacer(pairs...)
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = r.Replace(a)
	}
	return out
}
