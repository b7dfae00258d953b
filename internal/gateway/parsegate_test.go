package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// teamAuth is an Authenticator double that gives each request the Access its X-Team header names.
type teamAuth map[string]*auth.Access

func (t teamAuth) Authenticate(r *http.Request) (*auth.Access, error) {
	return t[r.Header.Get("X-Team")], nil
}

func teamAccess(t testing.TB, team string) *auth.Access {
	t.Helper()
	e, err := enforce.New([]enforce.Label{{Name: "team", Value: team}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &auth.Access{Mode: auth.ModeRead, Enforcer: e, Subject: team}
}

// TestParseSlotsPerUnit: while one team's parse slots are busy, its new queries wait and are refused with 429
// after -maxQueueDuration, forwarding nothing; its queries seen before, and every other team's, pass at once; and
// a refusal is not remembered as the query's outcome, with or without query limits.
func TestParseSlotsPerUnit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "querylimits.yaml")
	if err := os.WriteFile(path, []byte("limits:\n  - max_query_lookback: 30d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ql, err := querylimits.New(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, withLimits := range []bool{false, true} {
		t.Run(map[bool]string{false: "rewrite_only", true: "query_limits"}[withLimits], func(t *testing.T) {
			dev, ops := teamAccess(t, "dev"), teamAccess(t, "ops")
			read := vmtest.NewRecorder(t)
			ru, _ := url.Parse(read.URL)
			cfg := Config{ReadURL: ru, WriteURL: ru, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
				Auth: teamAuth{"dev": dev, "ops": ops}, Limits: Limits{MaxQueueDuration: 50 * time.Millisecond}}
			if withLimits {
				cfg.QueryLimits = ql
			}
			g, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Distinct per subtest: the caches are the process's.
			q := func(name string) string {
				return "/api/v1/query?query=" + url.QueryEscape("sum(rate("+name+"_"+t.Name()[len("TestParseSlotsPerUnit/"):]+"[5m]))")
			}
			get := func(team, target string) (int, string) {
				rec := serve(g, http.MethodGet, target, "X-Team", team)
				return rec.Code, rec.Body.String()
			}
			if code, body := get("dev", q("seen")); code != http.StatusOK {
				t.Fatalf("dev's first query: %d %s", code, body)
			}

			// dev's parse slots, all busy, as while its other requests parse.
			ts := g.conc.ref(unit{restriction: dev.Enforcer.Fingerprint()})
			for range cap(ts.parse) {
				ts.parse <- struct{}{}
			}
			read.Requests() // forgets dev's first query
			before := rejectedParse.Get()
			start := time.Now()
			code, body := get("dev", q("new"))
			if code != http.StatusTooManyRequests || !strings.Contains(body, "parse slots") || !strings.Contains(body, "-maxQueueDuration=50ms") {
				t.Fatalf("dev's new query while its parse slots are busy: %d %s; want 429 naming the parse slots", code, body)
			}
			if waited := time.Since(start); waited < 50*time.Millisecond {
				t.Errorf("refused after %s; want after the queue's 50ms", waited)
			}
			if got := rejectedParse.Get() - before; got != 1 {
				t.Errorf(`vmgateway_concurrency_rejected_total{scope="parse"} grew by %d; want 1`, got)
			}
			if code, body := get("dev", q("seen")); code != http.StatusOK {
				t.Errorf("dev's query seen before, while its parse slots are busy: %d %s; want 200 without a slot", code, body)
			}
			if code, body := get("ops", q("new")); code != http.StatusOK {
				t.Errorf("ops' new query while dev's parse slots are busy: %d %s; want 200", code, body)
			}
			if n := len(read.Requests()); n != 2 {
				t.Errorf("%d requests forwarded; want 2 (dev's seen query, ops' new one)", n)
			}

			// Freed, the refused query parses as any other: its refusal was not kept as its outcome.
			for range cap(ts.parse) {
				<-ts.parse
			}
			g.conc.unref(ts)
			if code, body := get("dev", q("new")); code != http.StatusOK {
				t.Fatalf("dev's new query once its slots are free: %d %s", code, body)
			}
			if got := read.Requests(); len(got) != 1 || !strings.Contains(got[0].Query.Get("query"), `team="dev"`) {
				t.Errorf("forwarded %+v; want dev's query, rewritten for team dev", got)
			}
			if n := busyTenants(g.conc); n != 0 {
				t.Errorf("%d units still hold slots after every request", n)
			}
		})
	}
}

// TestParseGateReleases: a request holds one parse slot however many queries it parses, gives it back when its
// args are done, and a client gone while it waits is not kept waiting.
func TestParseGateReleases(t *testing.T) {
	c := newConcurrency(0, 0, time.Hour)
	dev := teamAccess(t, "dev")
	var a, b parseGate
	a.init(c, context.Background(), dev.Tenant, dev.Enforcer, 0)
	for range 3 {
		if err := a.Enter(); err != nil {
			t.Fatal(err)
		}
	}
	ts := c.tenants[unit{restriction: dev.Enforcer.Fingerprint()}]
	if ts == nil || len(ts.parse) != 1 {
		t.Fatalf("after three parses of one request: %v; want one slot taken", ts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.init(c, ctx, dev.Tenant, dev.Enforcer, 0)
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() { defer wg.Done(); err = b.Enter() }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	wg.Wait()
	if err != errGoneInQueue {
		t.Fatalf("a request whose client went away while waiting: %v; want %v", err, errGoneInQueue)
	}
	if again := b.Enter(); again != err {
		t.Errorf("a refused request asked again: %v; want its first refusal", again)
	}
	b.release()
	a.release()
	if len(ts.parse) != 0 || busyTenants(c) != 0 {
		t.Fatalf("after both released: %d parse slots taken, %d busy units", len(ts.parse), busyTenants(c))
	}
}

// vectorUpstream answers every request with an empty vector, from memory.
type vectorUpstream struct{}

func (vectorUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	body := `{"status":"success","data":{"resultType":"vector","result":[]}}`
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}, nil
}

// floodHosts is a Grafana variable's regexp of 400 hosts: a few milliseconds to parse, light in memory.
var floodHosts = func() string {
	names := make([]string, 400)
	for i := range names {
		names[i] = fmt.Sprintf("host-%03d.example.com", i)
	}
	return strings.Join(names, "|")
}()

// BenchmarkParseFlood is what one team's flood of new queries does to another team: while team dev sends, on 16
// connections, new queries that each cost milliseconds to parse (a regexp of 400 hosts, made new by a counter), team ops
// sends new queries of its own one after another; ns/op is the time ops waits for each. "gated" is the gateway as it
// is, "ungated" the same with parse slots as many as the flood's connections, as before they existed, and "alone"
// ops without the flood. Run:
// go test -run '^$' -bench ParseFlood ./internal/gateway/
func BenchmarkParseFlood(b *testing.B) {
	for _, bc := range []struct {
		name   string
		parses int
		flood  int
	}{{"alone", parseSlots(), 0}, {"gated", parseSlots(), 16}, {"ungated", 1 << 20, 16}} {
		b.Run(bc.name, func(b *testing.B) {
			dev, ops := teamAccess(b, "dev"), teamAccess(b, "ops")
			u, _ := url.Parse("http://upstream")
			g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: vectorUpstream{}, WriteTransport: vectorUpstream{},
				Auth: teamAuth{"dev": dev, "ops": ops}, Limits: Limits{MaxQueueDuration: time.Second}})
			if err != nil {
				b.Fatal(err)
			}
			g.conc.parses = bc.parses
			var seq atomic.Int64
			newQuery := func(team, shape string) string {
				return "/api/v1/query?query=" + url.QueryEscape(fmt.Sprintf(shape, seq.Add(1), b.Name()))
			}
			heavy := `up{a=~"` + floodHosts + `|%d%s"}`
			if code := serve(g, http.MethodGet, newQuery("dev", heavy), "X-Team", "dev").Code; code != http.StatusOK {
				b.Fatalf("dev's heavy query: %d; want it under every budget", code)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var floodOK, floodRefused atomic.Int64
			for range bc.flood {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						switch serve(g, http.MethodGet, newQuery("dev", heavy), "X-Team", "dev").Code {
						case http.StatusOK:
							floodOK.Add(1)
						case http.StatusTooManyRequests:
							floodRefused.Add(1)
						default:
							b.Error("dev's flood got an unexpected answer")
						}
					}
				}()
			}
			time.Sleep(100 * time.Millisecond)
			b.ResetTimer()
			for b.Loop() {
				if rec := serve(g, http.MethodGet, newQuery("ops", `sum(rate(ops_%d_%s[5m])) by (job)`), "X-Team", "ops"); rec.Code != http.StatusOK {
					b.Fatalf("ops' query beside dev's flood: %d %s", rec.Code, rec.Body)
				}
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(floodOK.Load()), "flood-parsed")
			b.ReportMetric(float64(floodRefused.Load()), "flood-refused")
		})
	}
}

