package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// costTimer is costClock in the tests of the time charged: it moves only when the fake upstream says it worked,
// so the charged time is exact.
type costTimer struct{ ns atomic.Int64 }

func (c *costTimer) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *costTimer) advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *costTimer) since(t time.Time) float64 {
	return float64(c.now().Sub(t)) / float64(time.Millisecond)
}

func useCostTimer(t *testing.T) *costTimer {
	t.Helper()
	c := &costTimer{}
	c.ns.Store(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC).UnixNano())
	old := costClock
	costClock = c.now
	t.Cleanup(func() { costClock = old })
	return c
}

// unread reads the vmgateway_query_stats_unread_total counters by reason.
func unread() map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range []string{"absent", "compressed", "abandoned", "broken", "failed", "unanswered"} {
		out[r] = counter(`vmgateway_query_stats_unread_total{reason="` + r + `"}`)
	}
	return out
}

// unreadSince is what was counted since before, by reason; reasons not counted are left out.
func unreadSince(before map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for r, n := range unread() {
		if d := n - before[r]; d != 0 {
			out[r] = d
		}
	}
	return out
}

// rangeAnswer is v1.151's answer to an instant query of a range (`cpu[5m]`), which has no stats: three series, one
// with a label named metric, one whose value holds what begins a series, escaped.
const rangeAnswer = `{"status":"success","data":{"resultType":"matrix","result":[` +
	`{"metric":{"__name__":"cpu","metric":"x"},"values":[[1796490591,"1"]]},` +
	`{"metric":{"__name__":"cpu","v":"\"metric\":{"},"values":[[1796490591,"1"]]},` +
	`{"metric":{},"values":[[1796490591,"1"]]}]}}`

