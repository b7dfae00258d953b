package proxyclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// maxChunkLine bounds a chunk's size line, CRLF included, as net/http's chunked reader bounds it with its 4 KiB
// buffer.
const maxChunkLine = 4 << 10

var (
	errChunkLine     = errors.New("malformed chunked answer from the upstream: a chunk size line without CRLF, with a stray CR or too long")
	errChunkSize     = errors.New("malformed chunked answer from the upstream: a bad chunk size")
	errChunkEnd      = errors.New("malformed chunked answer from the upstream: a chunk not followed by CRLF")
	errChunkOverhead = errors.New("malformed chunked answer from the upstream: too much besides data")
)

// chunkedReader reads a chunked body as net/http's (httputil.NewChunkedReader) does, with the same refusals and
// the same care not to wait for the next chunk once it has data to return, up to the last chunk's end: the
// trailer is the caller's. It keeps what is left of the current chunk, for Buffered.
type chunkedReader struct {
	br *bufio.Reader
	// left is what is left of the current chunk's data; checkEnd tells its CRLF is yet to be read.
	left     uint64
	checkEnd bool
	// excess counts the bytes of framing beyond 16 per chunk and twice its data, which a sender could otherwise
	// make the bulk of the answer.
	excess int64
	err    error
}

func (cr *chunkedReader) Read(p []byte) (n int, err error) {
	for cr.err == nil {
		if cr.checkEnd {
			if n > 0 && cr.br.Buffered() < 2 {
				// Data to return: no wait for the chunk's end.
				break
			}
			var crlf [2]byte
			if _, err := io.ReadFull(cr.br, crlf[:]); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				cr.err = err
				break
			}
			if crlf != [2]byte{'\r', '\n'} {
				cr.err = errChunkEnd
				break
			}
			cr.checkEnd = false
		}
		if cr.left == 0 {
			if n > 0 && !cr.lineBuffered() {
				// Data to return: no wait for the next chunk's size.
				break
			}
			cr.beginChunk()
			continue
		}
		if len(p) == 0 {
			break
		}
		q := p
		if uint64(len(q)) > cr.left {
			q = q[:cr.left]
		}
		m, err := cr.br.Read(q)
		n += m
		p = p[m:]
		cr.left -= uint64(m)
		switch {
		case err == io.EOF:
			cr.err = io.ErrUnexpectedEOF
		case err != nil:
			cr.err = err
		case cr.left == 0:
			cr.checkEnd = true
		}
	}
	return n, cr.err
}

// lineBuffered tells the next chunk's size line is in the buffer.
func (cr *chunkedReader) lineBuffered() bool {
	b, _ := cr.br.Peek(cr.br.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// beginChunk reads a chunk's size line: hexadecimal digits, then optional white space and extensions, which are
// ignored; the last chunk's ends the body with io.EOF.
func (cr *chunkedReader) beginChunk() {
	line, err := cr.br.ReadSlice('\n')
	switch {
	case err == io.EOF:
		cr.err = io.ErrUnexpectedEOF
		return
	case err == bufio.ErrBufferFull:
		cr.err = errChunkLine
		return
	case err != nil:
		cr.err = err
		return
	}
	if len(line) < 2 || len(line) > maxChunkLine || bytes.IndexByte(line, '\r') != len(line)-2 {
		cr.err = errChunkLine
		return
	}
	cr.excess += int64(len(line))
	line = line[:len(line)-2]
	// White space goes from the end of the line, not from before an extension: "5 ;x" is refused, as net/http
	// refuses it.
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 || len(line) > 16 {
		cr.err = errChunkSize
		return
	}
	var size uint64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			cr.err = errChunkSize
			return
		}
		size = size<<4 | uint64(c)
	}
	cr.left = size
	// As net/http counts it, its overflow included (which refuses some sizes past 2^62, that no answer has), so
	// that the two refuse alike.
	cr.excess = max(cr.excess-(16+2*int64(size)), 0)
	if cr.excess > 16<<10 {
		cr.err = errChunkOverhead
		return
	}
	if size == 0 {
		cr.err = io.EOF
	}
}

// buffered is how much of the current chunk's data a Read returns without waiting: none at a chunk's end, where
// the next size line may not have come.
func (cr *chunkedReader) buffered() int {
	if cr.err != nil || cr.checkEnd {
		return 0
	}
	return int(min(uint64(cr.br.Buffered()), cr.left))
}
