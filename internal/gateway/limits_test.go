package gateway

import (
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
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// headerAuth is an Authenticator double: X-Tenant names the tenant, X-Team, when set, restricts the token to
// team=<value>, and X-Mode: read makes it a read token, as a verified token's claims would.
type headerAuth struct{}

func (headerAuth) Authenticate(r *http.Request) (*auth.Access, error) {
	a := &auth.Access{Mode: auth.ModeFull}
	if r.Header.Get("X-Mode") == "read" {
		a.Mode = auth.ModeRead
	}
	if s := r.Header.Get("X-Tenant"); s != "" {
		id, err := tenant.Parse(s)
		if err != nil {
			return nil, err
		}
		a.Tenant = id
	}
	if team := r.Header.Get("X-Team"); team != "" {
		e, err := enforce.New([]enforce.Label{{Name: "team", Value: team}}, nil)
		if err != nil {
			return nil, err
		}
		a.Enforcer = e
	}
	return a, nil
}

// recordingUpstream records the path, query and body of every request that reaches it.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen = append(u.seen, r.URL.RequestURI()+" "+string(b))
		u.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

// chunked hides a body's length, so it goes out with Transfer-Encoding: chunked.
type chunked struct{ io.Reader }

// TestClientLimits: query args over -search.maxQueryLen get 400 and read bodies over -maxReadBodySize 413, with a
// JSON error naming the flag, in the URL and in form bodies, of known length or chunked, for restricted and
// unrestricted tokens, and none of them reaches the upstream; writes are never limited.
func TestClientLimits(t *testing.T) {
	const maxQuery, maxBody = 1024, 8192
	up := newRecordingUpstream(t)
	gw := serveGateway(t, up.URL, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxQueryLen: maxQuery, MaxReadBodySize: maxBody}
	})

	long := "sum(rate(" + strings.Repeat("x", maxQuery) + "[5m]))"
	okQuery := "up{job=" + `"` + strings.Repeat("j", maxQuery-20) + `"}`
	manyArgs := "query=up" + strings.Repeat("&step=15", maxBody/10) // longer than maxQuery, each arg short
	tooBig := "query=up&pad=" + strings.Repeat("p", maxBody)
	form := "application/x-www-form-urlencoded"

	for _, tc := range []struct {
		name, method, path, ctype string
		body                      string
		chunked                   bool
		status                    int
		msg                       string // in the error; for 2xx, what the upstream must see
	}{
		{"query in the URL", "GET", "/api/v1/query?query=" + url.QueryEscape(long), "", "", false, 400, "the query arg in the URL is 1039 bytes long; at most 1024 are accepted (-search.maxQueryLen)"},
		{"match[] in the URL", "GET", "/api/v1/series?match[]=" + url.QueryEscape(long), "", "", false, 400, "match[] arg in the URL"},
		{"match in the URL (export)", "GET", "/api/v1/export?match=" + url.QueryEscape(long), "", "", false, 400, "match arg in the URL"},
		{"query just within, escaped longer", "GET", "/api/v1/query?query=" + url.QueryEscape(okQuery), "", "", false, 204, "query=up%7Bjob"},
		{"other long args pass", "GET", "/api/v1/query?query=up&x=" + strings.Repeat("a", 2*maxQuery), "", "", false, 204, "x=aaa"},
		{"query in a form body", "POST", "/api/v1/query", form, "query=" + url.QueryEscape(long), false, 400, "the query arg in the request body is 1039 bytes"},
		{"query in a chunked form body", "POST", "/api/v1/query_range", form, "start=1&query=" + url.QueryEscape(long), true, 400, "query arg in the request body"},
		{"match[] in a form body", "POST", "/api/v1/series", form, "match%5B%5D=" + url.QueryEscape(long), false, 400, "match[] arg in the request body"},
		{"long form of short args", "POST", "/api/v1/query", form, manyArgs, false, 204, manyArgs[8:]},
		{"long chunked form of short args", "POST", "/api/v1/query", form, manyArgs, true, 204, manyArgs[8:]},
		{"read body too large", "POST", "/api/v1/query", form, tooBig, false, 413, "the request body is 8205 bytes; read requests may carry at most 8192 (-maxReadBodySize)"},
		{"chunked read body too large", "POST", "/api/v1/query", form, tooBig, true, 413, "more than 8192 bytes"},
		{"chunked non-form read body too large", "POST", "/api/v1/labels", "multipart/form-data; boundary=x", tooBig, true, 413, "-maxReadBodySize"},
		{"admin body too large", "POST", "/api/v1/admin/tsdb/delete_series", form, "match%5B%5D=up&" + tooBig, false, 413, "-maxReadBodySize"},
		{"write body is never limited", "POST", "/api/v1/import/prometheus", "text/plain", strings.Repeat("w 1\n", maxBody), false, 204, strings.Repeat("w 1\n", 10)},
		{"chunked write body is never limited", "POST", "/api/v1/import/prometheus", "text/plain", strings.Repeat("w 1\n", maxBody), true, 204, strings.Repeat("w 1\n", 10)},
	} {
		for _, team := range []string{"", "dev"} {
			name := tc.name
			if team != "" {
				name += " (restricted token)"
			}
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = chunked{body}
				}
			}
			req, _ := http.NewRequest(tc.method, gw.URL+tc.path, body)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			if team != "" {
				req.Header.Set("X-Team", team)
			}
			code, _, e, raw := send(t, req)
			seen := up.take()
			if code != tc.status {
				t.Errorf("%s: status %d, want %d: %s", name, code, tc.status, raw)
				continue
			}
			if code/100 == 2 {
				if len(seen) != 1 || !strings.Contains(seen[0], tc.msg) {
					t.Errorf("%s: the upstream saw %.300q; want one request with %.80q", name, seen, tc.msg)
				}
				continue
			}
			if e.Status != "error" || !strings.Contains(e.Error, tc.msg) {
				t.Errorf("%s: error %s; want a JSON error with %q", name, raw, tc.msg)
			}
			if len(seen) != 0 {
				t.Errorf("%s: refused, yet the upstream saw %.200q", name, seen)
			}
		}
	}
}

