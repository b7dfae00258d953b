package ratelimit

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// clock is a settable clock for the gate's counts.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(sec int64) {
	c.mu.Lock()
	c.t = time.Unix(sec, 0).Add(250 * time.Millisecond)
	c.mu.Unlock()
}

// clockGate is a gate whose counts follow a clock set to t0.
func clockGate(t testing.TB, limits string, cfg Config) (*Gate, *clock) {
	g := newTestGate(t, limits, cfg)
	c := &clock{}
	c.set(t0)
	g.now = c.now
	return g, c
}

func asRejection(t *testing.T, err error) *limitError {
	t.Helper()
	var r *limitError
	if !errors.As(err, &r) {
		t.Fatalf("got %v, want a *limitError", err)
	}
	return r
}

// admitN sends n reads of a and returns how many passed.
func admitN(g *Gate, a *auth.Access, n int) int {
	passed := 0
	for i := 0; i < n; i++ {
		if g.check(a, rt(route.Read)) == nil {
			passed++
		}
	}
	return passed
}

func TestAdmitSlidingWindows(t *testing.T) {
	g, clk := clockGate(t, "limits:\n  - {type: queries, value: 5}\n  - {type: queries, value: 8, resolution: hour}\n", Config{})
	a := access(tid(1, 0))
	if n := admitN(g, a, 5); n != 5 {
		t.Fatalf("%d of 5 passed", n)
	}
	r := asRejection(t, g.check(a, rt(route.Read)))
	if r.Limit.Resolution != limitfile.Minute || r.Usage != 5 || r.RetryAfter() != 61*time.Second || r.HTTPStatus() != 429 {
		t.Errorf("rejection %+v retry %s", r, r.RetryAfter())
	}
	const msg = "rate limit exceeded for tenant 1:0: limit type=queries resolution=minute value=5 (the default limit for all tenants), " +
		"usage seen 5 in the last minute counted by this gateway; retry after 1m1s"
	if r.Error() != msg {
		t.Errorf("message %q\nwant    %q", r.Error(), msg)
	}
	// Rejected requests are not counted: once the minute has passed, the hour holds 5 and admits 3 more.
	clk.set(t0 + 61)
	if n := admitN(g, a, 4); n != 3 {
		t.Fatalf("a minute later %d of 4 passed, want 3 (the hour limit of 8)", n)
	}
	r = asRejection(t, g.check(a, rt(route.Read)))
	// The first minute's 5 leave the hour at t0+61min.
	if r.Limit.Resolution != limitfile.Hour || r.Usage != 8 || r.RetryAfter() != 3599*time.Second {
		t.Errorf("hour rejection: %s usage %v retry %s", r.Limit.Resolution, r.Usage, r.RetryAfter())
	}
	clk.set(t0 + 3660)
	if n := admitN(g, a, 6); n != 5 {
		t.Errorf("an hour later %d of 6 passed, want 5", n)
	}
	// Another tenant has counts of its own.
	if n := admitN(g, access(tid(2, 0)), 6); n != 5 {
		t.Errorf("tenant 2:0: %d of 6 passed", n)
	}
	if got := g.metrics.rejected[meter{limitfile.Queries, limitfile.Minute}].Get(); got != 3 {
		t.Errorf("rejected_total{queries,minute} = %d, want 3", got)
	}
}

func TestAdmitDatasourceAndLocal(t *testing.T) {
	g, _ := clockGate(t, "limits:\n  - {type: queries, value: 50}\n", Config{})
	g.setUsage(map[usageKey]float64{{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 45, {tid(2, 0), meter{limitfile.Queries, limitfile.Minute}}: 50})
	// The larger figure decides: the datasource's 45 is below 50, so the gate's own count decides.
	if n := admitN(g, access(tid(1, 0)), 60); n != 50 {
		t.Errorf("tenant 1:0: %d passed, want 50", n)
	}
	if sl, ok := shown(t, g, tid(1, 0), limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 50}); !ok || sl.Usage != 50 || sl.Source != fromLocal {
		t.Errorf("tenant 1:0 on the status page: %+v (listed %v), want usage 50 counted locally", sl, ok)
	}
	if err := g.check(access(tid(1, 0)), rt(route.Read)); err == nil || !strings.Contains(err.Error(), "counted by this gateway") {
		t.Errorf("tenant 1:0 over its limit: %v, want a rejection by the gate's own count", err)
	}
	// The datasource's 50 rejects at once, and says so.
	r := asRejection(t, g.check(access(tid(2, 0)), rt(route.Read)))
	if r.Usage != 50 || strings.Contains(r.Error(), "counted by") {
		t.Errorf("tenant 2:0: %v", r)
	}
	// The status page counts nothing: tenant 3:0, never admitted, stays off it.
	for i := 0; i < 10; i++ {
		getStatus(t, g, "?tenant=3:0")
	}
	if sl, ok := shown(t, g, tid(3, 0), limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 50}); ok {
		t.Errorf("the status page counted: tenant 3:0 %+v", sl)
	}
}

