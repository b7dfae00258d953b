package labelguard

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/valyala/fastjson"
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

// jsonSeries is an /api/v1/import line of one series with half a million samples, about 11 MB: an export's.
func jsonSeries() []byte {
	b := []byte(`{"metric":{"__name__":"http_requests_total","job":"api","instance":"10.0.0.1:8080","code":"200"},"values":[`)
	const samples = 500000
	for i := range samples {
		b = fmt.Appendf(b, "%d.%d,", 1000+i%9000, i%10)
	}
	b = append(b[:len(b)-1], `],"timestamps":[`...)
	for i := range samples {
		b = fmt.Appendf(b, "%d,", 1700000000000+int64(i)*15000)
	}
	return append(b[:len(b)-1], "]}"...)
}

// Counting the labels of a long JSON line, against the fastjson parse the scanner replaced: with a parser of its own,
// as a request had one (fastjson_new), and with one that has held a line as long (fastjson_reused).
func BenchmarkJSONLine(b *testing.B) {
	line := jsonSeries()
	b.Run("scan", func(b *testing.B) {
		c := new(jsonCounter)
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			if n, ok := c.labels(line); n != 4 || !ok {
				b.Fatalf("%d, %v", n, ok)
			}
		}
	})
	for _, reused := range []bool{false, true} {
		b.Run(map[bool]string{false: "fastjson_new", true: "fastjson_reused"}[reused], func(b *testing.B) {
			p := new(fastjson.Parser)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				if !reused {
					p = new(fastjson.Parser)
				}
				if n, ok := fastjsonLabels(p, line); n != 4 || !ok {
					b.Fatalf("%d, %v", n, ok)
				}
			}
		})
	}
}

// A 4 MiB JSON line whose body comes 128 bytes a read (a gzip body of small members): linear in the line, as it is in
// one read.
func BenchmarkLongLineSmallReads(b *testing.B) {
	line := []byte(`{"metric":{"__name__":"m","a":"b"},"values":[` + strings.Repeat("1,", 2<<20) + `1],"timestamps":[1]}` + "\n")
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		r, _, err := Check{Max: 30}.Body("import", token(), 0, http.Header{}, &smallReads{r: bytes.NewReader(line), n: 128}, -1)
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := io.Copy(io.Discard, r); n != int64(len(line)) {
			b.Fatalf("%d bytes out of %d", n, len(line))
		}
	}
}

// smallReads gives at most n bytes a read.
type smallReads struct {
	r io.Reader
	n int
}

func (s *smallReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }
