package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
)

// VictoriaMetrics (since v1.9x; v1.79 does not) ends each /api/v1/query and /api/v1/query_range answer with
// "stats":{"seriesFetched":"N","executionTimeMsec":M}: what the query cost the cluster. The gateway reads it from
// the last bytes of the answer as they stream through, without holding the answer, measures it and, for a caller
// with cost limits, counts it against them (CostCounter); answers without it are counted, so an operator can see
// whether the upstream reports its costs.
//
// For a caller with cost limits the stats must not be escapable, since they come last:
//   - a client that leaves mid-answer (having read the series it wanted) does not end the upstream request: the
//     gateway reads the rest of the answer itself, within drainTimeout and drainBytes, to learn its stats; an
//     answer it cannot finish within them is charged the caller's whole budget (CostCounter.SpendAll);
//   - its query asks the upstream for an uncompressed answer; one gzipped anyway (a proxy in between ignoring
//     Accept-Encoding: identity) is decoded and forwarded uncompressed, and another encoding, which the gateway
//     cannot read, is charged the whole budget.
//
// A query that ends without readable stats still cost the cluster its time: one that fails after its work (a
// many-to-many match found at the end, a timeout: an error answer carries no stats), one the upstream breaks off or
// never answers, one whose client leaves before the answer begins (the upstream computed until then), and every
// answer of a VictoriaMetrics that reports no stats (1.79.5, and v1.151's instant query of a range, `cpu[5m]`). A
// costed caller is charged for each the time the gateway measured for its upstream request, from sending it until
// the answer ended or failed, as query_time_ms (costWatch.end), and as series_fetched the series its answer held,
// which it fetched at least: exactly those for `cpu[5m]`, which a caller could otherwise choose to fetch any number
// of series without a charge.
//
// Other callers' compressed answers pass unread (their tail is not text), and their abandoned answers end with the
// client: nothing is charged to them.
var (
	querySeriesFetched = metrics.NewHistogram("vmgateway_query_series_fetched")
	queryExecution     = metrics.NewHistogram("vmgateway_query_execution_seconds")
	// Queries whose stats were not read: none in the answer (VictoriaMetrics before v1.9x), a compressed answer
	// (the client asked for gzip and the upstream compressed it: its tail is not text, or an encoding the gateway
	// cannot decode), an answer the client left which the gateway could not finish within bounds (or whose client
	// had left when it came), one the upstream broke off, an error answer (failed), or no answer at all: the
	// upstream failed or timed out, or the client left before it came (unanswered).
	queryStatsAbsent     = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="absent"}`)
	queryStatsCompressed = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="compressed"}`)
	queryStatsAbandoned  = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="abandoned"}`)
	queryStatsBroken     = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="broken"}`)
	queryStatsFailed     = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="failed"}`)
	queryStatsUnanswered = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="unanswered"}`)
	// Answers of callers with cost limits that the client left before their end and the gateway read to their
	// stats, and gzip answers it decoded to read them.
	queryStatsDrained = metrics.NewCounter(`vmgateway_query_stats_drained_total`)
	queryStatsGunzip  = metrics.NewCounter(`vmgateway_query_stats_decoded_total{encoding="gzip"}`)
	// Answers charged the caller's whole cost budget because their cost could not be learned.
	queryCostUnknown = metrics.NewCounter(`vmgateway_query_cost_unknown_total`)
	// Queries and exports of callers with cost limits charged the time their upstream request took (and the series
	// their answer held), having no readable stats.
	queryCostTimed = metrics.NewCounter(`vmgateway_query_cost_timed_total`)
)

// costClock is the clock of the time charged to queries without stats; a variable for tests.
var costClock = time.Now

// The bounds of reading an answer the client left, to learn its stats. The upstream computes a query before it
// answers, so the rest of an answer normally arrives at network speed: these bounds only stop an upstream that
// streams an enormous or endless answer from holding a request slot; what they cut short is charged in full.
var (
	drainTimeout = 10 * time.Second // a variable for tests
	drainBytes   = 1 << 30
)

