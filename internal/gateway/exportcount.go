package gateway

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// checkCountedExport refuses a costed caller's read of samples whose series the gateway does not count as they
// stream, which free would read any number of series past the caller's budget: the CSV export (a line per sample),
// the native one (binary), /api/v1/export with format=prometheus (a text line per sample, without the JSON lines'
// "metric" objects: a review read 4,000 series charged none), and Graphite's /render, which reads every series of a
// name, Prometheus' too, evaluated with the Graphite functions and answered without stats. The JSON lines and
// format=promapi hold one "metric" object per series. Every value of format counts, in the URL and the form:
// VictoriaMetrics reads the form's first.
func checkCountedExport(rt route.Route, q, form url.Values) error {
	if rt.API == "graphite_render" {
		return httperr.New(http.StatusForbidden, "Graphite's /render is not open to a caller with cost limits (series_fetched, "+
			"query_time_ms): it reads samples the gateway cannot charge; use /api/v1/query_range, or a token without cost limits")
	}
	if rt.API == "export_csv" || rt.API == "export_native" {
		return httperr.New(http.StatusForbidden, fmt.Sprintf("the %s API is not open to a caller with cost limits "+
			"(series_fetched, query_time_ms): the gateway cannot count the series of its answer; use /api/v1/export, "+
			"whose series are counted, or a token without cost limits", rt.API))
	}
	if rt.API != "export" {
		return nil
	}
	for _, vs := range [2][]string{q["format"], form["format"]} {
		for _, f := range vs {
			if f != "" && f != "promapi" {
				return httperr.New(http.StatusForbidden, fmt.Sprintf("the export format %q is not open to a caller with cost "+
					"limits (series_fetched, query_time_ms): the gateway cannot count the series of its answer; leave format "+
					"out (JSON lines) or use format=promapi, whose series are counted", f))
			}
		}
	}
	return nil
}

// isCountedExport says whether a path is an export whose series the gateway counts for a costed caller: /api/v1/export
// (JSON lines) and /federate. The CSV and native exports, whose series it cannot count, are refused to such a caller.
func isCountedExport(p string) bool {
	return strings.HasSuffix(p, "/api/v1/export") || strings.HasSuffix(p, "/federate")
}

// watchExport counts the series of a costed caller's export as it streams, which its end charges (costWatch.end)
// with the time it took: VictoriaMetrics serves an export as it does an instant query of a range, without stats.
// An export the client leaves is charged what it counted until then: VictoriaMetrics v1.110.0 and later stop it
// there, and the gateway does not read on.
func watchExport(resp *http.Response, cw *costWatch) {
	if resp.Body == nil || resp.Body == http.NoBody || !cw.answer() {
		return
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" && !decodable(resp, cw) {
		return
	}
	resp.Body = newExportCount(resp.Body, cw, strings.HasSuffix(resp.Request.URL.Path, "/federate"))
}

func newExportCount(rc io.ReadCloser, cw *costWatch, federate bool) *exportCount {
	e := &exportCount{rc: rc, cw: cw, federate: federate, lineStart: true}
	e.hash.SetSeed(exportSeed)
	return e
}

// exportSeed keys the hashes of the exported series' labels: a team's labels are its own data, and with a known seed
// it could write series whose hashes collide, each charged as the one before.
var exportSeed = maphash.MakeSeed()

// recentSeries is how many of an export's last series are remembered, by the hash of their labels, so that another
// line of one is not charged again.
const recentSeries = 1024

// exportCount counts the series of an export. /federate gives one sample line for each (its last value).
// /api/v1/export gives a JSON line for each block of samples it sends of a series, `{"metric":{…},
// "values":…}` (format=promapi an element of a list, the same): a series is on several lines with max_rows_per_line,
// and with reduce_mem_usage (a line per block of its samples). A series is charged once: its "metric" object is
// hashed, and a line whose labels are those of one of the last recentSeries series is not charged again. Charging a
// series per line overcharged 400 series as 48,000 with max_rows_per_line=10 (an attacker's review). The lines of a
// series are consecutive but where VictoriaMetrics' workers flush their buffers between them; a series met again
// past recentSeries others is charged again, from above.
type exportCount struct {
	rc       io.ReadCloser
	cw       *costWatch
	federate bool
	// lineStart says a /federate line begins with the next byte.
	lineStart bool
	// The JSON lines' scan: matched is how many bytes of seriesStart the last bytes read match; inMetric, the scan is
	// in a "metric" object, hashing it; inString and escaped, within that object, in a string, after a backslash.
	matched                     int
	inMetric, inString, escaped bool
	hash                        maphash.Hash
	// recent are the last series' hashes, seen in a ring of them (next is where the next goes).
	seen map[uint64]struct{}
	ring []uint64
	next int
}

