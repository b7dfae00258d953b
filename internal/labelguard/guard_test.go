package labelguard

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/golang/snappy"
	"github.com/valyala/fastjson"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

func TestPrometheusLabels(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int
		ok   bool
	}{
		{"", 0, true},
		{"   ", 0, true},
		{"# HELP x y", 0, true},
		{"  # TYPE x counter", 0, true},
		{"up 1", 1, true},
		{"up\t1 123", 1, true},
		{"up", 0, false},
		{"up{} 1", 1, true},
		{`up{a="1"} 1`, 2, true},
		{`up{a="1",b="2",} 1`, 3, true},
		{` up { a = "1" , b="2" } 1`, 3, true},
		{`up{a=""} 1`, 1, true}, // an empty value is skipped by VictoriaMetrics
		{`up{="x"} 1`, 1, true}, // so is an empty name
		{`up{a="1"} 1` + "\r", 2, true},
		{`{a="1"} 1`, 0, false},  // no name
		{`up{a=1} 1`, 0, false},  // unquoted
		{`up{a="1" 1`, 0, false}, // unclosed
		{`up{a="1"b="2"} 1`, 0, false},
		{`up{a="x\"y",b="2"} 1`, 3, true},
		{`up{a="x\\",b="2"} 1`, 3, true},
		{`up{a="x\\\",b="2"} 1`, 0, false}, // the quote is escaped: the value never ends
		{`up{a="}",b="{"} 1`, 3, true},
		{`up{a="1",a="2"} 1`, 3, true}, // duplicates count, as VictoriaMetrics adds both
		{`up{__name__="x"} 1`, 2, true},
	} {
		n, ok := prometheusLabels([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("prometheusLabels(%q) = %d, %v; want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}

// nested is value inside n arrays.
func nested(n int, value string) string {
	return strings.Repeat("[", n) + value + strings.Repeat("]", n)
}

type jsonCase struct {
	line string
	n    int
	ok   bool
}

// jsonCases are lines with the labels VictoriaMetrics reads in them (ok false: it refuses the line).
func jsonCases() []jsonCase {
	const m = `{"metric":{"a":"1"},`
	return []jsonCase{
		{"", 0, true},
		{" \r", 0, true},
		{" \t\r\n ", 0, true},
		// fastjson skips no other whitespace.
		{"\v", 0, false},
		{"\v" + `{"metric":{"a":"1"}}`, 0, false},
		{`{"metric":{"__name__":"up","a":"1"},"values":[1],"timestamps":[1]}`, 2, true},
		{" \t{ \"metric\" \t:\r{ \"__name__\" : \"up\" , \"a\":\"1\"\n} ,\"values\" : [ 1 , 2 ] , \"timestamps\":[ ] } \r", 2, true},
		{`{"values":[1],"timestamps":[1],"metric":{"__name__":"up","a":"1","b":"2"}}`, 3, true},
		{`{"metric":{"__name__":"up","a":"","b":"2"}}`, 2, true},
		{`{"metric":{"a":"","b":""}}`, 0, true},
		{`{"metric":{}}`, 0, true},
		{`{"metric":{"a":"1","a":"2"}}`, 2, true},
		{`{"metric":{"a":1}}`, 0, false},
		{`{"metric":{"a":"1","b":null}}`, 0, false},
		{`{"metric":{"a":{"b":"c"}}}`, 0, false},
		{`{"metric":{"a":["b"]}}`, 0, false},
		{`{"metric":"up"}`, 0, false},
		{`{"metric":["a"]}`, 0, false},
		{`{"metric":null}`, 0, false},
		{`{"values":[1]}`, 0, false},
		{`{}`, 0, false},
		{`{"metric":{"a":"1"}`, 0, false},
		{`{"metric":{"a":"1"}},`, 0, false},
		{`{"metric":{"a":"1",}}`, 0, false},
		{`{"metric":{"a" "1"}}`, 0, false},
		{`{"metric":{a:"1"}}`, 0, false},
		{`[]`, 0, false},
		{`"metric"`, 0, false},
		{`[{"metric":{"a":"1"}}]`, 0, false},
		// The first metric key is the one read, by fastjson's Get as in VictoriaMetrics.
		{`{"metric":{"a":"1"},"metric":{"a":"1","b":"1","c":"1"}}`, 1, true},
		{`{"metric":"up","metric":{"a":"1"}}`, 0, false},
		{`{"metric":{"a":1},"metric":{"a":"1"}}`, 0, false},
		// A key is unescaped to be compared, but only when none is written "metric".
		{`{"\u006detric":{"a":"1","b":"2"}}`, 2, true},
		{`{"m\u0065tric":{"a":"1"}}`, 1, true},
		{`{"\u006D\u0065\u0074\u0072\u0069\u0063":{"a":"1"}}`, 1, true},
		{`{"m\u0065tric":{"a":"1"},"m\u0065tric":{"a":"1","b":"2"}}`, 1, true},
		{`{"m\u0065tric":{"a":"1","b":"2"},"metric":{"a":"1"}}`, 1, true},
		{`{"m\u0065tric":"up","metric":{"a":"1"}}`, 1, true},
		{`{"m\u0065tric":{"a":"1"},"metric":"up"}`, 0, false},
		{`{"m\u0065tric":1,"m\u0065tric":{"a":"1"}}`, 0, false},
		{`{"metric ":{"a":"1"}}`, 0, false},
		{`{"Metric":{"a":"1"}}`, 0, false},
		{`{"\metric":{"a":"1"}}`, 0, false},
		{`{"metric\u0000":{"a":"1"}}`, 0, false},
		{`{"metri\u0063 ":{"a":"1"}}`, 0, false},
		// Escaped quotes and backslashes end no string.
		{`{"metric":{"a\"b":"c\"d","e\\":"\\","f":"\\\"","\"":"\""}}`, 4, true},
		{`{"x":"\"metric\":{\"a\":\"1\",\"b\":\"2\"}","metric":{"a":"1"}}`, 1, true},
		{`{"x\\":"\\","metric":{"a":"1"}}`, 1, true},
		{`{"metric":{"a":"1\"}}`, 0, false},
		{`{"metric":{"a":"1\\\"}}`, 0, false},
		// Nested values are read past, their metric keys too.
		{m + `"values":[[1,[2]],{"a":{"b":[]}},{}],"x":{"metric":{"a":"1","b":"2"}}}`, 1, true},
		{`{"x":{"metric":{"a":"1","b":"2"}},"metric":{"a":"1"}}`, 1, true},
		{m + `"v":[1,-1.5e+3,0.5E-2,true,false,null,NaN,nan,-Inf,+inf,"s",--,.,1e,+-.]}`, 1, true},
		// A sign or the like ends a number only at the end of the line.
		{m + `"v":[-]}`, 0, false},
		{m + `"v":[1,- 1]}`, 0, false},
		{m + `"v":[-Infinity]}`, 0, false},
		{m + `"v":[tru]}`, 0, false},
		{m + `"v":[nul]}`, 0, false},
		{m + `"v":[1,]}`, 0, false},
		{m + `"v":[,1]}`, 0, false},
		{m + `"v":[1 2]}`, 0, false},
		{m + `"v":[1}}`, 0, false},
		{m + `"v":{"a"}}`, 0, false},
		{m + `"v":{"a":1,}}`, 0, false},
		{m + `"v":[truex]}`, 0, false},
		{m + `"v":[1,1,1`, 0, false},
		// Values nest at most 300 deep, the top-level object at 1.
		{m + `"v":` + nested(299, "") + `}`, 1, true},
		{m + `"v":` + nested(300, "") + `}`, 0, false},
		{m + `"v":` + nested(298, "1") + `}`, 1, true},
		{m + `"v":` + nested(299, "1") + `}`, 0, false},
		{m + `"v":` + strings.Repeat(`{"a":`, 298) + `{}` + strings.Repeat("}", 298) + `}`, 1, true},
		{m + `"v":` + strings.Repeat(`{"a":`, 299) + `1` + strings.Repeat("}", 299) + `}`, 0, false},
		{m + `"v":` + nested(400, "") + `}`, 0, false},
		{`{"metric":{"a":"1"}} `, 1, true},
		{`{"metric":{"a":"1"}} x`, 0, false},
		{`{"metric":{"a":"1"}}}`, 0, false},
		{`{"metric":{"a":"1"}}{}`, 0, false},
	}
}

func TestJSONLabels(t *testing.T) {
	c := new(jsonCounter)
	var p fastjson.Parser
	for _, tc := range jsonCases() {
		n, ok := c.labels([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("labels(%q) = %d, %v; want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
		// The cases themselves are checked against the parse the scanner replaced, where fastjson parses them.
		if _, err := p.ParseBytes([]byte(tc.line)); err == nil {
			if wn, wok := fastjsonLabels(&p, []byte(tc.line)); wn != tc.n || wok != tc.ok {
				t.Errorf("fastjson reads %q as %d, %v; the case says %d, %v", tc.line, wn, wok, tc.n, tc.ok)
			}
		} else if tc.ok && strings.Trim(tc.line, " \t\r\n") != "" {
			t.Errorf("fastjson refuses %q (%v); the case says it has labels", tc.line, err)
		}
	}
}

// A line of the longest kind is counted in the memory it takes, not in a node per value.
func TestJSONLabelsLongLines(t *testing.T) {
	const prefix = `{"metric":{"__name__":"a","b":"c"},"values":`
	samples := prefix + "[" + strings.Repeat("1,", maxJSONLine/2-len(prefix)) + "1]}"
	for _, tc := range []struct {
		name, line string
		n          int
		ok         bool
	}{
		{"samples", samples, 2, true},
		{"unclosed samples", samples[:len(samples)-2], 0, false},
		{"brackets", prefix + strings.Repeat("[", maxJSONLine-len(prefix)), 0, false},
		{"closed brackets", prefix + nested((maxJSONLine-len(prefix))/2, "") + "}", 0, false},
	} {
		line := []byte(tc.line)
		c := new(jsonCounter)
		var n int
		var ok bool
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		allocs := testing.AllocsPerRun(3, func() { n, ok = c.labels(line) })
		runtime.ReadMemStats(&after)
		if n != tc.n || ok != tc.ok {
			t.Errorf("%s: %d, %v; want %d, %v", tc.name, n, ok, tc.n, tc.ok)
		}
		// Four runs of a line of 8 or 16 million values, in a handful of allocations and a few KiB.
		if used := after.TotalAlloc - before.TotalAlloc; allocs > 4 || used > 64<<10 {
			t.Errorf("%s: a line of %d bytes took %v allocations and %d bytes a count", tc.name, len(line), allocs, used/4)
		}
	}
}

func TestInfluxLabels(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int
		ok   bool
	}{
		{"", 0, true},
		{"# comment", 0, true},
		{"cpu value=1", 0, true},
		{"cpu,host=a value=1 123", 1, true},
		{"cpu,host=a,region=b value=1,x=2 123\r", 2, true},
		{"cpu,host=,region=b value=1", 1, true},
		{"cpu,=a,region=b value=1", 1, true},
		{"cpu,host value=1", 0, false},
		{"cpu,host=a", 0, false},
		{`cpu,host=a\,b=c,region=b value=1`, 2, true},
		{`cpu,host=a\ b,region=b value=1`, 2, true},
		{`cpu,host=a\\,region=b value=1`, 2, true},
		{`cp\,u,host=a value=1`, 1, true},
		{`cpu,host=a\=b value=1`, 1, true},
		{",host=a value=1", 1, true},
	} {
		n, ok := influxLabels([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("influxLabels(%q) = %d, %v; want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}

type drops struct{ reasons, series []string }

func (d *drops) add(reason string, s []byte) {
	d.reasons = append(d.reasons, reason)
	d.series = append(d.series, string(s))
}

func labelsLine(n int) string {
	var b strings.Builder
	b.WriteString("m{")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`l`)
		b.WriteString(strings.Repeat("x", i+1))
		b.WriteString(`="v"`)
	}
	b.WriteString("} 1")
	return b.String()
}

// readAll reads r one byte at a time as well as whole: the lines must come out the same whatever the reads.
func readAll(t *testing.T, mk func() io.Reader) (string, error) {
	t.Helper()
	whole, err := io.ReadAll(mk())
	small, err2 := io.ReadAll(iotest.OneByteReader(mk()))
	if string(whole) != string(small) || (err == nil) != (err2 == nil) {
		t.Fatalf("reads differ: whole %q, %v; one byte at a time %q, %v", whole, err, small, err2)
	}
	return string(whole), err
}

func TestLinesDropSeriesOverLimit(t *testing.T) {
	body := strings.Join([]string{
		"# TYPE m gauge",
		labelsLine(27), // 28 with the name, 30 with the token's two
		labelsLine(28),
		`m{a="1"} 2`,
		`m{a="1" 3`,
		labelsLine(29),
	}, "\n")
	for _, end := range []string{"", "\n"} {
		var d drops
		c := Check{Max: 30, Drop: d.add}
		got, err := readAll(t, func() io.Reader {
			d = drops{}
			r, n, err := c.Body("import_prometheus", token("extra_label", "env=prod"), 0, http.Header{}, strings.NewReader(body+end), int64(len(body)))
			if err != nil || n != -1 {
				t.Fatalf("Body: %d, %v", n, err)
			}
			return r
		})
		if err != nil {
			t.Fatal(err)
		}
		want := "# TYPE m gauge\n" + labelsLine(27) + "\n" + `m{a="1"} 2` + "\n"
		if got != want {
			t.Errorf("forwarded %q; want %q", got, want)
		}
		if strings.Join(d.reasons, ",") != "too_many_labels,unparsable,too_many_labels" {
			t.Errorf("drops %v", d.reasons)
		}
	}
}

// token is the URL args of a write through a token of one extra label, and kv besides.
func token(kv ...string) url.Values {
	q := url.Values{"extra_label": {"team=dev"}}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Add(kv[i], kv[i+1])
	}
	return q
}

func TestLinesPushgatewayAndInfluxDB(t *testing.T) {
	c := Check{Max: 30}
	// 28 labels and the name, and one from the path: 30 with the token's.
	r, _, err := c.Body("import_prometheus", token(), 1, http.Header{}, strings.NewReader(labelsLine(28)), -1)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r); len(b) != 0 {
		t.Errorf("a series over the limit with the path's labels was forwarded: %q", b)
	}
	tags := func(n int) string {
		var b strings.Builder
		b.WriteString("cpu")
		for i := range n {
			b.WriteString(",t")
			b.WriteString(strings.Repeat("x", i+1))
			b.WriteString("=v")
		}
		b.WriteString(" value=1\n")
		return b.String()
	}
	for _, tc := range []struct {
		q    url.Values
		tags int
		kept bool
	}{
		{token(), 29, true},
		{token(), 30, false},
		{token("db", "x"), 28, true},
		{token("db", "x"), 29, false},
		{token("bucket", "x"), 29, false},
	} {
		r, _, err := c.Body("influx_write", tc.q, 0, http.Header{}, strings.NewReader(tags(tc.tags)), -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		if (len(b) > 0) != tc.kept {
			t.Errorf("influx %v with %d tags: forwarded %q, want kept %v", tc.q, tc.tags, b, tc.kept)
		}
	}
}

func TestLinesGzip(t *testing.T) {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write([]byte(`{"metric":{"__name__":"a","b":"1"},"values":[1],"timestamps":[1]}` + "\n" +
		`{"metric":{"__name__":"a","b":"1","c":"1"},"values":[1],"timestamps":[1]}` + "\n"))
	_ = zw.Close()
	h := http.Header{"Content-Encoding": {"gzip"}}
	r, _, err := Check{Max: 3}.Body("import", token(), 0, h, bytes.NewReader(zb.Bytes()), int64(zb.Len()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != `{"metric":{"__name__":"a","b":"1"},"values":[1],"timestamps":[1]}`+"\n" {
		t.Errorf("forwarded %q, %v", b, err)
	}
	if h.Get("Content-Encoding") != "" {
		t.Errorf("the decompressed body keeps Content-Encoding %q", h.Get("Content-Encoding"))
	}
	for _, ce := range [][]string{{"zstd"}, {"gzip", "gzip"}, {"gzip, snappy"}, {"deflate"}} {
		_, _, err := Check{Max: 3}.Body("import", nil, 0, http.Header{"Content-Encoding": ce}, bytes.NewReader(nil), 0)
		if httperr.Status(err) != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Encoding %q: %v; want a 415", ce, err)
		}
	}
	_, _, err = Check{Max: 3}.Body("import", nil, 0, http.Header{"Content-Encoding": {"gzip"}}, strings.NewReader("not gzip"), 8)
	if httperr.Status(err) != http.StatusBadRequest {
		t.Errorf("a body that is not gzip: %v; want a 400", err)
	}
}

func TestLineTooLong(t *testing.T) {
	long := strings.Repeat("a", MaxLine+1)
	r, _, err := Check{Max: 30}.Body("import_prometheus", nil, 0, http.Header{}, strings.NewReader("up 1\n"+long+" 1\nup 2\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if httperr.Status(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("a line over MaxLine: %v; want a 413", err)
	}
	if string(b) != "up 1\n" {
		t.Errorf("before the long line, forwarded %q", b)
	}
	// A line of exactly MaxLine bytes passes.
	line := "up{a=\"" + strings.Repeat("v", MaxLine-len("up{a=\"\"} 1")) + "\"} 1"
	r, _, _ = Check{Max: 30}.Body("import_prometheus", nil, 0, http.Header{}, strings.NewReader(line+"\n"), -1)
	if b, err := io.ReadAll(r); err != nil || len(b) != MaxLine+1 {
		t.Errorf("a line of MaxLine bytes: %d bytes, %v", len(b), err)
	}
}

func TestLinesSourceError(t *testing.T) {
	boom := errors.New("boom")
	src := io.MultiReader(strings.NewReader("up 1\nup"), iotest.ErrReader(boom))
	r, _, _ := Check{Max: 30}.Body("import_prometheus", nil, 0, http.Header{}, src, -1)
	b, err := io.ReadAll(r)
	if !errors.Is(err, boom) || string(b) != "up 1\n" {
		t.Errorf("got %q, %v; want the whole line and the error", b, err)
	}
}

func TestCSV(t *testing.T) {
	format := func(labels int) string {
		f := "1:metric:m"
		for i := range labels {
			f += "," + string(rune('2'+i%8)) + ":label:l" + strings.Repeat("x", i)
		}
		return f
	}
	c := Check{Max: 30}
	for _, tc := range []struct {
		q  url.Values
		ok bool
	}{
		{token("format", format(28)), true},
		{token("format", format(29)), false},
		{token("format", format(1), "format", format(29)), false},
		{token(), true},
	} {
		r, n, err := c.Body("import_csv", tc.q, 0, http.Header{}, strings.NewReader("1,a"), 3)
		if (err == nil) != tc.ok {
			t.Errorf("format %q: %v", tc.q["format"], err)
		}
		if err == nil {
			if b, _ := io.ReadAll(r); string(b) != "1,a" || n != 3 {
				t.Errorf("format %q: forwarded %q, length %d; want the body as sent", tc.q["format"], b, n)
			}
		}
		if err != nil && httperr.Status(err) != http.StatusBadRequest {
			t.Errorf("format %q: status %d", tc.q["format"], httperr.Status(err))
		}
	}
}

func TestUncheckableFormatsRefused(t *testing.T) {
	for _, api := range []string{"import_native", "opentelemetry", "datadog_series", "datadog_series_v2", "datadog_sketches",
		"newrelic_write", "opentsdb_put", ""} {
		_, _, err := Check{Max: 30}.Body(api, nil, 0, http.Header{}, strings.NewReader("x"), 1)
		if httperr.Status(err) != http.StatusForbidden {
			t.Errorf("%s: %v; want a 403", api, err)
		}
	}
}

// protobuf encoding of remote write, enough for the tests.
func pbBytes(dst []byte, field int, b []byte) []byte {
	dst = appendUvarint(dst, uint64(field<<3|2))
	dst = appendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendUvarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

func series(labels ...string) []byte {
	var ts []byte
	for i := 0; i < len(labels); i += 2 {
		var l []byte
		l = pbBytes(l, 1, []byte(labels[i]))
		l = pbBytes(l, 2, []byte(labels[i+1]))
		ts = pbBytes(ts, 1, l)
	}
	// A sample: value (double, field 1) and timestamp (varint, field 2).
	sample := []byte{1<<3 | 1, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 2 << 3, 1}
	return pbBytes(ts, 2, sample)
}

func TestRemoteWrite(t *testing.T) {
	small := series("__name__", "a", "x", "1")
	big := series("__name__", "b", "x", "1", "y", "2")
	empty := series("__name__", "c", "x", "1", "y", "") // the empty value is not stored
	meta := pbBytes(nil, 3, []byte{1 << 3, 1})
	var req []byte
	req = pbBytes(req, 1, small)
	req = pbBytes(req, 1, big)
	req = append(req, meta...)
	req = pbBytes(req, 1, empty)
	var want []byte
	want = pbBytes(want, 1, small)
	want = append(want, meta...)
	want = pbBytes(want, 1, empty)

	var d drops
	c := Check{Max: 3, Drop: d.add}
	compressed := snappy.Encode(nil, req)
	r, n, err := c.Body("remote_write", token(), 0, http.Header{"Content-Encoding": {"snappy"}}, bytes.NewReader(compressed), -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if int64(len(got)) != n {
		t.Errorf("length %d, body %d bytes", n, len(got))
	}
	if raw, err := snappy.Decode(nil, got); err != nil || !bytes.Equal(raw, want) {
		t.Errorf("forwarded %x, %v; want %x", raw, err, want)
	}
	if len(d.series) != 1 || d.series[0] != `{__name__="b", x="1", y="2"}` {
		t.Errorf("drops %q", d.series)
	}

	// Nothing to drop: the client's own bytes.
	r, _, err = Check{Max: 4}.Body("remote_write", token(), 0, http.Header{}, bytes.NewReader(compressed), -1)
	if got, _ := io.ReadAll(r); err != nil || !bytes.Equal(got, compressed) {
		t.Errorf("with room for every series: %v, the body changed", err)
	}

	for name, body := range map[string][]byte{
		"not snappy":        []byte("hello"),
		"truncated":         snappy.Encode(nil, req[:len(req)-3]),
		"bad wire type":     snappy.Encode(nil, []byte{1<<3 | 7}),
		"field 0":           snappy.Encode(nil, []byte{0, 1}),
		"label not a field": snappy.Encode(nil, pbBytes(nil, 1, pbBytes(nil, 1, []byte{0xff}))),
	} {
		_, _, err := c.Body("remote_write", nil, 0, http.Header{}, bytes.NewReader(body), -1)
		if httperr.Status(err) != http.StatusBadRequest {
			t.Errorf("%s: %v; want a 400", name, err)
		}
	}
	_, _, err = c.Body("remote_write", nil, 0, http.Header{"Content-Encoding": {"zstd"}}, bytes.NewReader(compressed), -1)
	if httperr.Status(err) != http.StatusUnsupportedMediaType {
		t.Errorf("zstd: %v; want a 415", err)
	}
	huge := make([]byte, 0, 16)
	huge = appendUvarint(huge, maxRemoteWrite+1) // a snappy header that claims more than the bound
	_, _, err = c.Body("remote_write", nil, 0, http.Header{}, bytes.NewReader(huge), -1)
	if httperr.Status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("a body that decompresses over the bound: %v; want a 413", err)
	}
	_, _, err = c.Body("remote_write", nil, 0, http.Header{}, io.LimitReader(zeros{}, maxRemoteWrite+1), -1)
	if httperr.Status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the bound: %v; want a 413", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestGzipCorruptMidStream(t *testing.T) {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write([]byte(strings.Repeat("up 1\n", 1000)))
	_ = zw.Close()
	b := zb.Bytes()
	b[len(b)-5] ^= 0xff // the checksum
	r, _, err := Check{Max: 30}.Body("import_prometheus", nil, 0, http.Header{"Content-Encoding": {"gzip"}}, bytes.NewReader(b), -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); httperr.Status(err) != http.StatusBadRequest {
		t.Errorf("a bad checksum: %v; want a 400", err)
	}
}

// gogo-protobuf, which VictoriaMetrics before the 1.9x releases decodes remote write with, cuts a field number to
// 32 bits: a key of field 2^32+1 is its field 1. Such a number is past protobuf's own end (2^29-1) and refused.
func TestRemoteWriteFieldNumberPastProtobuf(t *testing.T) {
	key := func(field uint64, wire int) []byte { return appendUvarint(nil, field<<3|uint64(wire)) }
	wide := series("__name__", "a", "team", "ops", "x", "1", "y", "2")
	hiddenSeries := append(key(1<<32+1, 2), appendUvarint(nil, uint64(len(wide)))...)
	hiddenSeries = append(hiddenSeries, wide...)
	// A label whose value field is 2^32+2.
	var l []byte
	l = pbBytes(l, 1, []byte("x"))
	l = append(l, key(1<<32+2, 2)...)
	l = append(appendUvarint(l, 1), 'v')
	hiddenValue := pbBytes(nil, 1, pbBytes(series("__name__", "a"), 1, l))
	for name, raw := range map[string][]byte{"a series": hiddenSeries, "a label value": hiddenValue} {
		_, _, err := Check{Max: 3}.Body("remote_write", token(), 0, http.Header{}, bytes.NewReader(snappy.Encode(nil, raw)), -1)
		if httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "field number") {
			t.Errorf("%s under field number 2^32+n: %v; want a 400", name, err)
		}
	}
	if _, _, _, _, err := protoField(append(key(1<<29-1, 0), 0)); err != nil {
		t.Error("the highest field number was refused")
	}
}

func TestBudget(t *testing.T) {
	// The largest remote write within the bounds always fits one unit's share.
	if b := NewBudget(256 << 20); b.UnitMost() < maxRemoteWrite+int64(snappy.MaxEncodedLen(maxRemoteWrite)) {
		t.Errorf("a unit may hold %d bytes, less than one remote write may need", b.UnitMost())
	}
	b := newBudget(1<<20, 1<<18) // a unit may hold 256 KiB
	body := strings.Repeat("up 1\n", 100)
	open := func(unit any) (io.ReadCloser, error) {
		r, _, err := Check{Max: 30, Budget: b, Unit: unit}.Body("import_prometheus", nil, 0, http.Header{}, strings.NewReader(body), -1)
		return r, err
	}
	// Four line buffers of one unit fill its share; the fifth is refused, another unit's is not.
	var held []io.ReadCloser
	for range 4 {
		r, err := open("dev")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	if _, err := open("dev"); httperr.Status(err) != http.StatusServiceUnavailable {
		t.Fatalf("over the unit's share: %v; want a 503", err)
	}
	r, err := open("ops")
	if err != nil {
		t.Fatalf("another unit: %v", err)
	}
	// Read to the end, a body gives its memory back; closing does too, once.
	if got, _ := io.ReadAll(r); string(got) != body {
		t.Fatalf("forwarded %q", got)
	}
	for _, r := range held {
		_ = r.Close()
		_ = r.Close()
	}
	if b.Free() != int64(1<<20) {
		t.Fatalf("after every body ended: %d of %d free", b.Free(), int64(1<<20))
	}

	// A remote-write body holds its bytes and its decoded bytes until it is read.
	raw := pbBytes(nil, 1, series("__name__", "a"))
	rw, _, err := Check{Max: 30, Budget: b, Unit: "dev"}.Body("remote_write", nil, 0, http.Header{}, bytes.NewReader(snappy.Encode(nil, raw)), -1)
	if err != nil || b.Free() == int64(1<<20) {
		t.Fatalf("remote write: %v, %d of %d free", err, b.Free(), int64(1<<20))
	}
	_ = rw.Close()
	if b.Free() != int64(1<<20) {
		t.Fatalf("after the remote-write body: %d of %d free", b.Free(), int64(1<<20))
	}
	big := make([]byte, 300<<10)
	_, _, err = Check{Max: 30, Budget: b, Unit: "dev"}.Body("remote_write", nil, 0, http.Header{}, bytes.NewReader(snappy.Encode(nil, big)), -1)
	if httperr.Status(err) != http.StatusServiceUnavailable || b.Free() != int64(1<<20) {
		t.Fatalf("a remote write over the unit's share: %v; %d of %d free", err, b.Free(), int64(1<<20))
	}
}

func TestJSONLinesMayBeLonger(t *testing.T) {
	line := `{"metric":{"__name__":"a"},"values":[` + strings.Repeat("1,", MaxLine) + `1],"timestamps":[]}`
	r, _, _ := Check{Max: 30}.Body("import", nil, 0, http.Header{}, strings.NewReader(line+"\n"), -1)
	if got, err := io.ReadAll(r); err != nil || len(got) != len(line)+1 {
		t.Errorf("a JSON line of %d bytes: %d forwarded, %v", len(line), len(got), err)
	}
	r, _, _ = Check{Max: 30}.Body("import_prometheus", nil, 0, http.Header{}, strings.NewReader("up{a=\""+strings.Repeat("x", MaxLine)+"\"} 1\n"), -1)
	if _, err := io.ReadAll(r); httperr.Status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("a Prometheus line over MaxLine: %v; want a 413", err)
	}
}

func TestGzipTruncatedAndBombs(t *testing.T) {
	gz := func(b []byte) []byte {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return zb.Bytes()
	}
	read := func(body []byte) error {
		r, _, err := Check{Max: 30}.Body("import_prometheus", nil, 0, http.Header{"Content-Encoding": {"gzip"}}, bytes.NewReader(body), -1)
		if err != nil {
			return err
		}
		_, err = io.ReadAll(r)
		return err
	}
	whole := gz([]byte(strings.Repeat("up 1\n", 1000)))
	// A gzip stream cut off: the client's fault, not a broken upstream.
	if err := read(whole[:len(whole)/2]); httperr.Status(err) != http.StatusBadRequest {
		t.Errorf("a gzip body cut in half: %v; want a 400", err)
	}
	if err := read(append(append([]byte(nil), whole...), 0)); httperr.Status(err) != http.StatusBadRequest {
		t.Errorf("a gzip member and one more byte: %v; want a 400", err)
	}
	// 100 MB of newlines in about 100 KB: refused past the ratio.
	if err := read(gz(bytes.Repeat([]byte{'\n'}, 100<<20))); httperr.Status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("a gzip bomb: %v; want a 413", err)
	}
	if err := read(whole); err != nil {
		t.Errorf("a whole body: %v", err)
	}
}

// Lines that come a few bytes a read, across several reads each, are passed on and dropped as when they come whole.
func TestLinesSmallSourceReads(t *testing.T) {
	body := "ok{a=\"1\"} 1\n" + labelsLine(40) + "\n" + `ok{b="` + strings.Repeat("x", 100<<10) + "\"} 2\n" + "ok{c=\"3\"} 3"
	out := func(src io.Reader) string {
		r, _, err := Check{Max: 30}.Body("import_prometheus", token(), 0, http.Header{}, src, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	want := out(strings.NewReader(body))
	if strings.Contains(want, "m{") || !strings.Contains(want, `ok{c="3"} 3`) || strings.Count(want, "\n") != 2 {
		t.Fatalf("whole: %.200q; want the three short lines, the long one dropped", want)
	}
	for _, n := range []int{1, 7, 128} {
		if got := out(&smallReads{r: strings.NewReader(body), n: n}); got != want {
			t.Errorf("%d bytes a read: %.200q; want %.200q", n, got, want)
		}
	}
}
