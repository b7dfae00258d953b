package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// parsed is a request as a server hands it to a handler, with its body read out.
type parsed struct {
	req     *http.Request
	body    []byte
	bodyErr bool
}

// parseMine reads raw as this server does.
func parseMine(raw []byte) (*parsed, error) { return parseMineWith(raw, nil) }

// dirtyHead fills a header store before a request is parsed with it: a reused store must give what a fresh map does.
const dirtyHead = "POST /d HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n" +
	"Authorization: Bearer t\r\nExpect: 100-continue\r\nTrailer: X-T\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"

// parseMineReused reads raw as a connection does after another request: with the header store that one used.
func parseMineReused(raw []byte) (*parsed, error) {
	st := &headerStore{}
	if _, err := parseMineWith([]byte(dirtyHead), st); err != nil {
		panic(err)
	}
	if len(st.h) == 0 {
		panic("the dirty head left the header store empty")
	}
	return parseMineWith(raw, st)
}

// parseMineWith reads raw as this server does, the header map coming from st.
func parseMineWith(raw []byte, st *headerStore) (*parsed, error) {
	br := bufio.NewReaderSize(bytes.NewReader(raw), 4<<10)
	head, err := readHead(br, nil, 1<<20)
	if err != nil {
		return nil, err
	}
	var scratch []byte
	r := &http.Request{}
	if err := parseRequest(r, new(url.URL), head, &scratch, st); err != nil {
		return nil, err
	}
	if e := r.Header["Expect"]; len(e) > 0 && e[0] != "" && !httpguts.HeaderValuesContainsToken(e[:1], "100-continue") {
		return nil, refusal(http.StatusExpectationFailed, "expectation")
	}
	p := &parsed{req: r}
	if r.ContentLength != 0 {
		c := &conn{br: br}
		c.bgCond.L = &c.bgMu
		b := &body{c: c, r: r, remaining: max(r.ContentLength, 0)}
		if r.ContentLength < 0 {
			b.chunked = newChunkedReader(b)
		}
		p.body, err = io.ReadAll(b)
		p.bodyErr = err != nil
	}
	return p, nil
}

// parseNetHTTP reads raw as net/http's server does: http.ReadRequest and the checks its conn.readRequest and
// conn.serve add before a handler runs.
func parseNetHTTP(raw []byte) (*parsed, error) {
	br := bufio.NewReader(bytes.NewReader(raw))
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	if r.ProtoMajor != 1 {
		// net/http hands "PRI * HTTP/2.0" to the handler for an HTTP/2 upgrade; this server refuses it (documented).
		return nil, refusal(http.StatusHTTPVersionNotSupported, "version")
	}
	// ReadRequest drops the Host header after reading it; the server checks what came, read again with textproto.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	_, _ = tp.ReadLine()
	mh, _ := tp.ReadMIMEHeader()
	hosts, haveHost := mh["Host"]
	if r.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && r.Method != http.MethodConnect {
		return nil, badRequest("missing Host")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, badRequest("malformed Host")
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, badRequest("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, badRequest("invalid header value")
			}
		}
	}
	delete(r.Header, "Host")
	if e := r.Header.Get("Expect"); e != "" && !httpguts.HeaderValuesContainsToken([]string{e}, "100-continue") {
		return nil, refusal(http.StatusExpectationFailed, "expectation")
	}
	p := &parsed{req: r}
	p.body, err = io.ReadAll(r.Body)
	p.bodyErr = err != nil
	return p, nil
}

// diff names the first field in which the two parsed requests differ.
func diff(mine, theirs *parsed) string {
	a, b := mine.req, theirs.req
	switch {
	case a.Method != b.Method:
		return "Method"
	case !reflect.DeepEqual(a.URL, b.URL):
		return "URL"
	case a.RequestURI != b.RequestURI:
		return "RequestURI"
	case a.Proto != b.Proto || a.ProtoMajor != b.ProtoMajor || a.ProtoMinor != b.ProtoMinor:
		return "Proto"
	case !reflect.DeepEqual(a.Header, b.Header):
		return "Header"
	case a.Host != b.Host:
		return "Host"
	case a.ContentLength != b.ContentLength:
		return "ContentLength"
	case !reflect.DeepEqual(a.TransferEncoding, b.TransferEncoding):
		return "TransferEncoding"
	case a.Close != b.Close:
		return "Close"
	case mine.bodyErr != theirs.bodyErr:
		return "body error"
	case !mine.bodyErr && !bytes.Equal(mine.body, theirs.body):
		return "body"
	case !mine.bodyErr && !reflect.DeepEqual(a.Trailer, b.Trailer):
		return "Trailer"
	}
	return ""
}

