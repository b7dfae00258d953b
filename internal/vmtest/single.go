package vmtest

import (
	"os"
	"os/exec"
	"testing"
)

// CurrentVersion is the current single-node release the tests run beside Debian's 1.79.5: it has what 1.79.5
// lacks (vmui, OpenTelemetry, New Relic and Datadog v2 ingestion, `or` inside filters).
const CurrentVersion = "v1.151.0"

// CurrentBinEnv names the variable holding the path of the CurrentVersion victoria-metrics binary. `make test` and
// .ci/run set it; get the binary with
//
//	GOBIN=$dir go install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@v1.151.0
const CurrentBinEnv = "VM_CURRENT_BIN"

// RequireCurrent returns the path of the CurrentVersion single-node binary from $VM_CURRENT_BIN. Without it the
// test is skipped on a developer machine and fails under CI.
func RequireCurrent(t testing.TB) string {
	t.Helper()
	p := os.Getenv(CurrentBinEnv)
	if p != "" {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	msg := "$" + CurrentBinEnv + " must name the victoria-metrics " + CurrentVersion + " binary (`make test` sets it; build it with " +
		"GOBIN=$dir go install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@" + CurrentVersion + ")"
	if p != "" {
		msg = "$" + CurrentBinEnv + "=" + p + " is not an executable: " + msg
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; .ci/run builds it", msg)
	}
	t.Skip(msg)
	return ""
}

// StartCurrent is Start with the CurrentVersion single-node instead of Debian's.
func StartCurrent(t testing.TB, flags ...string) *VM {
	t.Helper()
	return startSingle(t, RequireCurrent(t), flags)
}
