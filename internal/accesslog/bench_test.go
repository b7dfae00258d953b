package accesslog

import (
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// discardWriter is a response writer that costs nothing, so the benchmarks measure the entry and the log alone.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

var answer = []byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`)

// gatewayLike fills the entry as the gateway's pipeline does for a forwarded query.
var gatewayLike = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	e := From(w)
	e.SetAPI("query")
	e.SetAccess(tenant.ID{AccountID: 12, ProjectID: 3}, "grafana-team-a", "read")
	e.AddUpstream("http://vmselect:8481")
	_, _ = w.Write(answer)
})

// BenchmarkAccessLog is the cost per request of the access log: the entry every request gets (it is also the
// status writer the gateway needs anyway) and, with a log, formatting the line and copying it into the file's
// buffer. "discard" leaves out the write into the file. Compare "off" with "file": the difference is what the log adds; allocs/op shows the entry itself (and,
// for a generated id, the id). cpu-ns/op is the CPU time per request, steadier than ns/op on a busy machine.
//
//	go test -run '^$' -bench BenchmarkAccessLog -benchmem ./internal/accesslog/
func BenchmarkAccessLog(b *testing.B) {
	for _, bc := range []struct {
		name     string
		log      string
		clientID bool
	}{
		{"off", "", true},
		{"discard", "discard", true},
		{"file", "file", true},
		{"file/generated-id", "file", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var l *Log
			if bc.log != "" {
				var err error
				if l, err = Open(Config{Path: filepath.Join(b.TempDir(), "access.log"), SkipStatusCodes: []int{204}}); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = l.Close() })
				if bc.log == "discard" {
					// The lines go nowhere: what the gateway spends, without the kernel's copy into the file.
					l.out = io.Discard
				}
			}
			h := Wrap(gatewayLike, l)
			r, err := http.NewRequest(http.MethodGet, "http://gw/prometheus/api/v1/query?query=up", nil)
			if err != nil {
				b.Fatal(err)
			}
			r.RemoteAddr = "10.0.0.7:51234"
			w := &discardWriter{h: http.Header{}}
			id := []string{"4bf92f3577b34da6a3ce929d0e0e4736"}
			b.ReportAllocs()
			cpu := vmtest.ProcessCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if bc.clientID {
					r.Header["X-Request-Id"] = id
				} else {
					delete(r.Header, "X-Request-Id")
				}
				h.ServeHTTP(w, r)
			}
			b.StopTimer()
			if l != nil {
				// The lines still buffered are part of the cost.
				_ = l.Close()
			}
			b.ReportMetric(float64(vmtest.ProcessCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkAccessLogParallel is BenchmarkAccessLog/file with every core writing lines: the cost of sharing one
// buffer.
func BenchmarkAccessLogParallel(b *testing.B) {
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "access.log")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	h := Wrap(gatewayLike, l)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r, _ := http.NewRequest(http.MethodGet, "http://gw/prometheus/api/v1/query?query=up", nil)
		r.RemoteAddr = "10.0.0.7:51234"
		w := &discardWriter{h: http.Header{}}
		id := []string{"4bf92f3577b34da6a3ce929d0e0e4736"}
		for pb.Next() {
			r.Header["X-Request-Id"] = id
			h.ServeHTTP(w, r)
		}
	})
}
