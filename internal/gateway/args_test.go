package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

const formType = "application/x-www-form-urlencoded"

// post sends a POST with a body of the given type through the gateway; team "" is an unrestricted token.
func post(t *testing.T, gwURL, path, ctype, body, team string, header ...string) (int, jsonError, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, gwURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if team != "" {
		req.Header.Set("X-Team", team)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	code, _, e, raw := send(t, req)
	return code, e, raw
}

// TestReadArgsRefused: what the gateway cannot read, or reads as more work or args than VictoriaMetrics would use,
// is refused with a JSON error before anything is forwarded, for restricted tokens and (in cluster mode, where the
// tenant labels are checked) for unrestricted ones.
func TestReadArgsRefused(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	for _, cluster := range []bool{false, true} {
		gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) {
			c.Auth, c.Cluster = headerAuth{}, cluster
			c.Limits = Limits{MaxQueryLen: 3000, MaxSelectorArgs: 5, MaxTotalQueryLen: 3000, MaxReadBodySize: 8192}
		})
		teams := []string{"dev"}
		if cluster {
			teams = append(teams, "")
		}
		sel := url.QueryEscape(`{job="` + strings.Repeat("j", 700) + `"}`)
		for _, tc := range []struct {
			name, path, ctype, body string
			extra                   []string
			status                  int
			msg                     string
		}{
			{"bad URL encoding", "/api/v1/query?query=%zz", "", "", nil, 400, "cannot parse the URL query"},
			{"semicolon in the URL query", "/api/v1/query?query=up;extra_label=team=ops", "", "", nil, 400, "cannot parse the URL query"},
			{"bad body encoding", "/api/v1/query", formType, "query=%zz", nil, 400, "cannot parse the form body"},
			{"multipart read body", "/api/v1/query", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nup\r\n--x--\r\n", nil, 415, "must be application/x-www-form-urlencoded"},
			{"json read body", "/api/v1/series", "application/json", `{"match[]":"up"}`, nil, 415, "must be application/x-www-form-urlencoded"},
			{"body without a content type", "/api/v1/series", "", "match[]=up", nil, 415, "must be application/x-www-form-urlencoded"},
			{"unparsable content type", "/api/v1/query", "form;;", "query=up", nil, 415, "cannot parse Content-Type"},
			{"compressed form", "/api/v1/query", formType, "\x1f\x8b...", []string{"Content-Encoding", "gzip"}, 415, "must not be compressed"},
			{"compressed form behind an identity header", "/api/v1/query", formType, "\x1f\x8b...", []string{"Content-Encoding", "identity", "Content-Encoding", "gzip"}, 415, "must not be compressed"},
			{"body too large", "/api/v1/query", formType, "query=up&x=" + strings.Repeat("a", 8192), nil, 413, "-maxReadBodySize"},
			{"a second query in the body", "/api/v1/query", formType, "query=a&query=b", nil, 400, "the request has 2 query args (in the URL and the body together); VictoriaMetrics reads only one"},
			{"a query in the URL and the body", "/api/v1/query_range?query=a", formType, "query=b", nil, 400, "VictoriaMetrics reads only one"},
			{"too many match[]", "/api/v1/series?match[]=a&match[]=b&match[]=c", formType, "match[]=d&match=e&extra_filters[]=f", nil, 400, "the request has 6 match[] / extra_filters[] args; at most 5 are accepted (-search.maxSelectorArgs)"},
			{"selectors too long together", "/api/v1/series?match[]=" + sel + "&match[]=" + sel, formType, "match[]=" + sel + "&extra_filters[]=" + sel + "&match[]=" + sel, nil, 400, "at most 3000 are accepted (-search.maxTotalQueryLen)"},
			{"a long extra_filters[]", "/api/v1/query?query=up&extra_filters[]=" + strings.Repeat("a", 3001), "", "", nil, 400, "the extra_filters[] arg in the URL is 3001 bytes long"},
			{"a query nesting too deep", "/api/v1/query", formType, "query=" + url.QueryEscape(strings.Repeat("-", 1001)+"up"), nil, 400, "nests more than 1000 levels deep"},
			{"a step past a year", "/api/v1/query_range?query=up&start=1&end=2&step=100y", "", "", nil, 400, "step=100y is longer than a year"},
			{"a step past a year in the body", "/api/v1/query", formType, "query=up&step=31536001", nil, 400, "step=31536001 is longer than a year"},
		} {
			for _, team := range teams {
				name := fmt.Sprintf("%s (cluster=%v, team=%q)", tc.name, cluster, team)
				code, e, raw := post(t, gw.URL, tc.path, tc.ctype, tc.body, team, tc.extra...)
				if code != tc.status || e.Status != "error" || !strings.Contains(e.Error, tc.msg) {
					t.Errorf("%s: %d %.300s; want %d and %q", name, code, raw, tc.status, tc.msg)
				}
				if got := rec.Requests(); len(got) != 0 {
					t.Errorf("%s: refused, yet %d forwarded", name, len(got))
				}
			}
		}
	}
}

