package server

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// benchAnswer is about what a small instant query answers.
var benchAnswer = []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"vmagent","instance":"127.0.0.1:8429"},"value":[1700000000,"1"]}]}}` + "\n")

const benchRequest = "GET /api/v1/query?query=up&time=1700000000 HTTP/1.1\r\nHost: gateway:8431\r\nUser-Agent: Grafana/10.4.0\r\n" +
	"Accept: application/json, text/plain, */*\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0In0.c2ln\r\n" +
	"X-Grafana-Org-Id: 1\r\n\r\n"

// BenchmarkServe is the client-facing side of the gateway as a whole: the HTTP server, the access-log entry with
// its request id, the prefix and own-endpoint routing, in front of a handler that answers as the proxy does (it
// reads the token, names the API, copies the answer's headers and body). Keep-alive clients over loopback;
// cpu-ns/op is the process's CPU time (both ends) per request.
//
//	go test -run '^$' -bench BenchmarkServe -benchmem ./internal/server/
func BenchmarkServe(b *testing.B) {
	// The "listening" line would split the benchmark's output line.
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, bc := range []struct{ name, log string }{{"nolog", ""}, {"log", "file"}} {
		b.Run(bc.name, func(b *testing.B) {
			var l *accesslog.Log
			if bc.log != "" {
				var err error
				if l, err = accesslog.Open(accesslog.Config{Path: filepath.Join(b.TempDir(), "access.log")}); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = l.Close() })
			}
			s, err := New(Config{
				ListenAddrs: []string{"127.0.0.1:0"}, IdleConnTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second,
				MaxGracefulShutdown: time.Second, AccessLog: l,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_ = r.Header.Get("Authorization")
					accesslog.From(w).SetAPI("/api/v1/query")
					h := w.Header()
					h["Content-Type"] = []string{"application/json"}
					h["Vary"] = []string{"Accept-Encoding"}
					_, _ = w.Write(benchAnswer)
				}),
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Shutdown() })
			c, err := net.Dial("tcp", s.Addrs()[0].String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 16<<10)
			b.ReportAllocs()
			cpu0 := vmtest.ProcessCPU()
			b.ResetTimer()
			if err := benchRun(c, br, b.N); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(vmtest.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// benchRun sends n requests one after another and reads each answer: its head, then Content-Length bytes.
func benchRun(c net.Conn, br *bufio.Reader, n int) error {
	req := []byte(benchRequest)
	for range n {
		if _, err := c.Write(req); err != nil {
			return err
		}
		if err := vmtest.ReadAnswer(br, len(benchAnswer)); err != nil {
			return err
		}
	}
	return nil
}
