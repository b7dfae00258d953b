package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestJudgeMeasured: a query refused only for its windows over raw samples is judged on the samples its measurer
// counts in them; one refused at one sample a minute, or for its subqueries, is not measured.
func TestJudgeMeasured(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	l := Limits{MaxSubqueryWindowPoints: 1e8, MinSampleInterval: time.Second}
	day := url.Values{"query": {`quantile_over_time(0.99, x{team="dev"}[1d])`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}
	wantWindow := querylimits.Window{Selector: `x{team="dev"}`, From: 1699913600000, To: 1700000000000, Step: 60000, Window: 86400000,
		Weight: 64, Assumed: 1441 * 86401}
	// counting counts n samples for each window, of one series of the window's selector's own labels, or of the
	// same series for every window when shared.
	counting := func(n int64, err error, asked *[]querylimits.Window, shared ...bool) measurer {
		return func(ws []querylimits.Window) (map[countKey]seriesCounts, error) {
			*asked = append(*asked, ws...)
			if err != nil {
				return nil, err
			}
			out := map[countKey]seriesCounts{}
			for _, w := range ws {
				series := w.Selector
				if len(shared) > 0 {
					series = "one"
				}
				out[keyOf(w)] = seriesCounts{bySeries: map[string]int64{series: n}}
			}
			return out, nil
		}
	}
	// 15 s samples: 1,441 windows of 5,760, weighing 8 each: 6.6e7.
	var asked []querylimits.Window
	if err := checkEvaluation(ranged, day, nil, nil, l, now, counting(1441*5760, nil, &asked)); err != nil {
		t.Errorf("15s samples: %v", err)
	}
	if len(asked) != 1 || asked[0] != wantWindow {
		t.Errorf("measured %+v; want %+v", asked, wantWindow)
	}
	// 1 s samples: refused, on what was counted.
	err := checkEvaluation(ranged, day, nil, nil, l, now, counting(1441*86400, nil, &asked))
	if err == nil || httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "as VictoriaMetrics counted them") {
		t.Errorf("1s samples: %v; want 400 on the count", err)
	}
	// A count the backends refused: the query is refused as before, saying why.
	err = checkEvaluation(ranged, day, nil, nil, l, now, counting(0, countError{errors.New("the read backend did not count them: boom")}, &asked))
	if err == nil || httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "could not count the samples") ||
		!strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "-search.maxSubqueryWindowPoints") {
		t.Errorf("count refused: %v", err)
	}
	// The backends failed (a timeout, a 5xx): 503, to be sent again (an attacker's review: 400, which clients do not
	// send again, for the backends' failure).
	err = checkEvaluation(ranged, day, nil, nil, l, now, counting(0, context.DeadlineExceeded, &asked))
	if err == nil || httperr.Status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "send the query again") {
		t.Errorf("count failed: %v", err)
	}
	// The team's read slots taken: its 429.
	full := &overloadError{scope: "backend", limit: 4, queue: time.Second}
	if err := checkEvaluation(ranged, day, nil, nil, l, now, counting(0, full, &asked)); err != full {
		t.Errorf("no read slot: %v; want the 429", err)
	}
	// Without a measurer: refused at one sample a second.
	if err := checkEvaluation(ranged, day, nil, nil, l, now, nil); err == nil || !strings.Contains(err.Error(), "-search.minSampleInterval") {
		t.Errorf("not measured: %v", err)
	}
	// Not measured: refused at one sample a minute too (30-day windows over 30 days at 1m), or for a subquery.
	asked = nil
	for _, q := range []url.Values{
		{"query": {`quantile_over_time(0.99, x[30d])`}, "start": {"1697408000"}, "end": {"1700000000"}, "step": {"60"}},
		{"query": {`max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}},
	} {
		if err := checkEvaluation(ranged, q, nil, nil, l, now, counting(1, nil, &asked)); err == nil {
			t.Errorf("%s: passed", q.Get("query"))
		}
	}
	if len(asked) != 0 {
		t.Errorf("measured %+v; want none", asked)
	}
	// A series read by several windows reads what all of them read of it; series read by one window each are apart
	// (a legitimate user's review: a token of two filters had its panels refused at twice their cost).
	two := url.Values{"query": {`union(quantile_over_time(0.99, x{env="a"}[1d]), quantile_over_time(0.99, x{env="b"}[1d]))`},
		"start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}
	if err := checkEvaluation(ranged, two, nil, nil, l, now, counting(8e6, nil, &asked)); err != nil {
		t.Errorf("two windows of 8e6 over series of their own: %v", err)
	}
	if err := checkEvaluation(ranged, two, nil, nil, l, now, counting(8e6, nil, &asked, true)); err == nil {
		t.Error("two windows of 8e6 over the same series: admitted")
	}
	// The same window twice is read twice, and counted once.
	asked = nil
	twice := url.Values{"query": {`quantile_over_time(0.99, x[1d]) / quantile_over_time(0.99, x[1d])`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}
	if err := checkEvaluation(ranged, twice, nil, nil, l, now, counting(5e6, nil, &asked)); err != nil || len(asked) != 2 || asked[0] != asked[1] {
		t.Errorf("a window twice at 5e6: %v, measured %+v", err, asked)
	}
	if err := checkEvaluation(ranged, twice, nil, nil, l, now, counting(7e6, nil, &asked)); err == nil {
		t.Error("a window twice at 7e6: admitted")
	}
	// An instant query read two ways (with its @ and without, instantReading) reads the larger of the two, not both.
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	at := url.Values{"query": {`quantile_over_time(0.99, x[200d] @ 1699999000)`}, "time": {"1700000000"}}
	asked = nil
	if err := checkEvaluation(instant, at, nil, nil, l, now, counting(7e6, nil, &asked)); err != nil || len(asked) != 2 {
		t.Errorf("an instant query read two ways at 7e6 each: %v, measured %+v", err, asked)
	}
	// More than measureMax windows are not measured.
	var many []string
	for i := 0; i <= measureMax; i++ {
		many = append(many, `quantile_over_time(0.99, x{i="`+string(rune('a'+i))+`"}[1d])`)
	}
	asked = nil
	nine := url.Values{"query": {`union(` + strings.Join(many, ", ") + `)`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}
	if err := checkEvaluation(ranged, nine, nil, nil, l, now, counting(1, nil, &asked)); err == nil || len(asked) != 0 {
		t.Errorf("%d windows: %v, measured %d", measureMax+1, err, len(asked))
	}
}

// TestProbeQuery: a window's count is asked in two parts, series by series: its windows at the step's whole times
// from a step before its first point to a step after its last, and the samples they cover.
func TestProbeQuery(t *testing.T) {
	w := querylimits.Window{Selector: `x{team="dev"}`, From: 1699913600500, To: 1700000000500, Step: 60000, Window: 86400000}
	windows, covered, at := probeQuery(w)
	if want := `sum_over_time(count_over_time(x{team="dev"}[86400000ms])[86520000ms:60000ms])`; windows != want {
		t.Errorf("windows: %s\nwant %s", windows, want)
	}
	if want := `count_over_time(x{team="dev"}[172920000ms])`; covered != want || at != "1700000060.500" {
		t.Errorf("covered: %s at %s\nwant %s at 1700000060.500", covered, at, want)
	}
	// An instant evaluation: the samples covered alone, a step either side of its time.
	w.From = w.To
	if windows, covered, _ := probeQuery(w); windows != "" || covered != `count_over_time(x{team="dev"}[86520000ms])` {
		t.Errorf("instant: %q, %q", windows, covered)
	}
}

// TestProbeRequest: the count goes to the request's tenant, each window of the rewritten query (a union for a token of
// two filters) in its two parts, with the token's restriction in its selector and as the args VictoriaMetrics
// enforces again, without its cache, and only then the query itself. A series is judged on what all the windows read
// of it: two filters' branches over series of their own pass where their sum would not, over the same series they do
// not (a legitimate user's review: a token of two filters had its day-long panels refused at twice their cost).
func TestProbeRequest(t *testing.T) {
	read := vmtest.NewRecorder(t)
	var mu sync.Mutex
	windows, covered, same := "8000000", "10000", false
	read.Respond(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		q, series := r.URL.Query().Get("query"), `{"env":"prod"}`
		if strings.Contains(q, `env="stage",Env=""}[`) && !same {
			series = `{"env":"stage"}`
		}
		n := covered
		if strings.HasPrefix(q, "sum_over_time(") {
			n = windows
		}
		answerSeries(w, r, series, n)
	})
	set := func(win, cov string, sameSeries bool) {
		mu.Lock()
		windows, covered, same = win, cov, sameSeries
		mu.Unlock()
	}
	costs := &spendLog{costedAccount: 15}
	g := measuring(t, read, Config{Cluster: true, Costs: costs,
		Auth: fixedAuth{a: restricted(t, tenant.ID{AccountID: 15, ProjectID: 2}, "dev", `{env="prod"}`, `{env="stage"}`)}})
	target := "/select/15:2/prometheus" + dayPanel(`quantile_over_time(0.99, x[1d])`)
	if rec := serve(g, http.MethodGet, target); rec.Code != http.StatusOK {
		t.Fatalf("two branches over series of their own, 8.01e6 samples each (6.4e7 points): %d %s", rec.Code, rec.Body)
	}
	reqs := read.Requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests forwarded; want two counts of two parts and the query", len(reqs))
	}
	for i, env := range []string{"prod", "prod", "stage", "stage"} {
		r := reqs[i]
		q := r.Query.Get("query")
		if r.Path != "/select/15:2/prometheus/api/v1/query" || !strings.Contains(q, `count_over_time(x{team="dev",env="`+env+`",Env=""}[`) ||
			strings.Count(q, "count_over_time(") != 1 || r.Query.Get("nocache") != "1" ||
			strings.Join(r.Query["extra_label"], ",") != "team=dev,\x00\x00\x0d=" || strings.Join(r.Query["extra_filters[]"], ",") != `{env="prod",Env=""},{env="stage",Env=""}` {
			t.Errorf("count %d: %s %v", i, r.Path, r.Query)
		}
	}
	if reqs[4].Path != "/select/15:2/prometheus/api/v1/query_range" {
		t.Errorf("then %s; want the query", reqs[4].Path)
	}
	// A caller with cost limits is charged each count as its answer's stats say, then the query.
	if spent := costs.take(); len(spent) != 5 || spent[0] != [2]float64{2, 7} || spent[3] != [2]float64{2, 7} {
		t.Errorf("spent %v; want the four counts' [2 7], then the query's", spent)
	}
	// The same series in both branches: read twice, 1.28e8 points, refused; nothing more forwarded.
	set("8000000", "10000", true)
	rec := serve(g, http.MethodGet, target)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "as VictoriaMetrics counted them") {
		t.Errorf("the same series in both branches: %d %s", rec.Code, rec.Body)
	}
	if reqs := read.Requests(); len(reqs) != 4 || !strings.HasSuffix(reqs[3].Path, "/api/v1/query") {
		t.Errorf("%d requests forwarded; want four counts and no query", len(reqs))
	}
	// A count VictoriaMetrics answers NaN for refuses the query, 503 (no count is kept: the team may have written
	// samples since, an attacker's review).
	set("NaN", "10000", false)
	if rec := serve(g, http.MethodGet, target); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `counted \"NaN\"`) {
		t.Errorf("counted NaN: %d %s", rec.Code, rec.Body)
	}
	read.Requests()
	// A count past 2^62 counts 2^62: refused.
	set(strings.Repeat("1", 20), "10000", false)
	rec = serve(g, http.MethodGet, target)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("a count past 2^62: %d %s", rec.Code, rec.Body)
	}
	read.Requests()
}

// TestCountTooLongToList: a part whose answer is too long to read series by series, lists more series than a
// query's counts may in all, or is refused series by series (duplicates once count_over_time drops the names), is
// asked again as its most, which every series is then taken to read.
func TestCountTooLongToList(t *testing.T) {
	for _, bound := range []string{"answer", "series", "duplicates"} {
		t.Run(bound, func(t *testing.T) { testCountTooLongToList(t, bound) })
	}
}

func testCountTooLongToList(t *testing.T, bound string) {
	defer func(answer int64, series int) { maxCountAnswer, maxListed = answer, series }(maxCountAnswer, maxListed)
	switch bound {
	case "answer":
		maxCountAnswer = 300
	case "series":
		maxListed = 19
	}
	read := vmtest.NewRecorder(t)
	var mu sync.Mutex
	most := "8000000"
	read.Respond(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		q := r.URL.Query().Get("query")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case !strings.HasSuffix(r.URL.Path, "/api/v1/query"):
			_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
		case strings.HasPrefix(q, "max("):
			answerSeries(w, r, `{}`, most)
		case bound == "duplicates":
			// count_over_time of several metrics that share their other labels.
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"status":"error","errorType":"422","error":"duplicate output timeseries: {job=\"x\"}"}`)
		default:
			var many []string
			for i := range 20 {
				many = append(many, fmt.Sprintf(`{"metric":{"i":"%d"},"value":[1,"5"]}`, i))
			}
			_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[`+strings.Join(many, ",")+`]}}`)
		}
	})
	g := measuring(t, read, Config{Auth: fixedAuth{a: restricted(t, tenant.ID{}, "dev")}})
	target := dayPanel(`quantile_over_time(0.99, x[1d])`)
	// Each part at most 8e6: 1.6e7 a series, weighing 8, 1.28e8: refused.
	if rec := serve(g, http.MethodGet, target); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "1.28e+08") {
		t.Errorf("parts of 8e6 at most: %d %s", rec.Code, rec.Body)
	}
	reqs := read.Requests()
	if len(reqs) != 4 || !strings.HasPrefix(reqs[1].Query.Get("query"), "max(sum_over_time(") || !strings.HasPrefix(reqs[3].Query.Get("query"), "max(count_over_time(") {
		t.Errorf("%d requests; want each part, then each part's most", len(reqs))
	}
	mu.Lock()
	most = "4000000"
	mu.Unlock()
	if rec := serve(g, http.MethodGet, target); rec.Code != http.StatusOK {
		t.Errorf("parts of 4e6 at most: %d %s", rec.Code, rec.Body)
	}
}

