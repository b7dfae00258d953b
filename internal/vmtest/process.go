package vmtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Process is a child process a test started (VictoriaMetrics, the gateway, Redis, vmagent): reaped in the
// background, so that a test can see it exit, and stopped with a signal and a grace period.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess starts cmd, whose output goes where cmd.Stdout and cmd.Stderr say; closers (its log file) are
// closed once it has exited.
func StartProcess(cmd *exec.Cmd, closers ...io.Closer) (*Process, error) {
	if err := cmd.Start(); err != nil {
		for _, c := range closers {
			_ = c.Close()
		}
		return nil, fmt.Errorf("cannot start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		for _, c := range closers {
			_ = c.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig (SIGHUP for a reload, SIGTERM for a graceful shutdown the test watches).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited (exec.Cmd.Wait's error); read it after Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends sig unless the process has exited already, kills it if it is still there after grace, and returns
// once it is gone, so its port is closed.
func (p *Process) Stop(sig os.Signal, grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// errExited is WaitReady's error for a process that exited before it was ready.
var errExited = errors.New("exited early")

// WaitReady polls ready until it reports true. It fails, saying how the process exited, when the
// process exits first, and after timeout.
func (p *Process) WaitReady(timeout time.Duration, ready func() bool) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if p.Exited() {
			return fmt.Errorf("%w: %v", errExited, p.err)
		}
		if ready() {
			return nil
		}
	}
	return fmt.Errorf("not ready after %s", timeout)
}

// WaitReadyAt is WaitReady for a process that listens at addr: ready counts only once the process itself holds
// a listening socket at addr's port. A port a test picked can be taken by another process (another package's
// VictoriaMetrics or gateway) before this one binds it, and that process answers /health as well; this one then
// exits with "address already in use", which WaitReadyAt reports, so the caller can try another port.
func (p *Process) WaitReadyAt(timeout time.Duration, addr string, ready func() bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("cannot wait for %q: %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("cannot wait for %q: the port is not a number", addr)
	}
	return p.WaitReady(timeout, func() bool { return p.listens(uint16(n)) && ready() })
}

// listens reports whether one of the process's open files is a TCP socket listening on port, from /proc: the
// kernel's socket tables give each listening socket's inode, and the process's fd links name the inodes it holds.
func (p *Process) listens(port uint16) bool {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode; st 0A is LISTEN.
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			i := strings.LastIndexByte(f[1], ':')
			if lp, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil && uint16(lp) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fd", p.Pid())
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if link, err := os.Readlink(dir + "/" + fd.Name()); err == nil && inodes[link] {
			return true
		}
	}
	return false
}

// HTTPOK is a ready check for WaitReady: url answers 200.
func HTTPOK(url string) func() bool {
	return func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// Listening is a ready check for WaitReady: something accepts TCP connections at addr (redis-server, which has no
// HTTP to ask).
func Listening(addr string) func() bool {
	return func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
}
