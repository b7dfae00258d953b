package labelguard

import (
	"bytes"
	"io"
	"testing"
)

// chunks reads r n bytes at a most per Read, so line ends fall anywhere in the reads.
type chunks struct {
	r io.Reader
	n int
}

func (c chunks) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// The line reader passes exactly the whole lines keep accepts, in order, however the body arrives.
func FuzzLines(f *testing.F) {
	f.Add([]byte("up 1\nup{a=\"1\",b=\"2\"} 2\n# c\nup{a=\"1\" 3"), uint8(3), uint8(2))
	f.Add([]byte("\n\n\r\nx"), uint8(1), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk, room uint8) {
		keep := func(line []byte) bool {
			n, ok := prometheusLabels(line)
			influxLabels(line)
			return ok && n <= int(room%8)
		}
		var want []byte
		for rest := data; len(rest) > 0; {
			line, after, found := bytes.Cut(rest, []byte{'\n'})
			if keep(line) {
				want = append(want, line...)
				if found {
					want = append(want, '\n')
				}
			}
			rest = after
		}
		got, err := io.ReadAll(newLineReader(chunks{bytes.NewReader(data), int(chunk%16) + 1}, keep, MaxLine, &hold{}))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	})
}

// Whatever the bytes, the remote-write filter never panics, and what it keeps has no series over the limit.
func FuzzRemoteWrite(f *testing.F) {
	f.Add(pbBytes(nil, 1, series("__name__", "a", "b", "c")), uint8(1))
	f.Add([]byte{0x0a, 0x80}, uint8(2))
	f.Fuzz(func(t *testing.T, raw []byte, room uint8) {
		c := Check{Max: int(room % 8)}
		kept, _, err := c.filterWriteRequest(raw)
		if err != nil {
			return
		}
		for s := kept; len(s) > 0; {
			field, wire, body, next, err := protoField(s)
			if err != nil {
				t.Fatalf("the kept request does not parse: %v", err)
			}
			if field == 1 && wire == 2 {
				if n, err := seriesLabels(body); err != nil || n > c.Max {
					t.Fatalf("kept a series of %d labels, %v; the limit is %d", n, err, c.Max)
				}
			}
			s = next
		}
	})
}
