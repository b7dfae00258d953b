package ratelimit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

var testDatasource = datasource.Config{URL: "http://127.0.0.1:1"}

// sharedGate is a started gate counting in Redis; it waits until the gate has reached Redis.
func sharedGate(t *testing.T, limits string, rc RedisConfig, now ...func() time.Time) *Gate {
	t.Helper()
	g := newTestGate(t, limits, Config{Redis: rc})
	if len(now) > 0 {
		g.now = now[0]
	}
	g.Start()
	vmtest.Eventually(t, func() (bool, string) { return redisOf(g).up.Load(), "the gate has not reached Redis" })
	return g
}

// burstOver sends n reads of tenant 0:0 at the given concurrency, spread over the gates in turn.
func burstOver(gates []*Gate, n, concurrency int) int {
	var passed, next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if gates[i%int64(len(gates))].check(access(tid(0, 0)), rt(route.Read)) == nil {
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(passed.Load())
}

func TestSharedBurstAcrossReplicas(t *testing.T) {
	r := vmtest.StartRedis(t)
	const limits = "limits:\n  - {type: queries, value: 50}\n"
	// One frozen second: no lease ends mid-burst, so no unit is stranded in a lease that moved on and the counts
	// are exact whatever the scheduling. (Leases across seconds: TestSharedCallsFarBelowRequests, the e2e tests.)
	frozen := time.Now()
	clock := func() time.Time { return frozen }
	a := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr}, clock)
	b := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr}, clock)
	passed := burstOver([]*Gate{a, b}, 500, 16)
	calls := redisOf(a).calls.Get() + redisOf(b).calls.Get()
	t.Logf("two replicas sharing Redis: %d of 500 passed a limit of 50; %d Redis calls", passed, calls)
	// Every admission spends a unit taken atomically from Redis, and a replica refuses only once Redis has no unit
	// left and its own lease is spent: exactly the limit passes.
	if passed != 50 {
		t.Errorf("%d of 500 passed across two replicas, want exactly 50", passed)
	}
	if calls > 150 {
		t.Errorf("%d Redis calls for 500 checks", calls)
	}
	// Each replica alone would have admitted 50; each refused after asking Redis, which counted both: each sees the
	// shared 50.
	q50 := limitfile.Limit{Type: limitfile.Queries, Resolution: limitfile.Minute, Value: 50}
	la, oka := shown(t, a, tid(0, 0), q50)
	lb, okb := shown(t, b, tid(0, 0), q50)
	if !oka || !okb || la.Usage != 50 || lb.Usage != 50 || la.Source != fromShared && lb.Source != fromShared {
		t.Errorf("usage seen by the replicas: %+v and %+v, want the shared count 50", la, lb)
	}
}

func TestSharedCallsFarBelowRequests(t *testing.T) {
	r := vmtest.StartRedis(t)
	g := sharedGate(t, "limits:\n  - {type: queries, value: 1000000000}\n", RedisConfig{URL: "redis://" + r.Addr, BatchSize: 100})
	before := redisOf(g).calls.Get()
	start := time.Now()
	const n = 20000
	if passed := burstOver([]*Gate{g}, n, 8); passed != n {
		t.Fatalf("%d of %d passed a limit they are far from", passed, n)
	}
	calls := redisOf(g).calls.Get() - before
	seconds := uint64(time.Since(start)/time.Second) + 1
	t.Logf("%d checks, %d Redis calls in %d s", n, calls, seconds)
	// One claim per 100 admissions, plus one per second as leases end with their second.
	if calls > n/100+2*seconds+5 {
		t.Errorf("%d Redis calls for %d checks, want about one per 100", calls, n)
	}
}