// TestReadBodyOnlyWhereRead: a form body on a method whose body VictoriaMetrics does not read (GET, HEAD, OPTIONS) is
// refused with nothing forwarded, whatever its framing, rather than checked and rewritten and then ignored upstream:
// a selector in a GET's body kept the token's match[] out of the URL, which VictoriaMetrics alone reads. POST and
// PUT forms are read and rewritten.
func TestReadBodyOnlyWhereRead(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) { c.Auth = headerAuth{} })
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
		for _, chunked := range []bool{false, true} {
			for _, path := range []string{"/api/v1/label/pw/values", "/api/v1/series", "/api/v1/query"} {
				name := fmt.Sprintf("%s %s (chunked=%v)", method, path, chunked)
				var body io.Reader = strings.NewReader(`match[]={pw="hunter2"}&query=up`)
				if chunked {
					body = io.MultiReader(body)
				}
				req, err := http.NewRequest(method, gw.URL+path, body)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", formType)
				req.Header.Set("X-Team", "dev")
				code, _, e, raw := send(t, req)
				if code != http.StatusBadRequest {
					t.Errorf("%s: %d %.200s; want 400", name, code, raw)
				}
				if method != http.MethodHead && (e.Status != "error" || !strings.Contains(e.Error, "VictoriaMetrics does not read the body of a "+method+" request")) {
					t.Errorf("%s: %.200s; want a JSON error saying the body is not read", name, raw)
				}
				if got := rec.Requests(); len(got) != 0 {
					t.Errorf("%s: refused, yet %d forwarded", name, len(got))
				}
			}
		}
	}
	for _, method := range []string{http.MethodPost, http.MethodPut} {
		req, err := http.NewRequest(method, gw.URL+"/api/v1/series", strings.NewReader(`match[]={pw="hunter2"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", formType)
		req.Header.Set("X-Team", "dev")
		if code, _, _, raw := send(t, req); code != http.StatusOK {
			t.Fatalf("%s with a form: %d %.200s; want it forwarded", method, code, raw)
		}
		got := rec.Requests()
		if len(got) != 1 || !strings.Contains(string(got[0].Body), url.QueryEscape(`team="dev"`)) {
			t.Errorf("%s with a form: forwarded %+v; want one request, its form's selector rewritten for team dev", method, got)
		}
	}
}

// TestReadArgsUnrestrictedSingleNode: a full unrestricted token of a single-node gateway gets its args forwarded as
// sent, but each query and selector VictoriaMetrics parses is read, and one that would stop it is refused; so are
// args the gateway cannot read as VictoriaMetrics would. The limits that bound VictoriaMetrics' work still apply.
func TestReadArgsUnrestrictedSingleNode(t *testing.T) {
	// 200 bytes that VictoriaMetrics expands to 2^25 selectors, in an extra_filters arg it parses everywhere.
	var wb strings.Builder
	wb.WriteString(`with (t0 = {a="b"}`)
	for i := 1; i <= 25; i++ {
		fmt.Fprintf(&wb, ", t%d = t%d + t%d", i, i-1, i-1)
	}
	wb.WriteString(") t25")
	withBomb := wb.String()
	rec := vmtest.NewRecorder(t)
	gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxQueryLen: 1000, MaxSelectorArgs: 5, MaxTotalQueryLen: 2000, MaxReadBodySize: 8192}
	})
	// Well-formed, but neither sorted nor escaped as url.Values would: forwarded byte for byte.
	raw := "match[]=up%7Bteam%3D%22ops%22%7D&extra_label=team=ops&trace=1"
	for _, tc := range []struct{ path, ctype, body string }{
		{"/api/v1/series?" + raw, formType, "step=1"},
		{"/api/v1/labels?extra_filters[]=" + url.QueryEscape(`{env="x"}`) + "&extra_label=team=ops", "", ""},
		{"/api/v1/query?query=up%7Bteam%3D%22ops%22%7D&extra_label=team=ops&trace=1", formType, "step=1&nocache=1"},
	} {
		if code, _, body := post(t, gw.URL, tc.path, tc.ctype, tc.body, ""); code != 200 {
			t.Fatalf("%s: %d %s", tc.ctype, code, body)
		}
		got := rec.Requests()
		if len(got) != 1 || got[0].Path+"?"+got[0].RawQuery != "/prometheus"+tc.path || got[0].Body != tc.body {
			t.Errorf("%s %s: forwarded %+v; want the request as sent", tc.path, tc.ctype, got)
		}
	}
	for _, tc := range []struct {
		name, path, ctype, body string
		status                  int
		msg                     string
	}{
		{"two queries", "/api/v1/query?query=a", formType, "query=b", 400, "reads only one"},
		{"a query that stops VictoriaMetrics", "/api/v1/query?query=" + url.QueryEscape(`limit_offset("a", "b", x)`), "", "", 400, "limit_offset's limit must be a number"},
		{"a rollup without its series in the form", "/api/v1/query_range", formType, "query=sum(quantiles_over_time())", 400, "without the series it rolls up"},
		{"a query that does not parse", "/api/v1/query?query=sum(", "", "", 400, "cannot parse query"},
		{"a form that does not parse", "/api/v1/query?query=up", formType, "step=%zz", 400, "cannot parse the form body"},
		{"a form that does not parse, on series", "/api/v1/series?match[]=up", formType, "step=%zz", 400, "cannot parse the form body"},
		{"a multipart form, on series", "/api/v1/series", "multipart/form-data; boundary=x", "--x--\r\n", 415, "must be application/x-www-form-urlencoded"},
		// VictoriaMetrics parses extra_filters on every read API, and match[] where it is read: a selector nested a
		// million deep overflowed the stack of v1.151 and vmselect v1.150 on the Graphite tag APIs (a review).
		{"extra_filters nested deep, on Graphite", "/tags/autoComplete/tags", formType,
			"extra_filters[]=" + strings.Repeat("(", 450) + "x%2B" + strings.Repeat("(", 45) + "x" + strings.Repeat(")", 495), 400, "must be a series selector"},
		{"extra_filters too long, on Graphite", "/render?target=a", formType, "extra_filters[]=" + strings.Repeat("(", 1500), 400, "-search.maxQueryLen"},
		{"extra_filters that does not parse, on buildinfo", "/api/v1/status/buildinfo?extra_filters=" + url.QueryEscape("{a="), "", "", 400, "cannot parse extra_filters"},
		{"extra_filters that is no selector", "/api/v1/labels?extra_filters[]=" + url.QueryEscape("sum(x)"), "", "", 400, "must be a series selector"},
		{"match[] that is no selector, on series", "/api/v1/series", formType, "match[]=" + url.QueryEscape("rate(x[5m])"), 400, "must be a series selector"},
		{"match that does not parse, on export", "/api/v1/export?match=" + url.QueryEscape(`{a="`), "", "", 400, "cannot parse match"},
		{"a WITH bomb in extra_filters, on vmui", "/vmui/?extra_filters[]=" + url.QueryEscape(withBomb), "", "", 400, "WITH"},
		{"a multipart form, which VictoriaMetrics reads a query from", "/api/v1/query", "multipart/form-data; boundary=x",
			"--x\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nrate()\r\n--x--\r\n", 415, "must be application/x-www-form-urlencoded"},
	} {
		if code, e, _ := post(t, gw.URL, tc.path, tc.ctype, tc.body, ""); code != tc.status || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s: %d %q; want %d saying %q", tc.name, code, e.Error, tc.status, tc.msg)
		}
		if got := rec.Requests(); len(got) != 0 {
			t.Errorf("%s: refused, yet %d forwarded", tc.name, len(got))
		}
	}
	// A metric name that VictoriaMetrics v1.79 would print back as a keyword goes inside the braces.
	if code, _, body := post(t, gw.URL, "/api/v1/query?query="+url.QueryEscape(`-{__name__="on"}`), "", "", ""); code != 200 {
		t.Fatalf("keyword name: %d %s", code, body)
	}
	if got := rec.Requests(); len(got) != 1 || got[0].Query.Get("query") != `0 - {__name__=~"on"}` {
		t.Errorf("keyword name: forwarded %+v", got)
	}
}

// TestReadBodyKeepsItsShape: a form body of unknown length is read and forwarded with a length; the enforcer's
// rewrite replaces what net/http may have parsed before; a write body is forwarded as sent, never read first.
func TestReadBodyKeepsItsShape(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxReadBodySize: 8192}
	})
	req, _ := http.NewRequest(http.MethodPost, gw.URL+"/api/v1/series", chunked{strings.NewReader("match[]=up")})
	req.Header.Set("Content-Type", formType)
	req.Header.Set("X-Team", "dev")
	if code, _, _, raw := send(t, req); code != 200 {
		t.Fatalf("chunked form: %d %s", code, raw)
	}
	got := rec.Requests()
	if len(got) != 1 || got[0].Body != "match%5B%5D=up%7Bteam%3D%22dev%22%7D" || got[0].Header.Get("Content-Length") != fmt.Sprint(len(got[0].Body)) {
		t.Errorf("chunked form forwarded as %+v", got)
	}
	// An empty chunked body of another type is no body.
	req, _ = http.NewRequest(http.MethodPost, gw.URL+"/api/v1/labels", chunked{strings.NewReader("")})
	req.Header.Set("X-Team", "dev")
	if code, _, _, raw := send(t, req); code != 200 {
		t.Errorf("empty chunked body: %d %s", code, raw)
	}
	rec.Requests()
	// Exactly -maxReadBodySize is fine.
	body := "step=" + strings.Repeat("1", 8192-len("step=&query=up")) + "&query=up"
	if code, _, raw := post(t, gw.URL, "/api/v1/query", formType, body, "dev"); code != 200 {
		t.Errorf("a body of exactly the limit: %d %s", code, raw)
	}
	rec.Requests()
	payload := strings.Repeat("w 1\n", 5000)
	if code, _, raw := post(t, gw.URL, "/api/v1/import/prometheus?extra_label=team=ops", formType, payload, "dev"); code != 200 {
		t.Fatalf("write: %d %s", code, raw)
	}
	if got := rec.Requests(); len(got) != 1 || got[0].Body != payload || got[0].RawQuery != "extra_label=team%3Ddev" {
		t.Errorf("write forwarded as %.200v", got)
	}
}