func (e *exportCount) Read(p []byte) (int, error) {
	n, err := e.rc.Read(p)
	var k int64
	if e.federate {
		k = e.countLines(p[:n])
	} else {
		k = e.countSeries(p[:n])
	}
	if k > 0 {
		e.cw.series.Add(k)
	}
	return n, err
}

func (e *exportCount) Close() error { return e.rc.Close() }

// countLines counts the /federate lines that begin in b, each a series. VictoriaMetrics writes no comment lines there,
// and writes a metric's name as it is stored, which may begin with # or hold a newline: skipping lines that look
// like comments let a team read any number of its series named "#…" charged none (an attacker's review, on 1.79.5,
// v1.151 and the cluster). A name with a newline is charged twice, from above.
func (e *exportCount) countLines(b []byte) (k int64) {
	for len(b) > 0 {
		if e.lineStart {
			k++
		}
		i := bytes.IndexByte(b, '\n')
		e.lineStart = i >= 0
		if i < 0 {
			break
		}
		b = b[i+1:]
	}
	return k
}

// countSeries counts the series of the export whose "metric" objects end in b and were not among the last ones.
// VictoriaMetrics writes a label's name and value as JSON strings, so a quote in one is escaped: `"metric":{` does not
// occur within a string, and the object ends at the first } outside a string.
func (e *exportCount) countSeries(b []byte) (k int64) {
	for len(b) > 0 {
		if !e.inMetric {
			i := e.seek(b)
			if i < 0 {
				return k
			}
			b = b[i:]
			e.inMetric, e.inString, e.escaped = true, false, false
			e.hash.Reset()
		}
		i := e.metricEnd(b)
		if i < 0 {
			_, _ = e.hash.Write(b)
			return k
		}
		_, _ = e.hash.Write(b[:i])
		e.inMetric = false
		if e.remember(e.hash.Sum64()) {
			k++
		}
		b = b[i+1:]
	}
	return k
}

// metricEnd is the index in b of the } that ends the "metric" object being read, or -1 if it goes on past b.
func (e *exportCount) metricEnd(b []byte) int {
	for i, c := range b {
		switch {
		case e.escaped:
			e.escaped = false
		case e.inString:
			if c == '\\' {
				e.escaped = true
			} else if c == '"' {
				e.inString = false
			}
		case c == '"':
			e.inString = true
		case c == '}':
			return i
		}
	}
	return -1
}

// seek finds the end of the next seriesStart in b, which may have begun in the bytes before (matched of it): the
// index after it, or -1 with matched kept for the next bytes. Past a match begun before, bytes.Index looks for it:
// most of an export is its values.
func (e *exportCount) seek(b []byte) int {
	i := 0
	for ; e.matched > 0 && i < len(b); i++ {
		e.step(b[i])
		if e.matched == len(seriesStart) {
			e.matched = 0
			return i + 1
		}
	}
	if j := bytes.Index(b[i:], seriesStartBytes); j >= 0 {
		return i + j + len(seriesStart)
	}
	for k := max(i, len(b)-(len(seriesStart)-1)); k < len(b); k++ {
		if bytes.HasPrefix(seriesStartBytes, b[k:]) {
			e.matched = len(b) - k
			break
		}
	}
	return -1
}

// step matches c against seriesStart after the matched bytes.
func (e *exportCount) step(c byte) {
	for {
		if c == seriesStart[e.matched] {
			e.matched++
			return
		}
		if e.matched == 0 {
			return
		}
		// Only a quote begins seriesStart and recurs in it: a mismatch after `"metric"` may begin again at its last
		// quote.
		if e.matched == len(`"metric"`) {
			e.matched = 1
		} else {
			e.matched = 0
		}
	}
}

// remember records a series' hash among the recent ones: false if it was there already.
func (e *exportCount) remember(h uint64) bool {
	if _, ok := e.seen[h]; ok {
		return false
	}
	if e.seen == nil {
		e.seen = make(map[uint64]struct{})
	}
	if len(e.ring) < recentSeries {
		e.ring = append(e.ring, h)
	} else {
		delete(e.seen, e.ring[e.next])
		e.ring[e.next] = h
		e.next = (e.next + 1) % recentSeries
	}
	e.seen[h] = struct{}{}
	return true
}
