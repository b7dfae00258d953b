package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestQueryTextThatStopsVictoriaMetrics: vmui's expand and prettify buttons send a query that VictoriaMetrics only
// parses and prints, and v1.151 and vmselect v1.150 panic and exit on the shapes the gateway refuses in a query, or
// overflow their stack on deep nesting (found by an attacker's review, with a restricted token and with an empty
// tenant's). Through the gateway they get 400 for every token, in the URL and in a form, the backend stays up, and a
// query that parses is answered as VictoriaMetrics answers it, not rewritten. 1.79.5 does not serve these paths. The
// extra_filters args that VictoriaMetrics parses on every read API get the same checks, on the Graphite tag APIs too.
func TestQueryTextThatStopsVictoriaMetrics(t *testing.T) {
	type setup struct {
		g      *gw
		prefix string            // the path root of the APIs through the gateway
		health string            // the backend's /health
		toks   map[string]string // token kind -> token
	}
	single := func(t *testing.T) setup {
		vm := vmtest.StartCurrent(t)
		priv, pub := keyPair(t, "ec")
		return setup{g: startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub),
			health: vm.URL + "/health",
			toks: map[string]string{
				"restricted":   mint(t, priv, "-mode=read", "-extraLabels=team=dev"),
				"unrestricted": mint(t, priv, "-mode=read"),
			}}
	}
	cluster := func(t *testing.T) setup {
		rc := startRealCluster(t)
		t3 := tenant.ID{AccountID: 3}
		return setup{g: rc.g, prefix: "/select/3:0/prometheus", health: rc.c.Select.URL + "/health",
			toks: map[string]string{
				"restricted":   clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}}),
				"unrestricted": clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead}),
			}}
	}
	deep := strings.Repeat("(", 1100) + "x" + strings.Repeat(")", 1100)
	links := make([]string, 300)
	for i := range links {
		links[i] = fmt.Sprintf(`x{a%d=""}`, i)
	}
	chain := strings.Join(links, "*")
	var ls strings.Builder
	ls.WriteString("with (L = label_set(x")
	for i := range 300 {
		fmt.Fprintf(&ls, `, "a%d", "v"`, i)
	}
	ls.WriteString(")) " + strings.Repeat("L * ", 39) + "L")
	labelSets := ls.String()
	// The reviewer's 2 MB form of a million parentheses overflowed VictoriaMetrics' stack.
	huge := strings.Repeat("(", 1_000_000) + "x" + strings.Repeat(")", 1_000_000)
	for _, v := range []struct {
		name  string
		start func(t *testing.T) setup
	}{{"current", single}, {"cluster", cluster}} {
		t.Run(v.name, func(t *testing.T) {
			su := v.start(t)
			for _, tok := range su.toks {
				code, _, body := do(t, http.MethodGet, su.g.URL+su.prefix+"/api/v1/query?query="+url.QueryEscape(chain), nil, bearer(tok)...)
				checkClusterError(t, "a chain of 300 selectors on query", code, body, 400, "optimizer would work out and copy label filters")
			}
			for _, api := range []string{"/expand-with-exprs", "/prettify-query"} {
				for kind, tok := range su.toks {
					for _, c := range []struct{ query, msg string }{
						{`-(time() @ (time() @ 1))`, "the @ modifier's time must be"},
						{`limit_offset(NaN, 1, x)`, "limit_offset's limit must be a number"},
						{`sum(quantiles_over_time())`, "quantiles_over_time() is called without the series it rolls up"},
						{deep, "the query nests more than 1000 levels deep"},
						{huge, "at most 16384 are accepted (-search.maxQueryLen)"},
						// 3 KB that v1.151's optimizer took 5 s of CPU for (a review), on /api/v1/query too.
						{chain, "optimizer would work out and copy label filters"},
						// 40 uses of a label_set of 300 pairs: 9 s of v1.151's CPU, answered in 2 ms by its clock.
						{labelSets, "optimizer would work out and copy label filters"},
					} {
						name := kind + " " + api + " " + c.query[:min(len(c.query), 30)]
						u := su.g.URL + su.prefix + api
						if len(c.query) < 16<<10 {
							code, _, body := do(t, http.MethodGet, u+"?query="+url.QueryEscape(c.query), nil, bearer(tok)...)
							checkClusterError(t, name+" (URL)", code, body, 400, c.msg)
						}
						code, _, body := do(t, http.MethodPost, u, strings.NewReader("query="+strings.NewReplacer("%28", "(", "%29", ")").Replace(url.QueryEscape(c.query))),
							append(bearer(tok), "Content-Type", "application/x-www-form-urlencoded")...)
						checkClusterError(t, name+" (form)", code, body, 400, c.msg)
					}
					// Printed and parsed again by VictoriaMetrics, this one made both exit: the gateway sends the name
					// inside the braces as a regexp, which prints back as itself.
					code, _, body := do(t, http.MethodGet, su.g.URL+su.prefix+api+"?format=json&query="+url.QueryEscape(`{__name__="sum"} or vector(1)`), nil, bearer(tok)...)
					if code != http.StatusOK || !strings.Contains(body, `__name__=~\"sum\"`) {
						t.Errorf("%s %s, a name that does not print as itself: %d %s", kind, api, code, body)
					}
					// A query that parses is answered (format=json: vmui's; expand answers a page without it), and not rewritten for the restricted token: it reads no series.
					code, _, body = do(t, http.MethodGet, su.g.URL+su.prefix+api+"?format=json&query="+url.QueryEscape(`sum(rate(x{job="a"}[5m]))   by (job)`), nil, bearer(tok)...)
					var a struct{ Status, Query, Expr string } // prettify answers the query, expand the expr
					if err := json.Unmarshal([]byte(body), &a); code != http.StatusOK || err != nil || a.Status != "success" ||
						!strings.Contains(a.Query+a.Expr, `x{job="a"}`) || strings.Contains(body, "team") {
						t.Errorf("%s %s, a plain query: %d %s", kind, api, code, body)
					}
				}
			}
			// VictoriaMetrics parses extra_filters on every read API: on the Graphite tag APIs, which unrestricted
			// tokens may call, the same million parentheses stopped both, and a WITH bomb of 200 bytes took
			// v1.151 seconds of CPU (a review).
			var wb strings.Builder
			wb.WriteString(`with (t0 = {a="b"}`)
			for i := 1; i <= 24; i++ {
				fmt.Fprintf(&wb, ", t%d = t%d + t%d", i, i-1, i-1)
			}
			wb.WriteString(") t24")
			graphite := strings.TrimSuffix(su.prefix, "/prometheus") + "/graphite/tags/autoComplete/tags"
			for _, c := range []struct{ body, msg string }{
				{"extra_filters[]=" + huge, "at most 16384 are accepted (-search.maxQueryLen)"},
				{"extra_filters[]=" + url.QueryEscape(wb.String()), "cannot parse extra_filters[]"},
				{"extra_filters=" + url.QueryEscape(`{a="b"}`) + "&extra_filters[]=" + deep, "the query nests more than 1000 levels deep"},
			} {
				code, _, body := do(t, http.MethodPost, su.g.URL+graphite, strings.NewReader(c.body),
					append(bearer(su.toks["unrestricted"]), "Content-Type", "application/x-www-form-urlencoded")...)
				checkClusterError(t, "graphite tags "+c.body[:min(len(c.body), 40)], code, body, 400, c.msg)
			}
			if code, _, body := do(t, http.MethodGet, su.g.URL+graphite+"?extra_filters[]="+url.QueryEscape(`{a="b"}`), nil, bearer(su.toks["unrestricted"])...); code != http.StatusOK {
				t.Errorf("graphite tags with a plain extra_filters: %d %s", code, body)
			}
			if code, _, body := do(t, http.MethodGet, su.health, nil); code != http.StatusOK {
				t.Fatalf("the backend after the refused queries: %d %s", code, body)
			}
		})
	}
}