// TestForwardedFormWithinVictoriaMetricsLimit: VictoriaMetrics reads at most 10 MiB of a form and answers from the
// URL args alone past it, so a form body that would reach it larger, rewritten or not, is refused with 413.
func TestForwardedFormWithinVictoriaMetricsLimit(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxReadBodySize: 12 << 20}
	})
	// The rewrite adds {team="dev"} (percent-encoded, 27 bytes): a body 10 bytes short of the limit grows past it.
	pad := func(n int) string { return "query=up&pad=" + strings.Repeat("p", n-len("query=up&pad=")) }
	for _, tc := range []struct {
		name, team, body string
		status           int
	}{
		{"rewrite grows past the limit", "dev", pad(vmMaxFormSize - 10), 413},
		{"rewrite stays within", "dev", pad(vmMaxFormSize - 27), 200},
		{"unrestricted, past the limit", "", pad(vmMaxFormSize + 1), 413},
		{"unrestricted, at the limit", "", pad(vmMaxFormSize), 200},
	} {
		code, e, raw := post(t, gw.URL, "/api/v1/query", formType, tc.body, tc.team)
		got := rec.Requests()
		if code != tc.status {
			t.Errorf("%s: %d %.300s; want %d", tc.name, code, raw, tc.status)
			continue
		}
		if code == 413 {
			if !strings.Contains(e.Error, "VictoriaMetrics reads at most 10485760 bytes of a form") || len(got) != 0 {
				t.Errorf("%s: %q, %d forwarded", tc.name, e.Error, len(got))
			}
			continue
		}
		if len(got) != 1 || len(got[0].Body) > vmMaxFormSize {
			t.Errorf("%s: forwarded %d requests", tc.name, len(got))
		}
	}
}

