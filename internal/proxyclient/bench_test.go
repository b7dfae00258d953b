package proxyclient

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// answerJSON is a query answer of about the size the bench's upstream gives (bench/upstream.go); dashboardJSON
// one of a range query over a few dozen series.
var answerJSON, dashboardJSON = vectorJSON(2650), vectorJSON(24 << 10)

func vectorJSON(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"metric":{"__name__":"up","instance":"host-` + strconv.Itoa(i) + `:9100","job":"node"},"value":[1733220000,"1"]}`)
	}
	b.WriteString(`]}}`)
	return b.Bytes()
}

// cannedUpstream is a loopback upstream that answers every request head with the head and body a VictoriaMetrics
// gives a query, without parsing more than the head's end: the benchmark's allocations are the client's.
func cannedUpstream(tb testing.TB, body []byte) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	answer := func() []byte {
		var b bytes.Buffer
		b.WriteString("HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nX-Server-Hostname: vm-1\r\n")
		b.WriteString("Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
		b.Write(body)
		return b.Bytes()
	}()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br := bufio.NewReaderSize(nc, 8<<10)
				for {
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := nc.Write(answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// BenchmarkRoundTrip is one forwarded query on a kept-alive loopback connection, its answer read to the end as
// the forward step copies it.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("2.7KiB", func(b *testing.B) { benchmarkRoundTrip(b, answerJSON) })
	b.Run("24KiB", func(b *testing.B) { benchmarkRoundTrip(b, dashboardJSON) })
}

func benchmarkRoundTrip(b *testing.B, answer []byte) {
	base := cannedUpstream(b, answer)
	c := New(nil, time.Minute, 10*time.Second)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+"/select/0/prometheus/api/v1/query?query=up&time=1733220000", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header = http.Header{
		"User-Agent": {"Grafana/11.0.0"}, "Accept-Encoding": {"gzip"}, "Accept": {"application/json"},
		"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Host": {"gw.example:8427"}, "X-Forwarded-Proto": {"http"},
	}
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, onlyReader{resp.Body}, buf)
		if err != nil || n != int64(len(answer)) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			b.Fatalf("read %d bytes, %v", n, err)
		}
		resp.Body.Close()
	}
}