// TestQueriesThatExhaustVictoriaMetrics: queries of a few KB that the gateway admitted and that took VictoriaMetrics
// seconds of CPU before any of its limits looked, or all its memory (an attacker's review, with a restricted token):
//   - one filter of 11 KB under 150 `* x` above a label_replace whose regexp does not compile: the optimizer copies
//     the filter into every selector, and the error is wrapped with the whole expression at every level, which ran
//     v1.151 out of memory past 6.7 GB;
//   - the same filter under 270 `* x`: 10 s of v1.151's CPU, 12 s of 1.79.5's, 8 s of vmselect's, in the optimizer;
//   - a union of 200 label_replace of dense regexps, which VictoriaMetrics compiles as it evaluates: 2.6 s and 1.5 GB
//     that stayed in its regexp cache;
//   - 24 label_join that double a label in each other: seconds and gigabytes from 700 bytes, and a long value
//     copied into a hundred labels: out of memory from 5 KB.
//
// Through the gateway each gets 400 naming what is wrong, for restricted and unrestricted tokens; the backends stay
// up and answer a plain query.
func TestQueriesThatExhaustVictoriaMetrics(t *testing.T) {
	long := `x{a="` + strings.Repeat("v", 11000) + `"}`
	var union []string
	for i := range 200 {
		union = append(union, fmt.Sprintf(`label_replace(z, "a", "$1", "b", "(?:(?:\\pL{30}){30})B%d")`, i))
	}
	joins := `label_set(vector(1), "a", "xxxxxxxxxxxxxxxx")`
	for range 24 {
		joins = `label_join(` + joins + `, "a", "", "a", "a")`
	}
	var copied strings.Builder
	copied.WriteString(`label_copy(label_join(label_set(cpu, "a", "` + strings.Repeat("x", 4000) + `"), "b", ""` + strings.Repeat(`, "a"`, 15) + `)`)
	for i := range 100 {
		fmt.Fprintf(&copied, `, "b", "c%d"`, i)
	}
	copied.WriteString(")")
	var phis strings.Builder
	for i := 1; i <= 2000; i++ {
		fmt.Fprintf(&phis, "0.%04d, ", i)
	}
	var p20 strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&p20, "0.%02d, ", i*4)
	}
	nested := `quantiles("c", ` + p20.String() + `quantiles("b", ` + p20.String() + `quantiles("a", ` + p20.String() +
		`cpu) by (inst)) by (inst, a)) by (inst, a, b)`
	queries := []struct{ query, msg string }{
		// Three nested calls of 20 phis: 8,000 series of each, v1.151 and vmselect out of memory (a review of the
		// first version, which bounded each call alone).
		{nested, "quantiles() and the calls within it make 8000 series of each series they read"},
		// 2,000 phis over 300 series: 600,000 series, v1.151, 1.79.5 and vmselect out of memory (this stop's review).
		{`quantiles("phi", ` + phis.String() + `cpu) by (inst)`, "quantiles() and the calls within it make 2000 series of each series they read"},
		{`quantiles_over_time("phi", ` + phis.String() + `cpu[5m])`, "quantiles_over_time() and the calls within it make 2000 series of each series they read"},
		// aggr_over_time makes a series of each function it names: 200 over 300 series took v1.151 to 277 MB, over a
		// subquery of 10 series' histograms to 2.5 GB (an attacker's review).
		{`count(aggr_over_time((` + strings.Repeat(`"max_over_time", `, 200) + `"min_over_time"), cpu[5m]))`, "aggr_over_time() and the calls within it make 201 series of each series they read"},
		// Two nested subqueries, 80 bytes: 38 s of v1.151's CPU per series, past its -search.maxQueryDuration (the same).
		{`max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`, "at most 100000000 are accepted (-search.maxSubqueryWindowPoints)"},
		// The same without a colon, at step=100ms: windows over non-selectors are subqueries at the request's step (a
		// review of the first version, which looked for a colon).
		{`max_over_time(quantile_over_time(0.5, (cpu*1)[1h])[1h])&step=0.1`, "at most 100000000 are accepted (-search.maxSubqueryWindowPoints)"},
		// 24 label_join doubling a label (700 bytes): 0.6-6 s and up to 2.7 GB of v1.151's memory (another review).
		{"count(" + joins + ")", "label functions could make the labels of one series weigh over 256 KiB"},
		// A 60 KB value copied into 100 labels (5 KB): 3.8 GB of v1.151's memory, 1.79.5 out of memory (a third).
		{copied.String(), "label functions could make the labels of one series weigh over 256 KiB"},
		{`label_replace(` + long + `, "c", "$1", "b", "(")` + strings.Repeat(" * x", 150), "optimizer would work out and copy label filters"},
		{long + strings.Repeat(" * x", 270), "optimizer would work out and copy label filters"},
		{"union(" + strings.Join(union, ",") + ")", "regexps would compile to a program"},
		// count_values_over_time over two days of raw samples, 37 bytes: a series of each distinct value, 9.5 million of
		// 60 series of 1 s samples, v1.151 out of memory (a review of raw-sample windows).
		{`count_values_over_time("v", cpu[2d])`, "count_values_over_time in the query may make up to 172801 series of each series it reads"},
	}
	// Range queries over a day at 8 s (10,801 points), from the same review: 50 bytes ran v1.151 out of memory from
	// one series of 1 s samples; 41 bytes kept both cores busy 3.5 minutes with 4 series, past -search.maxQueryDuration.
	day := fmt.Sprintf("&start=%d&end=%d&step=8", time.Now().Add(-24*time.Hour).Unix(), time.Now().Unix())
	ranged := []struct{ query, msg string }{
		{`count(count_values_over_time("v", cpu[1h]))`, "count_values_over_time in the query may make up to 90001 series of each series it reads"},
		{`count(quantile_over_time(0.5, cpu[1d]))`, "at most 100000000 are accepted (-search.maxSubqueryWindowPoints)"},
		// The same functions named by aggr_over_time, which a first version weighed as one cheap function (a review of
		// it: 45 s of v1.151's CPU for one series over 2 hours, 728 s for four over a day).
		{`count(aggr_over_time(("mad_over_time","median_over_time","distinct_over_time","mode_over_time"), cpu[1d]))`,
			"at most 100000000 are accepted (-search.maxSubqueryWindowPoints)"},
		// A variance of every sample over two-day windows: 35 s of v1.151's CPU for 4 series (a second review). It would
		// pass at one sample a minute, so the gateway counts the samples: two days of one a second (secondsOfCPU).
		{`count(zscore_over_time(cpu[2d]))`, "samples the series hold in all its windows, as VictoriaMetrics counted them; weighed by the function); at most 100000000 are accepted (-search.maxSubqueryWindowPoints)"},
	}
	for _, v := range []struct {
		name  string
		start func(t *testing.T) (g *gw, prefix, health string, toks []string)
	}{
		{"1.79.5", func(t *testing.T) (*gw, string, string, []string) {
			vm := vmtest.Start(t)
			importInto(t, vm.URL+"/api/v1/import/prometheus", secondsOfCPU())
			vm.Flush(t)
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
			return g, "", vm.URL + "/health", []string{mint(t, priv, "-mode=read", "-extraLabels=team=dev"), mint(t, priv, "-mode=read")}
		}},
		{"current", func(t *testing.T) (*gw, string, string, []string) {
			vm := vmtest.StartCurrent(t)
			importInto(t, vm.URL+"/api/v1/import/prometheus", secondsOfCPU())
			vm.Flush(t)
			priv, pub := keyPair(t, "ec")
			g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
			return g, "", vm.URL + "/health", []string{mint(t, priv, "-mode=read", "-extraLabels=team=dev"), mint(t, priv, "-mode=read")}
		}},
		{"cluster", func(t *testing.T) (*gw, string, string, []string) {
			rc := startRealCluster(t)
			rc.importDirect(t, "3", secondsOfCPU())
			rc.c.Flush(t)
			vmtest.Eventually(t, func() (bool, string) {
				rc.c.Flush(t)
				_, _, body := do(t, http.MethodGet, rc.c.Select.URL+"/select/3/prometheus/api/v1/series?match[]=cpu", nil)
				return strings.Contains(body, `"cpu"`), "tenant 3 lists no cpu series: " + body
			})
			t3 := tenant.ID{AccountID: 3}
			return rc.g, "/select/3:0/prometheus", rc.c.Select.URL + "/health", []string{
				clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead, ExtraLabels: map[string]string{"team": "dev"}}),
				clusterToken(t, auth.VMAccess{Tenant: t3, Mode: auth.ModeRead}),
			}
		}},
	} {
		t.Run(v.name, func(t *testing.T) {
			g, prefix, health, toks := v.start(t)
			for i, tok := range toks {
				for _, q := range queries {
					name := fmt.Sprintf("token %d: %.40s", i, q.query)
					code, _, body := do(t, http.MethodPost, g.URL+prefix+"/api/v1/query", strings.NewReader("query="+formArgs(q.query)),
						append(bearer(tok), "Content-Type", "application/x-www-form-urlencoded")...)
					checkClusterError(t, name, code, body, 400, q.msg)
				}
				for _, q := range ranged {
					name := fmt.Sprintf("token %d: range %.40s", i, q.query)
					code, _, body := do(t, http.MethodPost, g.URL+prefix+"/api/v1/query_range", strings.NewReader("query="+url.QueryEscape(q.query)+day),
						append(bearer(tok), "Content-Type", "application/x-www-form-urlencoded")...)
					checkClusterError(t, name, code, body, 400, q.msg)
				}
				if code, _, body := do(t, http.MethodGet, g.URL+prefix+"/api/v1/query?query=sum(x)", nil, bearer(tok)...); code != http.StatusOK {
					t.Errorf("token %d: a plain query: %d %s", i, code, body)
				}
			}
			if code, _, body := do(t, http.MethodGet, health, nil); code != http.StatusOK {
				t.Fatalf("the backend after the refused queries: %d %s", code, body)
			}
		})
	}
}

// secondsOfCPU is two days of a sample a second of cpu{team="dev"}, to now: the data of the reviews' queries, whose
// windows the gateway counts.
func secondsOfCPU() string {
	var b strings.Builder
	now := time.Now().Unix()
	for ts := now - 2*86400; ts <= now; ts++ {
		fmt.Fprintf(&b, "cpu{team=\"dev\"} %d %d000\n", ts%97, ts)
	}
	return b.String()
}

// importInto writes Prometheus text to a VictoriaMetrics import URL.
func importInto(t *testing.T, u, body string) {
	t.Helper()
	if code, _, b := do(t, http.MethodPost, u, strings.NewReader(body), "Content-Type", "text/plain"); code/100 != 2 {
		t.Fatalf("import into %s: %d %s", u, code, b)
	}
}

// formArgs is a form of query, and of the args written after it past an "&", as they are.
func formArgs(query string) string {
	q, args, _ := strings.Cut(query, "&step=")
	if args != "" {
		args = "&step=" + args
	}
	return url.QueryEscape(q) + args
}
