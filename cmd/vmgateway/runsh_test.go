package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestMakeRun runs scripts/run.sh (`make run`) end to end: it must print its commands, each printed command must
// do what the comment above it says, and Ctrl-C (SIGINT to its process group, as a terminal sends it) must stop
// everything it started and remove its temp dir.
func TestMakeRun(t *testing.T) {
	vmPort, gwPort := freePortNumber(t), freePortNumber(t)
	r := startRunScript(t, "VM_PORT="+vmPort, "GW_PORT="+gwPort)
	tmp := regexp.MustCompile(`data in (\S+)/vm-data`).FindStringSubmatch(r.out.String())
	if tmp == nil {
		t.Fatal("scripts/run.sh does not say where its temp dir is")
	}
	r.checkCommands(t)
	r.stop(t, tmp[1])
	for _, port := range []string{vmPort, gwPort} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			_ = c.Close()
			t.Errorf("port %s still accepts connections after Ctrl-C", port)
		}
	}
}

// TestMakeRunFrontsAnExistingVictoriaMetrics: with VM_URL the script starts no VictoriaMetrics of its own, puts
// the gateway in front of the one given, every printed command works against it, and Ctrl-C leaves it running.
func TestMakeRunFrontsAnExistingVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t, "-search.latencyOffset=0s")
	gwPort := freePortNumber(t)
	// VM_PORT names a port that is taken: the script must not try to start VictoriaMetrics there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, busy, _ := net.SplitHostPort(ln.Addr().String())
	r := startRunScript(t, "VM_URL="+vm.URL+"/", "VM_PORT="+busy, "GW_PORT="+gwPort)
	out := r.out.String()
	tmp := regexp.MustCompile(`temp files in (\S+)\)`).FindStringSubmatch(out)
	if !strings.Contains(out, "==> using the VictoriaMetrics at "+vm.URL+" ") || tmp == nil || strings.Contains(out, "starting VictoriaMetrics") {
		t.Fatalf("scripts/run.sh with VM_URL does not say it uses that VictoriaMetrics:\n%s", out)
	}
	r.checkCommands(t)
	r.stop(t, tmp[1])
	if code, _, _ := do(t, "GET", vm.URL+"/health", nil); code != 200 {
		t.Errorf("the VictoriaMetrics given in VM_URL answers /health with %d after Ctrl-C", code)
	}
}

// TestMakeRunBadVMURL: a VM_URL that does not answer stops the script with a message naming it.
func TestMakeRunBadVMURL(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	vmtest.Require(t, "curl")
	vmtest.Require(t, "openssl")
	dead := "http://" + vmtest.FreePort(t)
	cmd := exec.Command(bash, "scripts/run.sh")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "VM_URL="+dead, "GW_PORT="+freePortNumber(t), "VMGATEWAY="+gatewayBin)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "VM_URL="+dead+" does not answer "+dead+"/health") {
		t.Fatalf("scripts/run.sh with a dead VM_URL: %v\n%s", err, out)
	}
}

// TestMakeRunBadVMGATEWAY: a VMGATEWAY that is no executable stops the script at once with a message naming it;
// nothing is built (make build would build bin/vmgateway, not the binary asked for).
func TestMakeRunBadVMGATEWAY(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	missing := filepath.Join(t.TempDir(), "no-such-vmgateway")
	cmd := exec.Command(bash, "scripts/run.sh")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "VMGATEWAY="+missing, "GW_PORT="+freePortNumber(t))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "VMGATEWAY="+missing+" is not an executable file") ||
		strings.Contains(string(out), "building") {
		t.Fatalf("scripts/run.sh with a missing VMGATEWAY: %v\n%s", err, out)
	}
}

// TestMakeRunBuildsFirst: without VMGATEWAY and without bin/vmgateway the script says it is building, builds
// bin/vmgateway with make build, and goes on (here to a dead VM_URL, which stops it). It runs in a copy of the
// sources so that the repository's bin/ is left alone; with the Go build cache warm the build takes seconds.
func TestMakeRunBuildsFirst(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	vmtest.Require(t, "make")
	vmtest.Require(t, "curl")
	vmtest.Require(t, "openssl")
	root := t.TempDir()
	cp := exec.Command("cp", "-r", "../../Makefile", "../../go.mod", "../../go.sum", "../../cmd", "../../internal", "../../scripts", root)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("cannot copy the sources: %v\n%s", err, out)
	}
	dead := "http://" + vmtest.FreePort(t)
	cmd := exec.Command(bash, "scripts/run.sh")
	cmd.Dir = root
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VMGATEWAY=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "VM_URL="+dead, "GW_PORT="+freePortNumber(t))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "==> building bin/vmgateway (the first run") ||
		!strings.Contains(string(out), "VM_URL="+dead+" does not answer") {
		t.Fatalf("scripts/run.sh without bin/vmgateway: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(root, "bin", "vmgateway")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("make build left no executable bin/vmgateway: %v", err)
	}
}

// runScript is scripts/run.sh running in a process group of its own, as a terminal runs it.
type runScript struct {
	bash string
	out  *vmtest.Buffer
	pgid int
	p    *vmtest.Process
}

