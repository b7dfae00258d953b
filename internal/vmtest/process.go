package vmtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
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