func TestAdmitPerKey(t *testing.T) {
	g, clk := clockGate(t, `
limits:
  - {type: queries, value: 6}
  - {type: queries, value: 2, key: claim:sub}
  - {type: queries, value: 3, key: label:team, account_id: 7}
`, Config{})
	tok := func(id tenant.ID, sub string) *auth.Access {
		return &auth.Access{Tenant: id, Claims: map[string]any{"sub": sub}}
	}
	alice, bob := tok(tid(1, 0), "alice"), tok(tid(1, 0), "bob")
	if n := admitN(g, alice, 3); n != 2 {
		t.Fatalf("alice: %d of 3 passed, want 2", n)
	}
	r := asRejection(t, g.check(alice, rt(route.Read)))
	if want := `rate limit exceeded for tenant 1:0 and claim:sub="alice": limit type=queries resolution=minute value=2 key=claim:sub ` +
		`(the default limit for all tenants), usage seen 2 in the last minute counted by this gateway; retry after 1m1s`; r.Error() != want || r.KeyValue != "alice" {
		t.Errorf("message %q\nwant    %q", r.Error(), want)
	}
	if n := admitN(g, bob, 3); n != 2 {
		t.Errorf("bob: %d of 3 passed, want 2", n)
	}
	// Tokens without a sub share one count.
	if n := admitN(g, &auth.Access{Tenant: tid(1, 0)}, 2) + admitN(g, tok(tid(1, 0), ""), 2); n != 2 {
		t.Errorf("tokens without sub: %d of 4 passed, want 2", n)
	}
	// The tenant's own count holds only what passed: 6, its limit.
	if n := admitN(g, tok(tid(1, 0), "carol"), 1); n != 0 {
		t.Errorf("carol passed the tenant's limit of 6")
	}
	if sl, ok := shown(t, g, tid(1, 0), limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 6}); !ok || sl.Usage != 6 {
		t.Errorf("tenant count: %+v (listed %v), want 6 against the tenant's limit", sl, ok)
	}
	// The same sub in another tenant is another count.
	if n := admitN(g, tok(tid(2, 0), "alice"), 3); n != 2 {
		t.Errorf("alice in tenant 2:0: %d passed, want 2", n)
	}
	// A label key, for one tenant only; a token without the label shares the "" count.
	enf, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.set(t0 + 200)
	dev := &auth.Access{Tenant: tid(7, 0), Enforcer: enf, Claims: map[string]any{"sub": "x"}}
	if n := admitN(g, dev, 5); n != 2 {
		t.Errorf("team dev: %d passed, want 2 (the sub limit comes first)", n)
	}
	for i := 0; i < 3; i++ {
		dev.Claims = map[string]any{"sub": string(rune('a' + i))}
		_ = g.check(dev, rt(route.Read))
	}
	r = asRejection(t, g.check(&auth.Access{Tenant: tid(7, 0), Enforcer: enf, Claims: map[string]any{"sub": "z"}}, rt(route.Read)))
	if r.Limit.Key != (limitfile.Key{Label: "team"}) || r.KeyValue != "dev" || r.Usage != 3 {
		t.Errorf("team limit: %v", r)
	}
}

