package h1

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// FuzzBufferedHead: a head bufferedHead finds in the reader is the one readHead reads, and leaves the reader where
// readHead leaves it; it finds none it would refuse, or whose end the reader does not hold.
func FuzzBufferedHead(f *testing.F) {
	for _, s := range []string{
		benchRequest + "tail",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\n\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET",
		"GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\r\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\n",
		"\n\n\n",
	} {
		f.Add([]byte(s), uint16(64), uint16(4<<10))
		f.Add([]byte(s), uint16(20), uint16(16))
	}
	f.Fuzz(func(t *testing.T, raw []byte, limit, size uint16) {
		if limit == 0 {
			limit = 1
		}
		// A reader holding what one read gave: the first size bytes, at most its buffer.
		held := raw[:min(len(raw), int(size), 4<<10)]
		br := bufio.NewReaderSize(bytes.NewReader(held), 4<<10)
		_, _ = br.Peek(len(held))
		got := bufferedHead(br, int(limit))
		if got == nil {
			return
		}
		got = bytes.Clone(got)
		rest, _ := io.ReadAll(br)
		br2 := bufio.NewReaderSize(bytes.NewReader(held), 4<<10)
		want, err := readHead(br2, nil, int(limit))
		if err != nil {
			t.Fatalf("bufferedHead found %q; readHead: %v", got, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("bufferedHead found %q; readHead read %q", got, want)
		}
		if rest2, _ := io.ReadAll(br2); !bytes.Equal(rest, rest2) {
			t.Fatalf("bufferedHead left %q; readHead %q", rest, rest2)
		}
	})
}