// TestLongSelectorCounted: a query of 8.4 KB, which VictoriaMetrics reads, is counted in parts that each hold its
// selector once (an attacker's review: the count of both parts in one query was past VictoriaMetrics' 16 KiB).
func TestLongSelectorCounted(t *testing.T) {
	read := vmtest.NewRecorder(t)
	read.Respond(func(w http.ResponseWriter, r *http.Request) { answerCount(w, r, "3000") })
	g := measuring(t, read, Config{Auth: fixedAuth{a: restricted(t, tenant.ID{}, "dev")}})
	var hosts []string
	for i := range 1400 {
		hosts = append(hosts, fmt.Sprintf("v%04d", i))
	}
	target := dayPanel(`quantile_over_time(0.99, z{job=~"` + strings.Join(hosts, "|") + `"}[1d])`)
	if rec := serve(g, http.MethodGet, target); rec.Code != http.StatusOK {
		t.Fatalf("the query: %d %.300s", rec.Code, rec.Body)
	}
	reqs := read.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests forwarded; want the count's two parts and the query", len(reqs))
	}
	for i, r := range reqs[:2] {
		if q := r.Query.Get("query"); len(q) > 16<<10 || strings.Count(q, "v0001") != 1 {
			t.Errorf("part %d: %d bytes %.200s", i, len(q), q)
		}
	}
}