// TestTraceRemoved: the trace arg, in the URL or the form, however its name is escaped, reaches VictoriaMetrics
// only from an unrestricted full token of a single-node gateway: a trace shows vmstorage addresses and index
// internals, and a cluster's shows every tenant's index partitions.
func TestTraceRemoved(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	for _, cluster := range []bool{false, true} {
		gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) { c.Auth, c.Cluster = headerAuth{}, cluster })
		for _, tok := range []struct {
			mode, team string
			keeps      bool
		}{{"full", "", true}, {"read", "", false}, {"full", "dev", false}, {"read", "dev", false}} {
			for _, where := range []struct{ path, body string }{
				{"/api/v1/query?query=up&trace=1", ""},
				{"/api/v1/query_range?query=up&tr%61ce=1", ""},
				{"/api/v1/query", "query=up&trace=true"},
				{"/api/v1/labels?trace=1", ""},
				{"/api/v1/status/active_queries?trace=1", ""},
			} {
				if tok.team != "" && strings.Contains(where.path, "active_queries") {
					continue // refused to restricted tokens
				}
				name := fmt.Sprintf("cluster=%v %s/%q %s %s", cluster, tok.mode, tok.team, where.path, where.body)
				code, _, raw := post(t, gw.URL, where.path, formType, where.body, tok.team, "X-Mode", tok.mode, "X-Tenant", "0")
				got := rec.Requests()
				if code != 200 || len(got) != 1 {
					t.Errorf("%s: %d %.200s, %d forwarded", name, code, raw, len(got))
					continue
				}
				form, _ := url.ParseQuery(got[0].Body)
				has := got[0].Query.Has("trace") || form.Has("trace")
				if has != (tok.keeps && !cluster) {
					t.Errorf("%s: forwarded %s %q; trace kept=%v, want %v", name, got[0].RawQuery, got[0].Body, has, tok.keeps)
				}
			}
		}
	}
}