func TestSharedAuth(t *testing.T) {
	r := vmtest.StartRedis(t, "--requirepass", "s3cret", "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all")
	const limits = "limits:\n  - {type: queries, value: 5}\n"
	for _, tc := range []struct {
		name string
		rc   RedisConfig
	}{
		{"password in the URL", RedisConfig{URL: "redis://:s3cret@" + r.Addr}},
		{"user and password in the URL", RedisConfig{URL: "redis://alice:alicepw@" + r.Addr}},
		{"password from the flag replaces the URL's", RedisConfig{URL: "redis://:wrong@" + r.Addr, Password: "s3cret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rc.KeyPrefix = "test:" + t.Name() // each case counts afresh in the same Redis
			a, b := sharedGate(t, limits, tc.rc), sharedGate(t, limits, tc.rc)
			passed := burstOver([]*Gate{a, b}, 20, 1)
			if passed != 5 {
				t.Errorf("%d of 20 passed, want 5 across both", passed)
			}
		})
	}

	// A wrong password: Redis is never up, the errors are counted and logged, and each gate counts locally.
	var logs vmtest.Buffer
	restore := captureLogs(&logs)
	defer restore()
	g := newTestGate(t, limits, Config{Redis: RedisConfig{URL: "redis://:nope@" + r.Addr, Timeout: 5 * time.Second}})
	g.Start()
	vmtest.Eventually(t, func() (bool, string) {
		return redisOf(g).errors.Get() > 0, "no Redis error counted"
	})
	if redisOf(g).up.Load() {
		t.Fatal("Redis up with a wrong password")
	}
	if passed := burstOver([]*Gate{g}, 20, 4); passed != 5 {
		t.Errorf("local counting: %d of 20 passed, want 5", passed)
	}
	if s := logs.String(); !strings.Contains(s, "WRONGPASS") || strings.Contains(s, "nope") {
		t.Errorf("logs should name the error, not the password:\n%s", s)
	}
}

// TestSharedRedisDownThenUp: with Redis gone the replicas fall back to their own counts (each holds the limit,
// together at most twice it), count the errors, and share again once Redis is back.
func TestSharedRedisDownThenUp(t *testing.T) {
	r := vmtest.StartRedis(t)
	const limits = "limits:\n  - {type: queries, value: 10}\n"
	a := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr, Timeout: 200 * time.Millisecond})
	b := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr, Timeout: 200 * time.Millisecond})
	qa := access(tid(1, 0))
	if n := admitN(a, qa, 4); n != 4 {
		t.Fatalf("%d of 4 passed", n)
	}
	r.Stop()
	// a holds a lease for this second: use a tenant whose counts are all still in Redis's hands.
	qb := access(tid(2, 0))
	passed := admitN(a, qb, 30) + admitN(b, qb, 30)
	if passed != 20 {
		t.Errorf("with Redis down %d of 60 passed, want 10 per replica", passed)
	}
	if redisOf(a).up.Load() || redisOf(a).errors.Get()+redisOf(b).errors.Get() == 0 {
		t.Errorf("Redis down: up=%v errors %d+%d", redisOf(a).up.Load(), redisOf(a).errors.Get(), redisOf(b).errors.Get())
	}
	var buf bytes.Buffer
	a.metrics.set.WritePrometheus(&buf)
	for _, m := range []string{"vmgateway_ratelimit_redis_up 0", "vmgateway_ratelimit_redis_errors_total "} {
		if !strings.Contains(buf.String(), m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	r.Restart(t)
	vmtest.Eventually(t, func() (bool, string) {
		return redisOf(a).up.Load() && redisOf(b).up.Load(), "the gates have not found Redis again"
	})
	qc := access(tid(3, 0))
	if passed := admitN(a, qc, 6) + admitN(b, qc, 6); passed != 10 {
		t.Errorf("Redis back: %d of 12 passed across both, want 10", passed)
	}
}

func TestSharedTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTLSFiles(t, dir)
	r := vmtest.StartRedis(t, "--tls-port", "0", "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no")
	const limits = "limits:\n  - {type: queries, value: 3}\n"
	g := sharedGate(t, limits, RedisConfig{URL: "rediss://" + r.Addr, TLS: tlsclient.Options{CAFile: ca}})
	if passed := admitN(g, access(tid(1, 0)), 5); passed != 3 {
		t.Errorf("%d of 5 passed", passed)
	}
	if seen := g.tally.counters.lookup(seriesKey{tenant: tid(1, 0)}).lease.seen[winMinute].Load(); seen != 3 {
		t.Errorf("shared count %d, want 3", seen)
	}
	// Without the CA the certificate is not trusted.
	u := newTestGate(t, limits, Config{Redis: RedisConfig{URL: "rediss://" + r.Addr}})
	u.Start()
	vmtest.Eventually(t, func() (bool, string) { return redisOf(u).errors.Get() > 0, "no TLS error" })
	if redisOf(u).up.Load() {
		t.Error("Redis up with an untrusted certificate")
	}
}

