package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request. Body bytes are held back (up to the connection's pending
// buffer) until the head must go: an answer complete before the handler returns gets a computed Content-Length,
// a longer one of unknown length is chunked (HTTP/1.1) or ends with the connection (HTTP/1.0).
type response struct {
	c      *conn
	req    *http.Request
	body   *body
	header http.Header
	// snap is the header as it was at WriteHeader, when the handler touched the header after it and before the head
	// went out (net/http's semantics: WriteHeader fixes the header).
	snap http.Header

	status      int
	wroteHeader bool
	// committed: the head is written (to the connection's buffer); no 100 Continue may follow.
	committed atomic.Bool
	// contentLength is the declared or computed length, -1 while unknown.
	contentLength int64
	written       int64
	chunked       bool
	isHead        bool
	// closeAfter: the connection ends after this answer; linger: and the client may still be sending, so its
	// bytes are drained for a moment before the close, lest a reset destroys the answer in flight.
	closeAfter, linger bool
	werr               error
	// done: the handler has returned and the answer is complete; a goroutine it left gets errAfterHandler.
	done atomic.Bool
}

var errAfterHandler = errors.New("http: write to a response after its handler returned")

// VouchConnection marks the connection as one whose client the handler knows (a valid token): idle between its
// requests it keeps the whole eviction grace, where one nobody vouched for keeps a hundredth of it (Server.MaxConns).
func (w *response) VouchConnection() {
	if !w.c.vouched.Load() { // a store on every request would dirty the line for nothing
		w.c.vouched.Store(true)
	}
}

func (w *response) Header() http.Header {
	if w.wroteHeader && w.snap == nil && !w.committed.Load() {
		w.snap = w.header.Clone()
	}
	return w.header
}

func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || w.done.Load() {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

// bodyAllowed: 1xx, 204 and 304 answers have no body (RFC 9110 6.4.1).
func (w *response) bodyAllowed() bool {
	return w.status >= 200 && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if w.done.Load() {
		return 0, errAfterHandler
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		w.written -= int64(len(p))
		return 0, http.ErrContentLength
	}
	if w.werr != nil {
		return 0, w.werr
	}
	c := w.c
	if !w.committed.Load() {
		if len(c.pending)+len(p) <= pendingSize {
			c.pending = append(c.pending, p...)
			return len(p), nil
		}
		w.commit(false)
	}
	return w.writeBody(p)
}

// WriteString saves io.WriteString a copy.
func (w *response) WriteString(s string) (int, error) {
	c := w.c
	if w.wroteHeader && !w.done.Load() && !w.committed.Load() && len(c.pending)+len(s) <= pendingSize && w.bodyAllowed() &&
		(w.contentLength == -1 || w.written+int64(len(s)) <= w.contentLength) && w.werr == nil {
		w.written += int64(len(s))
		c.pending = append(c.pending, s...)
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *response) writeBody(p []byte) (int, error) {
	if w.isHead {
		return len(p), nil
	}
	c := w.c
	bw := c.bw
	if w.chunked {
		line := append(strconv.AppendUint(c.chunkLine[:0], uint64(len(p)), 16), '\r', '\n')
		if c.out.canWritev(bw, len(line)+len(p)+len(crlf)) {
			return w.writeAround(p, line, crlf)
		}
		_, _ = bw.Write(line)
	} else if c.out.canWritev(bw, len(p)) {
		return w.writeAround(p, nil, nil)
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.fail(err)
		return n, err
	}
	return len(p), nil
}

// writeAround writes body bytes p, after what the connection's writer holds and between before and after (a
// chunk's framing), in one writev.
func (w *response) writeAround(p, before, after []byte) (int, error) {
	if err := w.c.out.writeAround(w.c.bw, before, p, after); err != nil {
		w.fail(err)
		return 0, err
	}
	return len(p), nil
}

func (w *response) fail(err error) {
	if w.werr == nil {
		w.werr = err
	}
	w.closeAfter = true
}

// Flush sends the head and what the handler wrote so far (http.Flusher): streamed answers go out as they come.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *response) FlushError() error {
	if w.done.Load() {
		return errAfterHandler
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed.Load() {
		w.commit(false)
	}
	if w.werr != nil {
		return w.werr
	}
	if err := w.c.bw.Flush(); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController: the gateway bounds how long a client may
// take to send a body.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.setOtherReadDeadline(t) }

// It may be called from another goroutine than the handler's, to break a write the client does not take.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.handlerDeadline.store(t)
	return w.c.rwc.SetWriteDeadline(t)
}

// writeContinue sends the 100 Continue the client waits for before its body, unless the answer has begun.
func (w *response) writeContinue() error {
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if w.committed.Load() {
		return nil
	}
	if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
		return err
	}
	return c.bw.Flush()
}

func (w *response) writeInformational(code int) {
	if w.committed.Load() || w.werr != nil {
		return
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	bw := c.bw
	writeStatusLine(bw, code)
	writeHeaderFields(bw, w.header, 0, &c.fields)
	_, _ = bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		w.fail(err)
	}
}

// commit writes the head; done says the handler has returned, so what is pending is the whole body.
func (w *response) commit(done bool) {
	c := w.c
	c.wmu.Lock()
	w.committed.Store(true)
	c.wmu.Unlock()

	h := w.header
	if w.snap != nil {
		h = w.snap
	}
	// As net/http: what the handler left of the request body is read now, before the answer, so a client that sends
	// its whole request before reading does not deadlock; a large rest closes the connection instead.
	if b := w.body; b != nil && !b.discardRest() {
		w.closeAfter, w.linger = true, true
	}
	// One pass over the header gathers the fields to write and the ones the server looks at.
	fs, own := gatherFields(h, &c.fields)
	req := w.req
	if req.Close || httpguts.HeaderValuesContainsToken(own.connection, "close") || c.srv.shuttingDown() || c.tooOld() {
		w.closeAfter = true
	}
	allowed := w.bodyAllowed()
	setLength := false
	if allowed && w.contentLength == -1 {
		trailers := own.trailer
		switch {
		case done && !trailers && (!w.isHead || len(c.pending) > 0):
			w.contentLength = int64(len(c.pending))
			setLength = true
		case w.isHead:
		case req.ProtoAtLeast(1, 1):
			w.chunked = true
		default:
			// An HTTP/1.0 client reads to the close.
			w.closeAfter = true
		}
	}
	keepAlive10 := !w.closeAfter && !req.ProtoAtLeast(1, 1)

	bw := c.bw
	writeStatusLine(bw, w.status)
	skip := skipLength
	if !allowed && w.status != http.StatusNotModified || setLength {
		skip = skipLengthAndCL
	}
	writeFields(bw, fs, skip)
	clear(fs)
	c.fields = fs[:0]
	if !own.date {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(httpDate())
		_, _ = bw.WriteString("\r\n")
	}
	if setLength {
		// Appended in the writer's free space: a buffer of its own would escape to the heap through Write.
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.contentLength, 10))
		_, _ = bw.WriteString("\r\n")
	}
	if !own.hasConnection {
		switch {
		case w.closeAfter:
			_, _ = bw.WriteString("Connection: close\r\n")
		case keepAlive10:
			_, _ = bw.WriteString("Connection: keep-alive\r\n")
		}
	}
	if w.chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		w.fail(err)
	}
	if len(c.pending) > 0 {
		p := c.pending
		c.pending = c.pending[:0]
		_, _ = w.writeBody(p)
	}
}

