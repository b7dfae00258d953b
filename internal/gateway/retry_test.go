package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var (
	errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	errReset   = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
)

// headerTimeout is what http.Transport returns when -read.timeout passes without response headers.
type headerTimeout struct{}

func (headerTimeout) Error() string   { return "net/http: timeout awaiting response headers" }
func (headerTimeout) Timeout() bool   { return true }
func (headerTimeout) Temporary() bool { return true }

func answer(code int, r *http.Request) *http.Response {
	return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("answer")), Header: http.Header{}, Request: r}
}

// VictoriaMetrics' answers to a query that ran out of its time (the timeout arg or -search.maxQueryDuration): the
// cluster's vmselect v1.150, and a single-node's, which echoes the query first.
const (
	timeoutCluster = `{"status":"error","errorType":"503","error":"error occured during search: cannot fetch query results from vmstorage ` +
		`nodes: cannot perform search on vmstorage 127.0.0.1:46403: request timeout reached: 0.001 seconds (elapsed 0.987 seconds); the ` +
		"timeout can be adjusted with `-search.maxQueryDuration` command-line flag\"}"
	timeoutSingle = `error when executing query="sum(rate(x[5m]))" on the time range (start=1, end=2, step=1): cannot execute query: ` +
		`timeout exceeded during query execution: 0.001 seconds (elapsed 0.991 seconds)`
)

// textAnswer is an answer of body, gzipped when zipped.
func textAnswer(code int, body string, zipped bool, r *http.Request) *http.Response {
	resp := &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}, Request: r}
	if zipped {
		resp.Body = io.NopCloser(bytes.NewReader(gzipped(body)))
		resp.Header.Set("Content-Encoding", "gzip")
	}
	return resp
}

// TestQueryTimeoutKeepsBackendSound: VictoriaMetrics' 503 for a query out of its time (which the client's timeout arg
// sets) neither marks the backend broken nor sends the query to another, and reaches the client whole; another 503
// does both.
func TestQueryTimeoutKeepsBackendSound(t *testing.T) {
	for _, tc := range []struct {
		body       string
		zipped     bool
		wantBroken bool
	}{
		{timeoutCluster, false, false},
		{timeoutSingle, true, false},
		{"Service Unavailable", false, true},
		// An outage's 503 that echoes a selector holding the words (a review): the words are not where the deadline's
		// message ends.
		{`{"status":"error","errorType":"503","error":"error when searching for series match[]=x{a=\"request timeout reached: 1 seconds ` +
			`(elapsed 1 seconds)\"}: cannot fetch data from vmstorage nodes: cannot dial 127.0.0.1:8401: connection refused"}`, false, true},
	} {
		p, log := scriptedBalancer(t, LeastLoaded, 2, []int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
			return textAnswer(503, tc.body, tc.zipped, r), nil
		})
		resp, err := p.RoundTrip(replayable("query=up&timeout=1ms"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if tc.zipped {
			got, _ = gunzipped(got, 1<<20)
		}
		first := p.set.backends()[0]
		if (*log)[0].host != "a" {
			first = p.set.backends()[1]
		}
		broken := first.brokenUntil.Load() != 0
		if wantTried := map[bool]int{false: 1, true: 2}[tc.wantBroken]; len(*log) != wantTried || broken != tc.wantBroken || string(got) != tc.body {
			t.Errorf("%.40q: tried %s, first backend broken %v, answer %.60q; want %d tried, broken %v, the answer whole",
				tc.body, hosts(*log), broken, got, wantTried, tc.wantBroken)
		}
	}
}

// attempt is what one backend was sent.
type attempt struct {
	host, path, auth string
}

// scriptedBalancer balances over backends named a, b, c...; each attempt is recorded and answered by script, which
// may read the body first.
func scriptedBalancer(t *testing.T, policy Policy, n int, codes []int, script func(host string, r *http.Request, try int) (*http.Response, error)) (*balancer, *[]attempt) {
	t.Helper()
	bs := make([]*backend, n)
	for i := range bs {
		u, _ := url.Parse(fmt.Sprintf("http://u%d:p%d@%c.%s.test/pre%d", i, i, 'a'+i, t.Name(), i))
		if i == n-1 {
			u.User = nil
		}
		bs[i] = newBackend("read", u, "")
	}
	set := newBackendSet("read", policy, 3*time.Second, bs)
	var mu sync.Mutex
	var log []attempt
	return newBalancer(set, rtFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		try := len(log)
		log = append(log, attempt{host: strings.SplitN(r.URL.Host, ".", 2)[0], path: r.URL.Path, auth: r.Header.Get("Authorization")})
		mu.Unlock()
		return script(r.URL.Host[:1], r, try)
	}), codes), &log
}

