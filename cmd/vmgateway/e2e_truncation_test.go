package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// VictoriaMetrics before v1.108.0 cuts a series down to -maxLabelsPerTimeseries labels after appending the
// extra_label arguments, so a series that fills the limit itself loses the token's label and keeps the one it
// brought: team dev's write is stored as team ops'. v1.108.0 drops such a series. The gateway tells the two apart
// from each write backend's /metrics: an error and vmgateway_write_backend_truncates_labels 1 for Debian's 1.79.5,
// 0 for the current release, -1 (and a warning) for a backend whose metrics say neither.
func TestWriteBackendLabelTruncation(t *testing.T) {
	notVM := vmtest.NewRecorder(t)
	for _, tc := range []struct {
		name      string
		start     func(testing.TB, ...string) *vmtest.VM
		gauge     string
		logged    string
		truncates bool
	}{
		{"debian-1.79.5", vmtest.Start, "1", "the write backend truncates series", true},
		{"current-" + vmtest.CurrentVersion, vmtest.StartCurrent, "0", "the write backend drops series over its label limit", false},
		{"not VictoriaMetrics", nil, "-1", "cannot tell whether the write backend truncates", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := notVM.URL
			var vm *vmtest.VM
			if tc.start != nil {
				vm = tc.start(t)
				backend = vm.URL
			}
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+backend, "-write.url="+backend, "-enable.auth", "-auth.publicKeyFiles="+pub,
				"-write.labelTruncationCheckInterval=1h")
			if !g.logged(tc.logged) {
				t.Fatalf("the gateway did not log %q", tc.logged)
			}
			want := fmt.Sprintf("vmgateway_write_backend_truncates_labels{backend=%q} %s\n", backend, tc.gauge)
			if _, _, m := do(t, http.MethodGet, g.URL+"/metrics", nil); !strings.Contains(m, want) {
				t.Fatalf("/metrics lacks %q", strings.TrimSpace(want))
			}
			if vm == nil {
				return
			}
			// What the check stands for: a dev token's series with 45 labels, past both releases' default limits
			// (30 and 40), team="ops" first.
			labels := []string{`team="ops"`}
			for i := 0; len(labels) < 44; i++ {
				labels = append(labels, fmt.Sprintf(`l%02d="x"`, i))
			}
			write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
			code, _, body := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("trunc_probe{"+strings.Join(labels, ",")+"} 1\n"),
				append(bearer(write), "Content-Type", "text/plain")...)
			if code/100 != 2 {
				t.Fatalf("the write: %d %s", code, body)
			}
			// A control series under the limit is stored with the token's label on both, and tells when the write
			// has landed.
			code, _, body = do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader(`trunc_control{team="ops"} 1`+"\n"),
				append(bearer(write), "Content-Type", "text/plain")...)
			if code/100 != 2 {
				t.Fatalf("the control write: %d %s", code, body)
			}
			var stored string
			vmtest.Eventually(t, func() (bool, string) {
				vm.Flush(t)
				_, _, control := do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]=trunc_control", nil)
				_, _, stored = do(t, http.MethodGet, vm.URL+"/api/v1/export?match[]="+url.QueryEscape(`{__name__="trunc_probe"}`), nil)
				return strings.Contains(control, `"team":"dev"`), "the control series: " + control
			})
			switch {
			case tc.truncates && !strings.Contains(stored, `"team":"ops"`):
				t.Errorf("1.79.5 stored the long series as %q; the check says it keeps team=ops (has it stopped truncating?)", stored)
			case !tc.truncates && strings.TrimSpace(stored) != "":
				t.Errorf("%s stored the long series as %q; the check says it drops it", tc.name, stored)
			}
		})
	}
}
