package labelguard

import (
	"bytes"
	"io"
	"testing"

	"github.com/valyala/fastjson"
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

// fastjsonLabels is the counting jsonCounter replaced, by a whole parse with fastjson as VictoriaMetrics reads a
// line: the reference the scanner must agree with. Its count of a refused line is left out (0).
func fastjsonLabels(p *fastjson.Parser, line []byte) (int, bool) {
	if len(bytes.TrimSpace(line)) == 0 {
		return 0, true
	}
	v, err := p.ParseBytes(line)
	if err != nil {
		return 0, false
	}
	m := v.Get("metric")
	if m == nil {
		return 0, false
	}
	o, err := m.Object()
	if err != nil {
		return 0, false
	}
	n, ok := 0, true
	o.Visit(func(_ []byte, v *fastjson.Value) {
		s, err := v.StringBytes()
		switch {
		case err != nil:
			ok = false
		case len(s) > 0:
			n++
		}
	})
	if !ok {
		return 0, false
	}
	return n, true
}

// The scanner answers as the parse it replaced on every line fastjson parses, and refuses every other line but a
// blank one (VictoriaMetrics refuses them all).
func FuzzJSONLabels(f *testing.F) {
	for _, tc := range jsonCases() {
		f.Add([]byte(tc.line))
	}
	c := new(jsonCounter)
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, line []byte) { checkJSONLabels(t, c, &p, line) })
}

// jsonTokens are the pieces FuzzJSONTokens builds lines of, so that most of its lines are JSON or nearly.
var jsonTokens = []string{"{", "}", "[", "]", ",", ":", " ", "\t", "\"", `\`, `\"`, `"metric"`, `"m\u0065tric"`,
	`"\u006detric"`, `"metric "`, `"a"`, `""`, `"\\"`, `"\""`, "1", "-", "+", "1e+5", ".", "nan", "NaN", "-Inf", "inf",
	"true", "false", "null", "x", `"metric":{"a":"1"}`, `{"metric":`, "[[[", "]]]"}

// The same as FuzzJSONLabels, of lines made of JSON's pieces: each byte of the input is one.
func FuzzJSONTokens(f *testing.F) {
	f.Add([]byte{0, 11, 5, 0, 15, 5, 15, 1, 4, 12, 5, 2, 19, 4, 21, 3, 1})
	f.Add([]byte{33, 0, 1, 4, 15, 5, 34, 35, 1})
	c := new(jsonCounter)
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, pieces []byte) {
		var line []byte
		for _, b := range pieces {
			line = append(line, jsonTokens[int(b)%len(jsonTokens)]...)
		}
		checkJSONLabels(t, c, &p, line)
	})
}

func checkJSONLabels(t *testing.T, c *jsonCounter, p *fastjson.Parser, line []byte) {
	t.Helper()
	n, ok := c.labels(line)
	if _, err := p.ParseBytes(line); err != nil {
		if blank := len(bytes.Trim(line, " \t\n\r")) == 0; ok != blank || n != 0 {
			t.Fatalf("labels(%q) = %d, %v; fastjson refuses it (%v)", line, n, ok, err)
		}
		return
	}
	if wn, wok := fastjsonLabels(p, line); n != wn || ok != wok {
		t.Fatalf("labels(%q) = %d, %v; the fastjson parse: %d, %v", line, n, ok, wn, wok)
	}
}