func drainBody(r *http.Request) string {
	if r.Body == nil {
		return ""
	}
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

func hosts(as []attempt) string {
	var s []string
	for _, a := range as {
		s = append(s, a.host)
	}
	return strings.Join(s, ",")
}

// replayable is a read request as the gateway forwards it: its form body parsed and kept, GetBody set.
func replayable(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://client/select/0/prometheus/api/v1/query", strings.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	r.URL.Host, r.URL.Scheme = "", ""
	return r
}

// streamed is a write request: its body comes from the client as it is sent, and cannot be sent twice.
func streamed(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://client/insert/0/prometheus/api/v1/write", io.NopCloser(strings.NewReader(body)))
	r.URL.Host, r.URL.Scheme = "", ""
	return r
}

// TestRetryDecisions: which failures go to another backend, for which requests, and what the client gets.
func TestRetryDecisions(t *testing.T) {
	type result struct {
		tried string
		code  int
		err   string
	}
	cases := []struct {
		name   string
		req    func() *http.Request
		codes  []int
		script func(host string, r *http.Request, try int) (*http.Response, error)
		want   result
	}{
		{"read: refused, then answered", func() *http.Request { return replayable("query=up") },
			nil, func(h string, r *http.Request, try int) (*http.Response, error) {
				if try == 0 {
					return nil, errRefused
				}
				if b := drainBody(r); b != "query=up" {
					return nil, fmt.Errorf("the retry got body %q", b)
				}
				return answer(200, r), nil
			}, result{tried: "2", code: 200}},
		{"read: connection reset mid-request is retried", func() *http.Request { return replayable("query=up") },
			nil, func(h string, r *http.Request, try int) (*http.Response, error) {
				drainBody(r)
				if try == 0 {
					return nil, errReset
				}
				return answer(200, r), nil
			}, result{tried: "2", code: 200}},
		{"read: response header timeout is not retried", func() *http.Request { return replayable("query=up") },
			nil, func(h string, r *http.Request, try int) (*http.Response, error) {
				return nil, headerTimeout{}
			}, result{tried: "1", err: "timeout awaiting response headers"}},
		{"read: retry status goes elsewhere", func() *http.Request { return replayable("query=up") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				drainBody(r)
				if try == 0 {
					return answer(503, r), nil
				}
				return answer(200, r), nil
			}, result{tried: "2", code: 200}},
		{"read: VictoriaMetrics' 503 for a query out of its time is the answer", func() *http.Request { return replayable("query=up") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				return textAnswer(503, timeoutCluster, false, r), nil
			}, result{tried: "1", code: 503}},
		{"read: the same, gzipped by a single-node after the query it echoes", func() *http.Request { return replayable("query=up") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				return textAnswer(503, timeoutSingle, true, r), nil
			}, result{tried: "1", code: 503}},
		{"read: a status not listed is the answer", func() *http.Request { return replayable("query=up") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				return answer(500, r), nil
			}, result{tried: "1", code: 500}},
		{"read: every backend answers a retry status: the last answer goes back", func() *http.Request { return replayable("q") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				return answer(503, r), nil
			}, result{tried: "3", code: 503}},
		{"read: every backend refuses", func() *http.Request { return replayable("q") },
			nil, func(h string, r *http.Request, try int) (*http.Response, error) {
				return nil, errRefused
			}, result{tried: "3", err: "connection refused"}},
		{"GET without body: refused then answered", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/select/0/prometheus/api/v1/labels", nil)
			r.Body = nil
			return r
		}, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
			if try == 0 {
				return nil, errRefused
			}
			return answer(200, r), nil
		}, result{tried: "2", code: 200}},
		{"write: refused before any body byte: retried with the whole body", func() *http.Request { return streamed("series 1") },
			nil, func(h string, r *http.Request, try int) (*http.Response, error) {
				if try == 0 {
					return nil, errRefused
				}
				if b := drainBody(r); b != "series 1" {
					return nil, fmt.Errorf("the retry got body %q", b)
				}
				return answer(204, r), nil
			}, result{tried: "2", code: 204}},
		{"write: broken after the body started: not retried", func() *http.Request { return streamed("series 1") },
			nil, func(h string, r *http.Request, try int) (*http.Response, error) {
				r.Body.Read(make([]byte, 1))
				return nil, errReset
			}, result{tried: "1", err: "connection reset"}},
		{"write: retry status after the body was read: the answer goes back", func() *http.Request { return streamed("series 1") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				drainBody(r)
				return answer(503, r), nil
			}, result{tried: "1", code: 503}},
		{"write: retry status before the body was read: retried", func() *http.Request { return streamed("series 1") },
			[]int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
				if try == 0 {
					return answer(503, r), nil
				}
				if b := drainBody(r); b != "series 1" {
					return nil, fmt.Errorf("the retry got body %q", b)
				}
				return answer(204, r), nil
			}, result{tried: "2", code: 204}},
		{"admin: a body-less POST whose connection broke is not sent again", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/snapshot/create", nil)
			r.Body = nil
			return r.WithContext(context.WithValue(r.Context(), changesDataKey{}, true))
		}, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
			return nil, errReset
		}, result{tried: "1", err: "connection reset"}},
		{"admin: a body-less POST refused at connect goes elsewhere", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/snapshot/create", nil)
			r.Body = nil
			return r.WithContext(context.WithValue(r.Context(), changesDataKey{}, true))
		}, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
			if try == 0 {
				return nil, errRefused
			}
			return answer(200, r), nil
		}, result{tried: "2", code: 200}},
		{"write: broken before a body byte was read: retried", func() *http.Request {
			r := streamed("series 1")
			return r.WithContext(context.WithValue(r.Context(), changesDataKey{}, true))
		}, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
			if try == 0 {
				return nil, errReset
			}
			if b := drainBody(r); b != "series 1" {
				return nil, fmt.Errorf("the retry got body %q", b)
			}
			return answer(204, r), nil
		}, result{tried: "2", code: 204}},
		{"client gone: not retried", func() *http.Request {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return replayable("q").WithContext(ctx)
		}, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
			return nil, context.Canceled
		}, result{tried: "1", err: "context canceled"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, log := scriptedBalancer(t, LeastLoaded, 3, c.codes, c.script)
			resp, err := p.RoundTrip(c.req())
			got := result{tried: fmt.Sprint(len(*log))}
			if err != nil {
				got.err = err.Error()
			} else {
				got.code = resp.StatusCode
				resp.Body.Close()
			}
			if got.tried != c.want.tried || got.code != c.want.code || (c.want.err == "") != (got.err == "") || !strings.Contains(got.err, c.want.err) {
				t.Fatalf("got %+v, want %+v (backends tried: %s)", got, c.want, hosts(*log))
			}
			seen := map[string]bool{}
			for _, a := range *log {
				if seen[a.host] {
					t.Fatalf("backend %s tried twice for one request: %s", a.host, hosts(*log))
				}
				seen[a.host] = true
			}
			for _, b := range p.set.backends() {
				if n := b.inflight.Load(); n != 0 {
					t.Fatalf("backend %s has %d in flight after the request ended", b.name, n)
				}
			}
		})
	}
}