// TestCountsOneAtATime: a team's counts run one at a time, the next waiting -read.maxQueueDuration, then 429; another
// team's count does not wait for it.
func TestCountsOneAtATime(t *testing.T) {
	read := vmtest.NewRecorder(t)
	hold, arrived := make(chan struct{}), make(chan struct{}, 1)
	read.Respond(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Query().Get("query"), "held") {
			select {
			case arrived <- struct{}{}:
			default:
			}
			<-hold
		}
		answerCount(w, r, "10")
	})
	g := measuring(t, read, Config{Limits: Limits{ReadQueueDuration: 200 * time.Millisecond},
		Auth: byHeader{"dev": restricted(t, tenant.ID{}, "dev"), "ops": restricted(t, tenant.ID{}, "ops")}})
	panel := func(metric string) string { return dayPanel(`quantile_over_time(0.99, ` + metric + `[1d])`) }
	first := make(chan int)
	go func() { first <- serve(g, http.MethodGet, panel("held"), "X-Team", "dev").Code }()
	<-arrived // the first count is under way
	rec := serve(g, http.MethodGet, panel("other"), "X-Team", "dev")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "counts one query's at a time") {
		t.Errorf("a second count of the team: %d %s; want 429", rec.Code, rec.Body)
	}
	if rec := serve(g, http.MethodGet, panel("other"), "X-Team", "ops"); rec.Code != http.StatusOK {
		t.Errorf("another team's count: %d %s", rec.Code, rec.Body)
	}
	close(hold)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first count: %d", code)
	}
	if rec := serve(g, http.MethodGet, panel("other"), "X-Team", "dev"); rec.Code != http.StatusOK {
		t.Errorf("the team's count after the first: %d %s", rec.Code, rec.Body)
	}
}

