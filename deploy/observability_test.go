package deploy

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/golang-jwt/jwt/v5"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

const (
	dashboardFile = "grafana/vmgateway.json"
	rulesFile     = "alerts/vmgateway-rules.yml"
)

// dashboard is the part of the Grafana dashboard model the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			Query    any    `json:"query"`
			AllValue string `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// expression is one query of the dashboard or the rules, as VictoriaMetrics gets it.
type expression struct {
	where string // panel title and refId, or alert name
	expr  string
	// alert: for a rule, whether it must fire on the test's traffic. Its expression without the threshold must
	// return data whether it fires or not.
	alert     bool
	mustFire  bool
	threshold string
}

// grafanaVars are the dashboard's variables as the test sets them: the scrape job, every instance (the "All"
// value), and a rate window that spans the test's scrapes.
var grafanaVars = strings.NewReplacer(`$__rate_interval`, `1m`, `$job`, `vmgateway`, `$instance`, `.*`)

// alertsOnTestTraffic says, for every rule, whether it fires on the test's traffic: the broken replica fails
// its upstreams and sheds load, tokens are refused, a user runs over its limit; nothing else is wrong.
var alertsOnTestTraffic = map[string]bool{
	"VMGatewayDown":                          false,
	"VMGatewayWriteBackendTruncates":         true, // gw1 writes to Debian's 1.79.5
	"VMGatewayWriteIsolationUnchecked":       true, // gw2's write port is closed
	"VMGatewayWriteBackendSortsLabels":       false,
	"VMGatewayWriteSeriesDropped":            true, // gw1 writes a series over 1.79.5's label limit
	"VMGatewayUpstreamErrors":                true,
	"VMGatewayServerErrors":                  true,
	"VMGatewaySlowRequests":                  false,
	"VMGatewayPanics":                        false,
	"VMGatewayOverloaded":                    true,
	"VMGatewayTokenRejections":               true,
	"VMGatewaySignatureVerificationDisabled": false,
	"VMGatewayAuthDisabled":                  false,
	"VMGatewayKeyFetchFailing":               false,
	"VMGatewayRateLimitUsageStale":           false,
	"VMGatewayRateLimitConfigInvalid":        false,
	"VMGatewayQueryLimitsConfigInvalid":      false,
	"VMGatewayAccessPoliciesInvalid":         false,
	"VMGatewayRateLimitRedisDown":            false,
	"VMGatewayTenantsRateLimited":            true,
	"VMGatewayTooManyRestarts":               false,
	"VMGatewayMixedVersions":                 false,
}

func loadDashboard(t *testing.T) (dashboard, []expression) {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(readFile(t, dashboardFile)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %s", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: want a uid and a title", dashboardFile)
	}
	var exprs []expression
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel %q: id %d is used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if !strings.Contains(string(p.Datasource), `"${datasource}"`) {
				t.Errorf("panel %q does not use the $datasource variable: %s", p.Title, p.Datasource)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: a query needs an expression and a refId of its own (refId %q)", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if !strings.Contains(string(tg.Datasource), `"${datasource}"`) {
					t.Errorf("panel %q query %s does not use the $datasource variable", p.Title, tg.RefID)
				}
				exprs = append(exprs, expression{where: fmt.Sprintf("panel %q query %s", p.Title, tg.RefID), expr: tg.Expr})
			}
		}
	}
	walk(d.Panels)
	return d, exprs
}

func loadRules(t *testing.T) (string, []expression) {
	t.Helper()
	text := readFile(t, rulesFile)
	var rf ruleFile
	dec := yamlv3.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %s", rulesFile, err)
	}
	var exprs []expression
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			fire, known := alertsOnTestTraffic[r.Alert]
			if !known {
				t.Errorf("alert %s: the test does not say whether it fires on its traffic: add it to alertsOnTestTraffic", r.Alert)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: want a severity label and a summary", r.Alert)
			}
			exprs = append(exprs, expression{where: "alert " + r.Alert, expr: r.Expr, alert: true, mustFire: fire})
		}
	}
	if len(exprs) != len(alertsOnTestTraffic) {
		t.Errorf("%s has %d rules, the test expects %d", rulesFile, len(exprs), len(alertsOnTestTraffic))
	}
	return text, exprs
}

// TestAlertRulesFile: promtool accepts the rules, and docs/operations.md shows exactly them.
func TestAlertRulesFile(t *testing.T) {
	promtool := vmtest.Require(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	text, _ := loadRules(t)
	rules := text[strings.Index(text, "groups:"):]
	doc := readFile(t, "../docs/operations.md")
	m := regexp.MustCompile("(?s)```yaml tested file=vmgateway-alerts.yml\n(.*?)\n```").FindStringSubmatch(doc)
	if m == nil || m[1]+"\n" != rules {
		t.Errorf("docs/operations.md's alerting rules differ from %s: copy the file's rules (from groups:) into the doc", rulesFile)
	}
}

// TestDashboardCoversMetrics: every vmgateway_* metric the code exports has a panel.
func TestDashboardCoversMetrics(t *testing.T) {
	name := regexp.MustCompile(`vmgateway_[a-z0-9_]*[a-z0-9]`)
	exported := map[string]bool{}
	for _, root := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			for _, m := range name.FindAllString(readFile(t, path), -1) {
				exported[m] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(exported) < 20 {
		t.Fatalf("found only %d metric names in the code: the scan is broken", len(exported))
	}
	dash := readFile(t, dashboardFile)
	var missing []string
	for m := range exported {
		if !regexp.MustCompile(regexp.QuoteMeta(m) + `(_bucket)?[{\[ )]`).MatchString(dash) {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s has no query on these metrics: %s", dashboardFile, strings.Join(missing, ", "))
	}
}

// TestDashboardAndRulesOnRealData: two real gateways serve a little traffic (one healthy, one whose upstreams
// are down and whose single slot is taken; the healthy one with query limits and access policies on, reading from a
// current VictoriaMetrics that reports query costs), a real VictoriaMetrics scrapes them, and then every query of the
// dashboard and every alerting rule parses with metricsql and returns data. A rule is evaluated twice: without
// its threshold it must return data, and with it, it must fire exactly when the traffic says it should.
func TestDashboardAndRulesOnRealData(t *testing.T) {
	d, dashExprs := loadDashboard(t)
	_, ruleExprs := loadRules(t)
	dir := t.TempDir()

	// What the gateways need: a PEM key, a JWKS endpoint, Redis, a limits file, and two broken upstreams.
	key, pub, _ := writeKeyPair(t, dir, "issuer")
	jwksKey, _, jwksPriv := writeKeyPair(t, dir, "jwks")
	forger, _, _ := writeKeyPair(t, dir, "forger")
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{rsaJWK(&jwksPriv.PublicKey, "jwks-1")}})
	}))
	t.Cleanup(jwks.Close)
	redis := vmtest.StartRedis(t).Addr
	limits := filepath.Join(dir, "limits.yaml")
	writeFile(t, limits, "limits:\n  - type: queries\n    value: 1000\n  - type: queries\n    value: 30\n    key: claim:sub\n")
	// Query limits and access policies are on in gw1, so that their metrics and alerts have data: a blocked query
	// is refused, and tokens without vm_access get their access from a policy, or none.
	queryLimits := filepath.Join(dir, "querylimits.yaml")
	writeFile(t, queryLimits, "limits:\n  - blocked_queries:\n      - pattern: 'count({__name__=~\".+\"})'\n")
	policies := filepath.Join(dir, "policies.yaml")
	writeFile(t, policies, "policies:\n  - name: sso-dev\n    match: {iss: https://sso.example.com, groups: metrics-dev}\n"+
		"    vm_access: {extra_labels: {team: dev}, mode: 1}\n")
	// gw1 reads from a current VictoriaMetrics, which reports each query's cost in its answer (1.79.5 does not).
	current := vmtest.StartCurrent(t)
	silent := blackhole(t)
	closed := vmtest.FreePort(t)

	// VictoriaMetrics scrapes both gateways every second, with the -metricsAuthKey, as docs/operations.md shows.
	gw1Addr, gw2Addr := vmtest.FreePort(t), vmtest.FreePort(t)
	scrape := filepath.Join(dir, "scrape.yml")
	writeFile(t, scrape, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: vmgateway
    params:
      authKey: ["scrape-secret"]
    static_configs:
      - targets: ["%s", "%s"]
`, gw1Addr, gw2Addr))
	vm := vmtest.Start(t, "-promscrape.config="+scrape, "-promscrape.config.strictParse")

	common := []string{
		"-enable.auth", "-auth.publicKeyFiles=" + pub, "-auth.jwksEndpoints=" + jwks.URL,
		"-enable.rateLimit", "-ratelimit.config=" + limits, "-datasource.url=" + vm.URL, "-ratelimit.refreshInterval=1s",
		"-ratelimit.redis.url=redis://" + redis, "-ratelimit.redis.keyPrefix=observability", "-metricsAuthKey=scrape-secret",
	}
	gw1 := startGatewayAt(t, gw1Addr, append([]string{"-read.url=" + current.URL, "-write.url=" + vm.URL,
		"-querylimits.config=" + queryLimits, "-auth.policyFile=" + policies}, common...))
	gw2 := startGatewayAt(t, gw2Addr, append([]string{"-read.url=http://" + silent, "-write.url=http://" + closed,
		"-read.timeout=1s", "-maxConcurrentRequests=1", "-maxQueueDuration=0"}, common...))

	read := mint(t, key, "-mode=read", "-extraLabels=team=dev", "-subject=dev-grafana")
	write := mint(t, key, "-mode=write", "-extraLabels=team=dev", "-subject=dev-agent")
	greedy := mint(t, key, "-mode=read", "-extraLabels=team=dev", "-subject=dev-script")
	viaJWKS := mint(t, jwksKey, "-mode=read", "-kid=jwks-1", "-subject=sso-user")
	forged := mint(t, forger, "-mode=full", "-subject=mallory")
	expired := mint(t, key, "-mode=read", "-lifetime=-1h")
	broken := mint(t, key, "-mode=full", "-subject=probe")
	viaPolicy := idpToken(t, jwksPriv, "sso-dev", "metrics-dev")
	noPolicy := idpToken(t, jwksPriv, "sso-stranger", "everyone")

	seen := map[string]map[int]int{"gw1": {}, "gw2": {}}
	byKind := map[string]map[int]int{} // for the log: what each kind of request got
	var mu sync.Mutex
	hit := func(gw, kind, method, path, token, body string) {
		st, _ := call(t, method, map[string]string{"gw1": gw1, "gw2": gw2}[gw]+path, token, body)
		mu.Lock()
		defer mu.Unlock()
		seen[gw][st]++
		if byKind[gw+": "+kind] == nil {
			byKind[gw+": "+kind] = map[int]int{}
		}
		byKind[gw+": "+kind][st]++
	}
	q := "/api/v1/query?" + url.Values{"query": {"sum(up)"}}.Encode()
	var wide []string
	for i := range 40 {
		wide = append(wide, fmt.Sprintf(`w%02d="x"`, i))
	}
	wideLabels := strings.Join(wide, ",")
	for round := 0; round < 6; round++ {
		hit("gw1", "read", http.MethodGet, q, read, "")
		hit("gw1", "range", http.MethodGet, "/api/v1/query_range?query=up&start=-5m&step=1m", read, "")
		hit("gw1", "labels", http.MethodGet, "/api/v1/labels", read, "")
		hit("gw1", "jwks", http.MethodGet, q, viaJWKS, "")
		hit("gw1", "write", http.MethodPost, "/api/v1/import/prometheus", write, fmt.Sprintf("demo_requests_total{round=\"%d\"} %d", round, round))
		// Over 1.79.5's label limit: the label guard drops it (VMGatewayWriteSeriesDropped).
		hit("gw1", "write over the label limit", http.MethodPost, "/api/v1/import/prometheus", write,
			"demo_wide{"+wideLabels+"} 1")
		hit("gw1", "write token reads", http.MethodGet, q, write, "")
		hit("gw1", "unknown path", http.MethodGet, "/api/v1/nope", read, "")
		hit("gw1", "traced", http.MethodGet, q+"&trace=1", read, "")
		hit("gw1", "blocked query", http.MethodGet, "/api/v1/query?"+url.Values{"query": {`count({__name__=~".+"})`}}.Encode(), read, "")
		hit("gw1", "policy", http.MethodGet, q, viaPolicy, "")
		hit("gw1", "no policy", http.MethodGet, q, noPolicy, "")
		hit("gw1", "expired", http.MethodGet, q, expired, "")
		for i := 0; i < 3; i++ {
			hit("gw1", "no token", http.MethodGet, q, "", "")
		}
		for i := 0; i < 8; i++ {
			hit("gw1", "forged", http.MethodGet, q, forged, "")
			hit("gw1", "greedy", http.MethodGet, q, greedy, "")
			hit("gw2", "write to a closed port", http.MethodPost, "/api/v1/import/prometheus", broken, "x 1")
		}
		// One read holds gw2's only slot until -read.timeout; the others find no slot.
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); hit("gw2", "read from a silent upstream", http.MethodGet, q, broken, "") }()
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
	}
	for gw, want := range map[string][]int{"gw1": {200, 204, 401, 403, 404, 422, 429}, "gw2": {429, 502, 504}} {
		for _, code := range want {
			if seen[gw][code] == 0 {
				t.Errorf("%s never answered %d: the traffic does not exercise what the dashboard shows; got %v", gw, code, seen[gw])
			}
		}
	}
	t.Logf("answers: %v", byKind)

	// Every expression returns data; VictoriaMetrics has scraped a few times by now, and retries cover the
	// last scrape landing.
	var all []expression
	all = append(all, dashExprs...)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		qs, _ := v.Query.(map[string]any)
		s, _ := qs["query"].(string)
		m := regexp.MustCompile(`^label_values\((.+), *([a-z_]+)\)$`).FindStringSubmatch(s)
		if m == nil {
			t.Errorf("variable %s: want a label_values(selector, label) query, got %q", v.Name, s)
			continue
		}
		all = append(all, expression{where: "variable " + v.Name + " (label " + m[2] + ")", expr: m[1], threshold: m[2]})
	}
	all = append(all, ruleExprs...)
	deadline := time.Now().Add(30 * time.Second)
	var failures []string
	for {
		failures = failures[:0]
		for _, e := range all {
			if msg := checkExpression(t, vm.URL, e); msg != "" {
				failures = append(failures, e.where+": "+msg)
			}
		}
		if len(failures) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	for _, f := range failures {
		t.Error(f)
	}
	// The version the binary was built with reached VictoriaMetrics, for both replicas.
	bi, err := instantQuery(t, vm.URL, "", `vmgateway_build_info{job="vmgateway"}`)
	if err != nil || len(bi) != 2 || bi[0].Metric["version"] != testVersion || bi[1].Metric["version"] != testVersion {
		t.Errorf("want vmgateway_build_info{version=%q} from both gateways, got %v (%v)", testVersion, bi, err)
	}
	t.Logf("%d dashboard queries, %d variables and %d rules checked", len(dashExprs), len(all)-len(dashExprs)-len(ruleExprs), len(ruleExprs))
}