// parseSeeds are the request heads of the conformance suite (internal/server/conformance_test.go) and more.
var parseSeeds = []string{
	"GET /api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n\r\n",
	"POST /api/v1/import/prometheus HTTP/1.1\r\nHost: gw\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nm 1\n\r\n0\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nm 1\n\r\n0\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nContent-Length: 4, 4\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nContent-Length: +4\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nContent-Length: 0x4\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nm 1\n",
	// A Kelvin sign, which Unicode folds to k: not "chunked" to net/http, nor to the gateway.
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chun\xe2\x84\xaaed\r\n\r\n0\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: identity\r\nContent-Length: 4\r\n\r\nm 1\n",
	"POST /i HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n4\nm 1\n\r\n0\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n",
	"GET /api/v1/query?query=up HTTP/1.1\nHost: gw\nX-A: 1\n\n",
	"GET /q HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n X-Smuggled: 2\r\n\r\n",
	"GET /q HTTP/1.1\r\nHost: gw\r\nX-A: 1\rX-B: 2\r\n\r\n",
	"GET /q HTTP/1.1\r\nHost: gw\r\nX-A: 1\x002\r\n\r\n",
	"GET /q HTTP/1.1\r\nHost: gw\r\nContent-Length : 4\r\n\r\n",
	"GET /q HTTP/1.0\r\n\r\n",
	"GET /q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /q HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
	"GET /q HTTP/9.9\r\nHost: gw\r\n\r\n",
	"GET http://evil.example:8428/api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET http://user:pw@evil.example/api/v1/query?query=up HTTP/1.1\r\nHost: gw\r\n\r\n",
	"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
	"GET /q HTTP/1.1\r\nHost: gw\r\nHost: evil.example\r\n\r\n",
	"GET /q HTTP/1.1\r\nHost: gw evil\r\n\r\n",
	"GET /q HTTP/1.1\r\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nExpect: 200-ok\r\nContent-Length: 4\r\n\r\nm 1\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nm 1\n",
	"GET /a%2Fb/%67?x=%zz HTTP/1.1\r\nhost: gw\r\nx-lower: v\r\nPragma: no-cache\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: gw\r\n\r\n",
	"G\tT / HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /a/b;c=d,e@f:g+h$i&j~k_l.m?q=1&q=2?x HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /a!b*c'd(e) HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /q? HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /q?? HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET //evil.example/q HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /q?a=\x01 HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /q?a=\xff\x7f HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /\xc3\xa9?a=\xc3\xa9 HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /a\\b^c|d{e}\"f<g>`h HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET /a#frag?q#x HTTP/1.1\r\nHost: gw\r\n\r\n",
	// A trailer's field name may hold spaces (textproto keeps them), never be empty.
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\"\r\na\r\n0;x\r\na b :1\r\n :2\r\nX:3\n\r\n",
	"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n:x\r\n\r\n",
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		mine, myErr := parseMine(raw)
		theirs, theirErr := parseNetHTTP(raw)
		// A connection's later requests reuse the header map and values of its earlier ones: nothing of those shows.
		if again, againErr := parseMineReused(raw); (againErr == nil) != (myErr == nil) {
			t.Fatalf("%q: with a fresh header map %v; with a reused one %v", raw, myErr, againErr)
		} else if myErr == nil {
			if d := diff(again, mine); d != "" {
				t.Fatalf("%q: %s differs with a reused header map:\nfresh  %+v\nreused %+v", raw, d, *mine.req, *again.req)
			}
		}
		switch {
		case theirErr != nil && myErr == nil:
			t.Fatalf("net/http refuses %q (%v); this server accepts it", raw, theirErr)
		case theirErr == nil && myErr != nil:
			t.Fatalf("net/http accepts %q; this server refuses it: %v", raw, myErr)
		case theirErr == nil:
			if d := diff(mine, theirs); d != "" {
				t.Fatalf("%q: %s differs:\nmine   %+v body %q err %v\nnet/http %+v body %q err %v", raw, d,
					*mine.req, mine.body, mine.bodyErr, *theirs.req, theirs.body, theirs.bodyErr)
			}
		}
	})
}

