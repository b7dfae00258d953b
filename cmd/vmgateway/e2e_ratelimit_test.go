package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Issues 6 and 10 through the real binary: limits from the datasource's per-tenant usage, and the gateway's own
// counts (alone, and shared between replicas through a real redis-server) that cut a burst at the limit before
// the datasource has seen it.

var rlKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// rlPublicKeyFile writes the public half of rlKey for -auth.publicKeyFiles.
func rlPublicKeyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rl-public.pem")
	writePublicKey(t, path, &rlKey().PublicKey)
	return path
}

// rlToken signs an RS256 token for tenant id with the given sub.
func rlToken(t *testing.T, id tenant.ID, sub string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "vm_access": auth.VMAccess{Mode: auth.ModeFull, Tenant: id}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rlKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rlGateway starts a gateway with auth and rate limiting, limits from the YAML given, usage from ds.
func rlGateway(t *testing.T, upstream, ds, limits string, flags ...string) *gw {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "limits.yaml")
	if err := os.WriteFile(cfg, []byte(limits), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-read.url=" + upstream, "-enable.auth",
		"-auth.publicKeyFiles=" + rlPublicKeyFile(t), "-enable.rateLimit", "-ratelimit.config=" + cfg, "-datasource.url=" + ds,
		"-ratelimit.refreshInterval=1s"}
	// -write.url is an array flag: a test's own write upstream replaces the default instead of joining it.
	if !slices.ContainsFunc(flags, func(f string) bool { return strings.HasPrefix(f, "-write.url=") }) {
		base = append(base, "-write.url="+upstream)
	}
	return startGateway(t, append(base, flags...)...)
}

// rlResult is one answer of a burst.
type rlResult struct {
	code   int
	header http.Header
	body   string
}