func TestRedisConfigErrors(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "l.yaml"), "limits: []\n")
	for _, tc := range []struct {
		rc   RedisConfig
		want string
	}{
		{RedisConfig{URL: "http://localhost:6379"}, "want redis://[user:password@]host:port[/db] or rediss://"},
		{RedisConfig{URL: "redis://:pw@"}, "want redis://"},
		{RedisConfig{URL: "redis://localhost/x/y"}, "invalid URL path"},
		{RedisConfig{URL: "redis://:pw@localhost", TLS: tlsclient.Options{CAFile: "/ca.pem"}}, "-ratelimit.redis.tls* flags are set but -ratelimit.redis.url=\"redis://localhost\" is not rediss://"},
		{RedisConfig{URL: "redis://localhost", TLS: tlsclient.Options{KeyFile: "/key.pem"}}, "-ratelimit.redis.tls* flags are set but"},
		{RedisConfig{URL: "rediss://localhost", TLS: tlsclient.Options{CAFile: "/nonexistent/ca.pem"}}, "-ratelimit.redis.tlsCAFile"},
		{RedisConfig{URL: "rediss://localhost", TLS: tlsclient.Options{CertFile: path}}, "must be set together"},
	} {
		_, err := New(Config{ConfigPath: path, Datasource: testDatasource, Redis: tc.rc})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), ":pw@") {
			t.Errorf("%+v: got %v, want an error with %q and no password", tc.rc, err, tc.want)
		}
	}
}

// writeTLSFiles writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeTLSFiles(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

// TestSharedClockBehind: replicas' clocks differ (NTP, the coarse clock a loaded machine ticks late, a claim
// delayed on its way to Redis), so a claim can arrive in Redis stamped a second before counts another replica
// already made. Those counts are in the window all the same: the replica behind must see them, or each replica
// admits its own limit's worth at a second boundary.
func TestSharedClockBehind(t *testing.T) {
	r := vmtest.StartRedis(t)
	const limits = "limits:\n  - {type: queries, value: 5}\n"
	ahead := time.Now().Truncate(time.Second).Add(500 * time.Millisecond)
	behind := ahead.Add(-time.Second)
	a := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr}, func() time.Time { return ahead })
	b := sharedGate(t, limits, RedisConfig{URL: "redis://" + r.Addr}, func() time.Time { return behind })
	q := access(tid(0, 0))
	passed := admitN(b, q, 3) + admitN(a, q, 2)
	if passed != 5 {
		t.Fatalf("%d of the first 5 passed", passed)
	}
	if n := admitN(b, q, 5); n != 0 {
		t.Errorf("the replica a second behind admitted %d more after the shared limit of 5 was reached", n)
	}
	if n := admitN(a, q, 5); n != 0 {
		t.Errorf("the replica ahead admitted %d more after the shared limit of 5 was reached", n)
	}
}

// TestSpaceAcrossReplicas: an event of a key admitted by one replica is refused by another until the interval has
// passed in Redis, with the time left; other keys are not held up; a key left without an expiry does not block for
// ever; without Redis, or with it down, Space leaves the decision to the caller.
func TestSpaceAcrossReplicas(t *testing.T) {
	r := vmtest.StartRedis(t)
	rc := RedisConfig{URL: "redis://" + r.Addr, Timeout: 200 * time.Millisecond}
	a, b := sharedGate(t, "limits: []\n", rc), sharedGate(t, "limits: []\n", rc)
	ctx := context.Background()
	if left, err := a.Space(ctx, "delete|1:0|ab", 300*time.Millisecond); err != nil || left != 0 {
		t.Fatalf("first event: left %v, %v", left, err)
	}
	left, err := b.Space(ctx, "delete|1:0|ab", 300*time.Millisecond)
	if err != nil || left <= 0 || left > 300*time.Millisecond {
		t.Fatalf("the other replica at once: left %v, %v; want up to 300ms", left, err)
	}
	if left, err := b.Space(ctx, "delete|2:0|ab", 300*time.Millisecond); err != nil || left != 0 {
		t.Errorf("another key: left %v, %v", left, err)
	}
	vmtest.Eventually(t, func() (bool, string) {
		left, err := b.Space(ctx, "delete|1:0|ab", 300*time.Millisecond)
		return err == nil && left == 0, fmt.Sprintf("after the interval: left %v, %v", left, err)
	})
	// A key without an expiry (written by hand) is taken as expired, and gets one.
	rdb := redisOf(a).client
	if err := rdb.Set(ctx, "vmgateway:ratelimit:space:{stuck}", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if left, err := a.Space(ctx, "stuck", time.Minute); err != nil || left != 0 {
		t.Errorf("a key without expiry: left %v, %v", left, err)
	}
	if ttl := rdb.PTTL(ctx, "vmgateway:ratelimit:space:{stuck}").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("the key's expiry is %v, want up to a minute", ttl)
	}

	alone := newTestGate(t, "limits: []\n", Config{})
	if _, err := alone.Space(ctx, "x", time.Minute); err == nil {
		t.Error("a gate without Redis answered Space")
	}
	r.Stop()
	if _, err := a.Space(ctx, "delete|3:0|ab", time.Minute); err == nil {
		t.Error("Space answered with Redis down")
	}
	if redisOf(a).up.Load() || redisOf(a).errors.Get() == 0 {
		t.Errorf("Redis down: up=%v errors %d", redisOf(a).up.Load(), redisOf(a).errors.Get())
	}
}