// queryStats is the cost VictoriaMetrics reports for one query.
type queryStats struct {
	seriesFetched int64
	execMsec      float64
}

// isQueryPath says whether a path is a query API's, whose answers end with stats.
func isQueryPath(p string) bool {
	return strings.HasSuffix(p, "/api/v1/query") || strings.HasSuffix(p, "/api/v1/query_range")
}

// watchStats wraps the body of a successful query answer in s, a zero statsTail, so that its stats are read at its
// end; and a costed caller's export in a count of its series.
func watchStats(resp *http.Response, s *statsTail) {
	if resp.Request == nil {
		return
	}
	cw, _ := resp.Request.Context().Value(costKey{}).(*costWatch)
	if !isQueryPath(resp.Request.URL.Path) {
		if cw != nil && resp.StatusCode == http.StatusOK && isCountedExport(resp.Request.URL.Path) {
			watchExport(resp, cw)
		}
		return
	}
	if resp.StatusCode != http.StatusOK {
		// An error answer carries no stats, though the query may have worked long before it failed: a costed caller
		// is charged its time (costWatch.end).
		queryStatsFailed.Inc()
		return
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	if cw != nil && !cw.answer() {
		// The client left before the answer began: the request is being ended, the client got nothing, and the
		// time the query took until then is charged (costWatch.end).
		queryStatsAbandoned.Inc()
		return
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		if cw == nil || !isGzip(ce) {
			queryStatsCompressed.Inc()
		}
		if cw == nil || !decodable(resp, cw) {
			return
		}
	}
	// Set field by field: the tail is zero already, and copying a whole statsTail over it costs more than the rest.
	s.rc, s.done, s.ctx = resp.Body, recordStats, resp.Request.Context()
	if cw != nil {
		s.done = func(st queryStats, ok bool) {
			recordStats(st, ok)
			if ok {
				cw.spend(st)
			}
		}
		s.cw = cw
	}
	resp.Body = s
}

// decodable makes a costed caller's compressed answer readable: a gzip answer, which comes from something that
// ignored the gateway's Accept-Encoding: identity, is forwarded decoded, which every client accepts; another encoding
// cannot be read, and the caller is charged its whole budget (false).
func decodable(resp *http.Response, cw *costWatch) bool {
	if ce := resp.Header.Get("Content-Encoding"); !isGzip(ce) {
		queryCostUnknown.Inc()
		slog.Warn("an answer came compressed although the gateway asked for it uncompressed, in an encoding the gateway cannot read; the caller is charged its whole cost budget. Make the upstream (or the proxy before it) honour Accept-Encoding: identity",
			"encoding", ce, "tenant", cw.access.Tenant.String())
		cw.spendAll()
		return false
	}
	queryStatsGunzip.Inc()
	resp.Body = &gunzipBody{rc: resp.Body}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	return true
}

func isGzip(encoding string) bool {
	return strings.EqualFold(encoding, "gzip") || strings.EqualFold(encoding, "x-gzip")
}

// countUnanswered counts a query the upstream did not answer (failed, timed out, or left by its client before the
// answer came), or answered and broke off while the gateway read its start (bufferSmallAnswer).
func countUnanswered(r *http.Request, broken bool) {
	if r == nil || !isQueryPath(r.URL.Path) {
		return
	}
	if broken {
		queryStatsBroken.Inc()
		return
	}
	queryStatsUnanswered.Inc()
}

// costKey marks in a request's context the caller whose answer's stats are counted against its cost limits.
type costKey struct{}

// costWatch is one query of a caller with cost limits. Its upstream request outlives the client by up to
// drainTimeout once the answer has begun, so that the stats at its end can still be read.
type costWatch struct {
	costs  CostCounter
	access *auth.Access
	cancel context.CancelFunc
	// sent is when the upstream request was sent.
	sent time.Time
	// state: waiting for the answer, answering, or the client left before the answer began.
	state atomic.Int32
	timer atomic.Pointer[time.Timer]
	// charged is set once the query was charged: its stats, the whole budget, or its time. Once only.
	charged atomic.Bool
	// series is how many series its answer held so far (statsTail.count), charged when it has no stats.
	series atomic.Int64
	// began is when the answer began (costClock, Unix nanoseconds); 0 before.
	began atomic.Int64
	// held: the request holds a read slot, and its context is not cancelled with its client's (fairslots.go); the
	// client's is watched apart, or the drain of an answer it left had no time bound (an attacker's review: a 25 s
	// stall of the backends was waited out).
	held bool
	// drain is drainTimeout as the request began, read on its goroutine: the timers that end a drain run on others.
	drain time.Duration
}

const (
	costWaiting int32 = iota
	costAnswering
	costLeftEarly
	// costLeftHeld: the client left before the answer began, and the request holds a read slot, which is kept until
	// the backend answers (fairslots.go): the answer is read for its stats, within drainTimeout.
	costLeftHeld
)

// answer records that the answer began; false if the client had left before and the request is being ended.
func (c *costWatch) answer() bool {
	switch {
	case c.state.CompareAndSwap(costWaiting, costAnswering):
	case c.state.CompareAndSwap(costLeftHeld, costAnswering):
		c.draining()
	default:
		return false
	}
	c.began.Store(costClock().UnixNano())
	return true
}

// spend charges the stats the answer ended with, the time of writing the answer added to executionTimeMsec, which
// leaves it out: VictoriaMetrics holds the query's slot, and spends its CPU, until the last byte is written (a 694 MB
// answer took v1.151 7.6 s of CPU where the stats said 2.2 s, an attacker's review).
func (c *costWatch) spend(st queryStats) {
	if c.charged.CompareAndSwap(false, true) {
		ms := st.execMsec
		if began := c.began.Load(); began != 0 {
			ms += float64(max(costClock().UnixNano()-began, 0) / int64(time.Millisecond)) // whole milliseconds
		}
		c.costs.Spend(c.access, st.seriesFetched, ms)
	}
}

// spendAll charges an answer whose cost cannot be learned the caller's whole budget.
func (c *costWatch) spendAll() {
	if c.charged.CompareAndSwap(false, true) {
		c.costs.SpendAll(c.access)
	}
}

// end is called once the upstream request is over, answered or not: a query not charged by then had no stats to
// read, and is charged the time from sending it until now as query_time_ms, and the series its answer held as
// series_fetched (none for an error or no answer: what those fetched is not known). Its client has its answer (or
// is gone) by then: the forward step returns after the last byte was forwarded, and after reading on an answer
// the client left (statsTail.finish).
func (c *costWatch) end() {
	if !c.charged.CompareAndSwap(false, true) {
		return
	}
	queryCostTimed.Inc()
	c.costs.Spend(c.access, c.series.Load(), float64(costClock().Sub(c.sent))/float64(time.Millisecond))
}

// clientLeft ends the upstream request at once if the answer has not begun (the upstream stops computing a query
// nobody waits for), or drainTimeout later if it has.
func (c *costWatch) clientLeft() {
	switch {
	case c.held && c.state.CompareAndSwap(costWaiting, costLeftHeld):
		// The backend computes the query whether the client waits or not, and the slot waits for it.
	case c.state.CompareAndSwap(costWaiting, costLeftEarly):
		c.cancel()
	default:
		c.draining()
	}
}

// draining ends the upstream request drainTimeout from the first call on: the answer is read on for its stats only
// that long after the client stopped taking it. Called when the client leaves (or the answer begins after it left),
// and when the forward step stops writing an answer not read to its end.
func (c *costWatch) draining() {
	t := time.AfterFunc(c.drain, c.cancel)
	if !c.timer.CompareAndSwap(nil, t) {
		t.Stop()
	}
}

// withCost marks a query of a caller with cost limits (costed, which ServeHTTP works out once), so that the stats of
// its answer are counted, and asks the upstream for the answer uncompressed (the stats of a compressed one cannot be
// read) and in full (GET for HEAD).
// The returned function ends the upstream request and charges a query that had no stats its time; it is called
// once the answer has been forwarded (or read to its end after the client left), or the request failed. The slot
// (nil: none) of a read kept past its timeout defers the charge until the backend answers. A request not charged
// for its answer (a listing one: charged false) is charged its time alone, and asked as the client asked.
func (g *Gateway) withCost(r *http.Request, client context.Context, a *auth.Access, costed, charged bool, slot *hold) (*http.Request, func()) {
	if !costed {
		return r, func() {}
	}
	if charged {
		r.Header.Set("Accept-Encoding", "identity")
	}
	// A read slot's context (held) is already not cancelled with the client, and its cut must reach the upstream
	// request.
	base := r.Context()
	if slot == nil {
		base = context.WithoutCancel(base)
	}
	ctx, cancel := context.WithCancel(base)
	cw := &costWatch{costs: g.costs, access: a, cancel: cancel, sent: costClock(), held: slot != nil, drain: drainTimeout}
	stop := context.AfterFunc(client, cw.clientLeft)
	r = r.WithContext(context.WithValue(ctx, costKey{}, cw))
	if r.Method == http.MethodHead && charged {
		// VictoriaMetrics runs a HEAD query in full and only drops the answer, whose stats would go unread: the
		// upstream is asked with GET, and the client's HEAD answer still gets no body (the server drops it).
		r.Method = http.MethodGet
	}
	return r, func() {
		stop()
		if t := cw.timer.Load(); t != nil {
			t.Stop()
		}
		cancel()
		// A read kept past its timeout is charged the time until the backend answered.
		slot.afterBackend(cw.end)
	}
}

func recordStats(s queryStats, ok bool) {
	if !ok {
		queryStatsAbsent.Inc()
		return
	}
	querySeriesFetched.Update(float64(s.seriesFetched))
	queryExecution.Update(s.execMsec / 1000)
}

// tailSize holds the stats object with room to spare: it is about 60 bytes.
const tailSize = 256

// statsTail keeps the last tailSize bytes of a body as it is read, and reports the stats found in them at EOF. An
// answer cut short (Close before EOF) reports nothing, unless it is a costed caller's (cw set): Close then reads
// the rest of the answer to its stats, and an answer that cannot be finished is charged the whole budget.
type statsTail struct {
	rc io.ReadCloser
	// ctx is the upstream request's: ended by the client leaving, or for a costed caller by the gateway once it
	// gives up reading the answer the client left.
	ctx        context.Context
	tail       [tailSize]byte
	n          int
	done       func(queryStats, bool)
	cw         *costWatch
	ended, eof bool
}

func (s *statsTail) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if s.cw != nil {
		s.count(p[:n])
	}
	s.keep(p[:n])
	if err != nil && !s.ended {
		s.end(err)
	}
	return n, err
}