// busyParses takes every parse slot of u, as while its other requests parse, and returns what gives them back.
func busyParses(t testing.TB, g *Gateway, u unit) func() {
	t.Helper()
	ts := g.conc.ref(u)
	for range cap(ts.parse) {
		ts.parse <- struct{}{}
	}
	return func() {
		for range cap(ts.parse) {
			<-ts.parse
		}
		g.conc.unref(ts)
	}
}

var parseSeq atomic.Int64

// TestEveryParseTakesASlot: whatever arg carries it (query, match[], an unrestricted token's extra_filters in a
// cluster), a selector or query the unit has not sent before waits for its unit's parse slot, and is refused with
// 429 while they stay busy; sent before, it passes without one. The answers are the same with query limits on.
func TestEveryParseTakesASlot(t *testing.T) {
	t3 := &auth.Access{Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}
	dev := teamAccess(t, "dev")
	fresh := func(format string) string { return url.QueryEscape(fmt.Sprintf(format, parseSeq.Add(1))) }
	for _, tc := range []struct {
		name    string
		cluster bool
		a       *auth.Access
		u       unit
		target  func() string
	}{
		{"cluster, unrestricted, extra_filters[]", true, t3, unit{tenant: t3.Tenant}, func() string {
			return "/select/3/prometheus/api/v1/query?query=up&extra_filters[]=" + fresh(`{a=~"x%d.*"}`) + "&extra_filters=" + fresh(`{b="%d"}`)
		}},
		{"cluster, unrestricted, match[]", true, t3, unit{tenant: t3.Tenant}, func() string {
			return "/select/3/prometheus/api/v1/series?match[]=" + fresh(`up{a=~"x%d.*"}`)
		}},
		{"cluster, unrestricted, query", true, t3, unit{tenant: t3.Tenant}, func() string {
			return "/select/3/prometheus/api/v1/query?query=" + fresh(`up{a=~"x%d.*"}`)
		}},
		{"restricted, match[]", false, dev, unit{restriction: dev.Enforcer.Fingerprint()}, func() string {
			return "/api/v1/label/job/values?match[]=" + fresh(`up{a=~"x%d.*"}`)
		}},
		{"restricted, query", false, dev, unit{restriction: dev.Enforcer.Fingerprint()}, func() string {
			return "/api/v1/query?query=" + fresh(`up{a=~"x%d.*"}`)
		}},
	} {
		for _, limits := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/limits=%v", tc.name, limits), func(t *testing.T) {
				u, _ := url.Parse("http://upstream")
				cfg := Config{ReadURL: u, WriteURL: u, ReadTransport: vectorUpstream{}, WriteTransport: vectorUpstream{},
					Cluster: tc.cluster, Auth: fixedAuth{a: tc.a}, Limits: Limits{MaxQueueDuration: 20 * time.Millisecond}}
				if limits {
					cfg.QueryLimits = testQueryLimits(t)
				}
				g, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				seen := tc.target()
				if rec := serve(g, http.MethodGet, seen, "X-Token", "x"); rec.Code != http.StatusOK {
					t.Fatalf("first sight: %d %s", rec.Code, rec.Body)
				}
				free := busyParses(t, g, tc.u)
				defer free()
				if rec := serve(g, http.MethodGet, tc.target(), "X-Token", "x"); rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "parse slots") {
					t.Errorf("new args while the unit's parse slots are busy: %d %s; want 429 naming the parse slots", rec.Code, rec.Body)
				}
				if rec := serve(g, http.MethodGet, seen, "X-Token", "x"); rec.Code != http.StatusOK {
					t.Errorf("args sent before, while the unit's parse slots are busy: %d %s; want 200 without a slot", rec.Code, rec.Body)
				}
			})
		}
	}
}