// TestParseSeeds pins what the seeds give: each refused or accepted as net/http does.
func TestParseSeeds(t *testing.T) {
	for _, s := range parseSeeds {
		mine, myErr := parseMine([]byte(s))
		theirs, theirErr := parseNetHTTP([]byte(s))
		if (myErr == nil) != (theirErr == nil) {
			t.Errorf("%q: mine %v, net/http %v", s, myErr, theirErr)
			continue
		}
		if myErr == nil {
			if d := diff(mine, theirs); d != "" {
				t.Errorf("%q: %s differs", s, d)
			}
		}
		again, againErr := parseMineReused([]byte(s))
		if (againErr == nil) != (myErr == nil) {
			t.Errorf("%q: with a fresh header map %v, with a reused one %v", s, myErr, againErr)
		} else if myErr == nil {
			if d := diff(again, mine); d != "" {
				t.Errorf("%q: %s differs with a reused header map", s, d)
			}
		}
	}
}

func TestParseStatuses(t *testing.T) {
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"GET /q HTTP/9.9\r\nHost: gw\r\n\r\n", 505},
		{"PRI * HTTP/2.0\r\n\r\n", 505},
		{"POST /i HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET /q HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"GET /q HTTP/1.1\r\nHost: gw\r\nX: " + strings.Repeat("a", 100) + "\r\n\r\n", 431},
	} {
		br := bufio.NewReader(strings.NewReader(tc.raw))
		head, err := readHead(br, nil, 64)
		if err == nil {
			err = parseRequest(&http.Request{}, nil, head, new([]byte), nil)
		}
		re, ok := err.(*requestError)
		if !ok || re.status != tc.status {
			t.Errorf("%q: %v; want status %d", tc.raw, err, tc.status)
		}
	}
}

// TestParseHeaderBoundedByBytes: what a head costs to parse follows its bytes, not its line count: a megabyte of
// short lines (refused at the first, or all valid) must not allocate room for each line up front.
func TestParseHeaderBoundedByBytes(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		// What net/http's ReadRequest allocates for the same head: 0.1 MiB refusing the first line, 27 MiB
		// for the valid ones (their values and names as strings).
		maxMiB uint64
	}{{"invalid lines", "x\n", 4}, {"valid lines", "a:\n", 32}} {
		head := []byte("GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n" + strings.Repeat(tc.line, (1<<20)/len(tc.line)) + "\r\n")
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_ = parseRequest(&http.Request{}, nil, head, new([]byte), nil)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > tc.maxMiB<<20 {
			t.Errorf("%s: parsing a 1 MiB head allocated %.1f MiB, want at most %d", tc.name, float64(got)/(1<<20), tc.maxMiB)
		}
	}
}

// TestParseTarget: the plain paths parseTarget reads itself come out as net/url reads them.
func TestParseTarget(t *testing.T) {
	for _, target := range []string{
		"/", "/api/v1/query", "/api/v1/query?query=up&time=1", "/q?", "/q??", "/q?a?", "/q?a?b", "//x/y", "/a.b~c_d-e/",
		"/q?query=%7Bjob%3D%22a%22%7D+x", "/q?\x80\xff", "/q?a\x7f", "/q?a\tb", "/a%2Fb", "/a b", "/a:b", "/a;b?c",
		"/a@b", "/a+b", "/é", "*", "http://h/p", "/q#f", "/q?x#f",
	} {
		want, wantErr := url.ParseRequestURI(target)
		got, gotErr := parseTarget(target, new(url.URL))
		if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %#v, %v; want %#v, %v", target, got, gotErr, want, wantErr)
		}
	}
}