// end reports the answer once it ended: its stats at EOF. After an error: if the request was ended on the
// gateway's side (the client left; for a costed caller, the gateway gave up reading the answer the client left),
// an abandoned answer, charged the whole budget to a costed caller; else the upstream broke off, and a costed
// caller is charged the query's time (costWatch.end), as for any failed query.
func (s *statsTail) end(err error) {
	s.ended = true
	if err == io.EOF {
		s.eof = true
		st, ok := parseStats(s.tail[:s.n])
		s.done(st, ok)
		return
	}
	if s.ctx.Err() == nil {
		queryStatsBroken.Inc()
		return
	}
	if s.cw == nil {
		queryStatsAbandoned.Inc()
		return
	}
	s.unknown("the gateway could not read the answer the client left to its end within " + s.cw.drain.String())
}

func (s *statsTail) unknown(why string) {
	queryStatsAbandoned.Inc()
	queryCostUnknown.Inc()
	slog.Warn("the cost of a query answer is unknown; the caller is charged its whole cost budget", "reason", why, "tenant", s.cw.access.Tenant.String())
	s.cw.spendAll()
}

func (s *statsTail) Close() error {
	if !s.ended {
		if s.cw != nil {
			s.finish()
		} else {
			s.ended = true
			queryStatsAbandoned.Inc()
		}
	}
	return s.rc.Close()
}

