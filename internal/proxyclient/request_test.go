package proxyclient

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// onlyReader hides a reader's WriteTo, as a client's body streaming from a connection has none.
type onlyReader struct{ io.Reader }

// requestCase builds a request afresh for each writer: a body is read once.
type requestCase struct {
	name  string
	build func() *http.Request
}

func newReq(method, target string, body io.Reader, cl int64, header http.Header) func() *http.Request {
	return func() *http.Request {
		u, err := url.Parse(target)
		if err != nil {
			panic(err)
		}
		r := &http.Request{Method: method, URL: u, Host: u.Host, Header: http.Header{}, ContentLength: cl, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		for k, vv := range header {
			r.Header[k] = slices.Clone(vv)
		}
		if body != nil {
			rd := body
			if s, ok := body.(*strings.Reader); ok {
				// A fresh reader per build.
				b, _ := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
				rd = onlyReader{bytes.NewReader(b)}
			}
			r.Body = io.NopCloser(rd)
		}
		return r
	}
}

func withReq(f func() *http.Request, change func(*http.Request)) func() *http.Request {
	return func() *http.Request {
		r := f()
		change(r)
		return r
	}
}

var big = strings.Repeat("0123456789abcdef", 5000) // 80,000 bytes: three chunks of a 32 KiB copy buffer

var requestCases = []requestCase{
	{"get", newReq("GET", "http://vm:8428/api/v1/query?query=up&time=1", nil, 0, http.Header{
		"User-Agent": {"Grafana/11"}, "Accept-Encoding": {"gzip"}, "X-Forwarded-For": {"10.0.0.1"}, "Accept": {"a", "b"},
	})},
	{"get default user agent", newReq("GET", "http://vm:8428/", nil, 0, nil)},
	{"get empty user agent", newReq("GET", "http://vm:8428/health", nil, 0, http.Header{"User-Agent": {""}})},
	{"user agent cleaned", newReq("GET", "http://vm:8428/", nil, 0, http.Header{"User-Agent": {" a\r\nb\t"}})},
	{"values cleaned", newReq("GET", "http://vm:8428/", nil, 0, http.Header{"X-A": {"  padded  ", "line\nbreak", "cr\rx", "\t"}})},
	{"invalid names dropped", newReq("GET", "http://vm:8428/", nil, 0, http.Header{"Bad Name": {"x"}, "": {"y"}, "Ok": {"z"}, "X\r\nInjected": {"1"}})},
	{"non-canonical keys", newReq("GET", "http://vm:8428/", nil, 0, http.Header{"x-lower": {"1"}, "user-agent": {"lower"}, "content-length": {"9"}})},
	{"excluded keys", newReq("GET", "http://vm:8428/", nil, 0, http.Header{"Host": {"evil"}, "Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}})},
	{"empty path", newReq("GET", "http://vm:8428", nil, 0, nil)},
	{"escaped path", newReq("GET", "http://vm:8428/select/0/prometheus/api/v1/label/a%2Fb/values", nil, 0, nil)},
	{"path needing escape", withReq(newReq("GET", "http://vm:8428/", nil, 0, nil), func(r *http.Request) { r.URL.Path = "/a b/ü" })},
	{"force query", withReq(newReq("GET", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.URL.ForceQuery = true })},
	{"double slash path", newReq("GET", "http://vm:8428//x", nil, 0, nil)},
	{"host from URL", withReq(newReq("GET", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.Host = "" })},
	{"host header differs", withReq(newReq("GET", "http://10.0.0.1:8428/x", nil, 0, nil), func(r *http.Request) { r.Host = "vm.example" })},
	{"empty method", newReq("", "http://vm:8428/", nil, 0, nil)},
	{"head", newReq("HEAD", "http://vm:8428/api/v1/export", nil, 0, nil)},
	{"delete without body", newReq("DELETE", "http://vm:8428/api/v1/admin/tsdb/delete_series?match[]=x", nil, 0, nil)},
	{"options without body", newReq("OPTIONS", "http://vm:8428/", nil, 0, nil)},
	{"post without body", newReq("POST", "http://vm:8428/api/v1/query", nil, 0, nil)},
	{"put without body", newReq("PUT", "http://vm:8428/x", nil, 0, nil)},
	{"patch with NoBody", withReq(newReq("PATCH", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.Body = http.NoBody })},
	{"post form", newReq("POST", "http://vm:8428/api/v1/query", strings.NewReader("query=up"), 8, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})},
	{"post large known length", newReq("POST", "http://vm:8428/api/v1/import", strings.NewReader(big), int64(len(big)), nil)},
	{"post unknown length", newReq("POST", "http://vm:8428/api/v1/import", strings.NewReader(big), -1, nil)},
	{"post body with zero length", newReq("POST", "http://vm:8428/api/v1/import", strings.NewReader("abc"), 0, nil)},
	{"post empty unknown length", newReq("POST", "http://vm:8428/api/v1/import", strings.NewReader(""), -1, nil)},
	{"post chunked as the server gives it", withReq(newReq("POST", "http://vm:8428/api/v1/import", strings.NewReader(big), -1, nil), func(r *http.Request) {
		r.TransferEncoding = []string{"chunked"}
	})},
	{"chunked without body", withReq(newReq("POST", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.TransferEncoding = []string{"chunked"} })},
	{"get with known body", newReq("GET", "http://vm:8428/x", strings.NewReader("abc"), 3, nil)},
	{"short body", newReq("POST", "http://vm:8428/x", strings.NewReader("ab"), 3, nil)},
	{"long body", newReq("POST", "http://vm:8428/x", strings.NewReader("abcd"), 3, nil)},
	{"control character in query", withReq(newReq("GET", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.URL.RawQuery = "a=\n" })},
	// Request.Write's own cases, which writeRequest hands to it.
	{"via Request.Write: close", withReq(newReq("GET", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.Close = true })},
	{"via Request.Write: get unknown length probed", newReq("GET", "http://vm:8428/x", strings.NewReader("abc"), -1, nil)},
	{"via Request.Write: trailer", withReq(newReq("POST", "http://vm:8428/x", strings.NewReader("abc"), -1, nil), func(r *http.Request) { r.Trailer = http.Header{"X-T": {"v"}} })},
	{"via Request.Write: host with zone", newReq("GET", "http://[fe80::1%25eth0]:8428/x", nil, 0, nil)},
	{"via Request.Write: idn host", withReq(newReq("GET", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.Host = "bücher.example" })},
	{"via Request.Write: invalid host", withReq(newReq("GET", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.Host = "vm/x y" })},
	{"via Request.Write: identity encoding", withReq(newReq("DELETE", "http://vm:8428/x", nil, 0, nil), func(r *http.Request) { r.TransferEncoding = []string{"identity"} })},
	{"via Request.Write: content length without body", newReq("POST", "http://vm:8428/x", nil, 3, nil)},
}

// written is what a writer put on the wire, with the head's header lines sorted: writeRequest leaves them in map
// order, Request.Write sorts them.
func written(t *testing.T, write func(*bufio.Writer, *http.Request) error, r *http.Request) (string, error) {
	t.Helper()
	var b bytes.Buffer
	bw := bufio.NewWriterSize(&b, 4<<10)
	err := write(bw, r)
	_ = bw.Flush()
	head, body, ok := strings.Cut(b.String(), "\r\n\r\n")
	if !ok {
		return b.String(), err
	}
	lines := strings.Split(head, "\r\n")
	slices.Sort(lines[1:])
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body, err
}

func TestWriteRequestAsRequestWrite(t *testing.T) {
	for _, tc := range requestCases {
		t.Run(tc.name, func(t *testing.T) {
			// The plain cases must be written by writeRequest itself, or the comparison proves nothing.
			if plain := !strings.HasPrefix(tc.name, "via Request.Write"); plainRequest(tc.build()) != plain {
				t.Fatalf("plainRequest = %t; want %t", !plain, plain)
			}
			want, wantErr := written(t, func(bw *bufio.Writer, r *http.Request) error { return r.Write(bw) }, tc.build())
			got, gotErr := written(t, writeRequest, tc.build())
			if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
				t.Fatalf("error %v; Request.Write's is %v", gotErr, wantErr)
			}
			if got != want {
				t.Fatalf("wrote\n%q\nRequest.Write wrote\n%q", trim(got), trim(want))
			}
		})
	}
}

func trim(s string) string {
	if len(s) > 400 {
		return s[:400] + "…"
	}
	return s
}

// A body is closed, as Request.Write closes it, whether or not it was written.
func TestWriteRequestClosesBody(t *testing.T) {
	for _, cl := range []int64{3, -1, 4} {
		closed := false
		r := newReq("POST", "http://vm:8428/x", nil, cl, nil)()
		r.Body = closeRecorder{strings.NewReader("abc"), &closed}
		_ = writeRequest(bufio.NewWriter(io.Discard), r)
		if !closed {
			t.Fatalf("the body of length %d was not closed", cl)
		}
	}
}

type closeRecorder struct {
	io.Reader
	closed *bool
}

func (c closeRecorder) Close() error { *c.closed = true; return nil }

// A chunked body reaches the connection chunk by chunk: a streamed import is not held in the buffer.
func TestWriteRequestFlushesChunks(t *testing.T) {
	pr, pw := io.Pipe()
	r := newReq("POST", "http://vm:8428/api/v1/import", nil, -1, nil)()
	r.Body = pr
	var wire syncBuffer
	done := make(chan error, 1)
	bw := bufio.NewWriterSize(&wire, 4<<10)
	go func() { done <- writeRequest(bw, r) }()
	_, _ = pw.Write([]byte("first line\n"))
	for i := 0; !strings.Contains(wire.String(), "b\r\nfirst line\n\r\n"); i++ {
		if i > 5000 {
			t.Fatalf("the first chunk did not reach the connection; it has %q", wire.String())
		}
		waitABit()
	}
	if !strings.Contains(wire.String(), "Transfer-Encoding: chunked\r\n") {
		t.Fatalf("head %q is not chunked", wire.String())
	}
	_ = pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = bw.Flush()
	if !strings.HasSuffix(wire.String(), "\r\n0\r\n\r\n") {
		t.Fatalf("the body did not end with the last chunk: %q", wire.String())
	}
}

// A trace that watches the write gets its events: such a request goes through Request.Write.
func TestWriteRequestTrace(t *testing.T) {
	var fields []string
	r := newReq("GET", "http://vm:8428/x", nil, 0, http.Header{"X-A": {"1"}})()
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		WroteHeaderField: func(k string, _ []string) { fields = append(fields, k) },
	}))
	if err := writeRequest(bufio.NewWriter(io.Discard), r); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fields, "X-A") || !slices.Contains(fields, "Host") {
		t.Fatalf("the trace saw fields %q; want Host and X-A", fields)
	}
}

func BenchmarkWriteRequest(b *testing.B) {
	r := newReq("GET", "http://127.0.0.1:8428/api/v1/query_range?query=sum%28rate%28x%5B5m%5D%29%29&start=1&end=2&step=15", nil, 0, http.Header{
		"User-Agent": {"Grafana/11.0.0"}, "Accept-Encoding": {"gzip"}, "Accept": {"application/json"},
		"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Host": {"gw.example:8427"}, "X-Forwarded-Proto": {"http"}, "X-Request-Id": {"0123456789abcdef"},
	})()
	bw := bufio.NewWriterSize(io.Discard, 4<<10)
	for _, w := range []struct {
		name  string
		write func(*bufio.Writer, *http.Request) error
	}{
		{"lean", writeRequest},
		{"Request.Write", func(bw *bufio.Writer, r *http.Request) error { return r.Write(bw) }},
	} {
		b.Run(w.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := w.write(bw, r); err != nil {
					b.Fatal(err)
				}
				_ = bw.Flush()
			}
		})
	}
}

// syncBuffer is a connection's far side, read while the writer writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitABit() { time.Sleep(time.Millisecond) }