// blockingUpstream holds every request until released, and says when one arrives.
func blockingUpstream(t *testing.T) (url string, arrived <-chan string, release func()) {
	t.Helper()
	arr := make(chan string, 100)
	rel := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arr <- r.URL.Query().Get("query")
		select {
		case <-rel:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(func() { release(); srv.Close() })
	return srv.URL, arr, release
}

// TestConcurrencyLimitsThroughThePipeline: beyond -maxConcurrentRequests, and beyond a tenant's
// -maxConcurrentPerTenantRequests while other tenants still get through, the client gets 429 with Retry-After and
// a JSON error, and the request never reaches the upstream.
func TestConcurrencyLimitsThroughThePipeline(t *testing.T) {
	for _, tc := range []struct {
		name              string
		global, perTenant int
		second            string // tenant of the request sent while the first is in flight
		third             string // tenant of a request that must still pass, "" for none
		msg               string
	}{
		{"global", 1, 0, "2", "", "all -maxConcurrentRequests=1 are in flight"},
		{"tenant", 10, 1, "1", "2", "too many concurrent requests for tenant 1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upURL, arrived, release := blockingUpstream(t)
			gw := serveGateway(t, upURL, tlsclient.Options{}, func(c *Config) {
				c.Auth = headerAuth{}
				c.Cluster = true // tenant-bound tokens: single-node mode refuses them
				c.Limits = Limits{MaxConcurrentRequests: tc.global, MaxConcurrentPerTenantRequests: tc.perTenant, MaxQueueDuration: 0}
			})
			first := make(chan int, 1)
			go func() {
				code, _, _, _ := get(t, gw.URL+"/api/v1/query?query=first", "X-Tenant", "1")
				first <- code
			}()
			select {
			case q := <-arrived:
				if q != "first" {
					t.Fatalf("upstream got %q first", q)
				}
			case c := <-first:
				t.Fatalf("the first request was answered %d without reaching the upstream", c)
			}
			code, h, e, body := get(t, gw.URL+"/api/v1/query?query=second", "X-Tenant", tc.second)
			if code != http.StatusTooManyRequests || h.Get("Retry-After") != "1" || e.ErrorType != "too_many_requests" || !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("second request: %d Retry-After %q %s; want 429, Retry-After 1 and %q", code, h.Get("Retry-After"), body, tc.msg)
			}
			third := make(chan int, 1)
			if tc.third != "" {
				go func() {
					code, _, _, _ := get(t, gw.URL+"/api/v1/query?query=third", "X-Tenant", tc.third)
					third <- code
				}()
				if q := <-arrived; q != "third" {
					t.Fatalf("upstream got %q; want the other tenant's request", q)
				}
			}
			release()
			if c := <-first; c != http.StatusNoContent {
				t.Fatalf("first request: %d", c)
			}
			// Answered before the test ends, whose cleanup closes the shared transport's idle connections.
			if tc.third != "" {
				if c := <-third; c != http.StatusNoContent {
					t.Fatalf("the other tenant's request: %d", c)
				}
			}
			select {
			case q := <-arrived:
				t.Fatalf("a refused request reached the upstream: %q", q)
			default:
			}
			// The slots are free again.
			if code, _, _, body := get(t, gw.URL+"/api/v1/query?query=after", "X-Tenant", "1"); code != http.StatusNoContent {
				t.Fatalf("after release: %d %s", code, body)
			}
		})
	}
}