func TestAdmitHeaders(t *testing.T) {
	dev, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const limits = "limits:\n  - {type: queries, value: 3}\n  - {type: queries, value: 100, resolution: hour}\n  - {type: queries, value: 2, key: claim:sub, account_id: 5}\n  - {type: rows_inserted, value: 10}\n"
	type want map[string]string
	for _, tc := range []struct {
		mode    Headers
		a       *auth.Access
		kind    route.Kind
		n       int // requests before the one whose headers are checked
		usage   float64
		headers want
	}{
		{HeadersNone, access(tid(1, 0)), route.Read, 0, 0, want{}},
		{HeadersDraft03, access(tid(1, 0)), route.Read, 0, 0, want{
			"RateLimit-Limit": "3, 3;w=60, 100;w=3600", "RateLimit-Remaining": "2", "RateLimit-Reset": "61"}},
		{HeadersIETF, access(tid(1, 0)), route.Read, 1, 0, want{
			"RateLimit-Policy": `"queries-minute";q=3;w=60, "queries-hour";q=100;w=3600`, "RateLimit": `"queries-minute";r=1;t=61`}},
		// Rejected by the gate's count: the rejecting limit, nothing left, reset = Retry-After.
		{HeadersBoth, access(tid(1, 0)), route.Read, 3, 0, want{
			"RateLimit-Limit": "3, 3;w=60, 100;w=3600", "RateLimit-Remaining": "0", "RateLimit-Reset": "61",
			"RateLimit-Policy": `"queries-minute";q=3;w=60, "queries-hour";q=100;w=3600`, "RateLimit": `"queries-minute";r=0;t=61`}},
		// Rejected by the datasource's figure.
		{HeadersDraft03, access(tid(2, 0)), route.Read, 0, 7, want{
			"RateLimit-Limit": "3, 3;w=60, 100;w=3600", "RateLimit-Remaining": "0", "RateLimit-Reset": "48"}},
		// Per token: the caller's own partition key.
		{HeadersIETF, &auth.Access{Tenant: tid(5, 0), Claims: map[string]any{"sub": "alice"}}, route.Read, 1, 0, want{
			"RateLimit-Policy": `"queries-minute-claim:sub";q=2;w=60;pk=:YWxpY2U=:, "queries-minute";q=3;w=60, "queries-hour";q=100;w=3600`,
			"RateLimit":        `"queries-minute-claim:sub";r=0;t=61;pk=:YWxpY2U=:`}},
		// Writes are limited in rows, which the drafts have no unit for.
		{HeadersBoth, access(tid(1, 0)), route.Write, 0, 0, want{}},
		// A team narrowed within its tenant shares the tenant-wide counts with the other teams there: they are not
		// shown to it, before the limit or at its refusal (its 429 and Retry-After say that much).
		{HeadersBoth, &auth.Access{Tenant: tid(1, 0), Enforcer: dev}, route.Read, 0, 0, want{}},
		{HeadersBoth, &auth.Access{Tenant: tid(1, 0), Enforcer: dev}, route.Read, 3, 0, want{}},
		// Its own count under a key is; the one count of the callers without the key's claim is not.
		{HeadersIETF, &auth.Access{Tenant: tid(5, 0), Enforcer: dev, Claims: map[string]any{"sub": "alice"}}, route.Read, 1, 0, want{
			"RateLimit-Policy": `"queries-minute-claim:sub";q=2;w=60;pk=:YWxpY2U=:`,
			"RateLimit":        `"queries-minute-claim:sub";r=0;t=61;pk=:YWxpY2U=:`}},
		{HeadersIETF, &auth.Access{Tenant: tid(5, 0), Enforcer: dev}, route.Read, 1, 0, want{}},
	} {
		g, _ := clockGate(t, limits, Config{Headers: tc.mode})
		if tc.usage != 0 {
			g.setUsage(map[usageKey]float64{{tc.a.Tenant, meter{limitfile.Queries, limitfile.Minute}}: tc.usage})
		}
		admitN(g, tc.a, tc.n)
		h := http.Header{}
		_ = g.Admit(tc.a, rt(tc.kind), h)
		if len(h) != len(tc.headers) {
			t.Errorf("%s, %d before: headers %v, want %v", tc.mode, tc.n, h, tc.headers)
			continue
		}
		for name, v := range tc.headers {
			if got := h.Get(name); got != v {
				t.Errorf("%s, %d before: %s: %q, want %q", tc.mode, tc.n, name, got, v)
			}
		}
	}
}

func TestParseHeaders(t *testing.T) {
	for s, want := range map[string]Headers{"none": HeadersNone, "draft03": HeadersDraft03, "IETF": HeadersIETF, "both": HeadersBoth} {
		if h, err := ParseHeaders(s); err != nil || h != want {
			t.Errorf("%q: %v %v", s, h, err)
		}
	}
	if _, err := ParseHeaders("draft-07"); err == nil || !strings.Contains(err.Error(), "want none, draft03") {
		t.Errorf("got %v", err)
	}
}

