package deploy

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// testVersion is stamped into the binary under test as `make build` stamps `git describe`.
const testVersion = "v0.0.0-deploytest"

// gatewayBin is the vmgateway binary the deployment files are checked against.
var gatewayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmgateway-deploy")
	if err != nil {
		panic(err)
	}
	gatewayBin = filepath.Join(dir, "vmgateway")
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", gatewayBin, "../cmd/vmgateway").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot build vmgateway: %s\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a process a test started, stopped when the test ends; its output is kept for failure messages.
type proc struct {
	*vmtest.Process
	name string
	logs *vmtest.Buffer
}

func startProc(t *testing.T, dir string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(argv[0]), logs: &vmtest.Buffer{}}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	var err error
	if p.Process, err = vmtest.StartProcess(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s logs:\n%s", p.name, tail(p.logs.String(), 3000))
		}
	})
	return p
}

// stop kills the process: nothing these tests start keeps data worth a graceful shutdown.
func (p *proc) stop() { p.Stop(syscall.SIGKILL, 20*time.Second) }

// healthy waits until the process listens at addr and its /health answers 200, or the process exits.
func (p *proc) healthy(addr string) bool {
	return p.WaitReadyAt(20*time.Second, addr, vmtest.HTTPOK("http://"+addr+"/health")) == nil
}

// startGateway runs the binary under test with args, its -httpListenAddr replaced by a free loopback port, and
// returns its base URL once /health answers.
func startGateway(t *testing.T, args []string) (string, *proc) {
	t.Helper()
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		addr := vmtest.FreePort(t)
		argv := []string{gatewayBin, "-httpListenAddr=" + addr}
		for _, a := range args {
			if !strings.HasPrefix(a, "-httpListenAddr=") {
				argv = append(argv, a)
			}
		}
		p := startProc(t, t.TempDir(), argv...)
		if p.healthy(addr) {
			return "http://" + addr, p
		}
		p.stop()
		last = p.logs.String()
		if !strings.Contains(last, "address already in use") {
			break
		}
	}
	t.Fatalf("vmgateway with %q did not become healthy:\n%s", args, tail(last, 3000))
	return "", nil
}

// writeKeyPair writes an RSA key pair as PEM files name.pem (private) and name.pub.pem into dir.
func writeKeyPair(t *testing.T, dir, name string) (priv, pub string, key *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub.pem")
	writeFile(t, priv, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	writeFile(t, pub, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})))
	return priv, pub, key
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mint signs a token with the gateway's own token tool.
func mint(t *testing.T, key string, args ...string) string {
	t.Helper()
	out, err := exec.Command(gatewayBin, append([]string{"token", "mint", "-key=" + key}, args...)...).Output()
	if err != nil {
		t.Fatalf("token mint %q: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// call sends a request with an optional bearer token and returns the status and body.
func call(t *testing.T, method, u, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %s", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %s", method, u, err)
	}
	return resp.StatusCode, string(b)
}

// series is one element of an instant query's result.
type series struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// instantQuery evaluates expr at now on VictoriaMetrics (or through a gateway, with a token).
func instantQuery(t *testing.T, base, token, expr string) ([]series, error) {
	t.Helper()
	status, body := call(t, http.MethodPost, base+"/api/v1/query", token, url.Values{"query": {expr}}.Encode())
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("status %d, not JSON: %s", status, tail(body, 300))
	}
	if status != http.StatusOK || r.Status != "success" {
		return nil, fmt.Errorf("status %d: %s", status, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("want an instant vector, got a %s", r.Data.ResultType)
	}
	var out []series
	if err := json.Unmarshal(r.Data.Result, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