// TestQueuedRequestGetsTheFreedSlot: with a queue, a request that finds every slot taken waits and is served as
// soon as one frees up, instead of being refused.
func TestQueuedRequestGetsTheFreedSlot(t *testing.T) {
	upURL, arrived, release := blockingUpstream(t)
	gw := serveGateway(t, upURL, tlsclient.Options{}, func(c *Config) {
		c.Limits = Limits{MaxConcurrentRequests: 1, MaxQueueDuration: time.Hour}
	})
	codes := make(chan int, 2)
	for _, q := range []string{"first", "second"} {
		go func() {
			code, _, _, _ := get(t, gw.URL+"/api/v1/query?query="+q)
			codes <- code
		}()
		if q == "first" {
			<-arrived
		}
	}
	waitFor(t, func() bool { return queued.Load() == 1 }, "the second request to queue")
	release()
	<-arrived
	for i := 0; i < 2; i++ {
		if c := <-codes; c != http.StatusNoContent {
			t.Fatalf("request %d: %d", i, c)
		}
	}
}

// TestCheckStep: a step past a year is refused, in the URL or the form; what the gateway cannot read goes on to
// VictoriaMetrics, which refuses it.
func TestCheckStep(t *testing.T) {
	for _, tc := range []struct {
		step string
		bad  bool
	}{{"1y", false}, {"60", false}, {"5m", false}, {"1.5", false}, {"garbage", false}, {"-1h", false},
		{"100y", true}, {"31536001", true}, {"366d", true}, {"3e9", true}} {
		err := checkStep(url.Values{"step": {tc.step}}, nil)
		if (err != nil) != tc.bad {
			t.Errorf("step=%s: %v; want refused=%v", tc.step, err, tc.bad)
		}
		if err2 := checkStep(nil, url.Values{"step": {tc.step}}); (err2 != nil) != tc.bad {
			t.Errorf("step=%s in the form: %v; want refused=%v", tc.step, err2, tc.bad)
		}
	}
}

// TestCheckPoints: a range query past the points limit is refused, counted as Prometheus counts its 11,000
// ((end-start)/step), from the widest start and end and the finest step of every value in the URL and the form, with
// VictoriaMetrics' defaults for absent ones; an arg the gateway cannot read is refused, one VictoriaMetrics refuses
// (a step of zero) goes on to it.
func TestCheckPoints(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name      string
		url, form url.Values
		bad       bool
	}{
		{"Grafana's finest step, 11000 intervals", url.Values{"start": {"1699989000"}, "end": {"1700000000"}, "step": {"1"}}, nil, false},
		{"one interval more", url.Values{"start": {"1699988999"}, "end": {"1700000000"}, "step": {"1"}}, nil, true},
		{"29000 steps", url.Values{"start": {"1699971000"}, "end": {"1700000000"}, "step": {"1s"}}, nil, true},
		{"30 days at Grafana's safe step", url.Values{"start": {"1697408000"}, "end": {"1700000000"}, "step": {"236"}}, nil, false},
		{"30 days at 1m", url.Values{"start": {"1697408000"}, "end": {"1700000000"}, "step": {"60"}}, nil, true},
		{"defaults: the last 5 minutes at 5m", nil, nil, false},
		{"defaults at 10ms", url.Values{"step": {"0.01"}}, nil, true},
		{"defaults at 100ms", url.Values{"step": {"0.1"}}, nil, false},
		{"RFC3339 and durations", url.Values{"start": {"2023-11-14T00:00:00Z"}, "end": {"now"}, "step": {"5s"}}, nil, true},
		{"relative start", url.Values{"start": {"now-1h"}, "step": {"1s"}}, nil, false},
		{"relative start of 4h", url.Values{"start": {"now-4h"}, "step": {"1s"}}, nil, true},
		{"in the form", nil, url.Values{"start": {"1699971000"}, "end": {"1700000000"}, "step": {"1"}}, true},
		{"start in the form, step in the URL", url.Values{"step": {"1"}}, url.Values{"start": {"1699971000"}, "end": {"1700000000"}}, true},
		{"a second, finer step in the URL", url.Values{"step": {"60", "1"}, "start": {"1699971000"}, "end": {"1700000000"}}, nil, true},
		{"a second, earlier start in the URL", url.Values{"start": {"1699999000", "1699971000"}, "end": {"1700000000"}, "step": {"1"}}, nil, true},
		{"a start past the end: 5 minutes from the start", url.Values{"start": {"1700000000"}, "end": {"1600000000"}, "step": {"1"}}, nil, false},
		{"a start past the end at 10ms", url.Values{"start": {"1700000000"}, "end": {"1600000000"}, "step": {"0.01"}}, nil, true},
		{"the end of time", url.Values{"start": {"0"}, "end": {"9999999999"}, "step": {"1y"}}, nil, false},
		{"Prometheus' max time at 1d", url.Values{"start": {"1699999000"}, "end": {promMaxTime}, "step": {"1d"}}, nil, true},
		{"a step of zero goes to VictoriaMetrics", url.Values{"start": {"1699971000"}, "end": {"1700000000"}, "step": {"0"}}, nil, false},
		{"an unreadable start", url.Values{"start": {"yesterday"}, "step": {"1"}}, nil, true},
		{"an unreadable step", url.Values{"step": {"fast"}}, nil, true},
	} {
		err := checkPoints(tc.url, tc.form, 11000, now)
		if (err != nil) != tc.bad {
			t.Errorf("%s: %v; want refused=%v", tc.name, err, tc.bad)
			continue
		}
		if err != nil {
			if code := httperr.Status(err); code != http.StatusBadRequest {
				t.Errorf("%s: %d %v; want 400", tc.name, code, err)
			}
		}
	}
	if err := checkPoints(url.Values{"start": {"1699971000"}, "end": {"1700000000"}, "step": {"1"}}, nil, 11000, now); err == nil ||
		!strings.Contains(err.Error(), "asks for 29000 points per series") || !strings.Contains(err.Error(), "-search.maxPointsPerTimeseries") {
		t.Errorf("the refusal does not say what was asked and which flag: %v", err)
	}
}

