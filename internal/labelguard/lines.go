package labelguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// lineReader passes on the lines of src that keep accepts, each whole or not at all: a line is held until its
// newline (or the end of the body) has come and it is counted, so the backend never gets part of a series that was
// to be dropped.
type lineReader struct {
	src  io.Reader
	keep func(line []byte) bool
	buf  []byte
	// out is the part of buf checked and not yet read; tail the part after the last whole line, not yet checked.
	out       []byte
	tail, end int
	err       error
	srcEOF    bool
	maxLine   int
	// hold is the memory buf takes of the budget, given back at the end.
	hold *hold
	// mu guards reading and closed, which say who lets buf go (Close may come during a Read).
	mu      sync.Mutex
	reading bool
	closed  bool
}

const firstLineBuf = 64 << 10

func newLineReader(src io.Reader, keep func([]byte) bool, maxLine int, hd *hold) *lineReader {
	return &lineReader{src: src, keep: keep, maxLine: maxLine, hold: hd}
}

// Read passes on the next checked bytes. The upstream client may still be in a Read, waiting on the client's
// connection, when the request is over and Close comes (an upstream that answered before the body's end): the
// buffer is then let go by whichever of the two ends last.
func (r *lineReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, errReadAfterClose
	}
	r.reading = true
	r.mu.Unlock()
	n, err := r.read(p)
	r.mu.Lock()
	r.reading = false
	if r.closed || err != nil {
		r.free()
	}
	r.mu.Unlock()
	return n, err
}

var errReadAfterClose = errors.New("the write body was read after the request ended")

func (r *lineReader) read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// Close gives back the buffer's memory, at once or when a Read under way ends.
func (r *lineReader) Close() error {
	r.mu.Lock()
	r.closed = true
	if !r.reading {
		r.free()
	}
	r.mu.Unlock()
	return nil
}

func (r *lineReader) free() {
	r.buf, r.out = nil, nil
	r.hold.Release()
}

// fill reads more of src and checks the lines that are then whole; it leaves out, err or both set, or more read.
func (r *lineReader) fill() {
	// What is left of the last read is an unfinished line, with no newline in it: to the front, with room after it,
	// and searched from its end. A line that comes in small reads (a gzip body of many small members gives a read per
	// member) is moved once and searched once; moving and searching it whole at each read made a 15 MiB line in
	// 128-byte members cost 15 s of CPU (an attacker's review).
	n := r.end - r.tail
	if r.tail > 0 {
		copy(r.buf, r.buf[r.tail:r.end])
	}
	r.tail, r.end = 0, n
	if r.end == len(r.buf) {
		// A line of maxLine bytes fits with its newline.
		if len(r.buf) > r.maxLine {
			r.err = httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("a line of the body is over %d bytes, the longest the gateway "+
				"holds to count its labels (the write backend truncates series over its label limit): split it", r.maxLine))
			return
		}
		size := min(max(2*len(r.buf), firstLineBuf), r.maxLine+1)
		// The first buffer was held when the reader was made.
		if err := r.hold.Grow(int64(size - max(len(r.buf), firstLineBuf))); err != nil {
			r.err = err
			return
		}
		nb := make([]byte, size)
		copy(nb, r.buf[:r.end])
		r.buf = nb
	}
	m, err := r.src.Read(r.buf[r.end:])
	r.end += m
	if err != nil {
		if !errors.Is(err, io.EOF) {
			r.err = err
			return
		}
		r.srcEOF = true
	}
	// Kept lines move to the front of buf, over the ones dropped; the unfinished one stays where it is.
	w, s, from := 0, 0, n
	for {
		i := bytes.IndexByte(r.buf[from:r.end], '\n')
		if i < 0 {
			break
		}
		e := from + i + 1
		if r.keep(r.buf[s : e-1]) {
			w += copy(r.buf[w:], r.buf[s:e])
		}
		s, from = e, e
	}
	r.tail = s
	if r.srcEOF {
		// The last line needs no newline.
		if s < r.end && r.keep(r.buf[s:r.end]) {
			w += copy(r.buf[w:], r.buf[s:r.end])
		}
		r.tail = r.end
		r.err = io.EOF
	}
	r.out = r.buf[:w]
}