// finish reads what is left of an answer the client did not read to its end, to learn its stats.
func (s *statsTail) finish() {
	s.cw.draining()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for read := 0; !s.ended; {
		if read >= drainBytes {
			s.ended = true
			s.unknown(fmt.Sprintf("the answer the client left goes on beyond %d MiB", drainBytes>>20))
			return
		}
		n, _ := s.Read(*bp)
		read += n
	}
	if s.eof {
		queryStatsDrained.Inc()
	}
}

// seriesStart begins each series of a query answer, `{"metric":{"__name__":…},"values":…}`: in JSON a quote
// within a string is escaped, and a label's value is a string, so nothing else in an answer holds these bytes.
const seriesStart = `"metric":{`

var seriesStartBytes = []byte(seriesStart)

// count adds the series that begin in b, the answer's next bytes after the tail, to the costed caller's count.
func (s *statsTail) count(b []byte) {
	if k := countSeam(s.tail[:s.n], b); k > 0 {
		s.cw.series.Add(int64(k))
	}
}

// countSeam counts the series that begin in b, the bytes read after before: those in b, and one begun in before's
// last bytes and ended in b's first ones.
func countSeam(before, b []byte) int {
	k := bytes.Count(b, seriesStartBytes)
	if len(before) > 0 && len(b) > 0 {
		var seam [2 * (len(seriesStart) - 1)]byte
		n := copy(seam[:], before[max(0, len(before)-(len(seriesStart)-1)):])
		n += copy(seam[n:], b[:min(len(b), len(seriesStart)-1)])
		k += bytes.Count(seam[:n], seriesStartBytes)
	}
	return k
}

