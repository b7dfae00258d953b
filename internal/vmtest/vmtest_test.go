package vmtest

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestStartWriteRead(t *testing.T) {
	vm := Start(t)
	resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader("vmtest_probe{a=\"b\"} 42\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("import: status %d", resp.StatusCode)
	}
	vm.Flush(t)
	Eventually(t, func() (bool, string) {
		resp, err := http.Get(vm.URL + "/api/v1/export?match[]=vmtest_probe")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `"values":[42]`), "export did not return the written sample: " + string(body)
	})
}
