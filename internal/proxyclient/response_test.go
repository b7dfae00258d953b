package proxyclient

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// answer is an answer as the forward step sees it: head, body read to its end, trailer, and what the connection
// holds after it (the next answer's bytes, which a wrong framing would eat or leave).
type answer struct {
	resp    *http.Response
	body    []byte
	bodyErr error
	rest    []byte
}

// stepReader gives at most step bytes a read, as a socket gives what has come.
type stepReader struct {
	b    []byte
	step int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// readMine reads raw as the client does, through the same body type, with a read buffer of 4 KiB (net/http's
// default, which bounds both trailers alike).
func readMine(raw []byte, method string, step int) (*answer, error) {
	br := bufio.NewReaderSize(&stepReader{raw, step}, 4<<10)
	req := &http.Request{Method: method}
	fa := new(framedAnswer)
	resp := &fa.resp
	f, err := readResponseInto(resp, fa.vals[:], br, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// (wrap hands a 101's connection over as its body.) A stop that found the request ended keeps the
		// connection out of the pool, which would take its buffer, read below.
		nc, far := net.Pipe()
		defer far.Close()
		c := New(nil, 0, 0)
		pc := &conn{nc: nc, br: br}
		if _, err := c.wrap(pc, fa, f, func() bool { return false }); err != nil {
			return nil, err
		}
	}
	a := &answer{resp: resp}
	a.body, a.bodyErr = io.ReadAll(resp.Body)
	a.rest, _ = io.ReadAll(br)
	return a, nil
}

func readNetHTTP(raw []byte, method string) (*answer, error) {
	br := bufio.NewReader(bytes.NewReader(raw))
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, err
	}
	a := &answer{resp: resp}
	a.body, a.bodyErr = io.ReadAll(resp.Body)
	a.rest, _ = io.ReadAll(br)
	return a, nil
}

// diffAnswers names the first thing in which the two answers differ.
func diffAnswers(mine, theirs *answer) string {
	a, b := mine.resp, theirs.resp
	switch {
	case a.Status != b.Status || a.StatusCode != b.StatusCode:
		return "status"
	case a.Proto != b.Proto || a.ProtoMajor != b.ProtoMajor || a.ProtoMinor != b.ProtoMinor:
		return "Proto"
	case !reflect.DeepEqual(a.Header, b.Header):
		return "Header"
	case a.ContentLength != b.ContentLength:
		return "ContentLength"
	case a.Close != b.Close:
		return "Close"
	case !reflect.DeepEqual(a.TransferEncoding, b.TransferEncoding):
		return "TransferEncoding"
	case (a.Body == http.NoBody) != (b.Body == http.NoBody):
		return "no body"
	case (mine.bodyErr != nil) != (theirs.bodyErr != nil):
		return "body error"
	case !bytes.Equal(mine.body, theirs.body):
		return "body"
	case mine.bodyErr == nil && !reflect.DeepEqual(a.Trailer, b.Trailer):
		return "Trailer"
	case mine.bodyErr == nil && !bytes.Equal(mine.rest, theirs.rest):
		return "bytes left after the answer"
	}
	return ""
}

// refusedOnPurpose tells what this client refuses and net/http takes (readResponse's doc): each case is checked
// on the raw head, so that a refusal for any other reason fails the comparison.
func refusedOnPurpose(raw []byte, theirs *http.Response) bool {
	if theirs.Proto != "HTTP/1.0" && theirs.Proto != "HTTP/1.1" || theirs.StatusCode < 100 || bytes.HasPrefix(raw, []byte(theirs.Proto+"  ")) {
		return true
	}
	for _, c := range []byte(theirs.Status) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return true
		}
	}
	head, _, _ := bytes.Cut(raw, []byte("\n\r\n"))
	lines := strings.Split(string(head), "\n")
	var te, cl bool
	for _, l := range lines[1:] {
		l = strings.TrimSuffix(l, "\r")
		if l == "" {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			return true
		}
		k, _, _ := strings.Cut(l, ":")
		if strings.ContainsAny(k, " ") {
			return true
		}
		te = te || strings.EqualFold(k, "Transfer-Encoding")
		cl = cl || strings.EqualFold(k, "Content-Length")
	}
	return te && (cl || theirs.ProtoMinor == 0)
}