func testQueryLimits(t testing.TB) QueryLimiter {
	path := filepath.Join(t.TempDir(), "querylimits.yaml")
	if err := os.WriteFile(path, []byte("limits:\n  - max_query_lookback: 30d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ql, err := querylimits.New(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ql
}

// twoTenants is a cluster gateway with tokens t3 and t4 of tenants 3 and 4, with the test query limits or none.
func twoTenants(t *testing.T, limits bool) *Gateway {
	t.Helper()
	tokens := byToken{"t3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}, "t4": {Tenant: tenant.ID{AccountID: 4}, Mode: auth.ModeFull}}
	u, _ := url.Parse("http://upstream")
	cfg := Config{ReadURL: u, WriteURL: u, ReadTransport: vectorUpstream{}, WriteTransport: vectorUpstream{},
		Cluster: true, Auth: tokens, AuthHeader: "X-Token", Limits: Limits{MaxQueueDuration: 20 * time.Millisecond}}
	if limits {
		cfg.QueryLimits = testQueryLimits(t)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestParseCachesKeptApartPerUnit: whether a query waits for a parse slot says whether the unit's caches hold it;
// a tenant whose own slots are busy must not learn that way what another tenant or team asked. Tenant 3 probes the
// query tenant 4 sent, and one nobody sent: both wait alike.
func TestParseCachesKeptApartPerUnit(t *testing.T) {
	for _, limits := range []bool{false, true} {
		t.Run(fmt.Sprintf("limits=%v", limits), func(t *testing.T) {
			g := twoTenants(t, limits)
			n := parseSeq.Add(1)
			secret := fmt.Sprintf("/api/v1/query?query=%s", url.QueryEscape(fmt.Sprintf(`sum(rate(req{customer="acme-%d"}[5m]))`, n)))
			other := fmt.Sprintf("/api/v1/query?query=%s", url.QueryEscape(fmt.Sprintf(`sum(rate(req{customer="globex-%d"}[5m]))`, n)))
			if rec := serve(g, http.MethodGet, secret, "X-Token", "t4"); rec.Code != http.StatusOK {
				t.Fatalf("tenant 4: %d %s", rec.Code, rec.Body)
			}
			free := busyParses(t, g, unit{tenant: tenant.ID{AccountID: 3}})
			a := serve(g, http.MethodGet, secret, "X-Token", "t3").Code
			b := serve(g, http.MethodGet, other, "X-Token", "t3").Code
			free()
			if a != http.StatusTooManyRequests || b != http.StatusTooManyRequests {
				t.Errorf("tenant 3 probing with its slots busy: tenant 4's query %d, a query nobody sent %d; want 429 for both", a, b)
			}
			if rec := serve(g, http.MethodGet, secret, "X-Token", "t4"); rec.Code != http.StatusOK {
				t.Errorf("tenant 4 again: %d", rec.Code)
			}
		})
	}
}

// TestParseGateChurn: many units (past minSweep, so idle ones are swept) parse new queries and selectors at once,
// one unit much busier than the rest, some clients going away while they wait; afterwards no unit holds a slot or
// a reference. Run with -race.
func TestParseGateChurn(t *testing.T) {
	tokens := teamAuth{}
	for i := range 1500 {
		tokens[fmt.Sprint(i)] = teamAccess(t, fmt.Sprint("team", i))
	}
	u, _ := url.Parse("http://upstream")
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: vectorUpstream{}, WriteTransport: vectorUpstream{}, Auth: tokens,
		QueryLimits: testQueryLimits(t), Limits: Limits{MaxQueueDuration: 5 * time.Millisecond, MaxConcurrentPerTenantRequests: 2, MaxConcurrentRequests: 4}})
	if err != nil {
		t.Fatal(err)
	}
	// A Grafana variable's regexp: costly to parse, light in memory.
	var names []string
	for i := range 100 {
		names = append(names, fmt.Sprintf("host-%03d.example.com", i))
	}
	hosts := strings.Join(names, "|")
	var wg sync.WaitGroup
	var codes [600]atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				team := fmt.Sprint((w*400 + i) % 1500)
				if i%3 == 0 {
					team = "7"
				}
				target := "/api/v1/query?query=" + url.QueryEscape(fmt.Sprintf(`up{a=~"%s|%d"}`, hosts, parseSeq.Add(1)))
				if i%2 == 0 {
					target = "/api/v1/series?match[]=" + url.QueryEscape(fmt.Sprintf(`up{a=~"b%d"}`, parseSeq.Add(1)))
				}
				req := httptest.NewRequest(http.MethodGet, target, nil)
				req.Header.Set("X-Team", team)
				if i%5 == 0 {
					ctx, cancel := context.WithTimeout(req.Context(), time.Millisecond)
					req = req.WithContext(ctx)
					defer cancel()
				}
				rec := httptest.NewRecorder()
				g.ServeHTTP(rec, req)
				codes[rec.Code].Add(1)
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusOK].Load() == 0 {
		t.Errorf("no request answered: %d refused with 429, %d gone", codes[429].Load(), codes[499].Load())
	}
	for code := range codes {
		if n := codes[code].Load(); n > 0 && code != 200 && code != 429 && code != 499 {
			t.Errorf("%d requests answered %d; want 200, 429 or 499", n, code)
		}
	}
	if n := busyTenants(g.conc); n != 0 {
		t.Errorf("%d units still hold slots or references", n)
	}
}

// TestParseCachesSurviveAnotherUnitsFlood: a tenant sending new queries without end (here 36 MiB of them, twice
// the caches' budget) pushes none of another tenant's queries out of the caches, so that tenant's dashboard still
// passes without a parse slot, as before the flood.
func TestParseCachesSurviveAnotherUnitsFlood(t *testing.T) {
	for _, limits := range []bool{false, true} {
		t.Run(fmt.Sprintf("limits=%v", limits), func(t *testing.T) {
			g := twoTenants(t, limits)
			n := parseSeq.Add(1)
			var dashboard []string
			for i := range 20 {
				q := fmt.Sprintf(`sum(rate(http_requests_total{job="api-%d-%d"}[5m])) by (instance)`, n, i)
				dashboard = append(dashboard, "/api/v1/query?query="+url.QueryEscape(q))
			}
			for _, target := range dashboard {
				if rec := serve(g, http.MethodGet, target, "X-Token", "t4"); rec.Code != http.StatusOK {
					t.Fatalf("tenant 4: %d %s", rec.Code, rec.Body)
				}
			}
			// Near the longest query the caches keep, so the flood is quick to send.
			pad := strings.Repeat("x", 15<<10)
			for i := range 1200 {
				target := "/api/v1/query?query=" + url.QueryEscape(fmt.Sprintf(`up{a="%s-%d-%d"}`, pad, n, i))
				if rec := serve(g, http.MethodGet, target, "X-Token", "t3"); rec.Code != http.StatusOK {
					t.Fatalf("tenant 3's query %d: %d %s", i, rec.Code, rec.Body)
				}
			}
			free := busyParses(t, g, unit{tenant: tenant.ID{AccountID: 4}})
			defer free()
			for i, target := range dashboard {
				if rec := serve(g, http.MethodGet, target, "X-Token", "t4"); rec.Code != http.StatusOK {
					t.Fatalf("tenant 4's query %d after tenant 3's flood, its parse slots busy: %d %s; want it cached", i, rec.Code, rec.Body)
				}
			}
		})
	}
}

// TestQueueBoundsParseAndRequestWaits: a request that waits for a parse slot and then for a request slot waits
// -maxQueueDuration in all, not once for each.
func TestQueueBoundsParseAndRequestWaits(t *testing.T) {
	const queue, parseWait = time.Second, 700 * time.Millisecond
	tokens := byToken{"t3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}}
	u, _ := url.Parse("http://upstream")
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: vectorUpstream{}, WriteTransport: vectorUpstream{}, Cluster: true,
		Auth: tokens, AuthHeader: "X-Token", Limits: Limits{MaxQueueDuration: queue, MaxConcurrentPerTenantRequests: 1}})
	if err != nil {
		t.Fatal(err)
	}
	un := unit{tenant: tenant.ID{AccountID: 3}}
	// The unit's one request slot stays taken; its parse slots are freed after parseWait.
	ts := g.conc.ref(un)
	ts.sem <- struct{}{}
	defer func() {
		<-ts.sem
		g.conc.unref(ts)
	}()
	free := busyParses(t, g, un)
	timer := time.AfterFunc(parseWait, free)
	defer timer.Stop()
	start := time.Now()
	rec := serve(g, http.MethodGet, "/api/v1/query?query="+url.QueryEscape(fmt.Sprintf(`up{a="%d"}`, parseSeq.Add(1))), "X-Token", "t3")
	d := time.Since(start)
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "for tenant 3:0") {
		t.Fatalf("got %d %s; want 429 for the tenant's request slots", rec.Code, rec.Body)
	}
	// Before, the wait for the request slot began anew: parseWait + queue (1.7s).
	if d < parseWait || d > queue+parseWait/2 {
		t.Errorf("the request waited %s for its slots; want about -maxQueueDuration (%s), not %s", d, queue, parseWait+queue)
	}
}
