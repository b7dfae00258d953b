package route

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// missingInDebian tells which routes the installed VictoriaMetrics (v1.79.5, Debian) does not serve on its main
// port, though the current release (v1.150, and its cluster) does. The test proves the list exact both ways.
func missingInDebian(r Route) (bool, string) {
	switch {
	case r.API == "opentsdb_put":
		return true, "served on -opentsdbHTTPListenAddr only, never on the main port"
	case r.API == "admin_tenants":
		return true, "cluster-only"
	case strings.HasPrefix(r.Suffix, "vmui/") && !strings.HasSuffix(r.Suffix, "/index.html"):
		// http.FileServer still answers .../index.html with a redirect to ./, files or not.
		return true, "the Debian package strips the vmui assets"
	case strings.Contains(r.Suffix, "/metrics/job"):
		return true, "the Pushgateway form is newer than v1.79.5"
	}
	switch r.API {
	case "opentelemetry", "newrelic_check", "newrelic_inventory", "newrelic_write", "datadog_series_v2",
		"datadog_sketches", "influx_health", "metric_relabel_debug", "prettify_query", "expand_with_exprs", "graphite_render":
		return true, "newer than v1.79.5"
	}
	return false, ""
}

// TestSingleNodeUpstreamPaths sends every API's single-node upstream path to the real VictoriaMetrics and checks
// that it is served (whatever the answer to an empty request) rather than refused as an unknown path.
func TestSingleNodeUpstreamPaths(t *testing.T) {
	vm := vmtest.Start(t)
	seen := map[string]bool{}
	check := func(clientPath string) {
		r, err := Lookup(clientPath)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", clientPath, err)
		}
		seen[r.API] = true
		up := r.Upstream(false, tenant.ID{})
		method := http.MethodGet
		if r.Kind == Write {
			method = http.MethodPost
		}
		req, err := http.NewRequest(method, vm.URL+up, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, up, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		unknown := resp.StatusCode == http.StatusNotFound ||
			(resp.StatusCode == http.StatusBadRequest && strings.Contains(string(body), "unsupported path requested"))
		newer, why := missingInDebian(r)
		switch {
		case unknown && !newer:
			t.Errorf("%s (API %s): VictoriaMetrics does not serve upstream %s %s: %d %s", clientPath, r.API, method, up, resp.StatusCode, body)
		case !unknown && newer:
			t.Errorf("%s (API %s): listed as missing in v1.79.5 (%s), but upstream %s %s is served: %d %.200s", clientPath, r.API, why, method, up, resp.StatusCode, body)
		}
		if r.API == "vmui" && up == "/vmui" && (resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "vmui/?") {
			// A relative redirect keeps the client on the gateway, whatever prefix it used.
			t.Errorf("GET /vmui: want a relative redirect to vmui/, got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	for _, w := range wants {
		sh := shapes[w.family]
		for _, p := range w.paths {
			if len(sh.single) > 0 {
				check(sh.single[0] + p)
			} else {
				// Cluster-only shapes: what single-node gets is the same route's upstream.
				check("/insert/0/" + p)
			}
		}
	}
	for _, w := range wants {
		if !seen[w.api] {
			t.Errorf("API %s was not tried", w.api)
		}
	}
}