// byHeader authenticates each request as the Access its X-Team header names.
type byHeader map[string]*auth.Access

func (b byHeader) Authenticate(r *http.Request) (*auth.Access, error) {
	if a := b[r.Header.Get("X-Team")]; a != nil {
		return a, nil
	}
	return nil, httperr.New(http.StatusUnauthorized, "no team")
}

// answerCount answers a count (an instant query) with one series without labels counted n, any other query with no
// series.
func answerCount(w http.ResponseWriter, r *http.Request, n string) { answerSeries(w, r, `{}`, n) }

// answerSeries answers a count with one series of the labels metric (JSON) counted n, and stats; any other query with
// no series.
func answerSeries(w http.ResponseWriter, r *http.Request, metric, n string) {
	w.Header().Set("Content-Type", "application/json")
	if strings.HasSuffix(r.URL.Path, "/api/v1/query") {
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":`+metric+`,"value":[1,"`+n+`"]}]},`+
			`"stats":{"seriesFetched": "2","executionTimeMsec":7}}`)
		return
	}
	_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
}

// measuring is a gateway in front of read that counts samples at the default bounds, with what cfg sets besides.
func measuring(t *testing.T, read *vmtest.Recorder, cfg Config) *Gateway {
	t.Helper()
	cfg.ReadURL, _ = url.Parse(read.URL)
	cfg.WriteURL = cfg.ReadURL
	cfg.ReadTransport, cfg.WriteTransport = http.DefaultTransport, http.DefaultTransport
	cfg.Limits.MaxSubqueryWindowPoints, cfg.Limits.MinSampleInterval, cfg.Limits.MeasureSamples = 1e8, time.Second, true
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// restricted is an Access of mode read in tenant t restricted to team=team and filters.
func restricted(t *testing.T, tn tenant.ID, team string, filters ...string) *auth.Access {
	t.Helper()
	e, err := enforce.New([]enforce.Label{{Name: "team", Value: team}}, filters)
	if err != nil {
		t.Fatal(err)
	}
	return &auth.Access{Tenant: tn, Mode: auth.ModeRead, Enforcer: e}
}

// dayPanel is a range query of q over the last day at 60 s, as a request target.
func dayPanel(q string) string {
	end := time.Now().Unix()
	return "/api/v1/query_range?" + url.Values{"query": {q}, "start": {fmt.Sprint(end - 86400)}, "end": {fmt.Sprint(end)}, "step": {"60"}}.Encode()
}

// TestCountStatuses: a count VictoriaMetrics refuses (400, 422) refuses the query as before, 400; any other failure
// (a proxy's 429 or 401, a 503) is not the query's: 503, to be sent again; a client gone while its samples are
// counted is 499.
func TestCountStatuses(t *testing.T) {
	for status, want := range map[int]int{400: 400, 422: 400, 429: 503, 401: 503, 503: 503} {
		read := vmtest.NewRecorder(t)
		read.Respond(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"status":"error","errorType":"x","error":"no"}`)
		})
		g := measuring(t, read, Config{Auth: fixedAuth{a: restricted(t, tenant.ID{}, "dev")}})
		if rec := serve(g, http.MethodGet, dayPanel(`quantile_over_time(0.99, x[1d])`)); rec.Code != want {
			t.Errorf("a count answered %d: %d %s; want %d", status, rec.Code, rec.Body, want)
		}
	}
	// VictoriaMetrics' own timeout, which it answers 422 (v1.151's words), is its failure: 503, to be sent again, and
	// the count is not asked again as its most.
	read := vmtest.NewRecorder(t)
	read.Respond(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"status":"error","errorType":"422","error":"error when executing query=\"...\": cannot evaluate \"...\": `+
			`timeout exceeded during query execution: 10.000 seconds"}`)
	})
	g := measuring(t, read, Config{Auth: fixedAuth{a: restricted(t, tenant.ID{}, "dev")}})
	if rec := serve(g, http.MethodGet, dayPanel(`quantile_over_time(0.99, x[1d])`)); rec.Code != http.StatusServiceUnavailable ||
		!strings.Contains(rec.Body.String(), "send the query again") {
		t.Errorf("a count that timed out in VictoriaMetrics: %d %s; want 503", rec.Code, rec.Body)
	}
	if n := len(read.Requests()); n != 1 {
		t.Errorf("%d counts asked; want the one that timed out", n)
	}
	l := Limits{MaxSubqueryWindowPoints: 1e8, MinSampleInterval: time.Second}
	gone := func([]querylimits.Window) (map[countKey]seriesCounts, error) {
		return nil, fmt.Errorf("count: %w", context.Canceled)
	}
	day := url.Values{"query": {`quantile_over_time(0.99, x[1d])`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"60"}}
	if err := checkEvaluation(route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}, day, nil, nil, l,
		time.Unix(1_700_000_000, 0), gone); err != errGoneInQueue {
		t.Errorf("the client gone while counted: %v; want 499", err)
	}
}