// finish completes the answer once the handler has returned.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed.Load() {
		w.commit(true)
	}
	bw := w.c.bw
	if w.chunked && !w.isHead && w.werr == nil {
		_, _ = bw.WriteString("0\r\n")
		h := w.header
		if w.snap != nil {
			h = w.snap
		}
		writeTrailers(bw, h)
		_, _ = bw.WriteString("\r\n")
	}
	if w.bodyAllowed() && !w.isHead && w.contentLength != -1 && w.written != w.contentLength {
		// A short answer: the client would wait for the rest or read what follows as its end.
		w.closeAfter = true
	}
	if err := bw.Flush(); err != nil {
		w.fail(err)
	}
	w.done.Store(true)
}

func writeStatusLine(bw *bufio.Writer, code int) {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		_, _ = bw.WriteString(statusLines[code])
		return
	}
	var num [8]byte
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	_, _ = bw.WriteString(" " + text + "\r\n")
}

// statusLines are the status lines of the codes net/http names, by code: indexed, not looked up in a map, at
// every answer.
var statusLines = func() (lines [600]string) {
	for code := 100; code < len(lines); code++ {
		if text := http.StatusText(code); text != "" {
			lines[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return lines
}()

// The header fields the server writes itself, never the handler's: what writeHeaderFields skips.
type skipFields uint8

const (
	skipLength      skipFields = 1 << iota // Transfer-Encoding
	skipLengthAndCL                        // and Content-Length
)

// skips says whether a handler's field k is one the server writes itself instead.
func (s skipFields) skips(k string) bool {
	switch {
	case s == 0:
		return false
	case k == "Transfer-Encoding":
		return true
	}
	return s == skipLengthAndCL && k == "Content-Length"
}

// writeHeaderFields writes h as net/http would: sorted by name, names that are not tokens dropped, line breaks
// in values turned into spaces (a handler echoing input cannot split the head), trailer fields kept for the end.
// fields is scratch for the sort (gatherFields).
func writeHeaderFields(bw *bufio.Writer, h http.Header, skip skipFields, fields *[]headerField) {
	fs, _ := gatherFields(h, fields)
	writeFields(bw, fs, skip)
	clear(fs)
	*fields = fs[:0]
}

// ownFields is what an answer's header says of the fields the server looks at before it writes its head.
type ownFields struct {
	connection                   []string
	hasConnection, trailer, date bool
}

// gatherFields is h's fields to write, sorted by name, each name with its values so that none is looked up again,
// in fields' array, and what they say of Connection, Trailer and Date: one pass over the map, not a lookup of each.
// The caller clears the fields after writing them, so that the scratch holds nothing of the answer while the
// connection waits.
func gatherFields(h http.Header, fields *[]headerField) ([]headerField, ownFields) {
	var own ownFields
	fs := (*fields)[:0]
	for k, vv := range h {
		switch k {
		case "Connection":
			own.connection, own.hasConnection = vv, true
		case "Trailer":
			own.trailer = true
		case "Date":
			own.date = true
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		fs = append(fs, headerField{k, vv})
	}
	sortFields(fs)
	*fields = fs
	return fs, own
}

// writeFields writes the fields gatherFields gathered, but those the server writes itself (skip).
func writeFields(bw *bufio.Writer, fs []headerField, skip skipFields) {
	for _, f := range fs {
		if skip.skips(f.k) {
			continue
		}
		for _, v := range f.vv {
			httpsyntax.WriteField(bw, f.k, valueNewlineToSpace(v))
		}
	}
}

// headerField is a header's name and values, as writeHeaderFields sorts them.
type headerField struct {
	k  string
	vv []string
}

// sortFields sorts fs by name: by insertion for the few fields of most answers, which costs less than the
// general sort's set-up.
func sortFields(fs []headerField) {
	if len(fs) > 12 {
		slices.SortFunc(fs, func(a, b headerField) int { return strings.Compare(a.k, b.k) })
		return
	}
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && fs[j].k < fs[j-1].k; j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// writeTrailers writes the fields the handler announced in Trailer, and those named with http.TrailerPrefix.
func writeTrailers(bw interface {
	WriteString(string) (int, error)
}, h http.Header) {
	for _, names := range h["Trailer"] {
		for _, k := range strings.Split(names, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if !httpguts.ValidTrailerHeader(k) {
				continue
			}
			for _, v := range h[k] {
				_, _ = bw.WriteString(k + ": " + valueNewlineToSpace(v) + "\r\n")
			}
		}
	}
	for k, vs := range h {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !httpguts.ValidTrailerHeader(name) || !httpguts.ValidHeaderFieldName(name) {
			continue
		}
		for _, v := range vs {
			_, _ = bw.WriteString(name + ": " + valueNewlineToSpace(v) + "\r\n")
		}
	}
}

func valueNewlineToSpace(v string) string {
	if strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, '\r') < 0 {
		return v
	}
	return httpsyntax.NewlinesToSpaces(v)
}

// dateCache holds the Date header's value for the current second.
type dateCache struct {
	sec int64
	b   []byte
}

var cachedDate atomic.Pointer[dateCache]

func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &dateCache{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	cachedDate.Store(d)
	return d.b
}