// burstQueries sends n instant queries at the given concurrency, the i-th to gateways[i%len], and returns the
// answers in order.
func burstQueries(t *testing.T, gateways []*gw, token string, n, concurrency int) []rlResult {
	t.Helper()
	out := make([]rlResult, n)
	errs := make(chan error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				req, _ := http.NewRequest(http.MethodGet, gateways[i%len(gateways)].URL+"/api/v1/query?query=up", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				out[i] = rlResult{resp.StatusCode, resp.Header, string(b)}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("burst request: %s", err)
	}
	return out
}

// tally counts the answers by status.
func tally(rs []rlResult) map[int]int {
	m := map[int]int{}
	for _, r := range rs {
		m[r.code]++
	}
	return m
}

func ok2xx(m map[int]int) int {
	n := 0
	for code, c := range m {
		if code/100 == 2 {
			n += c
		}
	}
	return n
}

const limit50 = "limits:\n  - {type: queries, value: 50}\n  - {type: queries, value: 1000, resolution: hour}\n"

// TestRateLimitBurstOneReplica: 500 queries at concurrency 16 against a limit of 50 a minute, with nothing in the
// datasource: the gateway's own count cuts the burst at 50. The headers match the drafts on both kinds of answer.
func TestRateLimitBurstOneReplica(t *testing.T) {
	vm := vmtest.Start(t)
	g := rlGateway(t, vm.URL, vm.URL, limit50, "-ratelimit.headers=both", "-ratelimit.statusAuthKey=sk")
	token := rlToken(t, tenant.ID{}, "burst")
	rs := burstQueries(t, []*gw{g}, token, 500, 16)
	m := tally(rs)
	t.Logf("one replica: %v", m)
	if n := ok2xx(m); n > 55 || n < 50 || m[429] != 500-n {
		t.Fatalf("answers %v: want at most 55 (and at least 50) 2xx, the rest 429", m)
	}

	// Headers on the first allowed answer (the one with the most left) and on a rejected one; every allowed answer
	// has its own count of what is left.
	var allowed, rejected *rlResult
	left := map[string]bool{}
	remaining := func(r *rlResult) int { n, _ := strconv.Atoi(r.header.Get("RateLimit-Remaining")); return n }
	for i := range rs {
		switch {
		case rs[i].code == 200:
			left[rs[i].header.Get("RateLimit-Remaining")] = true
			if allowed == nil || remaining(&rs[i]) > remaining(allowed) {
				allowed = &rs[i]
			}
		case rs[i].code == 429 && rejected == nil:
			rejected = &rs[i]
		}
	}
	// What is left is read after counting, so it also reflects the requests counted at the same moment (admitted
	// or about to be taken back): of 16 concurrent workers, up to 15 others. The last admitted sees 0.
	for v := range left {
		if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 49 {
			t.Errorf("RateLimit-Remaining %q on an allowed answer, want 0..49", v)
		}
	}
	if !left["0"] {
		t.Errorf("RateLimit-Remaining of the allowed answers: no 0 among %v", left)
	}
	h := allowed.header
	first := h.Get("RateLimit-Remaining")
	if n, err := strconv.Atoi(first); err != nil || n < 49-15 || h.Get("RateLimit-Limit") != "50, 50;w=60, 1000;w=3600" ||
		h.Get("RateLimit-Policy") != `"queries-minute";q=50;w=60, "queries-hour";q=1000;w=3600` ||
		!strings.HasPrefix(h.Get("RateLimit"), `"queries-minute";r=`+first+`;t=`) {
		t.Errorf("headers of the first allowed answer: %v", h)
	}
	if reset, err := strconv.Atoi(h.Get("RateLimit-Reset")); err != nil || reset < 1 || reset > 61 {
		t.Errorf("RateLimit-Reset %q", h.Get("RateLimit-Reset"))
	}
	h = rejected.header
	retry := h.Get("Retry-After")
	if h.Get("RateLimit-Remaining") != "0" || h.Get("RateLimit-Reset") != retry || h.Get("RateLimit") != `"queries-minute";r=0;t=`+retry ||
		h.Get("RateLimit-Limit") != "50, 50;w=60, 1000;w=3600" {
		t.Errorf("headers of a 429: %v", h)
	}
	if n, err := strconv.Atoi(retry); err != nil || n < 1 || n > 61 {
		t.Errorf("Retry-After %q", retry)
	}
	typ, msg := decodeError(t, rejected.body)
	// A refused request is counted for a moment before it is taken back, so a refusal may see the 50 admitted
	// plus some of the other 15 workers' requests being refused at the same time.
	var seen int
	if _, err := fmt.Sscanf(msg[strings.Index(msg, "usage seen ")+len("usage seen "):], "%d", &seen); err != nil || seen < 50 || seen >= 50+16 ||
		typ != "too_many_requests" || !strings.Contains(msg, "rate limit exceeded for tenant 0:0: limit type=queries resolution=minute value=50") ||
		!strings.Contains(msg, " in the last minute counted by this gateway") {
		t.Errorf("429 body: %s, want usage 50..65 counted by this gateway", rejected.body)
	}
	if got := metricValue(t, g, `vmgateway_ratelimit_rejected_total{type="queries",resolution="minute"}`); got != float64(m[429]) {
		t.Errorf("rejected_total = %v, want %d", got, m[429])
	}

	// The status page: behind its key, the tenant's usage by source.
	if code, _, _ := do(t, http.MethodGet, g.URL+"/ratelimit/status", nil); code != http.StatusUnauthorized {
		t.Errorf("/ratelimit/status without the key: %d", code)
	}
	code, _, body := do(t, http.MethodGet, g.URL+"/ratelimit/status?authKey=sk", nil)
	var page struct {
		Usage []struct {
			Tenant string
			Limits []struct {
				Type, Resolution, Source string
				Usage                    float64
				Local                    *struct{ Value float64 }
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil || code != 200 || len(page.Usage) != 1 || page.Usage[0].Tenant != "0:0" {
		t.Fatalf("/ratelimit/status: %d %s", code, body)
	}
	for _, l := range page.Usage[0].Limits {
		if l.Source != "local" || l.Local == nil || l.Local.Value != float64(ok2xx(m)) {
			t.Errorf("status of %s/%s: %+v, want the local count %d", l.Type, l.Resolution, l, ok2xx(m))
		}
	}
}

// TestRateLimitBurstReplicas: two replicas sharing a real redis-server admit the limit between them; without
// Redis each admits the limit.
func TestRateLimitBurstReplicas(t *testing.T) {
	vm := vmtest.Start(t)
	redis := vmtest.StartRedis(t, "--requirepass", "s3cret").Addr
	token := rlToken(t, tenant.ID{}, "burst")

	shared := []*gw{
		rlGateway(t, vm.URL, vm.URL, limit50, "-ratelimit.redis.url=redis://"+redis, "-ratelimit.redis.password=s3cret", "-ratelimit.redis.keyPrefix=burst"),
		rlGateway(t, vm.URL, vm.URL, limit50, "-ratelimit.redis.url=redis://:s3cret@"+redis, "-ratelimit.redis.keyPrefix=burst"),
	}
	for _, g := range shared {
		vmtest.Eventually(t, func() (bool, string) {
			v := metricValue(t, g, "vmgateway_ratelimit_redis_up")
			return v == 1, fmt.Sprintf("vmgateway_ratelimit_redis_up %v", v)
		})
	}
	rs := burstQueries(t, shared, token, 500, 16)
	m := tally(rs)
	calls := metricValue(t, shared[0], "vmgateway_ratelimit_redis_calls_total") + metricValue(t, shared[1], "vmgateway_ratelimit_redis_calls_total")
	redisErrors := metricValue(t, shared[0], "vmgateway_ratelimit_redis_errors_total") + metricValue(t, shared[1], "vmgateway_ratelimit_redis_errors_total")
	t.Logf("two replicas sharing Redis: %v, %v Redis calls, %v Redis errors", m, calls, redisErrors)
	// Invariants, whatever the timing of leases: every admission spent a unit taken from Redis, so at most 50 pass
	// while Redis answers (a replica that lost Redis counts alone: at most 50 more); a replica refuses only after
	// Redis said no unit is left, so every 429 reports the shared count of 50. (Units a replica held when its
	// second ended can leave fewer than 50 admitted.)
	limit := 50
	if redisErrors > 0 {
		limit = 100
	}
	if n := ok2xx(m); n > limit || n < 1 || m[429] != 500-n {
		t.Errorf("two replicas sharing Redis: %v, want 1..%d 2xx and the rest 429", m, limit)
	}
	if redisErrors == 0 {
		for _, r := range rs {
			if r.code == 429 && !strings.Contains(r.body, "usage seen 50 ") {
				t.Errorf("a 429 reports another usage than the shared count of 50: %s", r.body)
				break
			}
		}
	}
	if calls > 150 {
		t.Errorf("%v Redis calls for 500 requests", calls)
	}

	alone := []*gw{rlGateway(t, vm.URL, vm.URL, limit50), rlGateway(t, vm.URL, vm.URL, limit50)}
	m = tally(burstQueries(t, alone, token, 500, 16))
	t.Logf("two replicas without Redis: %v", m)
	if n := ok2xx(m); n > 105 || n < 100 {
		t.Errorf("two replicas without Redis: %v, want 100..105 2xx (each holds the limit)", m)
	}
}

// TestRateLimitRedisPerDeployment: gateways share counts in Redis under their -ratelimit.redis.keyPrefix only, which
// each deployment sets (a start without it fails, TestRateLimitFlagErrors): tenant 0:0 of one VictoriaMetrics is
// not tenant 0:0 of another, and one Redis shared under one prefix let a team of one use up the other's limits (an
// attacker's review; a default made of the backends' names still matched two clusters that name them alike, a
// second review). Replicas under one prefix share, whatever backends they name.
func TestRateLimitRedisPerDeployment(t *testing.T) {
	vmA, vmB := vmtest.Start(t), vmtest.Start(t)
	redis := "-ratelimit.redis.url=redis://" + vmtest.StartRedis(t).Addr
	const limit5 = "limits:\n  - {type: queries, value: 5}\n"
	token := rlToken(t, tenant.ID{}, "deployments")
	a := rlGateway(t, vmA.URL, vmA.URL, limit5, redis, "-ratelimit.redis.keyPrefix=vmgateway:staging")
	b := rlGateway(t, vmB.URL, vmB.URL, limit5, redis, "-ratelimit.redis.keyPrefix=vmgateway:production")
	sharedA := rlGateway(t, vmA.URL, vmA.URL, limit5, redis, "-ratelimit.redis.keyPrefix=vmgateway:platform")
	sharedB := rlGateway(t, vmB.URL, vmB.URL, limit5, redis, "-ratelimit.redis.keyPrefix=vmgateway:platform")
	for _, g := range []*gw{a, b, sharedA, sharedB} {
		vmtest.Eventually(t, func() (bool, string) {
			v := metricValue(t, g, "vmgateway_ratelimit_redis_up")
			return v == 1, fmt.Sprintf("vmgateway_ratelimit_redis_up %v", v)
		})
	}
	if m := tally(burstQueries(t, []*gw{a}, token, 8, 1)); m[200] != 5 || m[429] != 3 {
		t.Fatalf("deployment A: %v, want 5 answered and 3 refused", m)
	}
	if m := tally(burstQueries(t, []*gw{b}, token, 5, 1)); m[200] != 5 {
		t.Errorf("deployment B after A used up its limit: %v, want its own 5 answered", m)
	}
	if m := tally(burstQueries(t, []*gw{sharedA, sharedB}, token, 8, 1)); m[200] != 5 || m[429] != 3 {
		t.Errorf("two replicas under one key prefix: %v, want 5 answered between them and 3 refused", m)
	}
}

// TestRateLimitDryRun: nothing is rejected, and what would have been is counted.
func TestRateLimitDryRun(t *testing.T) {
	vm := vmtest.Start(t)
	g := rlGateway(t, vm.URL, vm.URL, limit50, "-ratelimit.dryRun")
	m := tally(burstQueries(t, []*gw{g}, rlToken(t, tenant.ID{}, "dry"), 500, 16))
	if m[200] != 500 {
		t.Fatalf("dry run: %v, want 500 answers of 200", m)
	}
	if got := metricValue(t, g, `vmgateway_ratelimit_dryrun_would_reject_total{type="queries",resolution="minute"}`); got != 450 {
		t.Errorf("dryrun_would_reject_total = %v, want 450", got)
	}
	if got := metricValue(t, g, `vmgateway_ratelimit_rejected_total{type="queries",resolution="minute"}`); got != 0 {
		t.Errorf("rejected_total = %v under dry run", got)
	}
	if !g.logged("would have rejected") {
		t.Errorf("no dry-run log line")
	}
}

// TestRateLimitPerToken: single-node has one tenant; a key on the limit gives each token's sub a count of its own.
func TestRateLimitPerToken(t *testing.T) {
	vm := vmtest.Start(t)
	g := rlGateway(t, vm.URL, vm.URL, "limits:\n  - {type: queries, value: 3, key: claim:sub}\n")
	for _, sub := range []string{"alice", "bob"} {
		tok := rlToken(t, tenant.ID{}, sub)
		for i := 1; i <= 4; i++ {
			code, _, body := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(tok)...)
			if i <= 3 && code != 200 || i == 4 && (code != 429 || !strings.Contains(body, `tenant 0:0 and claim:sub=\"`+sub+`\"`)) {
				t.Errorf("%s's request %d: %d %s", sub, i, code, body)
			}
		}
	}
}

// TestRateLimitFromDatasource is issue 6's flow through the gateway in cluster mode: usage comes from
// synthetic vm_tenant_* series in a real VictoriaMetrics; a tenant over its limit gets 429 with Retry-After and a
// JSON error naming the tenant, the limit and the usage, and nothing reaches the upstream for it; another tenant
// passes.
func TestRateLimitFromDatasource(t *testing.T) {
	vm := vmtest.Start(t)
	now := time.Now()
	series := func(name, acc string, f func(sec int) float64) string {
		var ts, vs []string
		for sec := -300; sec <= 600; sec += 5 {
			ts = append(ts, strconv.FormatInt(now.Add(time.Duration(sec)*time.Second).UnixMilli(), 10))
			vs = append(vs, strconv.FormatFloat(f(sec), 'f', -1, 64))
		}
		return fmt.Sprintf(`{"metric":{"__name__":%q,"accountID":%q,"projectID":"0"},"values":[%s],"timestamps":[%s]}`,
			name, acc, strings.Join(vs, ","), strings.Join(ts, ","))
	}
	// Tenant 1:0 reads about 600 times a minute, tenant 2:0 about 6 times; tenant 3:0 holds 5000 active series.
	body := strings.Join([]string{
		series("vm_tenant_select_requests_total", "1", func(s int) float64 { return float64(s+300) * 10 }),
		series("vm_tenant_select_requests_total", "2", func(s int) float64 { return float64(s+300) / 10 }),
		series("vm_tenant_active_timeseries", "3", func(int) float64 { return 5000 }),
	}, "\n")
	if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import", strings.NewReader(body), "Content-Type", "application/json"); code != 204 {
		t.Fatalf("import: %d %s", code, b)
	}
	vm.Flush(t)

	rec := vmtest.NewRecorder(t)
	g := rlGateway(t, rec.URL, vm.URL, "limits:\n  - {type: queries, value: 100}\n  - {type: active_series, value: 1000}\n", "-clusterMode")
	t1, t2, t3 := rlToken(t, tenant.ID{AccountID: 1}, "a"), rlToken(t, tenant.ID{AccountID: 2}, "b"), rlToken(t, tenant.ID{AccountID: 3}, "c")

	var h http.Header
	var msg string
	vmtest.Eventually(t, func() (bool, string) {
		code, hh, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(t1)...)
		h, msg = hh, b
		return code == 429, fmt.Sprintf("tenant 1:0: %d %s", code, b)
	})
	if n, err := strconv.Atoi(h.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q", h.Get("Retry-After"))
	}
	typ, text := decodeError(t, msg)
	if typ != "too_many_requests" || !strings.Contains(text, "rate limit exceeded for tenant 1:0: limit type=queries resolution=minute value=100 (the default limit for all tenants), usage seen ") {
		t.Errorf("429 body: %s", msg)
	}
	if i := strings.Index(text, "usage seen "); i > 0 {
		if u, err := strconv.ParseFloat(strings.Fields(text[i+len("usage seen "):])[0], 64); err != nil || u < 500 || u > 700 {
			t.Errorf("usage in %q, want about 600", text)
		}
	}
	// Tenant 2:0 passes; tenant 3:0's reads pass and its writes are over the active series limit.
	rec.Requests() // forget tenant 1:0's queries forwarded before its usage arrived
	if code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(t2)...); code != 200 {
		t.Errorf("tenant 2:0: %d %s", code, b)
	}
	if code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=up", nil, bearer(t3)...); code != 200 {
		t.Errorf("tenant 3:0 read: %d %s", code, b)
	}
	code, _, b := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader("x 1\n"), append(bearer(t3), "Content-Type", "text/plain")...)
	if code != 429 || !strings.Contains(b, "limit type=active_series value=1000") || !strings.Contains(b, "usage seen 5000 active series") {
		t.Errorf("tenant 3:0 write: %d %s", code, b)
	}
	got := rec.Requests()
	if len(got) != 2 || got[0].Path != "/select/2:0/prometheus/api/v1/query" || got[1].Path != "/select/3:0/prometheus/api/v1/query" {
		var paths []string
		for _, r := range got {
			paths = append(paths, r.Path)
		}
		t.Errorf("forwarded %v, want tenant 2:0's and 3:0's queries only", paths)
	}
}