// TestSlowReadBodyHoldsNoSlot: a read request whose body does not come holds none of its unit's request slots: the
// unit's only slot stays free for its next requests, and the slow one gets 408 after -http.readBodyTimeout. It holds
// one of the unit's body slots (as many as the request slots): the unit's next body waits for it and gets 429, while
// another team's body is read (one team's connections sending bodies slowly kept every other client out under
// -http.maxConnections, an attacker's review).
func TestSlowReadBodyHoldsNoSlot(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxConcurrentRequests: 2, MaxConcurrentPerTenantRequests: 1, ReadBodyTimeout: 700 * time.Millisecond,
			MaxQueueDuration: 50 * time.Millisecond}
	})
	conn, br := stalledRequest(t, gw.URL, "/api/v1/query", formType, "dev", 100, "q")
	// The stalled body has its slot once its request is in: a request of another team shows the gateway has read it.
	if code, _, raw := post(t, gw.URL, "/api/v1/query", formType, "query=up", "ops"); code != 200 {
		t.Fatalf("another team's body beside dev's stalled one: %d %s", code, raw)
	}
	for i := 0; i < 3; i++ {
		if code, _, _, raw := get(t, gw.URL+"/api/v1/query?query=up", "X-Team", "dev"); code != 200 {
			t.Fatalf("a request of dev's beside its stalled body: %d %s", code, raw)
		}
	}
	// Until the stalled request's handler has taken its slot, which a loaded machine may delay, a body still gets in.
	complete := 4
	for deadline := time.Now().Add(5 * time.Second); ; complete++ {
		code, e, raw := post(t, gw.URL, "/api/v1/query", formType, "query=up", "dev")
		if code == http.StatusTooManyRequests && strings.Contains(e.Error, "-maxConcurrentPerTenantRequests=1") {
			break
		}
		if code != 200 || time.Now().After(deadline) {
			t.Fatalf("dev's second body beside its stalled one: %d %s; want 429 naming -maxConcurrentPerTenantRequests", code, raw)
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to the stalled body: %s", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "-http.readBodyTimeout=700ms") {
		t.Fatalf("stalled body: %d %s", resp.StatusCode, b)
	}
	if got := rec.Requests(); len(got) != complete {
		t.Errorf("forwarded %d requests, want the %d complete ones", len(got), complete)
	}
	// Its slot is free again.
	if code, _, raw := post(t, gw.URL, "/api/v1/query", formType, "query=up", "dev"); code != 200 {
		t.Fatalf("dev's body after the stalled one ended: %d %s", code, raw)
	}
}