// TestCostTimeWithoutStats: a costed caller's query whose answer carries no stats (an error answer, a timeout, no
// answer at all, an answer without stats such as 1.79.5's) is charged the time from sending it upstream until its
// answer ended or failed, as query_time_ms, and as series_fetched the series its answer held (none for an error);
// one with stats is charged its stats exactly, however long it took. Each is counted once in
// vmgateway_query_stats_unread_total. An uncosted caller is charged nothing.
func TestCostTimeWithoutStats(t *testing.T) {
	clock := useCostTimer(t)
	read := vmtest.NewRecorder(t)
	ru, _ := url.Parse(read.URL)
	costs := &spendLog{costedAccount: 3}
	tokens := byToken{"t3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}, "t4": {Tenant: tenant.ID{AccountID: 4}, Mode: auth.ModeFull}}
	g, err := New(Config{ReadURL: ru, WriteURL: ru, ReadTransport: &http.Transport{DisableKeepAlives: true}, WriteTransport: http.DefaultTransport,
		Cluster: true, Auth: tokens, Costs: costs, AuthHeader: "X-Token"})
	if err != nil {
		t.Fatal(err)
	}
	jsonAnswer := func(w http.ResponseWriter, code int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
	for _, tc := range []struct {
		name, token string
		worked      time.Duration
		respond     func(w http.ResponseWriter)
		code        int
		want        [][2]float64 // nil: series, and the time the fake upstream worked as query_time_ms
		series      float64
		wantUnread  map[string]uint64
	}{
		{name: "many-to-many found at the end: 422", token: "t3", worked: 1500 * time.Millisecond, code: 422,
			respond: func(w http.ResponseWriter) {
				jsonAnswer(w, 422, `{"status":"error","errorType":"422","error":"duplicate time series on the right side of `+"`+ on()`"+`"}`)
			}, wantUnread: map[string]uint64{"failed": 1}},
		{name: "timeout: 503", token: "t3", worked: 30 * time.Second, code: 503,
			respond: func(w http.ResponseWriter) {
				jsonAnswer(w, 503, `{"status":"error","errorType":"503","error":"cannot execute query: timeout exceeded"}`)
			}, wantUnread: map[string]uint64{"failed": 1}},
		{name: "no stats: 1.79.5", token: "t3", worked: 250 * time.Millisecond, code: 200,
			respond: func(w http.ResponseWriter) {
				jsonAnswer(w, 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
			}, wantUnread: map[string]uint64{"absent": 1}},
		{name: "no stats: v1.151's instant query of a range", token: "t3", worked: 250 * time.Millisecond, code: 200,
			respond: func(w http.ResponseWriter) {
				// Sent a few bytes at a time, so that series begin across the gateway's reads.
				w.Header().Set("Content-Type", "application/json")
				for b := []byte(rangeAnswer); len(b) > 0; b = b[min(len(b), 7):] {
					_, _ = w.Write(b[:min(len(b), 7)])
					w.(http.Flusher).Flush()
				}
			}, series: 3, wantUnread: map[string]uint64{"absent": 1}},
		{name: "no answer: the connection closed", token: "t3", worked: 700 * time.Millisecond, code: 502,
			respond: func(w http.ResponseWriter) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
			}, wantUnread: map[string]uint64{"unanswered": 1}},
		{name: "stats: charged exactly, not the time", token: "t3", worked: 5 * time.Second, code: 200,
			respond: func(w http.ResponseWriter) {
				jsonAnswer(w, 200, `{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "7","executionTimeMsec":12}}`)
			}, want: [][2]float64{{7, 12}}, wantUnread: map[string]uint64{}},
		{name: "uncosted caller", token: "t4", worked: 1500 * time.Millisecond, code: 422,
			respond: func(w http.ResponseWriter) {
				jsonAnswer(w, 422, `{"status":"error","errorType":"422","error":"duplicate time series"}`)
			}, want: [][2]float64{}, wantUnread: map[string]uint64{"failed": 1}},
	} {
		read.Respond(func(w http.ResponseWriter, _ *http.Request) {
			clock.advance(tc.worked)
			tc.respond(w)
		})
		before, start := unread(), clock.now()
		rec := serve(g, http.MethodGet, "/api/v1/query?query="+url.QueryEscape("m + on() m"), "X-Token", tc.token)
		if rec.Code != tc.code {
			t.Errorf("%s: status %d, want %d: %s", tc.name, rec.Code, tc.code, rec.Body.String())
		}
		want := tc.want
		if want == nil {
			// Every attempt of the upstream request counts (the transport may resend a request whose connection
			// closed before any answer).
			want = [][2]float64{{tc.series, clock.since(start)}}
			if clock.since(start) < float64(tc.worked/time.Millisecond) {
				t.Errorf("%s: the clock moved %vms", tc.name, clock.since(start))
			}
		}
		if got := costs.take(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: spent %v, want %v", tc.name, got, want)
		}
		if got := unreadSince(before); fmt.Sprint(got) != fmt.Sprint(tc.wantUnread) {
			t.Errorf("%s: vmgateway_query_stats_unread_total counted %v, want %v", tc.name, got, tc.wantUnread)
		}
	}
}

// TestCostTimeBrokenOff: an answer the upstream breaks off after its start costs a costed caller the time until
// it broke off.
func TestCostTimeBrokenOff(t *testing.T) {
	clock := useCostTimer(t)
	read := vmtest.NewRecorder(t)
	read.Respond(func(w http.ResponseWriter, _ *http.Request) {
		clock.advance(400 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		// More than the gateway reads ahead of an answer without a length, so the answer has begun when it breaks.
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[`+strings.Repeat(" ", maxBufferedAnswer+200))
		w.(http.Flusher).Flush()
		clock.advance(100 * time.Millisecond)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	base, costs := costGateway(t, read)
	before := unread()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/query?query=up", nil)
	req.Header.Set("X-Token", "t3")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	vmtest.Eventually(t, func() (bool, string) {
		got := costs.take()
		return fmt.Sprint(got) == "[[0 500]]", fmt.Sprintf("spent %v, want [[0 500]]", got)
	})
	if got := unreadSince(before); fmt.Sprint(got) != "map[broken:1]" {
		t.Errorf("vmgateway_query_stats_unread_total counted %v, want broken once", got)
	}
}

// TestCostTimeLeftBeforeAnswer: a costed client that leaves before the answer begins ends the upstream request
// at once (VictoriaMetrics stops the query), and is charged the time the query ran until then: leaving early must
// not make a query free.
func TestCostTimeLeftBeforeAnswer(t *testing.T) {
	clock := useCostTimer(t)
	read := vmtest.NewRecorder(t)
	ended := make(chan struct{})
	read.Respond(func(_ http.ResponseWriter, r *http.Request) {
		clock.advance(900 * time.Millisecond) // computing, until the request ends
		<-r.Context().Done()
		close(ended)
	})
	base, costs := costGateway(t, read)
	before := unread()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query=up", nil)
	req.Header.Set("X-Token", "t3")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the query was answered: %d", resp.StatusCode)
	}
	select {
	case <-ended:
	case <-time.After(drainTimeout / 2):
		t.Fatal("the upstream request outlived a client that left before the answer")
	}
	vmtest.Eventually(t, func() (bool, string) {
		got := costs.take()
		return fmt.Sprint(got) == "[[0 900]]", fmt.Sprintf("spent %v, want [[0 900]]", got)
	})
	if got := unreadSince(before); fmt.Sprint(got) != "map[unanswered:1]" {
		t.Errorf("vmgateway_query_stats_unread_total counted %v, want unanswered once", got)
	}
}

// TestCountSeries: the series of an answer are counted however its bytes are split between reads.
func TestCountSeries(t *testing.T) {
	for i := 0; i <= len(rangeAnswer); i++ {
		for j := i; j <= len(rangeAnswer); j += 5 {
			s := &statsTail{cw: &costWatch{}}
			for _, part := range []string{rangeAnswer[:i], rangeAnswer[i:j], rangeAnswer[j:]} {
				s.count([]byte(part))
				s.keep([]byte(part))
			}
			if got := s.cw.series.Load(); got != 3 {
				t.Fatalf("split at %d and %d: %d series, want 3", i, j, got)
			}
		}
	}
}

// TestCountExportSeries: the series of an export are counted however its bytes are split between reads: the JSON
// lines of /api/v1/export by their "metric" objects, /federate by its lines: VictoriaMetrics writes no comments there,
// and a line that begins with # is a series whose name does (an attacker's review read such series charged none).
func TestCountExportSeries(t *testing.T) {
	for _, tc := range []struct {
		body     string
		federate bool
		want     int64
	}{
		{`{"metric":{"__name__":"cpu","metric":"x"},"values":[1,2],"timestamps":[1,2]}` + "\n" +
			`{"metric":{"__name__":"cpu","v":"\"metric\":{"},"values":[1],"timestamps":[1]}` + "\n" +
			`{"metric":{},"values":[1],"timestamps":[1]}` + "\n", false, 3},
		{"cpu{team=\"dev\",i=\"1\"} 1 1700000000000\ncpu{team=\"dev\",i=\"2\"} 2 1700000000000\n" +
			"mem{team=\"dev\",v=\"# not a comment\"} 3 1700000000000\n", true, 3},
		{"#hid{team=\"dev\",i=\"1\"} 1 1700000000000\n#hid{team=\"dev\",i=\"2\"} 2 1700000000000\n# 3 1700000000000\n", true, 3},
		// A name with a newline makes two lines of one series: charged twice, never less.
		{"a\nb{team=\"dev\"} 1 1700000000000\n", true, 2},
		{"cpu 1 1700000000000", true, 1},
		// max_rows_per_line: a series on several lines, charged once; interleaved with another, still once.
		{`{"metric":{"a":"1"},"values":[1],"timestamps":[1]}` + "\n" + `{"metric":{"a":"1"},"values":[2],"timestamps":[2]}` + "\n" +
			`{"metric":{"a":"2"},"values":[1],"timestamps":[1]}` + "\n" + `{"metric":{"a":"1"},"values":[3],"timestamps":[3]}` + "\n", false, 2},
		// A } or an escaped quote within a value does not end the object: these two differ after them.
		{`{"metric":{"a":"}\"\\","b":"x"},"values":[1]}` + "\n" + `{"metric":{"a":"}\"\\","b":"y"},"values":[1]}` + "\n", false, 2},
		// format=promapi: a list of the same objects.
		{`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"]]},` +
			`{"metric":{"a":"1"},"values":[[2,"1"]]},{"metric":{"a":"2"},"values":[[1,"1"]]}]}}`, false, 2},
	} {
		for i := 0; i <= len(tc.body); i++ {
			for j := i; j <= len(tc.body); j += 3 {
				e := newExportCount(nil, &costWatch{}, tc.federate)
				for _, part := range []string{tc.body[:i], tc.body[i:j], tc.body[j:]} {
					e.rc = io.NopCloser(strings.NewReader(part))
					if _, err := io.ReadAll(e); err != nil {
						t.Fatal(err)
					}
				}
				if got := e.cw.series.Load(); got != tc.want {
					t.Fatalf("%.30q split at %d and %d: %d series, want %d", tc.body, i, j, got, tc.want)
				}
			}
		}
	}
}

// TestCountExportSeriesRecent: a series met again after more than recentSeries others is charged again (from above,
// never below); within them, once.
func TestCountExportSeriesRecent(t *testing.T) {
	var b strings.Builder
	line := func(i int) { fmt.Fprintf(&b, `{"metric":{"i":"%d"},"values":[1],"timestamps":[1]}`+"\n", i) }
	for i := 0; i <= recentSeries; i++ {
		line(i)
	}
	line(recentSeries) // the last one again: once
	line(1)            // within the last recentSeries: once
	line(0)            // forgotten: charged again
	e := newExportCount(io.NopCloser(strings.NewReader(b.String())), &costWatch{}, false)
	if _, err := io.Copy(io.Discard, e); err != nil {
		t.Fatal(err)
	}
	if got, want := e.cw.series.Load(), int64(recentSeries+2); got != want {
		t.Errorf("%d series charged, want %d", got, want)
	}
}

// BenchmarkExportCount: counting a costed caller's export as it streams, per byte of a JSON lines export whose series
// have 100 samples each.
func BenchmarkExportCount(b *testing.B) {
	var body strings.Builder
	for i := 0; body.Len() < 1<<20; i++ {
		fmt.Fprintf(&body, `{"metric":{"__name__":"cpu","team":"dev","instance":"host-%d:9100","job":"node"},"values":[`, i)
		for k := 0; k < 100; k++ {
			fmt.Fprintf(&body, "%d.5,", k)
		}
		body.WriteString(`1],"timestamps":[`)
		for k := 0; k < 100; k++ {
			fmt.Fprintf(&body, "17000000%05d,", k)
		}
		body.WriteString("1]}\n")
	}
	data := []byte(body.String())
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		e := newExportCount(io.NopCloser(bytes.NewReader(data)), &costWatch{}, false)
		if _, err := io.CopyBuffer(io.Discard, e, buf); err != nil {
			b.Fatal(err)
		}
	}
}
