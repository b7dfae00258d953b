package gateway_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/querylimits"
)

// firstSightN numbers the first-sight queries of every run, so that none is in a cache.
var firstSightN atomic.Int64

// BenchmarkHandlerQueryLimits is the pipeline of BenchmarkHandler (auth, rate limit, rewrite for an extra_labels
// token) with and without query limits, for a dashboard's repeated query (cached) and for queries never seen
// before (first_sight): the difference is what the limits cost a request. On first sight the query is parsed once,
// by the limits, and the rewrite takes the parse over.
// Run: go test -run '^$' -bench HandlerQueryLimits -benchmem ./internal/gateway/
func BenchmarkHandlerQueryLimits(b *testing.B) {
	token, verifier := benchVerifier(b)
	gate := benchGate(b)
	mem := &memUpstream{}
	path := filepath.Join(b.TempDir(), "querylimits.yaml")
	config := "limits:\n  - max_query_lookback: 30d\n    max_total_query_length: 1d\n    min_step: 10s\n    blocked_queries:\n" +
		"      - pattern: 'count({__name__=~\".+\"})'\n      - pattern: '.*__name__=~\"\\.[*+]\".*'\n        regex: true\n"
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		b.Fatal(err)
	}
	ql, err := querylimits.New(path, 0)
	if err != nil {
		b.Fatal(err)
	}
	limited := newGateway(b, gateway.Config{Auth: verifier, Limiter: gate, QueryLimits: ql}, mem)
	plain := newGateway(b, gateway.Config{Auth: verifier, Limiter: gate}, mem)
	end := time.Now().Unix()
	start, stop := strconv.FormatInt(end-3600, 10), strconv.FormatInt(end, 10)
	target := func(q string) string {
		return "/api/v1/query_range?" + url.Values{"query": {q}, "start": {start}, "end": {stop}, "step": {"15"}}.Encode()
	}
	serveOnce(b, limited, newRequest(b, http.MethodGet, target(grafanaQuery), nil, token), nil)
	if q := mem.last().Query().Get("query"); !strings.Contains(q, `team="dev"`) {
		b.Fatalf("the upstream got query %q; want it rewritten with team=\"dev\"", q)
	}
	for _, g := range []struct {
		name string
		h    http.Handler
	}{{"query_limits", limited}, {"no_query_limits", plain}} {
		b.Run(g.name+"/cached", func(b *testing.B) {
			read := newRequest(b, http.MethodGet, target(grafanaQuery), nil, token)
			w := newDiscardWriter()
			b.ReportAllocs()
			for b.Loop() {
				serve(b, g.h, w, read, nil)
			}
		})
		b.Run(g.name+"/first_sight", func(b *testing.B) {
			reqs := make([]*http.Request, b.N)
			for i := range reqs {
				q := strings.Replace(grafanaQuery, `job="api"`, `job="api",n="`+strconv.FormatInt(firstSightN.Add(1), 10)+`"`, 1)
				reqs[i] = newRequest(b, http.MethodGet, target(q), nil, token)
			}
			w := newDiscardWriter()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				serve(b, g.h, w, reqs[i], nil)
			}
		})
	}
}
