package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/docstest"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestDocsGettingStartedSetup runs the two blocks of docs/getting-started.md that TestDocsFlows replaces by its
// own processes, as a reader pastes them: step 0 makes and enters the page's own directory, step 1 starts
// VictoriaMetrics there. Then a sample written to that VictoriaMetrics is readable at once, as step 6 needs, and
// the same command without -search.latencyOffset=0s hides it: the reason the page and troubleshooting give.
func TestDocsGettingStartedSetup(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	vmtest.Require(t, vmtest.Binary)
	blocks, _ := docstest.Parse(t, "../../docs/getting-started.md")
	var setup, vmCmd string
	for _, b := range blocks {
		switch {
		case b.Info[0] == "sh" && strings.Contains(b.Text, "mkdir -p"):
			setup = b.Text
		case b.Info[0] == "sh" && strings.HasPrefix(b.Text, "victoria-metrics "):
			vmCmd = strings.TrimSpace(b.Text)
		}
	}
	if setup == "" || vmCmd == "" {
		t.Fatalf("docs/getting-started.md has no `sh` block with the working directory (mkdir -p) or the victoria-metrics command")
	}
	const docDir = "/tmp/vmgateway-demo"
	if !strings.Contains(setup, docDir) || !strings.Contains(vmCmd, "-search.latencyOffset=0s") {
		t.Fatalf("the setup must use %s and start VictoriaMetrics with -search.latencyOffset=0s:\n%s\n%s", docDir, setup, vmCmd)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join(t.TempDir(), "vmgateway-demo")
	cmd := exec.Command(bash, "-ec", strings.ReplaceAll(setup, docDir, demo)+"\necho \"$PWD\"; echo \"$PATH\"")
	cmd.Dir = repo
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != 2 || lines[0] != demo || !strings.HasPrefix(lines[1], filepath.Join(repo, "bin")+":") {
		t.Fatalf("step 0 run in the repository: %v; want to end in %s with %s/bin first on PATH, got %q", err, demo, repo, lines)
	}

	visibleAfter := func(command string) (time.Duration, bool) {
		addr := vmtest.FreePort(t)
		c := exec.Command(bash, "-c", "exec "+strings.ReplaceAll(command, "localhost:8428", addr)+" -loggerLevel=ERROR")
		c.Dir = demo
		logs := &vmtest.Buffer{}
		c.Stdout, c.Stderr = logs, logs
		p, err := vmtest.StartProcess(c)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop(os.Kill, 0)
		base := "http://" + addr
		if err := p.WaitReadyAt(20*time.Second, addr, vmtest.HTTPOK(base+"/health")); err != nil {
			t.Fatalf("%s did not start: %s\n%s", command, err, logs.String())
		}
		metric := fmt.Sprintf("getting_started_probe_%d", time.Now().UnixNano())
		if st, _, body := do(t, http.MethodPost, base+"/api/v1/import/prometheus", strings.NewReader(metric+" 1")); st != http.StatusNoContent {
			t.Fatalf("write: %d %s", st, body)
		}
		// A reader pastes the read a few seconds after the write. Sooner, VictoriaMetrics may not have registered
		// the new series yet, and then answers empty for about ten seconds more (troubleshooting says so); on a
		// loaded machine two seconds can be too soon. The window stays well under the default 30s latency offset,
		// so the run without the flag still shows the sample hidden.
		start := time.Now()
		time.Sleep(2 * time.Second)
		for time.Since(start) < 20*time.Second {
			_, _, body := do(t, http.MethodGet, base+"/api/v1/query?"+url.Values{"query": {metric}}.Encode(), nil)
			if strings.Contains(body, metric) {
				return time.Since(start), true
			}
			time.Sleep(200 * time.Millisecond)
		}
		return time.Since(start), false
	}
	if d, ok := visibleAfter(vmCmd); !ok {
		t.Errorf("with the page's command, a written sample is not readable within %s", d)
	}
	if _, err := os.Stat(filepath.Join(demo, "vm-data")); err != nil {
		t.Errorf("VictoriaMetrics' data is not in the page's directory: %s", err)
	}
	without := strings.Replace(vmCmd, " -search.latencyOffset=0s", "", 1) + " -storageDataPath=vm-data-default"
	if d, ok := visibleAfter(without); ok {
		t.Errorf("without -search.latencyOffset=0s the sample was readable after %s: the page's reason for the flag is wrong", d)
	}
}