// compareWithNetHTTP fails t when readResponse takes what net/http refuses, refuses what it takes for a reason
// other than its documented strictness, or reads an answer differently.
func compareWithNetHTTP(t *testing.T, raw []byte, method string, step int) {
	t.Helper()
	theirs, theirErr := readNetHTTP(raw, method)
	mine, myErr := readMine(raw, method, step)
	switch {
	case theirErr != nil && myErr == nil:
		t.Fatalf("%s %q: net/http refuses it (%v); readResponse takes it", method, raw, theirErr)
	case theirErr == nil && myErr != nil:
		var he *headError
		if !errors.As(myErr, &he) || !refusedOnPurpose(raw, theirs.resp) {
			t.Fatalf("%s %q: net/http takes it; readResponse refuses it: %v", method, raw, myErr)
		}
	case theirErr == nil:
		if mine.bodyErr != nil && theirs.bodyErr == nil {
			var he *headError
			if errors.Is(mine.bodyErr, errTrailerLine) || errors.As(mine.bodyErr, &he) {
				// A trailer's line refused as a head's is.
				return
			}
		}
		if d := diffAnswers(mine, theirs); d != "" {
			t.Fatalf("%s %q: %s differs:\nmine     %+v body %q err %v rest %q\nnet/http %+v body %q err %v rest %q", method, raw, d,
				*mine.resp, mine.body, mine.bodyErr, mine.rest, *theirs.resp, theirs.body, theirs.bodyErr, theirs.rest)
		}
	}
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n",
	"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-server-hostname: vm\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nnext",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T, x-other\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\nX-Other: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=1\r\na\r\n0\r\nX-Unannounced: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\na\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\na\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
	"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
	"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\nabcd",
	"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\nabcd",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\nabcd",
	"HTTP/1.1 200 OK\r\nX-A: 1\r\n X-Folded: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\n X-A: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: 1\x002\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n: empty\r\n\r\n",
	"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: cloſe\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\n\r\nuntil the end",
	"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 2000 OK\r\n\r\n",
	"HTTP/1.1 +20 OK\r\n\r\n",
	"HTTP/1.1 099 Low\r\n\r\n",
	"HTTP/1.1 999 High\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/2.0 200 OK\r\n\r\n",
	"http/1.1 200 OK\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
	"HTTP/1.1 200 OK",
	"",
	"\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("v", 9000) + "\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\n" + manyFields(100) + "Content-Length: 2\r\n\r\nok",
	chunkedAnswer + "5 ;x\r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "5;x \r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "5\t\r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "5\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "\n5\r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "5\r\r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "00000000000000005\r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "0000000000000005\r\nhello\r\n0\r\n\r\n",
	chunkedAnswer + "5\r\nhelloXX0\r\n\r\n",
	chunkedAnswer + "5\r\nhel",
	chunkedAnswer + "fffffffffffffff0\r\nhello",
	chunkedAnswer + strings.Repeat("1;"+strings.Repeat("x", 100)+"\r\na\r\n", 200) + "0\r\n\r\n",
	chunkedAnswer + strings.Repeat("a", 4093) + "\r\n",
	chunkedAnswer + "1;" + strings.Repeat("x", 4093) + "\r\na\r\n0\r\n\r\n",
}

const chunkedAnswer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

// manyFields is n header lines of distinct keys, past what parseFields sizes its map for.
func manyFields(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "X-F%d: %d\r\nx-f%d: again\r\n", i, i, i)
	}
	return b.String()
}

func FuzzReadResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false, uint16(4096))
		f.Add([]byte(s), true, uint16(3))
	}
	f.Fuzz(func(t *testing.T, raw []byte, head bool, step uint16) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		compareWithNetHTTP(t, raw, method, int(step)+1)
	})
}

// TestResponseSeeds pins the seeds: each read as net/http reads it, or refused on purpose.
func TestResponseSeeds(t *testing.T) {
	for _, s := range responseSeeds {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, step := range []int{1, 7, 1 << 20} {
				compareWithNetHTTP(t, []byte(s), method, step)
			}
		}
	}
}

// The strictness beyond net/http's: each of these heads is refused.
func TestReadResponseRefuses(t *testing.T) {
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n X-Folded: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\nabcd",
		"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("v", maxHeadBytes) + "\r\n\r\n",
	} {
		_, _, err := readResponse(bufio.NewReader(strings.NewReader(raw)), &http.Request{Method: http.MethodGet})
		var he *headError
		if !errors.As(err, &he) && !errors.Is(err, errHeadTooLarge) {
			t.Errorf("%.80q: got %v; want a refusal", raw, err)
		}
	}
}

func BenchmarkReadResponse(b *testing.B) {
	raw := []byte("HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nX-Server-Hostname: vm-1\r\nDate: Thu, 03 Dec 2026 11:00:00 GMT\r\nContent-Length: 0\r\n\r\n")
	req := &http.Request{Method: http.MethodGet}
	rd := bytes.NewReader(raw)
	br := bufio.NewReaderSize(rd, 8<<10)
	for _, r := range []struct {
		name string
		read func() (*http.Response, error)
	}{
		{"own", func() (*http.Response, error) { resp, _, err := readResponse(br, req); return resp, err }},
		{"http.ReadResponse", func() (*http.Response, error) { return http.ReadResponse(br, req) }},
	} {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(raw)
				br.Reset(rd)
				if _, err := r.read(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// parts gives one part a read, as a socket gives what each write of the upstream sent.
type parts [][]byte

func (p *parts) Read(b []byte) (int, error) {
	if len(*p) == 0 {
		return 0, io.EOF
	}
	n := copy(b, (*p)[0])
	if (*p)[0] = (*p)[0][n:]; len((*p)[0]) == 0 {
		*p = (*p)[1:]
	}
	return n, nil
}