// TestStalledWriteBody: a write body that stops coming is ended with 408, its upstream request is cancelled
// (the upstream sees a broken body, not a shorter one) and its slot is free again.
func TestStalledWriteBody(t *testing.T) {
	bodyErrs := make(chan error, 10)
	upSrv := newBodyReadingUpstream(t, bodyErrs)
	gw := serveGateway(t, upSrv, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxConcurrentPerTenantRequests: 1, WriteBodyIdleTimeout: 500 * time.Millisecond}
	})
	conn, br := stalledRequest(t, gw.URL, "/api/v1/import/prometheus", "text/plain", "dev", 1000, "stall_probe 1\n")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to the stalled write: %s", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), `"errorType":"timeout"`) ||
		!strings.Contains(string(b), "-http.writeBodyIdleTimeout=500ms") {
		t.Fatalf("stalled write: %d %s", resp.StatusCode, b)
	}
	select {
	case err := <-bodyErrs:
		if err == nil {
			t.Errorf("the upstream read the stalled body to a clean end")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the upstream request was not ended")
	}
	// The unit's one slot is free again.
	if code, _, raw := post(t, gw.URL, "/api/v1/import/prometheus", "text/plain", "ok 1\n", "dev"); code != 204 {
		t.Fatalf("a write after the stalled one: %d %s", code, raw)
	}
	if err := <-bodyErrs; err != nil {
		t.Errorf("a complete write: the upstream's body read failed: %s", err)
	}
}

// newBodyReadingUpstream answers 204 after reading the whole body, and reports how the read ended.
func newBodyReadingUpstream(t *testing.T, errs chan<- error) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errs <- err
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// stalledRequest sends the headers of a POST with a Content-Length of n and the first bytes of its body, then
// nothing more; the connection is closed at the end of the test.
func stalledRequest(t *testing.T, gwURL, path, ctype, team string, n int, first string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gwURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: %s\r\nX-Team: %s\r\nContent-Length: %d\r\n\r\n%s", path, ctype, team, n, first)
	return conn, bufio.NewReader(conn)
}

// TestTeamsOfOneTenantDoNotShareSlots: in single-node mode every team is tenant 0:0, yet a team that fills its
// slots leaves the other teams' and the unrestricted tokens' slots free.
func TestTeamsOfOneTenantDoNotShareSlots(t *testing.T) {
	upURL, arrived, release := blockingUpstream(t)
	gw := serveGateway(t, upURL, tlsclient.Options{}, func(c *Config) {
		c.Auth = headerAuth{}
		c.Limits = Limits{MaxConcurrentPerTenantRequests: 1}
	})
	first := make(chan int, 1)
	go func() {
		code, _, _, _ := get(t, gw.URL+"/api/v1/query?query=first", "X-Team", "dev")
		first <- code
	}()
	<-arrived
	code, _, e, raw := get(t, gw.URL+"/api/v1/query?query=second", "X-Team", "dev")
	if code != http.StatusTooManyRequests || !strings.Contains(e.Error, `too many concurrent requests for tenant 0:0 (tokens restricted to labels {team="dev"}`) {
		t.Fatalf("dev's second request: %d %s", code, raw)
	}
	var others []chan int
	for _, team := range []string{"ops", ""} {
		done := make(chan int, 1)
		go func() {
			code, _, _, _ := get(t, gw.URL+"/api/v1/query?query=other", "X-Team", team)
			done <- code
		}()
		select {
		case <-arrived:
		case code := <-done:
			t.Fatalf("team %q beside a full dev: %d", team, code)
		}
		others = append(others, done)
	}
	release()
	if c := <-first; c != http.StatusNoContent {
		t.Fatalf("first: %d", c)
	}
	// Every request ends before the test does: the servers' cleanup closes the idle connections of the transport
	// they share, and broke one still being answered (a CI run).
	for _, done := range others {
		if c := <-done; c != http.StatusNoContent {
			t.Errorf("another team's request: %d", c)
		}
	}
}