// TestAttemptsCarryTheirBackendsPrefixAndCredentials: each URL's own path prefix and credentials, and none of
// another's on a retry.
func TestAttemptsCarryTheirBackendsPrefixAndCredentials(t *testing.T) {
	p, log := scriptedBalancer(t, FirstAvailable, 3, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
		if try < 2 {
			return nil, errRefused
		}
		return answer(200, r), nil
	})
	req := replayable("q")
	req.Header.Set("Authorization", "Bearer client-token")
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := []attempt{
		{host: "a", path: "/pre0/select/0/prometheus/api/v1/query", auth: "Basic dTA6cDA="},
		{host: "b", path: "/pre1/select/0/prometheus/api/v1/query", auth: "Basic dTE6cDE="},
		{host: "c", path: "/pre2/select/0/prometheus/api/v1/query", auth: ""},
	}
	if fmt.Sprint(*log) != fmt.Sprint(want) {
		t.Fatalf("attempts:\n%v\nwant\n%v", *log, want)
	}
}

// TestAllBrokenStillTriesOne: with every backend marked broken the request goes to one, and its failure names how
// many were tried, not which.
func TestAllBrokenStillTriesOne(t *testing.T) {
	p, log := scriptedBalancer(t, LeastLoaded, 2, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
		return nil, errRefused
	})
	for _, b := range p.set.backends() {
		p.set.markBroken(b, "test")
	}
	_, err := p.RoundTrip(replayable("q"))
	var te *triedError
	if !errors.As(err, &te) || te.tried != 1 || te.total != 2 || len(*log) != 1 {
		t.Fatalf("err %v, %d attempts; want one attempt, a triedError of 1 of 2", err, len(*log))
	}
	who, detail := (&upstream{kind: "read", set: p.set}).describe(err)
	msg := who + ": " + detail
	if !strings.Contains(msg, "1 of 2 read backends tried") || strings.Contains(msg, ".test") || strings.Contains(msg, "p0") {
		t.Fatalf("client message %q: want the count of backends tried and no address or credential", msg)
	}
}

