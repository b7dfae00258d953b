package vmtest

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRestartKeepsPortAndData: after Stop the port refuses connections; after Restart the same URL serves the
// data written before.
func TestRestartKeepsPortAndData(t *testing.T) {
	vm := Start(t)
	resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader("vmtest_restart 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	vm.Flush(t)
	url := vm.URL
	vm.Stop()
	if resp, err := http.Get(vm.URL + "/health"); err == nil {
		resp.Body.Close()
		t.Fatal("VictoriaMetrics still answers after Stop")
	}
	vm.Restart(t)
	if vm.URL != url {
		t.Fatalf("URL changed from %s to %s", url, vm.URL)
	}
	Eventually(t, func() (bool, string) {
		resp, err := http.Get(vm.URL + "/api/v1/export?match[]=vmtest_restart")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `"values":[7]`), "export after restart: " + string(body)
	})
	vm.Restart(t) // a running process is stopped first
}
