// Package labelguard keeps a write backend that truncates series from cutting a token's extra labels off them.
//
// VictoriaMetrics before v1.108.0 appends the extra_label args after a series' own labels and then cuts the series
// down to -maxLabelsPerTimeseries labels, so a series that fills the limit itself loses the labels the gateway added
// and is stored as whatever it claims to be. A guarded body drops such series before they reach the backend, as
// v1.108.0 itself does, and passes every other byte through. The counting is written by hand after VictoriaMetrics'
// own parsers of each format, since no library parses them the way the backend does; a line that does not parse
// the way VictoriaMetrics would parse it is dropped, never passed on unchecked. JSON lines are scanned after the
// grammar of fastjson, the parser VictoriaMetrics uses, without its tree (json.go). Formats it cannot count are refused.
package labelguard

import (
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// Check is what one write request may send: no series with more than Max labels once VictoriaMetrics has added
// those of the request's URL (its extra_label args, the client's own and the token's; Influx's db).
type Check struct {
	// Max is the backend's -maxLabelsPerTimeseries.
	Max int
	// Drop is told of each series dropped, with the reason ("too_many_labels" or "unparsable") and the series as
	// sent (a line, or the labels of a remote-write series); the slice is valid only during the call.
	Drop func(reason string, series []byte)
	// Budget, when set, bounds the memory the guarded bodies hold, all together and per Unit (a comparable key:
	// the gateway's isolation unit, a tenant and its label restrictions).
	Budget *Budget
	Unit   any

	// extra is what the extra_label args add (extraLabels), set by Body.
	extra int
}

// extraLabels is the number of labels the extra_label args q holds add to every series: VictoriaMetrics adds none
// of an empty value.
func extraLabels(q url.Values) int {
	n := 0
	for _, v := range q["extra_label"] {
		if _, value, _ := strings.Cut(v, "="); value != "" {
			n++
		}
	}
	return n
}

// MaxLine bounds a line of Prometheus text and Influx line protocol, which must be held whole until it is counted.
// VictoriaMetrics refuses lines of a few hundred KiB there (256 KiB and a block).
const MaxLine = 1 << 20

// maxJSONLine bounds a JSON line of /api/v1/import, where VictoriaMetrics takes up to -import.maxLineLen (100 MiB):
// an export of many samples per line is long.
const maxJSONLine = 16 << 20

// maxRemoteWrite bounds a remote-write body, compressed and decompressed: it is read whole to be counted.
// VictoriaMetrics' -maxInsertRequestSize defaults to the same.
const maxRemoteWrite = 32 << 20

// Body returns what to forward instead of body, and its length (-1 while unknown), for a request to the write API
// named api (route.Route.API) with URL args q, request header h and body length n (-1 when unknown). pathLabels
// counts the labels the path adds (the Pushgateway form). Header changes (a decompressed body loses its
// Content-Encoding) are made in h. A request that cannot be checked, or must not be sent at all, gets an error
// with the status for the client; a body that turns out bad while it streams fails its Read with such an error.
// Closing the returned body gives back the memory it holds; it does not close body.
func (c Check) Body(api string, q url.Values, pathLabels int, h http.Header, body io.Reader, n int64) (io.ReadCloser, int64, error) {
	c.extra = extraLabels(q)
	switch api {
	case "import_prometheus":
		return c.lines(h, body, c.extra+pathLabels, MaxLine, prometheusLabels)
	case "import":
		return c.lines(h, body, c.extra, maxJSONLine, new(jsonCounter).labels)
	case "influx_write", "influx_v2_write":
		extra := c.extra
		// The database becomes a label unless the line has one of that name: counted either way.
		if q.Get("db") != "" || q.Get("bucket") != "" {
			extra++
		}
		return c.lines(h, body, extra, MaxLine, influxLabels)
	case "import_csv":
		return io.NopCloser(body), n, c.csv(q)
	case "remote_write":
		return c.remoteWrite(h, body, n)
	}
	return nil, 0, httperr.New(http.StatusForbidden, fmt.Sprintf("the write backend truncates series over its label limit "+
		"(VictoriaMetrics before v1.108.0), so the gateway counts the labels of each series a restricted token writes, and it "+
		"cannot count them in the %s API's format: use Prometheus remote write, /api/v1/import, /api/v1/import/prometheus, "+
		"/api/v1/import/csv or Influx line protocol, or ask the operator to upgrade the write backend", api))
}

// lines guards a line-based body of lines up to maxLine bytes; the series of a line may have Max-extra labels of
// their own.
func (c Check) lines(h http.Header, body io.Reader, extra, maxLine int, count func([]byte) (int, bool)) (io.ReadCloser, int64, error) {
	gz, err := gzipped(h)
	if err != nil {
		return nil, 0, err
	}
	if gz {
		src := &countingReader{r: body}
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, 0, httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot read the gzip-compressed request body: %s", err))
		}
		body = &gzipBody{r: zr, src: src}
		// The backend gets the lines as they were checked, not the client's bytes.
		h.Del("Content-Encoding")
	}
	room := c.Max - extra
	keep := func(line []byte) bool {
		n, ok := count(line)
		switch {
		case !ok:
			c.dropped("unparsable", line)
		case n > room:
			c.dropped("too_many_labels", line)
		default:
			return true
		}
		return false
	}
	hd := c.Budget.Hold(c.Unit)
	lr := newLineReader(body, keep, maxLine, &hd)
	if err := lr.hold.Grow(firstLineBuf); err != nil {
		return nil, 0, err
	}
	return lr, -1, nil
}

