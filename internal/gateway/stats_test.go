package gateway

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseStats(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want queryStats
		ok   bool
	}{
		{`{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "2","executionTimeMsec":3}}`, queryStats{2, 3}, true},
		{`..."stats":{"seriesFetched":"123456","executionTimeMsec":0.5}}` + "\n", queryStats{123456, 0.5}, true},
		{`{"status":"success","data":{"resultType":"vector","result":[]}}`, queryStats{}, false},
		{`..."stats":{"seriesFetched":"x","executionTimeMsec":1}}`, queryStats{}, false},
		{`..."stats":{"seriesFetched":"-1","executionTimeMsec":1}}`, queryStats{}, false},
		{`..."stats":{"executionTimeMsec":1}}`, queryStats{}, false},
	} {
		got, ok := parseStats([]byte(tc.in))
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseStats(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestStatsTail streams answers through the tail reader in reads of every size: the stats are found at EOF
// whatever the chunking, once, and the bytes pass unchanged.
func TestStatsTail(t *testing.T) {
	body := `{"status":"success","data":{"resultType":"matrix","result":[` + strings.Repeat(`{"metric":{"a":"b"},"values":[[1,"1"]]},`, 500) +
		`{"metric":{}}]},"stats":{"seriesFetched": "501","executionTimeMsec":42}}`
	for _, chunk := range []int{1, 7, 100, 255, 256, 257, 4096, 1 << 20} {
		var got []queryStats
		var missing int
		s := &statsTail{rc: io.NopCloser(iotest.HalfReader(strings.NewReader(body))), done: func(st queryStats, ok bool) {
			if ok {
				got = append(got, st)
			} else {
				missing++
			}
		}}
		var out strings.Builder
		buf := make([]byte, chunk)
		for {
			n, err := s.Read(buf)
			out.WriteString(string(buf[:n]))
			if err != nil {
				break
			}
		}
		_, _ = s.Read(buf) // a read after EOF reports nothing again
		if out.String() != body {
			t.Fatalf("chunk %d: the body changed", chunk)
		}
		if len(got) != 1 || got[0] != (queryStats{501, 42}) || missing != 0 {
			t.Errorf("chunk %d: stats %+v, missing %d", chunk, got, missing)
		}
	}
	// An answer cut short reports nothing.
	called := false
	s := &statsTail{rc: io.NopCloser(strings.NewReader(body)), done: func(queryStats, bool) { called = true }}
	_, _ = s.Read(make([]byte, 100))
	_ = s.Close()
	if called {
		t.Error("a body closed before EOF reported stats")
	}
}

// BenchmarkStatsTail is what reading the stats costs per answer: a 64 KiB answer read in 32 KiB chunks, as the
// proxy reads it, with the tail reader and without it (plain).
func BenchmarkStatsTail(b *testing.B) {
	body := []byte(`{"status":"success","data":{"resultType":"matrix","result":[` + strings.Repeat(`{"metric":{"a":"b"},"values":[[1,"1"]]},`, 1600) +
		`{"metric":{}}]},"stats":{"seriesFetched": "1601","executionTimeMsec":42}}`)
	buf := make([]byte, 32<<10)
	for _, wrap := range []bool{true, false} {
		b.Run(map[bool]string{true: "tail", false: "plain"}[wrap], func(b *testing.B) {
			r := bytes.NewReader(nil)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r.Reset(body)
				var rd io.Reader = r
				if wrap {
					rd = &statsTail{rc: io.NopCloser(r), done: func(queryStats, bool) {}}
				}
				for {
					if _, err := rd.Read(buf); err != nil {
						break
					}
				}
			}
		})
	}
}

// lastIndex must find what bytes.LastIndex finds, overlapping and repeated keys included.
func TestLastIndex(t *testing.T) {
	for _, tc := range []struct{ b, key string }{
		{"", `"stats":`}, {`"stats":`, `"stats":`}, {`x"stats":{}"stats":{"a":1}`, `"stats":`},
		{`"stats":"stats":`, `"stats":`}, {"aaaa", "aa"}, {"abab", "aba"}, {"no key here", `"stats":`},
	} {
		if got, want := lastIndex([]byte(tc.b), []byte(tc.key)), bytes.LastIndex([]byte(tc.b), []byte(tc.key)); got != want {
			t.Errorf("lastIndex(%q, %q) = %d; bytes.LastIndex says %d", tc.b, tc.key, got, want)
		}
	}
}
