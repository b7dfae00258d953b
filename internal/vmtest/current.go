package vmtest

import (
	"go/build"
	"os"
	"path/filepath"
	"testing"
)

// CurrentEnv names the variable that points to a current single-node VictoriaMetrics (v1.150 or later), for tests
// of behaviour the Debian package's v1.79.5 lacks. Unset, it is $GOPATH/bin/victoria-metrics, where
// `go install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@v1.151.0` puts it.
const CurrentEnv = "VM_CURRENT_BIN"

// StartCurrent runs the current single-node VictoriaMetrics as Start runs the Debian one. Without the binary the
// test is skipped on a developer machine and fails under CI, as with Require.
func StartCurrent(t testing.TB, flags ...string) *VM {
	t.Helper()
	bin := os.Getenv(CurrentEnv)
	if bin == "" {
		bin = filepath.Join(build.Default.GOPATH, "bin", "victoria-metrics")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the current VictoriaMetrics single-node is required but %s is missing: .ci/run must run "+
				"`go install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@v1.151.0` or set %s", bin, CurrentEnv)
		}
		t.Skipf("the current VictoriaMetrics single-node %s is missing; set %s to a v1.150+ victoria-metrics binary "+
			"(go install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@v1.151.0)", bin, CurrentEnv)
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr := FreePort(t)
		vm := &VM{URL: "http://" + addr, dir: dir, args: append([]string{bin,
			"-storageDataPath=" + filepath.Join(dir, "data"), "-httpListenAddr=" + addr, "-retentionPeriod=100y",
			"-search.disableCache", "-search.latencyOffset=0s", "-dedup.minScrapeInterval=0s", "-loggerLevel=ERROR",
		}, flags...)}
		if lastErr = vm.run(); lastErr == nil {
			t.Cleanup(vm.Stop)
			return vm
		}
	}
	t.Fatalf("%s did not start: %s", bin, lastErr)
	return nil
}