// checkExpression returns what is wrong with one expression on the scraped data, or "".
func checkExpression(t *testing.T, vmURL string, e expression) string {
	expr := grafanaVars.Replace(e.expr)
	if strings.Contains(expr, "$") {
		return fmt.Sprintf("%q uses a variable the dashboard does not define", e.expr)
	}
	parsed, err := metricsql.Parse(expr)
	if err != nil {
		return fmt.Sprintf("metricsql cannot parse %q: %s", expr, err)
	}
	if e.threshold != "" { // a variable: the selector's series must carry the label
		r, err := instantQuery(t, vmURL, "", expr)
		if err != nil {
			return err.Error()
		}
		for _, s := range r {
			if s.Metric[e.threshold] != "" {
				return ""
			}
		}
		return fmt.Sprintf("no series of %s has the label %s", expr, e.threshold)
	}
	if !e.alert {
		r, err := instantQuery(t, vmURL, "", expr)
		if err != nil {
			return fmt.Sprintf("%s: %s", expr, err)
		}
		if len(r) == 0 {
			return fmt.Sprintf("%s returns no data", expr)
		}
		return ""
	}
	// A rule: its expression is `<query> <comparison> <number>`; the query returns data on any healthy or broken
	// setup, and the comparison decides whether the alert fires.
	be, ok := parsed.(*metricsql.BinaryOpExpr)
	if !ok || be.Bool || !isComparison(be.Op) {
		return fmt.Sprintf("%q is not `<query> <comparison> <number>`", e.expr)
	}
	if _, ok := be.Right.(*metricsql.NumberExpr); !ok {
		return fmt.Sprintf("%q does not compare with a number on the right", e.expr)
	}
	query := string(be.Left.AppendString(nil))
	r, err := instantQuery(t, vmURL, "", query)
	if err != nil {
		return fmt.Sprintf("%s: %s", query, err)
	}
	if len(r) == 0 {
		return fmt.Sprintf("%s (the rule without its threshold) returns no data", query)
	}
	firing, err := instantQuery(t, vmURL, "", expr)
	if err != nil {
		return fmt.Sprintf("%s: %s", expr, err)
	}
	if fires := len(firing) > 0; fires != e.mustFire {
		return fmt.Sprintf("fires=%v on the test's traffic, want %v; %s is %s", fires, e.mustFire, query, values(r))
	}
	return ""
}