// TestCountsHeldUntilAnswered: a count the gateway stops waiting for, or whose client leaves, holds the team's count and
// read slots until VictoriaMetrics answers it, and asks VictoriaMetrics to stop at the wait; no further count of the
// query is sent (an attacker's review: counts cut short left VictoriaMetrics computing for 35 s with the team's slots
// free again, and eight such filled its slots).
func TestCountsHeldUntilAnswered(t *testing.T) {
	defer func(was time.Duration) { measureTimeout = was }(measureTimeout)
	measureTimeout = 100 * time.Millisecond
	read := vmtest.NewRecorder(t)
	var mu sync.Mutex
	holds := map[string]chan struct{}{"held": make(chan struct{}), "left": make(chan struct{})}
	arrived := make(chan string, 4)
	read.Respond(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		mu.Lock()
		var hold chan struct{}
		for name, c := range holds {
			if strings.Contains(q, name+"{") {
				hold = c
				arrived <- name
			}
		}
		mu.Unlock()
		if hold != nil {
			<-hold
		}
		answerCount(w, r, "10")
	})
	g := measuring(t, read, Config{Limits: Limits{ReadQueueDuration: 200 * time.Millisecond},
		Auth: byHeader{"dev": restricted(t, tenant.ID{}, "dev")}})
	panel := func(metric string) string { return dayPanel(`quantile_over_time(0.99, ` + metric + `[1d])`) }
	heldAfter := func(what string, release chan struct{}) {
		t.Helper()
		rec := serve(g, http.MethodGet, panel("other"), "X-Team", "dev")
		if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "counts one query's at a time") {
			t.Errorf("%s: the team's next count while the first runs on: %d %s; want 429", what, rec.Code, rec.Body)
		}
		close(release)
		vmtest.Eventually(t, func() (bool, string) {
			rec := serve(g, http.MethodGet, panel("other"), "X-Team", "dev")
			return rec.Code == http.StatusOK, fmt.Sprintf("%s: the team's count once the first was answered: %d %s", what, rec.Code, rec.Body)
		})
	}
	// The gateway stops waiting: 503, and the count goes on in the team's slots.
	if rec := serve(g, http.MethodGet, panel("held"), "X-Team", "dev"); rec.Code != http.StatusServiceUnavailable ||
		!strings.Contains(rec.Body.String(), "send the query again") {
		t.Errorf("a count past the wait: %d %s; want 503", rec.Code, rec.Body)
	}
	<-arrived
	heldAfter("past the wait", holds["held"])
	// The client leaves while its count runs.
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan struct{})
	go func() {
		defer close(left)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, panel("left"), nil)
		req.Header.Set("X-Team", "dev")
		g.ServeHTTP(httptest.NewRecorder(), req)
	}()
	<-arrived
	cancel()
	<-left
	heldAfter("the client gone", holds["left"])
	// Each held count asked VictoriaMetrics to stop at the wait, and the query's second part was never asked.
	asked := map[string]int{}
	for _, r := range read.Requests() {
		for name := range holds {
			if strings.Contains(r.Query.Get("query"), name+"{") {
				asked[name]++
				if r.Query.Get("timeout") != "100ms" {
					t.Errorf("a count asked with timeout=%q; want 100ms", r.Query.Get("timeout"))
				}
			}
		}
	}
	if asked["held"] != 1 || asked["left"] != 1 {
		t.Errorf("counts asked of the held queries: %v; want each one's first part alone", asked)
	}
}

// TestCountPanicRecovered: a count runs on a goroutine of its own; a panic there is the count's error, not the end of
// the process.
func TestCountPanicRecovered(t *testing.T) {
	read := vmtest.NewRecorder(t)
	read.Respond(func(w http.ResponseWriter, r *http.Request) { answerCount(w, r, "10") })
	g := measuring(t, read, Config{Auth: byHeader{"dev": restricted(t, tenant.ID{}, "dev")}})
	err := g.counting(context.Background(), restricted(t, tenant.ID{}, "dev"), func(context.Context) error { panic("a bug") })
	if err == nil || !strings.Contains(err.Error(), "internal error while counting") {
		t.Errorf("a count that panicked: %v", err)
	}
	// Its slots were given back: the team counts again.
	if err := g.counting(context.Background(), restricted(t, tenant.ID{}, "dev"), func(context.Context) error { return nil }); err != nil {
		t.Errorf("the next count: %v", err)
	}
}
