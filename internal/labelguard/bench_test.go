package labelguard

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/golang/snappy"
)

// promBody is about 1 MiB of Prometheus text lines of 10 labels each, as an exporter's page or an import.
func promBody() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 1<<20; i++ {
		fmt.Fprintf(&b, `http_requests_total{job="api",instance="10.0.0.%d:8080",method="GET",code="200",path="/v1/items",`+
			`region="eu-west-1",zone="a",pod="api-%d",namespace="prod",team="dev"} %d 1700000000000`+"\n", i%250, i, i)
	}
	return b.Bytes()
}

// The guard's cost on a streamed import, against copying the same body without it (the floor).
func BenchmarkLines(b *testing.B) {
	body := promBody()
	b.Run("copy", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		buf := make([]byte, 32<<10)
		for b.Loop() {
			// Read by read, as the upstream client reads a body (no WriterTo shortcut).
			_, _ = io.CopyBuffer(io.Discard, struct{ io.Reader }{bytes.NewReader(body)}, buf)
		}
	})
	b.Run("prometheus", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			r, _, _ := Check{Max: 30}.Body("import_prometheus", token(), 0, http.Header{}, bytes.NewReader(body), -1)
			_, _ = io.Copy(io.Discard, r)
		}
	})
}

// A remote-write batch of about 1 MiB decompressed: read whole, decompressed and walked.
func BenchmarkRemoteWrite(b *testing.B) {
	var req []byte
	for i := 0; len(req) < 1<<20; i++ {
		req = pbBytes(req, 1, series("__name__", "http_requests_total", "job", "api", "instance", fmt.Sprintf("10.0.0.%d:8080", i%250),
			"method", "GET", "code", "200", "pod", fmt.Sprintf("api-%d", i), "namespace", "prod", "team", "dev"))
	}
	compressed := snappy.Encode(nil, req)
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		r, _, err := Check{Max: 30}.Body("remote_write", token(), 0, http.Header{}, bytes.NewReader(compressed), -1)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, r)
	}
}