// maxGzipRatio bounds how much a gzip-compressed line body may expand: the guard reads every byte of it, and a
// kilobyte of gzip can hold a megabyte of empty lines. Metrics text compresses 10-50 times.
const maxGzipRatio = 256

// gzipBody answers a body that is not valid gzip as the client's fault (a truncated one too: its source ended
// cleanly before the gzip stream did); the source's own errors pass as they are.
type gzipBody struct {
	r   *gzip.Reader
	src *countingReader
	out int64
}

func (b *gzipBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.out += int64(n)
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt) ||
		(errors.Is(err, io.ErrUnexpectedEOF) && b.src.eof):
		err = httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot read the gzip-compressed request body: %s", err))
	case b.out > maxGzipRatio*b.src.n+MaxLine:
		n, err = 0, httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the gzip-compressed request body expands more than %d "+
			"times, past what the gateway reads to count its labels (the write backend truncates series over its label limit)", maxGzipRatio))
	}
	return n, err
}

// countingReader counts what it reads and notes a clean end.
type countingReader struct {
	r   io.Reader
	n   int64
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

func (c Check) dropped(reason string, series []byte) {
	if c.Drop != nil {
		c.Drop(reason, series)
	}
}

// gzipped says whether a line-based body is gzip-compressed: the one encoding VictoriaMetrics before v1.108.0
// reads there. Anything else could be read by the backend in a way the gateway did not count.
func gzipped(h http.Header) (bool, error) {
	ce := h.Values("Content-Encoding")
	if len(ce) == 0 {
		return false, nil
	}
	if len(ce) == 1 {
		switch strings.ToLower(strings.TrimSpace(ce[0])) {
		case "", "identity":
			h.Del("Content-Encoding")
			return false, nil
		case "gzip":
			return true, nil
		}
	}
	return false, unsupportedEncoding(ce, "gzip")
}

func unsupportedEncoding(ce []string, allowed string) error {
	return httperr.New(http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q: the write backend truncates series over "+
		"its label limit, so the gateway reads each body a restricted token writes, and it reads only %s here", strings.Join(ce, ", "), allowed))
}

// csv checks the labels a CSV import's format arg names: every row has them all (an empty value only makes one
// fewer), so the check is of the format, before anything is sent.
func (c Check) csv(q url.Values) error {
	most := 0
	// VictoriaMetrics reads the first format arg; every one is counted.
	for _, f := range q["format"] {
		labels := 0
		for col := range strings.SplitSeq(f, ",") {
			if _, rest, ok := strings.Cut(col, ":"); ok && strings.HasPrefix(rest, "label:") {
				labels++
			}
		}
		most = max(most, labels+1) // and the metric name
	}
	if most+c.extra > c.Max {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the format arg gives each series %d labels (the name included) "+
			"and the extra_label args add %d, more than the write backend's -maxLabelsPerTimeseries=%d: the backend would cut the token's labels "+
			"off (VictoriaMetrics before v1.108.0); import fewer label columns", most, c.extra, c.Max))
	}
	return nil
}