// promMaxTime is the end Prometheus' clients send for "no bound".
const promMaxTime = "292277025-08-18T07:12:54.999999999Z"

// TestCheckCountValuesPoints: count_values is judged by the points per series it is evaluated at: in a subquery,
// the subquery's window plus the range it is evaluated over (a range query's, nested ones within their parents'),
// at the subquery's step or the request's; other subqueries are left to VictoriaMetrics' own bound.
func TestCheckCountValuesPoints(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	window := url.Values{"start": {"1699996400"}, "end": {"1700000000"}, "step": {"60"}} // an hour at 1m
	with := func(vs url.Values, query string) url.Values {
		out := url.Values{"query": {query}}
		for k, v := range vs {
			out[k] = v
		}
		return out
	}
	const cv = `count_values("v", time())`
	for _, tc := range []struct {
		name string
		rt   route.Route
		args url.Values
		bad  bool
	}{
		{"a subquery of 29000 steps", instant, url.Values{"query": {cv + `[29000s:1s]`}}, true},
		{"the same under a function", instant, url.Values{"query": {`count(` + cv + `[29000s:1s])`}}, true},
		{"upper case, under sum", instant, url.Values{"query": {`sum(COUNT_VALUES("v", time()))[29000s:1s]`}}, true},
		{"an escaped name is the enforcer's to refuse (checkCalls)", instant, url.Values{"query": {`count\_values("v", time())[29000s:1s]`}}, false},
		{"10000 s at 1s, and VictoriaMetrics' 5 minutes before", instant, url.Values{"query": {`max_over_time(` + cv + `[10000s:1s])`}}, false},
		{"10700 s at 1s, and the 5 minutes", instant, url.Values{"query": {`max_over_time(` + cv + `[10700s:1s])`}}, true},
		{"a second at 25ms, and the 5 minutes", instant, url.Values{"query": {`count(` + cv + `[1s:25ms])`}, "step": {"1"}}, true},
		{"an implicit subquery without brackets", instant, url.Values{"query": {`max_over_time(` + cv + `)`}, "step": {"0.025"}}, true},
		{"an implicit subquery without brackets, at 1s", instant, url.Values{"query": {`max_over_time(` + cv + `)`}, "step": {"1"}}, false},
		{"the same in a range query of one point", ranged, url.Values{"query": {`max_over_time(` + cv + `)`}, "start": {"1700000000"},
			"end": {"1700000000"}, "step": {"0.025"}}, true},
		{"nested, the 5 minutes twice", instant, url.Values{"query": {`count(max_over_time(` + cv + `[1s:50ms])[1s:1s])`}, "step": {"1"}}, true},
		{"a WITH function under @ end() and an offset", instant,
			url.Values{"query": {`with (f(x) = count_values("v", x)) count(f(time())[1s:25ms] @ end() offset 1h)`}, "step": {"1"}}, true},
		{"one subquery, its window in its own steps (the instant query's own path)", instant, url.Values{"query": {cv + `[12000i:1h]`}}, true},
		{"one subquery, its window in its own steps, within", instant, url.Values{"query": {cv + `[100i:1d]`}}, false},
		{"a day at 5s", instant, url.Values{"query": {`max_over_time(count_values("v", x)[1d:5s])`}}, true},
		{"a day at 5s without count_values", instant, url.Values{"query": {`max_over_time(rate(x[5m])[1d:5s])`}}, false},
		{"30 days at 1m without count_values", instant, url.Values{"query": {`avg_over_time((sum(rate(up[5m])) or vector(1))[30d:1m])`}}, false},
		{"count_values outside the subquery", instant, url.Values{"query": {`count_values("v", max_over_time(time()[29000s:1s]))`}}, false},
		{"at the request's step", instant, url.Values{"query": {`max_over_time(` + cv + `[1d:])`}, "step": {"5"}}, true},
		{"at the default step", instant, url.Values{"query": {`max_over_time(` + cv + `[1d:])`}}, false},
		{"at max_lookback's step", instant, url.Values{"query": {`max_over_time(` + cv + `[1d:])`}, "max_lookback": {"1s"}}, true},
		{"an implicit subquery at the request's step", instant, url.Values{"query": {`max_over_time(` + cv + `[29000s])`}, "step": {"1"}}, true},
		{"an implicit subquery at the default step", instant, url.Values{"query": {`max_over_time(` + cv + `[1d])`}}, false},
		{"a comment before the colon", instant, url.Values{"query": {"max_over_time(" + cv + "[12000s #]\n:1s])"}}, true},
		{"nested: the inner one over the outer's window", instant, url.Values{"query": {`max_over_time(max_over_time(` + cv + `[1h:1m])[1d:1h])`}}, false},
		{"nested: the inner one at 1s", instant, url.Values{"query": {`max_over_time(max_over_time(` + cv + `[1m:1s])[1d:1h])`}}, true},
		{"through a WITH template", instant, url.Values{"query": {`WITH (w = 29000s) ` + cv + `[w:1s]`}}, true},
		{"through a WITH function", instant, url.Values{"query": {`WITH (f(x) = count_values("v", x)) f(time())[29000s:1s]`}}, true},
		{"in steps", instant, url.Values{"query": {`max_over_time(` + cv + `[20000i:1s])`}, "step": {"1"}}, true},
		{"a range query adds its range", ranged, with(window, `max_over_time(`+cv+`[1h:1s])`), false},
		{"a range query adds its range, at 0.5s", ranged, with(window, `max_over_time(`+cv+`[1h:500ms])`), true},
		{"under an @: its window only", ranged, with(url.Values{"start": {"1690000000"}, "end": {"1700000000"}, "step": {"3600"}},
			`max_over_time(`+cv+`[1h:1s] @ 1700000000)`), false},
		{"count_values of a range query itself", ranged, with(window, cv), false},
		{"an offset over count_values is a subquery at the request's step", instant, url.Values{"query": {cv + ` offset 0s`}, "step": {"0.025"}}, true},
		{"an @ over count_values likewise", instant, url.Values{"query": {cv + ` @ 1700000000`}, "step": {"0.02"}}, true},
		{"an offset in a range query of 2000 points", ranged, url.Values{"query": {cv + ` offset 0s`}, "start": {"1699999950"},
			"end": {"1700000000"}, "step": {"0.025"}}, true},
		{"a window Grafana's $__interval left empty", instant, url.Values{"query": {`max_over_time(` + cv + `[$__interval])`}, "step": {"0.02"}}, true},
		{"count_values of a range query at its limit", ranged, url.Values{"query": {`count_values("v", up)`}, "start": {"1699395200"},
			"end": {"1700000000"}, "step": {"54.981818181"}}, false},
		{"two copies of 5000 points: as much as once at 7500", instant, url.Values{"query": {`union(` + strings.Repeat(`max_over_time(`+cv+`[5000s:1s]),`, 2) + `)`}}, false},
		{"eight copies of 5000 points: as much as once at 15000", instant, url.Values{"query": {`union(` + strings.Repeat(`max_over_time(`+cv+`[5000s:1s]),`, 8) + `)`}}, true},
		{"in the form", instant, nil, true},
		{"an unreadable time without count_values is VictoriaMetrics' to refuse", instant, url.Values{"query": {`max_over_time(x[1h:1s])`}, "time": {"yesterday"}}, false},
		{"an unreadable time with count_values", instant, url.Values{"query": {cv + `[1m:1s]`}, "time": {"yesterday"}}, true},
		{"the export API is not judged", route.Route{API: "export", Kind: route.Read, Args: route.MatchArgs},
			url.Values{"query": {cv + `[29000s:1s]`}}, false},
		// count_values_over_time makes a series of each distinct value its windows meet, at most one per second of
		// them (-search.minSampleInterval), each as long as the points: its load is count_values' at the larger.
		{"count_values_over_time over a day at 8s, 1h windows (a review: v1.151 out of memory from one series)", ranged,
			url.Values{"query": {`count(count_values_over_time("v", r1{s="0"}[1h]))`}, "start": {"1699913600"}, "end": {"1700000000"}, "step": {"8"}}, true},
		{"count_values_over_time over two days, instant (a review: 9.5 million series of 60)", instant,
			url.Values{"query": {`count_values_over_time("v", rb[2d])`}}, true},
		{"count_values_over_time over an hour, instant", instant, url.Values{"query": {`count_values_over_time("v", x[1h])`}}, false},
		{"count_values_over_time of 5m windows over an hour at 1m", ranged, with(window, `count_values_over_time("v", x[5m])`), false},
		{"count_values_over_time over a day of a subquery at 1s", instant,
			url.Values{"query": {`count_values_over_time("v", rate(x[5m])[1d:1s])`}}, true},
		{"count_values_over_time over a day of a subquery at 1m", instant,
			url.Values{"query": {`count_values_over_time("v", rate(x[5m])[1d:1m])`}}, false},
	} {
		q, form := tc.args, url.Values(nil)
		if tc.name == "in the form" {
			q, form = url.Values{}, url.Values{"query": {cv + `[29000s:1s]`}}
		}
		err := checkEvaluation(tc.rt, q, form, nil, Limits{MaxPointsPerTimeseries: 11000, MinSampleInterval: time.Second}, now, nil)
		if (err != nil) != tc.bad {
			t.Errorf("%s: %v; want refused=%v", tc.name, err, tc.bad)
			continue
		}
		if err != nil && (httperr.Status(err) != http.StatusBadRequest ||
			!strings.Contains(err.Error(), "-search.maxPointsPerTimeseries") && !strings.Contains(err.Error(), `cannot read time="yesterday"`)) {
			t.Errorf("%s: %d %v; want 400 naming the flag or the arg", tc.name, httperr.Status(err), err)
		}
	}
}

