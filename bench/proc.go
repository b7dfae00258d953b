//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// selfCPUTime is the user+system CPU time the bench itself has used so far, finer than /proc's clock ticks.
func selfCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// cpuTimes is the user and the system CPU time of pid so far. On loopback the system part is large: a write
// to a socket runs the receiving side's TCP processing too.
func cpuTimes(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses; the fields after the last ')' start at field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: cannot parse utime/stime", pid)
	}
	return time.Duration(utime) * clockTick, time.Duration(stime) * clockTick, nil
}

// memStatus returns VmRSS and VmHWM (peak RSS) of pid in MiB.
func memStatus(pid int) (rss, hwm float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, name, err)
		}
		if name == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	return rss, hwm, sc.Err()
}

// resetPeakRSS sets VmHWM back to the current RSS (Linux 4.0+), so a peak belongs to one run. It reports
// whether it could; when it cannot, peaks are since the process started.
func resetPeakRSS(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// machineBusy returns the busy (non-idle, non-iowait) CPU time of the whole machine so far, all cores together.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy uint64
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice: guest time is already in user, and
		// steal is time this machine wanted but its hypervisor gave to others.
		if i != 3 && i != 4 && i < 7 {
			busy += v
		}
	}
	return time.Duration(busy) * clockTick, nil
}

// Machine describes where the figures came from.
type Machine struct {
	CPUModel      string `json:"cpu_model"`
	Cores         int    `json:"cores"`
	MemTotalMiB   int    `json:"mem_total_mib"`
	Kernel        string `json:"kernel"`
	GoVersion     string `json:"go_version"`
	GatewayRev    string `json:"vmgateway_revision"`
	VMAuthVersion string `json:"vmauth_version"`
	Date          string `json:"date"`
	LoadAvgStart  string `json:"load_average_start"`
	LoadAvgEnd    string `json:"load_average_end"`
}

func machineInfo(vmauthBin string) Machine {
	m := Machine{
		CPUModel:   "unknown",
		Cores:      runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		Date:       time.Now().UTC().Format(time.RFC3339),
		GatewayRev: strings.TrimSpace(output("git", "describe", "--always", "--dirty")),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemTotalMiB = kb / 1024
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if vmauthBin != "" {
		m.VMAuthVersion = strings.TrimSpace(output(vmauthBin, "-version"))
		if m.VMAuthVersion == "" {
			// A go install build has no version stamped; its module version is in the binary.
			for _, l := range strings.Split(output("go", "version", "-m", vmauthBin), "\n") {
				if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
					m.VMAuthVersion = f[2]
				}
			}
		}
		if m.VMAuthVersion == "" && strings.HasPrefix(vmauthBin, "/usr/bin/") {
			// The Debian build prints an empty -version; the package knows it.
			m.VMAuthVersion = strings.TrimSpace(output("dpkg-query", "-W", "-f=${Version}", "victoria-metrics"))
		}
	}
	m.LoadAvgStart = loadAvg()
	return m
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}
