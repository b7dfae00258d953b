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

// TestStartCurrent: the current release answers what Debian's 1.79.5 cannot: `or` inside a filter.
func TestStartCurrent(t *testing.T) {
	vm := StartCurrent(t)
	resp, err := http.Post(vm.URL+"/api/v1/import/prometheus", "text/plain", strings.NewReader("vmtest_or{a=\"x\"} 1\nvmtest_or{a=\"y\"} 2\nvmtest_or{a=\"z\"} 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	vm.Flush(t)
	Eventually(t, func() (bool, string) {
		resp, err := http.Get(vm.URL + `/api/v1/query?query=sum(vmtest_or{a="x"+or+a="z"})`)
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `"4"]`), "sum over an or filter: " + string(body)
	})
}