// TestRateLimitFlagErrors: bad rate-limit flags stop the start with a message naming the flag.
func TestRateLimitFlagErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "limits.yaml")
	if err := os.WriteFile(cfg, []byte(limit50), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-read.url=http://127.0.0.1:1", "-write.url=http://127.0.0.1:1", "-enable.rateLimit",
		"-ratelimit.config=" + cfg, "-datasource.url=http://127.0.0.1:1", "-httpListenAddr=127.0.0.1:0"}
	for _, tc := range []struct {
		flag, want string
	}{
		{"-ratelimit.headers=draft07", `-ratelimit.headers="draft07": want none, draft03`},
		{"-ratelimit.redis.url=http://x:6379 -ratelimit.redis.keyPrefix=p", "-ratelimit.redis.url=\"http://x:6379\": want redis://"},
		{"-ratelimit.redis.url=redis://:s3cret@x:6379/a/b -ratelimit.redis.keyPrefix=p", "-ratelimit.redis.url=\"redis://x:6379/a/b\""},
		{"-ratelimit.redis.batchSize=0", "-ratelimit.redis.batchSize=0: want a positive number"},
		{"-ratelimit.redis.url=redis://x:6379", "-ratelimit.redis.url needs -ratelimit.redis.keyPrefix: gateways under one prefix share every tenant's counts"},
		{"-ratelimit.redis.keyPrefix=a{b}", `-ratelimit.redis.keyPrefix="a{b}": give up to 200 bytes without braces or spaces`},
	} {
		out, err := exec.Command(gatewayBin, append(base, strings.Fields(tc.flag)...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "s3cret") {
			t.Errorf("%s: want a failed start mentioning %q, got err=%v:\n%s", tc.flag, tc.want, err, out)
		}
	}
}

