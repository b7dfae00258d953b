package vmtest

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// ReadAnswer reads one HTTP/1.1 answer from br as a benchmark's client does, without net/http's allocations: a
// 200 status line, the head, then the body, whose Content-Length must be size.
func ReadAnswer(br *bufio.Reader, size int) error {
	cl, status := -1, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if !status {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				return errors.New("status line " + string(line))
			}
			status = true
			continue
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			cl, _ = strconv.Atoi(strings.TrimSpace(string(v)))
		}
	}
	if cl != size {
		return errors.New("no Content-Length of " + strconv.Itoa(size) + " in the answer's head")
	}
	_, err := br.Discard(cl)
	return err
}