// TestSharedHugeCostKeepsRedisUp: a team whose cost limit is lifted with a huge value, charged its whole budget by an
// answer whose cost is unknown (SpendAll), twice and then a normal answer, keeps the replica sharing: every call
// reaches Redis (the charge was sent as 1e+18, which INCRBY refused at every flush, and each refusal took the
// replica's sharing down for every tenant, until a restart: an attacker's review), and another tenant's limit holds
// across both replicas.
func TestSharedHugeCostKeepsRedisUp(t *testing.T) {
	r := vmtest.StartRedis(t)
	const limits = `limits:
  - {type: queries, value: 50}
  - {type: series_fetched, value: 1000000000000000000, account_id: 7}
  - {type: series_fetched, value: 9223372036854775807, account_id: 8}
`
	rc := RedisConfig{URL: "redis://" + r.Addr, Timeout: time.Second}
	a, b := sharedGate(t, limits, rc), sharedGate(t, limits, rc)
	for _, id := range []tenant.ID{tid(7, 0), tid(8, 0)} {
		a.SpendAll(access(id))
		a.SpendAll(access(id))
		a.Spend(access(id), 5, 1)
	}
	// The background flushes every 250 ms take the charges to Redis.
	calls := redisOf(a).calls.Get()
	for i := 0; i < 20; i++ {
		time.Sleep(100 * time.Millisecond)
		if !redisOf(a).up.Load() {
			t.Fatalf("replica a lost Redis after the charges (%d errors)", redisOf(a).errors.Get())
		}
	}
	if e := redisOf(a).errors.Get(); e != 0 || redisOf(a).calls.Get() == calls {
		t.Errorf("%d Redis errors, %d calls since the charges; want none and the flushes", e, redisOf(a).calls.Get()-calls)
	}
	if n := burstOver([]*Gate{a, b}, 200, 4); n < 1 || n > 50 {
		t.Errorf("tenant 0:0 had %d of 200 admitted across two replicas; want at most its 50", n)
	}
}

// TestRefusedCall: an error Redis answered to one call ("ERR ...") leaves the store up; one of a Redis that is gone
// does not.
func TestRefusedCall(t *testing.T) {
	r := vmtest.StartRedis(t)
	g := sharedGate(t, "limits: []\n", RedisConfig{URL: "redis://" + r.Addr, Timeout: 200 * time.Millisecond})
	rdb := redisOf(g).client
	ctx := context.Background()
	if err := rdb.Do(ctx, "INCRBY", "k", "1e+18").Err(); err == nil || !refusedCall(err) {
		t.Errorf("INCRBY 1e+18: %v; want a refused call", err)
	}
	if err := rdb.Do(ctx, "BUSYGROUP-NOT-A-COMMAND").Err(); err == nil || !refusedCall(err) {
		t.Errorf("an unknown command: %v; want a refused call", err)
	}
	// Redis 6 wraps a script's failure for a Redis full or read-only in ERR.
	if err := rdb.Eval(ctx, `return redis.error_reply("ERR Error running script: @user_script:1: -OOM command not allowed when used memory > 'maxmemory'.")`, nil).Err(); err == nil || refusedCall(err) {
		t.Errorf("a script failed for a full Redis: %v; want no refused call", err)
	}
	r.Stop()
	if err := rdb.Ping(ctx).Err(); err == nil || refusedCall(err) {
		t.Errorf("Redis gone: %v; want an error that is not a refused call", err)
	}
}
