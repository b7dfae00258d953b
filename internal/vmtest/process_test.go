package vmtest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestProcess(t *testing.T) {
	sh := Require(t, "/bin/sh")
	// A process that ignores the polite signal is killed after the grace period.
	cmd := exec.Command(sh, "-c", `trap "" TERM; echo started; while :; do sleep 0.05; done`)
	var out Buffer
	cmd.Stdout = &out
	p, err := StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(10*time.Second, func() bool { return out.String() != "" }); err != nil {
		t.Fatal(err)
	}
	if p.Exited() || p.Pid() <= 0 {
		t.Fatalf("a running process: exited %v, pid %d", p.Exited(), p.Pid())
	}
	start := time.Now()
	p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	if !p.Exited() || time.Since(start) < 200*time.Millisecond || p.Err() == nil {
		t.Fatalf("after Stop: exited %v after %s, err %v; want killed after the grace period", p.Exited(), time.Since(start), p.Err())
	}
	p.Stop(syscall.SIGTERM, time.Minute) // a second Stop returns at once

	// WaitReady tells an early exit from a slow start.
	p, err = StartProcess(exec.Command(sh, "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(10*time.Second, func() bool { return false }); !errors.Is(err, errExited) {
		t.Fatalf("WaitReady on an exited process: %v", err)
	}
	p, err = StartProcess(exec.Command(sh, "-c", "sleep 30"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(syscall.SIGKILL, time.Second)
	if err := p.WaitReady(100*time.Millisecond, func() bool { return false }); err == nil || errors.Is(err, errExited) {
		t.Fatalf("WaitReady on a process never ready: %v", err)
	}
	if err := p.WaitReady(time.Second, func() bool { return true }); err != nil {
		t.Fatalf("WaitReady on a ready process: %v", err)
	}
	if _, err := StartProcess(exec.Command("/nonexistent/binary")); err == nil {
		t.Fatal("StartProcess of a missing binary succeeded")
	}
}

// TestWaitReadyAt: a port that another process holds is not ready for the process under test, though the ready
// check itself says yes; the same port is ready once the process holds the listening socket (here inherited).
func TestWaitReadyAt(t *testing.T) {
	sh := Require(t, "/bin/sh")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	always := func() bool { return true }

	other, err := StartProcess(exec.Command(sh, "-c", "sleep 30"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop(syscall.SIGKILL, time.Second)
	if err := other.WaitReadyAt(300*time.Millisecond, addr, always); err == nil || errors.Is(err, errExited) {
		t.Fatalf("WaitReadyAt on a port another process listens on: %v, want not ready", err)
	}

	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(sh, "-c", "sleep 30")
	cmd.ExtraFiles = []*os.File{f}
	holder, err := StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Stop(syscall.SIGKILL, time.Second)
	if err := holder.WaitReadyAt(10*time.Second, addr, always); err != nil {
		t.Fatalf("WaitReadyAt on a port the process listens on: %v", err)
	}
	if err := holder.WaitReadyAt(300*time.Millisecond, addr, func() bool { return false }); err == nil {
		t.Fatal("WaitReadyAt was ready while the ready check said no")
	}
	if err := holder.WaitReadyAt(time.Second, "no-port", always); err == nil {
		t.Fatal("WaitReadyAt accepted an address without a port")
	}
}
