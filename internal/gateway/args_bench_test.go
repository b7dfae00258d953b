package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/membudget"
	"github.com/vmgateway/vmgateway/internal/route"
)

// BenchmarkReadArgsPerByte is the gateway's cost per request byte of reading, parsing and checking a read
// request's args, for the bodies of issue 15 that it refuses (250 queries of 16 KB of unary minus; 200 match[]
// of a long selector) and for the largest body it forwards (a Grafana query padded to -maxReadBodySize).
// Run: go test -run '^$' -bench ReadArgsPerByte -benchmem ./internal/gateway/
func BenchmarkReadArgsPerByte(b *testing.B) {
	var queries []string
	for i := 0; i < 250; i++ {
		queries = append(queries, fmt.Sprintf("query=%sup%d", strings.Repeat("-", 16000), i))
	}
	sel := url.QueryEscape(`{job="` + strings.Repeat("j", 16000) + `"}`)
	bodies := []struct {
		name, path, body string
		status           int
	}{
		{"250_queries_refused", "/api/v1/query", strings.Join(queries, "&"), 400},
		{"200_match_refused", "/api/v1/series", strings.Repeat("match[]="+sel+"&", 199) + "match[]=up", 400},
		{"padded_query_forwarded", "/api/v1/query", "query=" + url.QueryEscape(`sum(rate(http_requests_total{job="api"}[5m]))`) + "&pad=" + strings.Repeat("p", 4<<20-100), 200},
	}
	g, err := New(Config{ReadURL: &url.URL{Scheme: "http", Host: "upstream"}, WriteURL: &url.URL{Scheme: "http", Host: "upstream"},
		Auth: headerAuth{}, Limits: Limits{MaxQueryLen: 16 << 10, MaxSelectorArgs: 100, MaxTotalQueryLen: 64 << 10, MaxReadBodySize: 4 << 20}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range bodies {
		rt, err := route.Lookup(bc.path)
		if err != nil {
			b.Fatal(err)
		}
		try := func() error {
			r := httptest.NewRequest(http.MethodPost, bc.path, strings.NewReader(bc.body))
			r.Header.Set("Content-Type", formType)
			r.Header.Set("X-Team", "dev")
			a, _ := headerAuth{}.Authenticate(r)
			var queued time.Duration
			var held membudget.Hold
			defer held.Release()
			return g.prepareArgs(httptest.NewRecorder(), r, rt, a, &queued, &held)
		}
		if err := try(); (err == nil) != (bc.status == 200) {
			b.Fatalf("%s: %v; want status %d", bc.name, err, bc.status)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			start := time.Now()
			for b.Loop() {
				_ = try()
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/float64(len(bc.body)), "ns/byte")
		})
	}
}

// splitSink keeps what a split returns, as a request keeps it: a result dropped at once could stay on the stack.
var splitSink url.Values

// BenchmarkSplitArgs is the split of a Grafana query_range's URL query: url.ParseQuery, which splitArgs replaces,
// splitArgs itself, and splitArgs recording the args the query limits read (what a tenant with query limits
// pays; the cached check then reads them without lookups, BenchmarkCheckCached in internal/querylimits).
// Run: go test -run '^$' -bench SplitArgs -benchmem ./internal/gateway/
func BenchmarkSplitArgs(b *testing.B) {
	raw := url.Values{"query": {`sum(rate(http_requests_total{job="api",code=~"5.."}[5m])) by (instance)`},
		"start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}.Encode()
	b.Run("url.ParseQuery", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if splitSink, err = url.ParseQuery(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("splitArgs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if splitSink, err = splitArgs(raw, nil, enforce.FromURL); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("splitArgs_recording", func(b *testing.B) {
		var known enforce.Known
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if splitSink, err = splitArgs(raw, &known, enforce.FromURL); err != nil {
				b.Fatal(err)
			}
			known.Reset()
		}
	})
}

// argsSink keeps what an encoding returns.
var argsSink string

// BenchmarkEncodeArgs is the encoding of a Grafana query_range's URL query as rewritten for a restricted token:
// url.Values.Encode, which encoded every arg again, and appendArgs, which splices the args left unchanged.
// Run: go test -run '^$' -bench EncodeArgs -benchmem ./internal/gateway/
func BenchmarkEncodeArgs(b *testing.B) {
	raw := url.Values{"query": {`sum(rate(http_requests_total{job="api",code=~"5.."}[5m])) by (instance)`},
		"start": {"1781517600"}, "end": {"1781521200"}, "step": {"60"}}.Encode()
	var rec []rawArg
	vs, err := splitRecording(raw, nil, enforce.FromURL, &rec)
	if err != nil || len(rec) == 0 {
		b.Fatal(err)
	}
	vs["query"] = []string{`sum(rate(http_requests_total{job="api",code=~"5..",team="dev"}[5m])) by (instance)`}
	vs["extra_label"] = []string{"team=dev"}
	b.Run("url.Values.Encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			argsSink = vs.Encode()
		}
	})
	b.Run("appendArgs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			argsSink = argsString(appendArgs(nil, "", rec, vs))
		}
	})
}