// TestBalancerUnderFlappingBackends: many reads and writes at once while two of three backends go down and up
// (one refusing connections, one answering 503); the third stays up, so every request gets its answer, and the
// in-flight counts end at zero (go test -race).
func TestBalancerUnderFlappingBackends(t *testing.T) {
	var down [2]atomic.Bool
	p, _ := scriptedBalancer(t, LeastLoaded, 3, []int{503}, func(h string, r *http.Request, try int) (*http.Response, error) {
		i := int(h[0] - 'a')
		if i < 2 && down[i].Load() {
			if i == 1 {
				return answer(503, r), nil
			}
			return nil, errRefused
		}
		drainBody(r)
		return answer(200, r), nil
	})
	p.set.failTimeout = int64(100 * time.Microsecond)
	stop := make(chan struct{})
	var flaps sync.WaitGroup
	flaps.Add(1)
	go func() {
		defer flaps.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Microsecond):
				i := rand.IntN(2)
				down[i].Store(!down[i].Load())
			}
		}
	}()
	var wg sync.WaitGroup
	var failed, retried atomic.Int64
	var firstErr atomic.Value
	before := p.retries.Get()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				req := replayable("query=up")
				if rand.IntN(2) == 0 {
					req = streamed("series 1")
				}
				resp, err := p.RoundTrip(req)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("status %d", resp.StatusCode))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	flaps.Wait()
	retried.Store(int64(p.retries.Get() - before))
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 4000 requests failed while one backend was up all along (first: %v)", n, firstErr.Load())
	}
	if retried.Load() == 0 {
		t.Fatal("no request was retried: the backends did not flap under the requests")
	}
	for _, b := range p.set.backends() {
		if n := b.inflight.Load(); n != 0 {
			t.Fatalf("backend %s has %d in flight after all requests ended", b.name, n)
		}
	}
	t.Logf("4000 requests, %d retries", retried.Load())
}

// TestUnreadBody: a body lent to an attempt is reusable only if the attempt never started reading it, and a retired
// one cannot be read by a late transport goroutine.
func TestUnreadBody(t *testing.T) {
	src := io.NopCloser(bytes.NewReader([]byte("abc")))
	g := &unreadBody{rc: src}
	if !g.retire() {
		t.Fatal("an untouched body must be reusable")
	}
	if n, err := g.Read(make([]byte, 1)); n != 0 || !errors.Is(err, errBodyRetired) {
		t.Fatalf("read after retire: %d, %v", n, err)
	}
	g2 := &unreadBody{rc: src}
	g2.Read(make([]byte, 1))
	if g2.retire() {
		t.Fatal("a body read from must not be sent again")
	}
}

// TestWriteBrokenMidBodyTellsTheClientToResend: the client learns its write went nowhere else and must be resent.
func TestWriteBrokenMidBodyTellsTheClientToResend(t *testing.T) {
	p, _ := scriptedBalancer(t, LeastLoaded, 2, nil, func(h string, r *http.Request, try int) (*http.Response, error) {
		r.Body.Read(make([]byte, 1))
		return nil, errReset
	})
	_, err := p.RoundTrip(streamed("series 1"))
	var te *triedError
	if !errors.As(err, &te) || !te.bodySent {
		t.Fatalf("err %v: want a triedError saying the body was sent", err)
	}
	who, _ := (&upstream{kind: "write", set: p.set}).describe(err)
	if !strings.Contains(who, "1 of 2 write backends tried; part of the body had been sent") {
		t.Fatalf("client message %q", who)
	}
}
