package accesslog

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Config is what the -accessLog.* flags give.
type Config struct {
	// Path is stdout, stderr or a file, which is appended to and reopened by Reopen (log rotation); empty: no log.
	Path string
	// SkipStatusCodes are the statuses whose requests get no line.
	SkipStatusCodes []int
	// Queries adds the query text to the lines.
	Queries bool
}

// Log writes entries as JSON lines. Lines are buffered and written at least every flushInterval and whenever
// the buffer fills, so a request costs a copy, not a write to the file; Close writes what is left.
type Log struct {
	path    string
	skip    []int
	queries bool

	mu   sync.Mutex
	out  io.Writer
	file *os.File // out when the log is a file; nil for stdout and stderr
	buf  []byte
	// failing is set after a write failed and cleared by the next that succeeds, so a full disk logs once.
	failing bool

	stop, stopped chan struct{}
	closeOnce     sync.Once
}

const (
	flushInterval = time.Second
	bufSize       = 64 << 10
	// maxPooledLine keeps an occasional huge line (a long query) from staying in the pool.
	maxPooledLine = 16 << 10
)

var (
	linesTotal  = metrics.NewCounter(`vmgateway_access_log_lines_total`)
	writeErrors = metrics.NewCounter(`vmgateway_access_log_write_errors_total`)
	linesLost   = metrics.NewCounter(`vmgateway_access_log_lines_lost_total`)
)

// Validate checks cfg without opening anything, so that a bad flag stops the start before any component is built.
func (cfg Config) Validate() error {
	for _, c := range cfg.SkipStatusCodes {
		if c < 100 || c > 599 {
			return fmt.Errorf("-accessLog.skipStatusCodes: %d is not an HTTP status code (want e.g. 200,204)", c)
		}
	}
	return nil
}

// Open starts the access log cfg describes; nil without a path.
func Open(cfg Config) (*Log, error) {
	if cfg.Path == "" {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{path: cfg.Path, skip: cfg.SkipStatusCodes, queries: cfg.Queries, buf: make([]byte, 0, bufSize),
		stop: make(chan struct{}), stopped: make(chan struct{})}
	switch cfg.Path {
	case "stdout":
		l.out = os.Stdout
	case "stderr":
		l.out = os.Stderr
	default:
		f, err := openFile(cfg.Path)
		if err != nil {
			return nil, err
		}
		l.out, l.file = f, f
	}
	go l.flushLoop()
	return l, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("-accessLog.path: cannot open %s for appending: %w", path, err)
	}
	return f, nil
}

// Reopen closes the log file and opens it again under its name, so a rotated file (renamed by logrotate) is left
// alone and a new one is begun. On failure the old file stays in use. Nothing to do for stdout and stderr.
func (l *Log) Reopen() error {
	if l == nil || l.file == nil {
		return nil
	}
	f, err := openFile(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.flushLocked()
	old := l.file
	l.out, l.file = f, f
	l.mu.Unlock()
	return old.Close()
}

// Close writes the buffered lines and closes the file. Requests that end later are not logged.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.stopped
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.out = io.Discard
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}

func (l *Log) flushLoop() {
	defer close(l.stopped)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.flushLocked()
			l.mu.Unlock()
		}
	}
}

func (l *Log) flushLocked() {
	if len(l.buf) == 0 {
		return
	}
	l.writeLocked(l.buf)
	l.buf = l.buf[:0]
}

func (l *Log) writeLocked(b []byte) {
	var err error
	if l.file != nil {
		_, err = l.out.Write(b)
	} else {
		err = writeLines(l.out, b)
	}
	if err == nil {
		l.failing = false
		return
	}
	writeErrors.Inc()
	lost := 0
	for _, c := range b {
		if c == '\n' {
			lost++
		}
	}
	linesLost.Add(lost)
	if !l.failing {
		l.failing = true
		slog.Error("cannot write the access log; its lines are lost until a write succeeds", "path", l.path, "err", err)
	}
}

// pipeBuf is the largest write a pipe keeps whole (POSIX PIPE_BUF on Linux).
const pipeBuf = 4096

// writeLines writes b to stdout or stderr in pieces of whole lines of at most pipeBuf bytes each: the gateway's
// own log may share the stream (a pipe to journald or a container runtime), and a larger write to a pipe can be
// interleaved with another writer's, cutting lines of both. Only a single line longer than that is cut.
func writeLines(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n := len(b)
		if n > pipeBuf {
			n = bytes.LastIndexByte(b[:pipeBuf], '\n') + 1
			if n == 0 {
				n = pipeBuf
			}
		}
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// record writes e's line unless its status is skipped. A nil Log records nothing.
func (l *Log) record(e *Entry) {
	if l == nil {
		return
	}
	status := e.Status()
	if slices.Contains(l.skip, status) {
		return
	}
	bp := linePool.Get().(*[]byte)
	line := appendLine((*bp)[:0], e, status, l.queries)
	l.mu.Lock()
	if len(l.buf)+len(line) > cap(l.buf) {
		l.flushLocked()
	}
	if len(line) > cap(l.buf) {
		l.writeLocked(line)
	} else {
		l.buf = append(l.buf, line...)
	}
	l.mu.Unlock()
	linesTotal.Inc()
	if cap(line) <= maxPooledLine {
		*bp = line
		linePool.Put(bp)
	}
}