func isComparison(op string) bool {
	switch op {
	case "==", "!=", ">", "<", ">=", "<=":
		return true
	}
	return false
}

func values(r []series) string {
	var out []string
	for _, s := range r {
		out = append(out, fmt.Sprintf("%v=%v", s.Metric, s.Value[1]))
	}
	return strings.Join(out, ", ")
}

// startGatewayAt runs the gateway on a given address (the scrape config names it before the gateway starts).
func startGatewayAt(t *testing.T, addr string, args []string) string {
	t.Helper()
	p := startProc(t, t.TempDir(), append([]string{gatewayBin, "-httpListenAddr=" + addr}, args...)...)
	if !p.healthy(addr) {
		t.Fatalf("vmgateway on %s did not become healthy", addr)
	}
	return "http://" + addr
}

// idpToken is a token as an identity provider issues it, signed by the JWKS key: no vm_access, only claims for
// -auth.policyFile to match.
func idpToken(t *testing.T, key *rsa.PrivateKey, sub, group string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "https://sso.example.com", "sub": sub,
		"groups": []string{group}, "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = "jwks-1"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rsaJWK is the JWK of an RSA public key.
func rsaJWK(k *rsa.PublicKey, kid string) map[string]string {
	enc := base64.RawURLEncoding.EncodeToString
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
}

// blackhole accepts TCP connections and never answers: an upstream that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}