func (s *statsTail) keep(b []byte) {
	if len(b) >= tailSize {
		s.n = copy(s.tail[:], b[len(b)-tailSize:])
		return
	}
	if s.n+len(b) > tailSize {
		drop := s.n + len(b) - tailSize
		copy(s.tail[:], s.tail[drop:s.n])
		s.n -= drop
	}
	s.n += copy(s.tail[s.n:], b)
}

// gunzipBody decodes a gzip body as it is read; the gzip header is read on the first Read, so that a broken one
// is a broken answer, not a failed request.
type gunzipBody struct {
	rc io.ReadCloser
	zr *gzip.Reader
}

func (g *gunzipBody) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.rc)
		if err != nil {
			return 0, fmt.Errorf("cannot decode the upstream's gzip answer: %w", err)
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

func (g *gunzipBody) Close() error { return g.rc.Close() }

// parseStats reads "stats":{"seriesFetched":"N","executionTimeMsec":M} from the end of an answer.
func parseStats(tail []byte) (queryStats, bool) {
	i := lastIndex(tail, statsKey)
	if i < 0 {
		return queryStats{}, false
	}
	obj := tail[i:]
	sf, ok1 := numberAfter(obj, `"seriesFetched":`)
	ms, ok2 := numberAfter(obj, `"executionTimeMsec":`)
	if !ok1 || !ok2 {
		return queryStats{}, false
	}
	n, err := strconv.ParseInt(sf, 10, 64)
	if err != nil || n < 0 {
		return queryStats{}, false
	}
	f, err := strconv.ParseFloat(ms, 64)
	if err != nil || f < 0 {
		return queryStats{}, false
	}
	return queryStats{seriesFetched: n, execMsec: f}, true
}

// numberAfter is the number after key, quoted or not.
func numberAfter(b []byte, key string) (string, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return "", false
	}
	b = bytes.TrimLeft(b[i+len(key):], " \t\r\n\"")
	j := 0
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-') {
		j++
	}
	if j == 0 {
		return "", false
	}
	return string(b[:j]), true
}

var statsKey = []byte(`"stats":`)

// lastIndex is bytes.LastIndex by forward searches: bytes.Index is vectorised and LastIndex is not, and a tail holds
// the key at most a few times.
func lastIndex(b, key []byte) int {
	last := -1
	for off := 0; ; {
		i := bytes.Index(b[off:], key)
		if i < 0 {
			return last
		}
		last = off + i
		off = last + 1
	}
}
