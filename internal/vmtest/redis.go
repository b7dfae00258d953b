package vmtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// Redis is a real redis-server on a loopback port, with a temp dir and no persistence, stopped when the test ends.
type Redis struct {
	// Addr is its host:port.
	Addr string
	bin  string
	dir  string
	args []string
	proc *Process
	logs Buffer
}

// StartRedis starts /usr/bin/redis-server with extra args; with "--tls-port" among them it serves TLS only, on Addr.
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	r := &Redis{bin: Require(t, "/usr/bin/redis-server"), dir: t.TempDir(), args: slices.Clone(args)}
	for attempt := 0; ; attempt++ {
		r.Addr = FreePort(t)
		err := r.run()
		if err == nil {
			break
		}
		if attempt == 4 {
			t.Fatalf("redis-server did not start: %s\n%s", err, r.logs.String())
		}
	}
	t.Cleanup(r.Stop)
	return r
}

func (r *Redis) run() error {
	host, port, _ := net.SplitHostPort(r.Addr)
	args := []string{"--bind", host, "--port", port, "--dir", r.dir, "--save", "", "--appendonly", "no"}
	if i := slices.Index(r.args, "--tls-port"); i >= 0 && i+1 < len(r.args) {
		// TLS only: the plain port is off and the TLS port is the test's.
		args[3] = "0"
		r.args[i+1] = port
	}
	cmd := exec.Command(r.bin, append(args, r.args...)...)
	cmd.Stdout, cmd.Stderr = &r.logs, &r.logs
	p, err := StartProcess(cmd)
	if err != nil {
		return err
	}
	r.proc = p
	if err := p.WaitReadyAt(10*time.Second, r.Addr, Listening(r.Addr)); err != nil {
		r.Stop()
		return fmt.Errorf("redis-server on %s: %w", r.Addr, err)
	}
	return nil
}

// Stop kills the server and waits until it is gone.
func (r *Redis) Stop() {
	if r.proc == nil {
		return
	}
	r.proc.Stop(os.Kill, 0)
	r.proc = nil
}

// Restart starts the stopped server again on the same address, as a Redis that comes back.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	if err := r.run(); err != nil {
		t.Fatalf("cannot restart redis-server: %s\n%s", err, r.logs.String())
	}
}
