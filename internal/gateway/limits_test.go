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
			if tc.third != "" {
				go func() { _, _, _, _ = get(t, gw.URL+"/api/v1/query?query=third", "X-Tenant", tc.third) }()
				if q := <-arrived; q != "third" {
					t.Fatalf("upstream got %q; want the other tenant's request", q)
				}
			}
			release()
			if c := <-first; c != http.StatusNoContent {
				t.Fatalf("first request: %d", c)
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