// TestSlowUpstreamIsNoStalledWrite: an upstream slow to take a large write body is not the client's stall: only
// the time the gateway waits for the client counts against -http.writeBodyIdleTimeout.
func TestSlowUpstreamIsNoStalledWrite(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * time.Second)
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != 32<<20 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	gw := serveGateway(t, srv.URL, tlsclient.Options{}, func(c *Config) {
		// An idle limit well below the upstream's wait, yet far above how long a loaded machine's scheduler leaves the
		// sending client without a turn.
		c.Limits = Limits{WriteBodyIdleTimeout: time.Second}
	})
	code, _, raw := post(t, gw.URL, "/api/v1/import/prometheus", "text/plain", strings.Repeat("x", 32<<20), "")
	if code != http.StatusNoContent {
		t.Fatalf("a write to a slow upstream: %d %.300s", code, raw)
	}
}

// TestArgsPaddedPastVictoriaMetricsBound: url.ParseQuery, which VictoriaMetrics parses with, drops every arg of a
// query or form with more than 10,000 of them. A client that pads its URL query up to that bound must not push the
// args the gateway adds for its token (or the backend URL's) past it: such a request is refused, nothing forwarded.
func TestArgsPaddedPastVictoriaMetricsBound(t *testing.T) {
	pad := func(n int) string { return strings.Repeat("x&", n-1) + "x" }
	for _, tc := range []struct {
		name, backendQuery, method, target, body, team string
		status                                         int
	}{
		{"restricted, the added args pass the bound", "", "GET", "/api/v1/label/secret/values?" + pad(9999), "", "dev", 400},
		{"restricted, within the bound", "", "GET", "/api/v1/label/secret/values?" + pad(9990), "", "dev", 200},
		// The rewrite changes a form's values, never their number: the added args go to the URL.
		{"restricted form at the bound", "", "POST", "/api/v1/labels", pad(10000), "dev", 200},
		{"unrestricted, at the bound", "", "GET", "/api/v1/labels?" + pad(10000), "", "", 200},
		{"unrestricted, the backend URL's args pass the bound", "extra_label=env%3Dprod", "GET", "/api/v1/labels?" + pad(10000), "", "", 400},
		{"restricted write, the added args pass the bound", "", "POST", "/api/v1/import/prometheus?" + pad(10000), "m 1\n", "dev", 400},
		{"restricted write at the bound", "", "POST", "/api/v1/import/prometheus?" + pad(9999), "m 1\n", "dev", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := vmtest.NewRecorder(t)
			upstream := rec.URL
			if tc.backendQuery != "" {
				upstream += "/?" + tc.backendQuery
			}
			gw := serveGateway(t, upstream, tlsclient.Options{}, func(c *Config) { c.Auth = headerAuth{} })
			req, err := http.NewRequest(tc.method, gw.URL+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.method == "POST" && !strings.Contains(tc.target, "import") {
				req.Header.Set("Content-Type", formType)
			}
			if tc.team != "" {
				req.Header.Set("X-Team", tc.team)
			}
			code, _, e, raw := send(t, req)
			got := rec.Requests()
			if code != tc.status {
				t.Fatalf("%d %.300s; want %d", code, raw, tc.status)
			}
			if code == 400 {
				if !strings.Contains(e.Error, "reads at most 10000 and would drop them all") || len(got) != 0 {
					t.Fatalf("%q, %d forwarded", e.Error, len(got))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("forwarded %d requests", len(got))
			}
			if q, err := url.ParseQuery(got[0].RawQuery); err != nil || tc.team != "" && q.Get("extra_label") != "team=dev" {
				t.Fatalf("the upstream could not read the query the gateway sent (%v) or lost its extra_label: %.200s", err, got[0].RawQuery)
			}
		})
	}
}
