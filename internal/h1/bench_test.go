package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// benchBody is about what a small instant query answers.
var benchBody = []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"vmagent","instance":"127.0.0.1:8429"},"value":[1700000000,"1"]},{"metric":{"__name__":"up","job":"vm","instance":"127.0.0.1:8428"},"value":[1700000000,"1"]}]}}` + "\n")

// benchHandler does what every gateway request does to the request and answer, and nothing else.
var benchHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_ = r.Header.Get("Authorization")
	_ = r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(benchBody)
})

const benchRequest = "GET /api/v1/query?query=up&time=1700000000 HTTP/1.1\r\nHost: gateway:8431\r\nUser-Agent: Grafana/10.4.0\r\n" +
	"Accept: application/json, text/plain, */*\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0In0.c2ln\r\n" +
	"X-Grafana-Org-Id: 1\r\n\r\n"

// BenchmarkServe compares this server with net/http's serving the same handler over loopback keep-alive
// connections, in the same run: `go test -run '^$' -bench BenchmarkServe -benchmem ./internal/h1/`. cpu-ns/op is
// the process's CPU time (both ends) per request; allocs/op counts both ends too, and the client allocates nothing.
func BenchmarkServe(b *testing.B) {
	for _, impl := range []string{"h1", "net_http"} {
		for _, conns := range []int{1, 8} {
			b.Run(impl+"/conns="+strconv.Itoa(conns), func(b *testing.B) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				var stop func()
				if impl == "h1" {
					s := &Server{Handler: benchHandler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
					go func() { _ = s.Serve(ln) }()
					stop = func() { _ = s.Close() }
				} else {
					s := &http.Server{Handler: benchHandler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
					go func() { _ = s.Serve(ln) }()
					stop = func() { _ = s.Close() }
				}
				defer stop()
				clients := make([]*benchClient, conns)
				for i := range clients {
					if clients[i], err = dialBench(ln.Addr().String()); err != nil {
						b.Fatal(err)
					}
					defer clients[i].conn.Close()
				}
				b.ReportAllocs()
				cpu0 := vmtest.ProcessCPU()
				b.ResetTimer()
				per := b.N / conns
				errs := make(chan error, conns)
				for i, c := range clients {
					n := per
					if i == 0 {
						n += b.N % conns
					}
					go func() { errs <- c.run(n) }()
				}
				for range clients {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(vmtest.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

type benchClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialBench(addr string) (*benchClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &benchClient{conn: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

// run sends n requests one after another and reads each answer: its head up to the empty line, then
// Content-Length bytes.
func (c *benchClient) run(n int) error {
	req := []byte(benchRequest)
	for range n {
		if _, err := c.conn.Write(req); err != nil {
			return err
		}
		if err := vmtest.ReadAnswer(c.br, len(benchBody)); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkParseRequest is the parse of a Grafana query's head as a kept-alive connection does it (the header map
// reused): `go test -run '^$' -bench BenchmarkParseRequest -benchmem ./internal/h1/`.
func BenchmarkParseRequest(b *testing.B) {
	head := []byte(benchRequest)
	var scratch []byte
	var st headerStore
	b.ReportAllocs()
	for b.Loop() {
		var r http.Request
		if err := parseRequest(&r, nil, head, &scratch, &st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteHead is the head of a gateway's query answer as commit writes it, its status line and its fields:
// `go test -run '^$' -bench BenchmarkWriteHead -benchmem ./internal/h1/`.
func BenchmarkWriteHead(b *testing.B) {
	h := http.Header{
		"Content-Type": {"application/json"}, "Access-Control-Allow-Origin": {"*"}, "Vary": {"Accept-Encoding"},
		"X-Server-Hostname": {"vm-1"}, "X-Request-Id": {"0123456789abcdef"},
	}
	bw := bufio.NewWriterSize(io.Discard, 4<<10)
	var keys []headerField
	b.ReportAllocs()
	for b.Loop() {
		writeStatusLine(bw, http.StatusOK)
		writeHeaderFields(bw, h, skipLengthAndCL, &keys)
		bw.Reset(io.Discard)
	}
}
