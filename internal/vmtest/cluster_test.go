package vmtest

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestClusterWriteReadPerTenant: a sample written to tenant 7:3 through vminsert is read back from vmselect in that
// tenant and not in 0:0.
func TestClusterWriteReadPerTenant(t *testing.T) {
	c := StartCluster(t)
	resp, err := http.Post(c.Insert.URL+"/insert/7:3/prometheus/api/v1/import/prometheus", "text/plain", strings.NewReader("vmtest_cluster 11\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("import: status %d", resp.StatusCode)
	}
	export := func(tn string) string {
		resp, err := http.Get(c.Select.URL + "/select/" + tn + "/prometheus/api/v1/export?match[]=vmtest_cluster")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	Eventually(t, func() (bool, string) {
		c.Flush(t)
		body := export("7:3")
		return strings.Contains(body, `"values":[11]`), "export in 7:3: " + body
	})
	if body := export("0:0"); strings.Contains(body, "vmtest_cluster") {
		t.Fatalf("tenant 0:0 sees 7:3's series: %s", body)
	}
}
