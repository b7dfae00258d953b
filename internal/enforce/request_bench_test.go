package enforce

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/route"
)

// BenchmarkRequestURL is the enforce step, with the gateway's parse of the URL query, as `make bench` drives it end to end: a Grafana GET query_range with
// everything in the URL (the query is cached after the first iteration, as for a dashboard that refreshes),
// and a write that gets the token's extra_label. Run: go test -run '^$' -bench RequestURL -benchmem ./internal/enforce/
func BenchmarkRequestURL(b *testing.B) {
	e := devOnly(b)
	rtRange := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	read := "/api/v1/query_range?" + url.Values{
		"query": {benchQueries[2].q}, "start": {"1700000000"}, "end": {"1700003600"}, "step": {"15"},
	}.Encode()
	for _, bc := range []struct {
		name, method, target string
		rt                   route.Route
	}{
		{"read_get", http.MethodGet, read, rtRange},
		{"write", http.MethodPost, "/api/v1/import/prometheus", rtWrite},
	} {
		base := httptest.NewRequest(bc.method, bc.target, nil)
		check := *base
		checkURL := *base.URL
		check.URL = &checkURL
		if err := enforceHTTP(e, &check, bc.rt, false); err != nil || !strings.Contains(check.URL.RawQuery, "team") {
			b.Fatalf("%s: got %q, %v; want the query string to carry team=dev", bc.name, check.URL.RawQuery, err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := *base
				u := *base.URL
				r.URL = &u
				if err := enforceHTTP(e, &r, bc.rt, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