// startRunScript runs scripts/run.sh with env and waits until it has printed its commands.
func startRunScript(t *testing.T, env ...string) *runScript {
	t.Helper()
	bash := vmtest.Require(t, "bash")
	for _, bin := range []string{"curl", "openssl", vmtest.Binary} {
		vmtest.Require(t, bin)
	}
	r := &runScript{bash: bash, out: &vmtest.Buffer{}}
	cmd := exec.Command(bash, "scripts/run.sh")
	cmd.Dir = "../.."
	cmd.Env = append(append(os.Environ(), "VMGATEWAY="+gatewayBin), env...)
	cmd.Stdout, cmd.Stderr = r.out, r.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := vmtest.StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	r.pgid = p.Pid()
	t.Cleanup(func() {
		_ = syscall.Kill(-r.pgid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("scripts/run.sh printed:\n%s", r.out.String())
		}
	})

	// The script installs nothing here (victoria-metrics is there) and builds nothing (VMGATEWAY is given): it is
	// ready within seconds. The bound only keeps a broken script from hanging the test run.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(r.out.String(), "Press Ctrl-C") {
		select {
		case <-r.p.Done():
			t.Fatalf("scripts/run.sh exited before printing its commands: %v", r.p.Err())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("scripts/run.sh printed no commands within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

// checkCommands runs every printed command and checks it does what its comment says.
func (r *runScript) checkCommands(t *testing.T) {
	steps := printedCommands(t, r.out.String())
	if len(steps) < 7 {
		t.Fatalf("want at least 7 printed commands (6 curl and token explain), got %d", len(steps))
	}
	for _, s := range steps {
		t.Run(s.comment, func(t *testing.T) {
			// The demo data was written a moment ago; VictoriaMetrics makes new series searchable within a second.
			vmtest.Eventually(t, func() (bool, string) {
				c := exec.Command(r.bash, "-c", s.cmd)
				c.Dir = "../.."
				got, err := c.CombinedOutput()
				msg := checkPrinted(s.comment, string(got), err)
				return msg == "", msg + "\ncommand: " + s.cmd + "\noutput: " + string(got)
			})
		})
	}
}

// stop sends Ctrl-C to the script's process group and checks it stopped everything and removed tmp.
func (r *runScript) stop(t *testing.T, tmp string) {
	t.Helper()
	if err := syscall.Kill(-r.pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.p.Done():
	case <-time.After(time.Minute):
		t.Fatal("scripts/run.sh did not stop within a minute of Ctrl-C")
	}
	if !strings.Contains(r.out.String(), "==> stopped, removed "+tmp) {
		t.Errorf("scripts/run.sh does not report its cleanup")
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temp dir %s is still there after Ctrl-C (%v)", tmp, err)
	}
	if err := syscall.Kill(-r.pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes started by scripts/run.sh still run after Ctrl-C (kill -0 -%d: %v)", r.pgid, err)
	}
}

func freePortNumber(t *testing.T) string {
	_, port, err := net.SplitHostPort(vmtest.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// printedCommand is a command the script printed and the comment line above it, which says what it answers.
type printedCommand struct{ comment, cmd string }

func printedCommands(t *testing.T, out string) []printedCommand {
	_, after, ok := strings.Cut(out, "Paste these:")
	if !ok {
		t.Fatal("scripts/run.sh printed no `Paste these:` section")
	}
	var cmds []printedCommand
	comment := ""
	sc := bufio.NewScanner(strings.NewReader(after))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "# "):
			comment = strings.TrimPrefix(line, "# ")
		case line == "" || strings.HasPrefix(line, "Press Ctrl-C"):
		default:
			if comment == "" {
				t.Fatalf("the printed command %q has no comment saying what it answers", line)
			}
			cmds = append(cmds, printedCommand{comment, line})
			comment = ""
		}
	}
	return cmds
}

var statusInComment = regexp.MustCompile(`: (\d{3})\b`)

// checkPrinted checks a printed command's output against its comment; "" when it fits.
func checkPrinted(comment, out string, err error) string {
	if err != nil {
		return "the command failed: " + err.Error()
	}
	if strings.Contains(comment, "Explain") {
		if !strings.Contains(out, "Would the gateway accept it? YES") {
			return "token explain does not say the gateway accepts the read token"
		}
		return ""
	}
	m := statusInComment.FindStringSubmatch(comment)
	if m == nil {
		return "the comment names no status"
	}
	want := map[string]string{"200": `"status":"success"`, "204": "204", "401": `"errorType":"unauthorized"`, "403": `"errorType":"forbidden"`}[m[1]]
	if want == "" {
		return "no check for status " + m[1]
	}
	if !strings.Contains(out, want) {
		return "the output does not show " + m[1] + " (" + want + ")"
	}
	switch {
	case strings.Contains(comment, `only series with team="dev"`):
		if !strings.Contains(out, `"team":"dev"`) || strings.Contains(out, `"team":"ops"`) {
			return `want team="dev" series and no team="ops" series`
		}
	case strings.Contains(comment, "every team's series"):
		if !strings.Contains(out, `"team":"dev"`) || !strings.Contains(out, `"team":"ops"`) {
			return "want the series of both teams"
		}
	case strings.Contains(comment, "expired"):
		if !strings.Contains(out, "expired") {
			return "the error does not say the token expired"
		}
	}
	return ""
}

// TestMakeRunNamesTheBusyPort: a port already taken (here by this test; on a user's machine often the service the
// victoria-metrics package starts) stops scripts/run.sh after its install step, with a message naming the holder.
func TestMakeRunNamesTheBusyPort(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	for _, bin := range []string{"curl", "openssl", vmtest.Binary} {
		vmtest.Require(t, bin)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, busy, _ := net.SplitHostPort(ln.Addr().String())
	cmd := exec.Command(bash, "scripts/run.sh")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "VM_PORT="+busy, "GW_PORT="+freePortNumber(t), "VMGATEWAY="+gatewayBin)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "port "+busy+" is already in use by ") {
		t.Fatalf("scripts/run.sh with VM_PORT=%s taken: %v\n%s", busy, err, out)
	}
	if _, err := exec.LookPath("ss"); err == nil && !strings.Contains(string(out), fmt.Sprintf("pid=%d,", os.Getpid())) {
		t.Errorf("the message does not name this process (pid %d) as the holder:\n%s", os.Getpid(), out)
	}
}