// TestRateLimitCountsRequestsRefusedAfterAdmission pins what docs/rate-limiting.md says a `queries` limit counts:
// every read request the limiter admits, also one the gateway then refuses itself (400, 403, 413). Four such
// refusals use up a limit of four, and the fifth request, a valid one, gets 429 naming the limit. Cluster mode,
// where a selector on the tenant labels is refused (403).
func TestRateLimitCountsRequestsRefusedAfterAdmission(t *testing.T) {
	vm := vmtest.Start(t)
	g := rlGateway(t, vm.URL, vm.URL, "limits:\n  - {type: queries, value: 4}\n", "-maxReadBodySize=1000", "-clusterMode")
	claims := jwt.MapClaims{"sub": "dev", "exp": time.Now().Add(time.Hour).Unix(),
		"vm_access": auth.VMAccess{Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}}}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rlKey())
	if err != nil {
		t.Fatal(err)
	}
	q := g.URL + "/api/v1/query?query="
	for _, tc := range []struct {
		method, url, body string
		code              int
	}{
		{http.MethodGet, q + url.QueryEscape("sum("), "", 400},
		{http.MethodGet, q + url.QueryEscape("sum("), "", 400},
		{http.MethodGet, q + url.QueryEscape(`up{vm_account_id="1"}`), "", 403},
		{http.MethodPost, g.URL + "/api/v1/query", "query=" + strings.Repeat("u", 2000), 413},
		{http.MethodGet, q + "up", "", 429},
	} {
		var body io.Reader
		hdr := bearer(tok)
		if tc.body != "" {
			body = strings.NewReader(tc.body)
			hdr = append(hdr, "Content-Type", "application/x-www-form-urlencoded")
		}
		code, _, got := do(t, tc.method, tc.url, body, hdr...)
		if code != tc.code {
			t.Fatalf("%s %s: %d %.300s, want %d", tc.method, tc.url, code, got, tc.code)
		}
		if code == 429 && !strings.Contains(got, "limit type=queries resolution=minute value=4") {
			t.Errorf("the 429 does not name the limit: %s", got)
		}
	}
}