func TestDryRun(t *testing.T) {
	var logs vmtest.Buffer
	restore := captureLogs(&logs)
	defer restore()
	g, _ := clockGate(t, "limits:\n  - {type: queries, value: 5}\n  - {type: queries, value: 1, account_id: 2}\n", Config{DryRun: true, Headers: HeadersDraft03})
	g.setUsage(map[usageKey]float64{{tid(2, 0), meter{limitfile.Queries, limitfile.Minute}}: 10})
	h := http.Header{}
	for i := 0; i < 20; i++ {
		if err := g.Admit(access(tid(1, 0)), rt(route.Read), h); err != nil {
			t.Fatalf("dry run rejected request %d: %v", i, err)
		}
		if err := g.check(access(tid(2, 0)), rt(route.Read)); err != nil {
			t.Fatalf("dry run rejected tenant 2:0: %v", err)
		}
	}
	// What would have been rejected is counted; nothing is counted as rejected.
	if got := g.metrics.dryRunRejected[meter{limitfile.Queries, limitfile.Minute}].Get(); got != 15+20 {
		t.Errorf("dryrun_would_reject_total = %d, want 35", got)
	}
	if got := g.metrics.rejected[meter{limitfile.Queries, limitfile.Minute}].Get(); got != 0 {
		t.Errorf("rejected_total = %d under dry run", got)
	}
	// The headers tell the truth, and the log says what would have happened, once per interval.
	if h.Get("RateLimit-Remaining") != "0" {
		t.Errorf("headers %v", h)
	}
	if n := strings.Count(logs.String(), "would have rejected"); n != 1 || !strings.Contains(logs.String(), "rate limit exceeded for tenant 2:0") {
		t.Errorf("%d dry-run log lines:\n%s", n, logs.String())
	}

	// Fail closed under dry run: counted as a stale would-be rejection.
	g2, _ := clockGate(t, "limits:\n  - {type: queries, value: 5}\n", Config{DryRun: true, FailClosed: true, MaxUsageAge: 10 * time.Second})
	g2.markStale(time.Now().Add(time.Minute))
	if err := g2.check(access(tid(1, 0)), rt(route.Read)); err != nil || g2.metrics.dryRunStale.Get() != 1 {
		t.Errorf("stale under dry run: %v, counted %d", err, g2.metrics.dryRunStale.Get())
	}
}

// captureLogs sends the default logger's output to w until restore is called.
func captureLogs(w *vmtest.Buffer) (restore func()) {
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(w, nil)))
	return func() { slog.SetDefault(old) }
}

// TestSharedRefusalHidesUsage: a team narrowed within its tenant, refused by a count it shares with the tenant's
// other teams, is told which limit is used up, not the usage seen, which is the other teams' too; the tenant-wide
// caller, and the team under its own key, are told both.
func TestSharedRefusalHidesUsage(t *testing.T) {
	dev, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := clockGate(t, "limits:\n  - {type: queries, value: 3}\n  - {type: queries, value: 2, key: label:team, account_id: 5}\n", Config{})
	g.setUsage(map[usageKey]float64{{tid(1, 0), meter{limitfile.Queries, limitfile.Minute}}: 4321})
	for _, tc := range []struct {
		name      string
		a         *auth.Access
		n         int
		usageSeen bool
	}{
		{"narrowed, tenant-wide limit", &auth.Access{Tenant: tid(1, 0), Enforcer: dev}, 0, false},
		{"whole tenant", access(tid(1, 0)), 0, true},
		{"narrowed, its own key", &auth.Access{Tenant: tid(5, 0), Enforcer: dev}, 2, true},
	} {
		admitN(g, tc.a, tc.n)
		err := g.Admit(tc.a, rt(route.Read), nil)
		var st interface{ HTTPStatus() int }
		if !errors.As(err, &st) || st.HTTPStatus() != http.StatusTooManyRequests {
			t.Fatalf("%s: got %v, want a 429", tc.name, err)
		}
		msg := err.Error()
		if strings.Contains(msg, "usage seen") != tc.usageSeen || strings.Contains(msg, "4321") && !tc.usageSeen {
			t.Errorf("%s: %q; want the usage seen told: %v", tc.name, msg, tc.usageSeen)
		}
		if !strings.Contains(msg, "type=queries resolution=minute") || !strings.Contains(msg, "retry after") {
			t.Errorf("%s: %q does not name the limit and the wait", tc.name, msg)
		}
		// Used up and held by queries in flight read the same to a narrowed team: the difference would tell it
		// whether the other teams have queries in flight (an attacker's review).
		if shared := !tc.usageSeen; shared != strings.Contains(msg, "is used up or held by the queries in flight of all who share it") {
			t.Errorf("%s: %q", tc.name, msg)
		}
	}
}
