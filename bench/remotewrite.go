//go:build linux

package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
)

// The remotewrite workload is what vmagent sends after scrapes: a few queues, each posting one Prometheus
// remote-write batch after another, about 1 MiB of snappy-compressed protobuf each.

var remoteWriteConcurrency = flag.Int("remotewrite.concurrency", 4, "Concurrent keep-alive connections of the remotewrite workload, like vmagent's few -remoteWrite.queues")

const (
	// remoteWriteMaxBytes bounds the remote-write body on the wire.
	remoteWriteMaxBytes = 1 << 20
	// remoteWriteMs is every sample's timestamp: one scrape.
	remoteWriteMs = 1700000000000
)

// remoteWriteBody is the one remote-write batch the load generator sends, built once; remoteWriteSeries is how
// many time series it carries.
var remoteWriteBody, remoteWriteSeries = remoteWriteRequest(remoteWriteMaxBytes)

// remoteWriteRequest builds a Prometheus remote-write WriteRequest of as many series as fit in maxBytes once in a
// snappy block: the series of scraped Kubernetes pods (a request-duration histogram, request counters and process
// metrics per pod, with the target labels vmagent adds), one sample each, labels sorted by name. The snappy block
// holds only literals: valid snappy that any decoder reads, with no compression library; the proxies under test
// pass the bytes on without looking at them, so what matters is their number, the headers and that they all arrive.
func remoteWriteRequest(maxBytes int) (body []byte, series int) {
	var wr, ts, lb []byte
	les := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"}
	handlers := []string{"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/write"}
	codes := []string{"200", "204", "400", "503"}
	process := []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "go_goroutines",
		"go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds_count", "up"}
	for i := 0; ; i++ {
		pod, k := i/64, i%64
		labels := [][2]string{
			{"container", "api"}, {"endpoint", "http-metrics"}, {"job", "kubernetes-pods"},
			{"instance", fmt.Sprintf("10.1.%d.%d:8080", pod/250, pod%250+1)},
			{"namespace", fmt.Sprintf("team-%d", pod%7)}, {"pod", fmt.Sprintf("api-7d9f8b6c5d-%05d", pod)}, {"service", "api"},
		}
		switch {
		case k < 40:
			labels = append(labels, [2]string{"__name__", "http_request_duration_seconds_bucket"},
				[2]string{"handler", handlers[k/10]}, [2]string{"le", les[k%10]}, [2]string{"method", "GET"})
		case k < 56:
			labels = append(labels, [2]string{"__name__", "http_requests_total"},
				[2]string{"handler", handlers[(k-40)/4]}, [2]string{"code", codes[(k-40)%4]}, [2]string{"method", "GET"})
		default:
			labels = append(labels, [2]string{"__name__", process[k-56]})
		}
		slices.SortFunc(labels, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })

		ts = ts[:0]
		for _, l := range labels {
			lb = appendBytesField(lb[:0], 1, []byte(l[0]))
			lb = appendBytesField(lb, 2, []byte(l[1]))
			ts = appendBytesField(ts, 1, lb)
		}
		sample := binary.LittleEndian.AppendUint64(append(lb[:0], 1<<3|1), math.Float64bits(float64(i%1000)*1.5))
		sample = binary.AppendUvarint(append(sample, 2<<3|0), remoteWriteMs)
		ts = appendBytesField(ts, 2, sample)

		next := appendBytesField(nil, 1, ts)
		if snappyLiteralLen(len(wr)+len(next)) > maxBytes {
			break
		}
		wr = append(wr, next...)
		series++
	}
	return snappyLiteralBlock(wr), series
}

// appendBytesField appends protobuf field num of wire type 2 (length-delimited).
func appendBytesField(b []byte, num int, data []byte) []byte {
	b = binary.AppendUvarint(b, uint64(num)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}

// snappyChunk is the longest literal snappyLiteralBlock writes in one element: its length-1 fits the two bytes
// of the tag 61 form.
const snappyChunk = 1 << 16

// snappyLiteralBlock is src as a snappy block (the format of remote write, not the framed stream) of literals only.
func snappyLiteralBlock(src []byte) []byte {
	out := binary.AppendUvarint(make([]byte, 0, snappyLiteralLen(len(src))), uint64(len(src)))
	for len(src) > 0 {
		n := min(len(src), snappyChunk)
		switch {
		case n <= 60:
			out = append(out, byte(n-1)<<2)
		case n <= 1<<8:
			out = append(out, 60<<2, byte(n-1))
		default:
			out = append(out, 61<<2, byte(n-1), byte((n-1)>>8))
		}
		out = append(out, src[:n]...)
		src = src[n:]
	}
	return out
}

// snappyLiteralLen is at least the length of snappyLiteralBlock of n bytes (exactly, but for a short last chunk).
func snappyLiteralLen(n int) int {
	return len(binary.AppendUvarint(nil, uint64(n))) + n + 3*((n+snappyChunk-1)/snappyChunk)
}