// TestRateLimitUsageNotWritableByTeams: with the datasource the very VictoriaMetrics teams write to, a team's token
// wrote vm_tenant_* usage series through the gateway, and every other team got 429 for the hour (an attacker's
// review). Its series carry its label, which the usage queries now leave out; with Redis, on a replica that took no
// write too (the review's second gateway). Usage written without the label (as VictoriaMetrics' own per-tenant series
// come) still limits, so the test can fail.
func TestRateLimitUsageNotWritableByTeams(t *testing.T) {
	vm := vmtest.Start(t)
	redis := vmtest.StartRedis(t).Addr
	limits := "limits:\n  - {type: rows_inserted, value: 1000, resolution: hour}\n  - {type: queries, value: 1000, resolution: hour}\n"
	w := rlGateway(t, vm.URL, vm.URL, limits, "-ratelimit.redis.url=redis://"+redis, "-ratelimit.redis.keyPrefix=writers")
	r := rlGateway(t, vm.URL, vm.URL, limits, "-ratelimit.redis.url=redis://"+redis, "-ratelimit.redis.keyPrefix=writers")
	token := func(team string, mode auth.Mode) string {
		claims := jwt.MapClaims{"sub": team, "exp": time.Now().Add(time.Hour).Unix(),
			"vm_access": auth.VMAccess{Mode: mode, ExtraLabels: map[string]string{"team": team}}}
		s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rlKey())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dev, ops, opsRead := token("dev", auth.ModeWrite), token("ops", auth.ModeWrite), token("ops", auth.ModeRead)
	now := time.Now().Unix()
	usage := ""
	for _, name := range []string{"vm_tenant_inserted_rows_total", "vm_tenant_select_requests_total"} {
		usage += fmt.Sprintf("%s{accountID=\"0\",projectID=\"0\"} 0 %d\n%s{accountID=\"0\",projectID=\"0\"} 1000000000 %d\n",
			name, (now-80)*1000, name, (now-40)*1000)
	}
	write := func(g *gw, tok, body string) (int, string) {
		code, _, b := do(t, http.MethodPost, g.URL+"/api/v1/import/prometheus", strings.NewReader(body), bearer(tok)...)
		return code, b
	}
	read := func(g *gw) (int, string) {
		code, _, b := do(t, http.MethodGet, g.URL+"/api/v1/query?query=1", nil, bearer(opsRead)...)
		return code, b
	}
	if code, b := write(w, dev, usage); code != http.StatusNoContent {
		t.Fatalf("dev's write of usage series: %d %s", code, b)
	}
	vm.Flush(t)
	// Stored, with dev's label: what the datasource holds.
	vmtest.Eventually(t, func() (bool, string) {
		code, _, b := do(t, http.MethodGet, vm.URL+`/api/v1/query?query=`+url.QueryEscape(`max_over_time(vm_tenant_select_requests_total{team="dev"}[5m])`), nil)
		return code == 200 && strings.Contains(b, `"1000000000"`), fmt.Sprintf("the stored series: %d %s", code, b)
	})
	// Several refreshes (1s) later ops still writes through the gateway that took dev's write, and reads through the
	// one that took none.
	for range 4 {
		time.Sleep(time.Second)
		if code, b := write(w, ops, "m 1\n"); code != http.StatusNoContent {
			t.Fatalf("ops' write after dev's usage series: %d %s", code, b)
		}
		if code, b := read(r); code != http.StatusOK {
			t.Fatalf("ops' read through the other replica after dev's usage series: %d %s", code, b)
		}
	}
	// The same usage written without a team's label limits tenant 0:0, on both.
	if code, _, b := do(t, http.MethodPost, vm.URL+"/api/v1/import/prometheus", strings.NewReader(usage)); code != http.StatusNoContent {
		t.Fatalf("usage written directly: %d %s", code, b)
	}
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		code, b := write(w, ops, "m 1\n")
		return code == http.StatusTooManyRequests && strings.Contains(b, "rows_inserted"), fmt.Sprintf("ops' write over the usage: %d %s", code, b)
	})
	vmtest.Eventually(t, func() (bool, string) {
		code, b := read(r)
		return code == http.StatusTooManyRequests && strings.Contains(b, "type=queries"), fmt.Sprintf("ops' read over the usage: %d %s", code, b)
	})
}
