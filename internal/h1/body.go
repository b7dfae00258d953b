package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// maxDiscard is how much of a request body the handler left unread the server reads and drops to keep the
// connection, as net/http does; a larger rest closes the connection instead.
const maxDiscard = 256 << 10

// body is a request body as the handler reads it. The connection, not the handler, owns its state: whether it
// was read to its end decides whether the connection can carry another request, whatever the handler wrapped
// it in.
type body struct {
	mu sync.Mutex
	c  *conn
	w  *response
	r  *http.Request
	// remaining is what a Content-Length body still owes; chunked is the reader of a chunked one.
	remaining int64
	chunked   io.Reader
	// continueWanted: the client sent Expect: 100-continue and the 100 is not sent yet; it goes at the first read.
	continueWanted bool
	sawEOF         bool
	closed         bool
	err            error
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *body) readLocked(p []byte) (n int, err error) {
	switch {
	case b.sawEOF:
		return 0, io.EOF
	case b.err != nil:
		return 0, b.err
	case len(p) == 0:
		return 0, nil
	}
	if b.continueWanted {
		b.continueWanted = false
		if err := b.w.writeContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if b.chunked != nil {
		n, err = b.chunked.Read(p)
		if err == io.EOF {
			if err = b.readTrailer(); err == nil {
				b.sawEOF = true
				err = io.EOF
			}
		}
	} else {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.c.br.Read(p)
		b.remaining -= int64(n)
		switch {
		case b.remaining == 0:
			b.sawEOF = true
			err = io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	if b.sawEOF {
		// Only now can a read of the connection tell that the client went away.
		b.c.startBackgroundRead()
	}
	return n, err
}

// allSent says, once the client's FIN came, that the client sent no more than the rest of this body: the rest of a
// Content-Length body and nothing after it is in the reader's buffer and the socket, or the body will end short.
// False when the body is being read (its reader then sees its end, or the break, itself), when it is chunked (its
// end is not known without reading it), or when another request follows it (a pipelining client that half-closed
// still wants this one answered). Called under c.bgMu, which keeps the reader's buffer from being taken over by the
// connection after the handler; TryLock, not Lock: b.mu is taken before c.bgMu (readLocked), and the watcher must
// not wait on one connection's reader.
func (b *body) allSent() bool {
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	if b.chunked != nil || b.sawEOF || b.closed || b.err != nil {
		return false
	}
	return b.remaining >= int64(b.c.br.Buffered()+b.c.unreadBytes())
}

// Close marks the body done; a body closed before its end closes the connection after the answer, since what is
// left of it on the wire must never be read as a request.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

var errLongTrailer = errors.New("http: suspiciously long trailer after chunked body")

// readTrailer reads the trailer section after the last chunk, as net/http does: a CRLF alone, or fields ending
// with an empty line that is already buffered (bounding the work on an endless trailer).
func (b *body) readTrailer() error {
	br := b.c.br
	buf, err := br.Peek(2)
	if len(buf) == 2 && buf[0] == '\r' && buf[1] == '\n' {
		_, _ = br.Discard(2)
		return nil
	}
	if len(buf) < 2 {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if !upcomingDoubleCRLF(br) {
		return errLongTrailer
	}
	// The trailer is read as a head without its request line: a placeholder line stands in for it.
	head, err := readHead(br, append(b.c.scratch[:0], "\n"...), br.Size())
	if err != nil {
		return errLongTrailer
	}
	h, err := parseHeader(string(head[1:]), &b.c.scratch, nil, true)
	if err != nil {
		return errors.New("http: malformed trailer: " + err.Error())
	}
	if b.r.Trailer == nil {
		b.r.Trailer = make(http.Header, len(h))
	}
	for k, v := range h {
		b.r.Trailer[k] = v
	}
	return nil
}

// upcomingDoubleCRLF reports whether the trailer's end comes within the reader's buffer, reading on until it is
// full (net/http's seeUpcomingDoubleCRLF).
func upcomingDoubleCRLF(br *bufio.Reader) bool {
	for n := 4; ; n++ {
		buf, err := br.Peek(n)
		if bytes.HasSuffix(buf, []byte("\r\n\r\n")) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// discardRest reads and drops what the handler left of the body, at most maxDiscard bytes; false when the
// connection cannot carry another request after it.
func (b *body) discardRest() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.sawEOF:
		return true
	case b.continueWanted, b.closed, b.err != nil:
		// The client waits for a 100 that will not come (RFC 9110 10.1.1), or the body broke off: either way what
		// follows on the wire is not known to be a request.
		b.continueWanted = false
		return false
	case b.chunked == nil && b.remaining > maxDiscard:
		return false
	}
	// Within the idle timeout: a client that stops sending must not hold the connection's goroutine forever. Until
	// then the connection may be evicted as an idle one may (stateDiscard), which ends the wait.
	if d := b.c.srv.IdleTimeout; d > 0 {
		_ = b.c.setOtherReadDeadline(time.Now().Add(d))
	}
	c := b.c
	c.waitingSince.Store(time.Now().UnixNano())
	if !c.state.CompareAndSwap(stateActive, stateDiscard) {
		return false
	}
	ok := b.discardLocked()
	// Evicted meanwhile: the connection is closed.
	return c.state.CompareAndSwap(stateDiscard, stateActive) && ok
}

// discardLocked reads the rest of the body, at most maxDiscard bytes; true when it ended.
func (b *body) discardLocked() bool {
	buf := b.c.discardBuf()
	var total int
	for total <= maxDiscard {
		n, err := b.readLocked(buf)
		total += n
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

func newChunkedReader(b *body) io.Reader { return httputil.NewChunkedReader(b.c.br) }