// TestCheckSubqueryWork: a query whose rollups over subqueries read more than -search.maxSubqueryWindowPoints
// subquery points per series (the points each subquery is evaluated at times its window's points) is refused; nested
// subqueries multiply them (80 bytes took v1.151 38 s of CPU per series, an attacker's review), while the SLO and
// dashboard shapes pass.
func TestCheckSubqueryWork(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	instant := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	ranged := route.Route{API: "query_range", Kind: route.Read, Args: route.QueryArg}
	ranges := func(query, start, step string) url.Values {
		return url.Values{"query": {query}, "start": {start}, "end": {"1700000000"}, "step": {step}}
	}
	for _, tc := range []struct {
		name string
		rt   route.Route
		args url.Values
		bad  bool
	}{
		{"the review's nested subqueries: 36,000 points of 36,000 each", instant,
			url.Values{"query": {`max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`}}, true},
		{"the same through a WITH template", instant,
			url.Values{"query": {`with (s(x) = (x)[1h:100ms]) max_over_time(s(quantile_over_time(0.5, s(cpu))))`}}, true},
		{"one of them alone", instant, url.Values{"query": {`quantile_over_time(0.5, (cpu)[1h:100ms])`}}, false},
		{"without a colon: windows over non-selectors, at step=100ms (a review of the first version)", instant,
			url.Values{"query": {`max_over_time(quantile_over_time(0.5, (cpu{inst="i1"}*1)[1h])[1h])`}, "step": {"0.1"}}, true},
		{"the same at the default step", instant,
			url.Values{"query": {`max_over_time(quantile_over_time(0.5, (cpu{inst="i1"}*1)[1h])[1h])`}}, false},
		{"nested under a function and an offset", instant,
			url.Values{"query": {`sum(max_over_time(rate(cpu[5m])[1d:1s] offset 1h)[2d:1m])`}}, true},
		{"the same over one day, whose inner subquery is read at half the points", instant,
			url.Values{"query": {`sum(max_over_time(rate(cpu[5m])[1d:1s] offset 1h)[1d:1m])`}}, false},
		{"a 30-day SLO window at 1m, instant", instant, url.Values{"query": {`avg_over_time((sum(rate(up[5m])) or vector(1))[30d:1m])`}}, false},
		{"a 30-day SLO window at 1m over 30 days at 1h", ranged, ranges(`avg_over_time(rate(up[5m])[30d:1m])`, "1697408000", "3600"), false},
		{"a 30-day SLO window at 1m over 90 days at 15m", ranged, ranges(`avg_over_time(rate(up[5m])[30d:1m])`, "1692224000", "900"), true},
		// Grafana's step on a panel 1,920 pixels or wider (a legitimate user's review: refused at a point each).
		{"a 30-day SLO window at 1m over a day at 30s", ranged, ranges(`avg_over_time(rate(up[5m])[30d:1m])`, "1699913600", "30"), false},
		{"a 30-day SLO window at 1m over two days at 1m", ranged, ranges(`avg_over_time(rate(up[5m])[30d:1m])`, "1699827200", "60"), false},
		{"a day at 15s over a week at 10m", ranged, ranges(`max_over_time(rate(x[5m])[1d:15s])`, "1699395200", "600"), false},
		{"a subquery at the request's step", ranged, ranges(`max_over_time(x[1h:])`, "1699996400", "15"), false},
		{"two nested at the request's step of 1s", instant, url.Values{"query": {`max_over_time(max_over_time(x[1d:])[1d:])`}, "step": {"1"}}, true},
		{"a selector's window is not a subquery", ranged, ranges(`max_over_time(x[30d])`, "1697408000", "60"), false},
		// 1,441 points of 54,000: 7.8×10^7 subquery points, which count_values_over_time takes 28 times as long over as
		// quantile_over_time over sorted values (a review: 21.6 s of v1.151's CPU per series).
		// The rollups that work out several at once weigh two points (a review: 0.3 s of v1.151's CPU per series).
		{"rollup_rate of 18,180-second windows at 1s over 11,000 steps", ranged, ranges(`count(rollup_rate(x[18180s:1s]))`, "1699989000", "1"), true},
		{"max_over_time of the same (0.085 s per series)", ranged, ranges(`count(max_over_time(x[18180s:1s]))`, "1699989000", "1"), false},
		{"max_over_time of 9,090-second windows", ranged, ranges(`count(max_over_time(x[9090s:1s]))`, "1699989000", "1"), false},
		{"rollup_rate of the same", ranged, ranges(`count(rollup_rate(x[9090s:1s]))`, "1699989000", "1"), true},
		{"avg_over_time at 7.8e7 points", ranged, ranges(`avg_over_time((x*1)[15h:1s])`, "1699913600", "60"), false},
		{"count_values_over_time at 7.8e7 points", ranged, ranges(`count_values_over_time("v", (x*1)[15h:1s])`, "1699913600", "60"), true},
		{"quantile_over_time at 7.8e7 points", ranged, ranges(`quantile_over_time(0.5, (x*1)[15h:1s])`, "1699913600", "60"), true},
		{"count_values_over_time over a day at 1s, instant", instant, url.Values{"query": {`count_values_over_time("v", rate(x[5m])[1d:1s])`}}, false},
		{"the export API is not judged", route.Route{API: "export", Kind: route.Read, Args: route.MatchArgs},
			url.Values{"query": {`max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`}}, false},
		// Windows over raw samples, at one per second (-search.minSampleInterval), under the functions that sort or
		// count them: 8 each.
		{"quantile_over_time of day windows over a day at 8s (a review: 3.5 minutes of both cores for 4 series)", ranged,
			ranges(`count(quantile_over_time(0.5, r1{s="0"}[1d]))`, "1699913600", "8"), true},
		{"quantile_over_time of hour windows over a day at 1m", ranged, ranges(`quantile_over_time(0.99, x[1h])`, "1699913600", "60"), false},
		{"quantile_over_time of hour windows over a day at 8s", ranged, ranges(`quantile_over_time(0.99, x[1h])`, "1699913600", "8"), true},
		{"histogram_over_time of 5m windows over a day at 8s", ranged, ranges(`histogram_over_time(x[5m])`, "1699913600", "8"), false},
		{"mad_over_time of day windows over a week at 3h", ranged, ranges(`mad_over_time(x[1d])`, "1699395200", "10800"), false},
		{"mad_over_time of day windows over a week at 1h", ranged, ranges(`mad_over_time(x[1d])`, "1699395200", "3600"), true},
		{"sum_over_time of 30-day windows over a day at 1m: it does not sort", ranged, ranges(`sum_over_time(x[30d])`, "1699913600", "60"), false},
		{"quantile_over_time over a day, instant", instant, url.Values{"query": {`quantile_over_time(0.5, x[1d])`}}, false},
		{"aggr_over_time of three functions that sort or count, day windows over a week at 3h", ranged,
			ranges(`aggr_over_time(("mad_over_time", "median_over_time", "mode_over_time"), x[1d])`, "1699395200", "10800"), true},
		{"aggr_over_time of one, the same", ranged, ranges(`aggr_over_time("mad_over_time", x[1d])`, "1699395200", "10800"), false},
		{"aggr_over_time of cheap functions over 30-day windows", ranged,
			ranges(`aggr_over_time(("min_over_time", "max_over_time"), x[30d])`, "1699913600", "60"), false},
		{"iqr_over_time, which only aggr_over_time names, of hour windows over a day at 8s", ranged,
			ranges(`aggr_over_time("iqr_over_time", x[1h])`, "1699913600", "8"), true},
		// A variance or a fit of every sample weighs an eighth (a later review: 35 s of v1.151's CPU for 4 series).
		{"zscore_over_time of two-day windows over a day at 8s", ranged, ranges(`count(zscore_over_time(r1[2d]))`, "1699913600", "8"), true},
		{"holt_winters of two-day windows over a day at 8s", ranged, ranges(`holt_winters(r1[2d], 0.5, 0.5)`, "1699913600", "8"), true},
		{"aggr_over_time of five such functions, the same", ranged, ranges(
			`aggr_over_time(("zscore_over_time","stddev_over_time","stdvar_over_time","zscore_over_time","stddev_over_time"), r1[2d])`, "1699913600", "8"), true},
		{"stddev_over_time of hour windows over a day at 8s", ranged, ranges(`stddev_over_time(x[1h])`, "1699913600", "8"), false},
		{"holt_winters of day windows over a week at 5m", ranged, ranges(`holt_winters(x[1d], 0.5, 0.5)`, "1699395200", "300"), false},
		{"avg_over_time of 30-day windows over a day at 1m: not counted", ranged, ranges(`avg_over_time(up[30d])`, "1699913600", "60"), false},
		// A rollup function over a selector without a window reads a window of the step (a review: not counted at all).
		{"quantile_over_time without a window at 30d steps over ten years", ranged, ranges(`quantile_over_time(0.99, x)`, "1384640000", "2592000"), true},
		{"quantile_over_time without a window at 1m over a day", ranged, ranges(`quantile_over_time(0.99, x)`, "1699913600", "60"), false},
		{"a weighted window within a subquery at 1m", instant, url.Values{"query": {`max_over_time(median_over_time(x[1h])[1d:1m])`}}, false},
		{"a weighted window within a subquery at 10s", instant, url.Values{"query": {`max_over_time(median_over_time(x[1h])[1d:10s])`}}, true},
	} {
		err := checkEvaluation(tc.rt, tc.args, nil, nil, Limits{MaxSubqueryWindowPoints: 1e8, MinSampleInterval: time.Second}, now, nil)
		if (err != nil) != tc.bad {
			t.Errorf("%s: %v; want refused=%v", tc.name, err, tc.bad)
			continue
		}
		if err != nil && (httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "-search.maxSubqueryWindowPoints")) {
			t.Errorf("%s: %d %v; want 400 naming the flag", tc.name, httperr.Status(err), err)
		}
	}
	// A refusal that the windows over raw samples made tells what the operator may correct; one over subqueries alone
	// does not.
	const hint = "the gateway's operator sets -search.minSampleInterval to the shortest scrape interval"
	for q, want := range map[string]bool{
		`quantile_over_time(0.99, x[1h])`:                                     true,
		`max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`: false,
		`max_over_time(median_over_time(x[1h])[1d:10s])`:                      true,
	} {
		err := checkEvaluation(ranged, ranges(q, "1699913600", "8"), nil, nil, Limits{MaxSubqueryWindowPoints: 1e8, MinSampleInterval: time.Second}, now, nil)
		if err == nil || strings.Contains(err.Error(), hint) != want {
			t.Errorf("%s: %v; want a refusal that names the sample interval: %v", q, err, want)
		}
	}
	// In the form too.
	form := url.Values{"query": {`max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`}}
	if err := checkEvaluation(instant, url.Values{}, form, nil, Limits{MaxSubqueryWindowPoints: 1e8}, now, nil); err == nil {
		t.Error("the review's query in the form was not refused")
	}
}
