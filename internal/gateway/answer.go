package gateway

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// VictoriaMetrics flushes its query answers as it writes them, so they come without a Content-Length. For such an
// answer the forward step flushes the headers on their own and then every chunk (forward.go): two or more writes
// per answer where one would do. A query answer is of no use to a client before
// its end anyway, so the gateway reads a small one whole before answering and sends it with its length, in one
// write. Larger answers, and the APIs that stream (exports, federate), pass as they come.

// maxBufferedAnswer bounds what is read ahead: a dashboard panel's answer is a few KiB to some tens of KiB.
const maxBufferedAnswer = 64 << 10

var answerBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// bufferSmallAnswer reads a query answer of unknown length, up to maxBufferedAnswer, and gives it a length when it
// ended within that; otherwise the part read goes out first and the rest streams after it. An upstream that breaks
// before the end of a small answer is an error for the proxy's error handler: the client gets a 502, not a cut
// answer.
func bufferSmallAnswer(resp *http.Response) error {
	if resp.ContentLength != -1 || resp.Body == nil || resp.Body == http.NoBody || resp.Request == nil || resp.Request.Method == http.MethodHead {
		return nil
	}
	if !isQueryPath(resp.Request.URL.Path) {
		return nil
	}
	buf := answerBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBufferedAnswer+1))
	if err != nil {
		answerBuffers.Put(buf)
		return &answerCut{err}
	}
	b := &bufferedAnswer{r: bytes.NewReader(buf.Bytes()), buf: buf, rest: resp.Body}
	if buf.Len() <= maxBufferedAnswer {
		// The whole answer: the upstream's body is done, and its connection goes back to the pool now.
		_ = resp.Body.Close()
		b.rest = nil
		resp.ContentLength = int64(buf.Len())
		resp.Header.Set("Content-Length", strconv.Itoa(buf.Len()))
		resp.TransferEncoding = nil
		resp.Body = b
		return nil
	}
	b.stream = io.MultiReader(b.r, resp.Body)
	resp.Body = b
	return nil
}

// answerCut is an upstream that broke off a small answer before its end, for the proxy's error handler.
type answerCut struct{ err error }

func (e *answerCut) Error() string { return "reading the upstream's answer: " + e.err.Error() }
func (e *answerCut) Unwrap() error { return e.err }

// bufferedAnswer is an answer read ahead: the bytes read, then the rest of the upstream's body if it had more. Its
// buffer goes back to the pool at Close; the proxy closes a body once, after its last read.
type bufferedAnswer struct {
	r      *bytes.Reader
	buf    *bytes.Buffer
	rest   io.ReadCloser
	stream io.Reader
}

func (b *bufferedAnswer) Read(p []byte) (int, error) {
	if b.buf == nil {
		return 0, io.ErrClosedPipe
	}
	if b.stream != nil {
		return b.stream.Read(p)
	}
	// The end comes with the last bytes, as an answer of known length's does (proxyclient): the stats are read and
	// the query charged before those bytes reach the client, so a client that sends its next query once it has this
	// answer finds it counted.
	n, err := b.r.Read(p)
	if err == nil && b.r.Len() == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *bufferedAnswer) Close() error {
	var err error
	if b.rest != nil {
		err = b.rest.Close()
		b.rest = nil
	}
	if b.buf != nil {
		if b.buf.Cap() <= 2*maxBufferedAnswer {
			answerBuffers.Put(b.buf)
		}
		b.buf, b.r, b.stream = nil, nil, nil
	}
	return err
}
