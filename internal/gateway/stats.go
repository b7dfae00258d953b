package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/route"
)

// VictoriaMetrics (since v1.9x; v1.79 does not) ends each /api/v1/query and /api/v1/query_range answer with
// "stats":{"seriesFetched":"N","executionTimeMsec":M}: what the query cost the cluster. The gateway reads it from
// the last bytes of the answer as they stream through, without holding the answer, measures it and, for a caller
// with cost limits, counts it against them (CostCounter); answers without it are counted, so an operator can see
// whether the upstream reports its costs. Compressed answers pass unread: their tail is not text. So the query of
// a caller with cost limits asks the upstream for an uncompressed answer.
var (
	querySeriesFetched = metrics.NewHistogram("vmgateway_query_series_fetched")
	queryExecution     = metrics.NewHistogram("vmgateway_query_execution_seconds")
	// Answers whose stats were not read: none in the answer (VictoriaMetrics before v1.9x), or a compressed answer
	// (the client asked for gzip and the upstream compressed it: its tail is not text).
	queryStatsAbsent     = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="absent"}`)
	queryStatsCompressed = metrics.NewCounter(`vmgateway_query_stats_unread_total{reason="compressed"}`)
)

// queryStats is the cost VictoriaMetrics reports for one query.
type queryStats struct {
	seriesFetched int64
	execMsec      float64
}

// watchStats wraps the body of a successful query answer so that its stats are read at its end.
func watchStats(resp *http.Response) {
	if resp.StatusCode != http.StatusOK || resp.Request == nil || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	p := resp.Request.URL.Path
	if !strings.HasSuffix(p, "/api/v1/query") && !strings.HasSuffix(p, "/api/v1/query_range") {
		return
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		queryStatsCompressed.Inc()
		return
	}
	done := recordStats
	if c, ok := resp.Request.Context().Value(costKey{}).(costSink); ok {
		done = func(s queryStats, ok bool) {
			recordStats(s, ok)
			if ok {
				c.costs.Spend(c.access, s.seriesFetched, s.execMsec)
			}
		}
	}
	resp.Body = &statsTail{rc: resp.Body, done: done}
}

// costKey marks in a request's context the caller whose answer's stats are counted against its cost limits.
type costKey struct{}

type costSink struct {
	costs  CostCounter
	access *auth.Access
}

// withCost marks a query of a caller with cost limits, so that the stats of its answer are counted, and asks the
// upstream for the answer uncompressed (the stats of a compressed one cannot be read) and in full (GET for HEAD).
func (g *Gateway) withCost(r *http.Request, a *auth.Access, rt route.Route) *http.Request {
	if g.costs == nil || rt.API != "query" && rt.API != "query_range" || !g.costs.Costed(a) {
		return r
	}
	r.Header.Set("Accept-Encoding", "identity")
	r = r.WithContext(context.WithValue(r.Context(), costKey{}, costSink{g.costs, a}))
	if r.Method == http.MethodHead {
		// VictoriaMetrics runs a HEAD query in full and only drops the answer, whose stats would go unread: the
		// upstream is asked with GET, and the client's HEAD answer still gets no body (the server drops it).
		r.Method = http.MethodGet
	}
	return r
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
// answer cut short (Close before EOF) reports nothing. The tail is borrowed from tailPool for the time the answer
// streams: one proxy goroutine reads and then closes a body, so it is returned exactly once, at EOF or at Close.
type statsTail struct {
	rc       io.ReadCloser
	tail     *[tailSize]byte
	n        int
	done     func(queryStats, bool)
	reported bool
}

var tailPool = sync.Pool{New: func() any { return new([tailSize]byte) }}

func (s *statsTail) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if s.reported {
		return n, err
	}
	if s.tail == nil {
		s.tail = tailPool.Get().(*[tailSize]byte)
	}
	s.keep(p[:n])
	if err == io.EOF {
		s.reported = true
		st, ok := parseStats(s.tail[:s.n])
		s.release()
		s.done(st, ok)
	}
	return n, err
}

func (s *statsTail) Close() error {
	s.reported = true
	s.release()
	return s.rc.Close()
}

func (s *statsTail) release() {
	if s.tail != nil {
		tailPool.Put(s.tail)
		s.tail = nil
	}
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
