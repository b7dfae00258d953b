package querylimits

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

const checkConfig = `limits:
  - account_id: 7
    max_total_query_length: 1h
    max_query_lookback: 30d
    min_step: 30s
    max_query_expression_size_bytes: 200
    query_timeout: 30s
    blocked_queries:
      - pattern: 'count({__name__=~".+"})'
      - pattern: '.*__name__=~"\.[*+]".*'
        regex: true
  - account_id: 7
    key: claim:sub
    max_query_lookback: 40d
  - account_id: 9
    key: claim:sub
    max_query_lookback: 2d
`

var (
	checkNow = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	limited  = &auth.Access{Tenant: tenant.ID{AccountID: 7}, Mode: auth.ModeFull, Claims: map[string]any{"sub": "alice"}}
	other    = &auth.Access{Tenant: tenant.ID{AccountID: 8}, Mode: auth.ModeFull}
	keyed    = &auth.Access{Tenant: tenant.ID{AccountID: 9}, Mode: auth.ModeFull, Claims: map[string]any{"sub": "bob"}}
)

func mustRoute(t testing.TB, path string) route.Route {
	t.Helper()
	rt, err := route.Lookup(path)
	if err != nil {
		t.Fatalf("route %s: %s", path, err)
	}
	return rt
}

func mustConfig(t testing.TB, s string) *config {
	t.Helper()
	c, err := parseConfig([]byte(s), "limits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestQueryLimitsCheck is the table of requests and what the limits say about them, each in the URL and in a
// form body, for the limited tenant (refused) and another (served).
func TestQueryLimitsCheck(t *testing.T) {
	c := mustConfig(t, checkConfig)
	now := checkNow
	at := func(d time.Duration) string { return now.Add(-d).UTC().Format(time.RFC3339) }
	type tc struct {
		name, path string
		args       url.Values
		// want is a piece of the 422 message, or "" for a request within the limits.
		want, limit string
	}
	cases := []tc{
		{name: "instant query", path: "/api/v1/query", args: url.Values{"query": {"rate(x[1h])"}}},
		{name: "window too far back", path: "/api/v1/query", args: url.Values{"query": {"rate(x[31d])"}},
			want: "max_query_lookback=30d exceeded: the request reads data from 2026-05-15T12:00:00Z, 31d before now", limit: "max_query_lookback"},
		{name: "offset counted", path: "/api/v1/query", args: url.Values{"query": {"rate(x[1d] offset 30d)"}}, want: "31d before now", limit: "max_query_lookback"},
		{name: "subquery counted", path: "/api/v1/query", args: url.Values{"query": {"max_over_time(rate(x[1d])[30d:1h])"}}, want: "31d before now", limit: "max_query_lookback"},
		{name: "@ counted", path: "/api/v1/query", args: url.Values{"query": {"x @ 1000"}}, want: "reads data from 1970-01-01", limit: "max_query_lookback"},
		{name: "@ end() fine", path: "/api/v1/query_range", args: url.Values{"query": {"rate(x[29d] @ end())"}, "start": {at(time.Hour)}, "step": {"1m"}}},
		{name: "@ unresolved", path: "/api/v1/query", args: url.Values{"query": {"x @ timestamp(y)"}}, want: "the time of @ timestamp(y) is not known before the query runs", limit: "max_query_lookback"},
		{name: "WITH counted", path: "/api/v1/query", args: url.Values{"query": {"WITH (w = 31d) max_over_time(x[w])"}}, want: "31d before now", limit: "max_query_lookback"},
		// A client's time a little before the gateway's now (Grafana's, vmalert's aligned to its interval) is given 5m.
		{name: "window of the limit at Grafana's time", path: "/api/v1/query", args: url.Values{"query": {"sum(increase(x[30d]))"}, "time": {at(30 * time.Millisecond)}}},
		{name: "window of the limit at vmalert's aligned time", path: "/api/v1/query", args: url.Values{"query": {"sum(increase(x[30d]))"}, "time": {at(time.Minute)}}},
		{name: "window of the limit 6 minutes back", path: "/api/v1/query", args: url.Values{"query": {"sum(increase(x[30d]))"}, "time": {at(6 * time.Minute)}},
			want: "30d6m before now", limit: "max_query_lookback"},
		{name: "time far back", path: "/api/v1/query", args: url.Values{"query": {"x"}, "time": {at(31 * 24 * time.Hour)}}, want: "31d5m before now", limit: "max_query_lookback"},
		{name: "max_lookback counted", path: "/api/v1/query", args: url.Values{"query": {"x"}, "max_lookback": {"31d"}}, want: "31d before now", limit: "max_query_lookback"},
		{name: "latency_offset counted", path: "/api/v1/query", args: url.Values{"query": {"x"}, "latency_offset": {"31d"}}, want: "31d5m before now", limit: "max_query_lookback"},
		{name: "relative time", path: "/api/v1/query", args: url.Values{"query": {"x"}, "time": {"-31d"}}, want: "31d5m before now", limit: "max_query_lookback"},
		{name: "range within", path: "/api/v1/query_range", args: url.Values{"query": {"x"}, "start": {at(time.Hour)}, "end": {at(0)}, "step": {"30s"}}},
		{name: "range too long", path: "/api/v1/query_range", args: url.Values{"query": {"x"}, "start": {at(2 * time.Hour)}, "step": {"1m"}},
			want: "max_total_query_length=1h exceeded: the request spans 2h", limit: "max_total_query_length"},
		{name: "range default start", path: "/api/v1/query_range", args: url.Values{"query": {"x"}, "step": {"1m"}}},
		{name: "step too fine", path: "/api/v1/query_range", args: url.Values{"query": {"x"}, "start": {at(time.Hour)}, "step": {"10"}},
			want: "min_step=30s exceeded: the step is 10s", limit: "min_step"},
		{name: "subquery step too fine", path: "/api/v1/query", args: url.Values{"query": {"max_over_time(x[1h:1s])"}}, want: "a subquery has step 1s", limit: "min_step"},
		// A subquery without a step of its own runs at the request's.
		{name: "subquery at a request step too fine", path: "/api/v1/query", args: url.Values{"query": {"sum(x)[1h:]"}, "step": {"1s"}},
			want: "runs at the request's step 1s", limit: "min_step"},
		{name: "subquery at the request step", path: "/api/v1/query", args: url.Values{"query": {"sum(x)[1h:]"}, "step": {"30s"}}},
		{name: "subquery of its own step, fine request step", path: "/api/v1/query", args: url.Values{"query": {"sum(x)[1h:1m]"}, "step": {"1s"}}},
		// /api/v1/query reads a query that is one subquery in steps of the subquery's own step.
		{name: "top subquery in its own steps", path: "/api/v1/query", args: url.Values{"query": {"sum(x)[100i:1d]"}},
			want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		{name: "top subquery in its own steps, fine request step", path: "/api/v1/query",
			args: url.Values{"query": {"count_over_time(x[1d])[20000i:1d]"}, "step": {"30s"}}, want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		{name: "top subquery offset in its own steps", path: "/api/v1/query", args: url.Values{"query": {"sum(x)[1i:1d] offset 40i"}},
			want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		{name: "top subquery in its own steps, within", path: "/api/v1/query", args: url.Values{"query": {"sum(x)[10i:1d]"}}},
		// VictoriaMetrics drops an @ on the top-level rollup's path and reads at the request's time.
		{name: "top rollup with @ now()", path: "/api/v1/query", args: url.Values{"query": {"x[1h] @ now()"}, "time": {at(300 * 24 * time.Hour)}},
			want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		{name: "top subquery with @ now()", path: "/api/v1/query", args: url.Values{"query": {"last_over_time(x[1d])[1h:1h] @ now()"}, "time": {at(300 * 24 * time.Hour)}},
			want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		// Without a step, an instant query runs at the step of its max_lookback.
		{name: "step from max_lookback", path: "/api/v1/query", args: url.Values{"query": {"x[1i]"}, "max_lookback": {"400d"}},
			want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		{name: "subquery at the step of max_lookback", path: "/api/v1/query", args: url.Values{"query": {"count_over_time(x[1h])[1h:]"}, "max_lookback": {"1s"}},
			want: "runs at the request's step 1s", limit: "min_step"},
		// A negative number is a duration before now in current releases.
		{name: "negative end", path: "/api/v1/export", args: url.Values{"match[]": {"x"}, "start": {at(2 * time.Hour)}, "end": {"-5"}},
			want: "max_total_query_length=1h exceeded", limit: "max_total_query_length"},
		// federate looks back max_lookback only from an end within a second of now.
		{name: "federate with an end", path: "/federate", args: url.Values{"match[]": {"x"}, "end": {at(10 * time.Second)}},
			want: "max_total_query_length=1h exceeded", limit: "max_total_query_length"},
		{name: "millisecond time", path: "/api/v1/query", args: url.Values{"query": {"rate(x[1h])"}, "time": {"1000000000000.0"}},
			want: "max_query_lookback=30d exceeded", limit: "max_query_lookback"},
		{name: "query too large", path: "/api/v1/query", args: url.Values{"query": {"x{a=\"" + strings.Repeat("a", 200) + "\"}"}},
			want: "max_query_expression_size_bytes=200 exceeded: the query arg is 207 bytes", limit: "max_query_expression_size_bytes"},
		{name: "blocked exact", path: "/api/v1/query", args: url.Values{"query": {`count( {__name__ =~ ".+"} )`}}, want: `matches exactly the blocked query "count({__name__=~\".+\"})"`, limit: "blocked_queries"},
		{name: "blocked exact inside", path: "/api/v1/query", args: url.Values{"query": {`sum(count({__name__=~".+"})) > 0`}}, want: "matches exactly the blocked query", limit: "blocked_queries"},
		{name: "blocked regex", path: "/api/v1/query", args: url.Values{"query": {`sum({__name__=~".*"})`}}, want: "matches the regexp the blocked query", limit: "blocked_queries"},
		{name: "blocked match[]", path: "/api/v1/series", args: url.Values{"match[]": {`{__name__=~".+"}`}, "start": {"-5m"}}, want: "the match[] arg matches the regexp", limit: "blocked_queries"},
		{name: "not blocked", path: "/api/v1/query", args: url.Values{"query": {`count({__name__=~"x.+"})`}}},
		{name: "export without start", path: "/api/v1/export", args: url.Values{"match[]": {"x"}}, want: "the request spans", limit: "max_total_query_length"},
		{name: "export with start", path: "/api/v1/export", args: url.Values{"match[]": {"x"}, "start": {"-30m"}}},
		{name: "series without start", path: "/api/v1/series", args: url.Values{"match[]": {"x"}}, want: "the request spans 1d12h (2026-06-14T00:00:00Z to 2026-06-15T12:00:00Z)", limit: "max_total_query_length"},
		{name: "labels without start", path: "/api/v1/labels", args: url.Values{}, want: "the request spans 1d12h", limit: "max_total_query_length"},
		{name: "label values without start", path: "/api/v1/label/job/values", args: url.Values{}, want: "the request spans 1d12h", limit: "max_total_query_length"},
		{name: "series with start", path: "/api/v1/series", args: url.Values{"match[]": {"x"}, "start": {at(time.Hour)}}},
		{name: "federate latest", path: "/federate", args: url.Values{"match[]": {"x"}}},
		{name: "federate max_lookback", path: "/federate", args: url.Values{"match[]": {"x"}, "max_lookback": {"2h"}}, want: "spans 2h", limit: "max_total_query_length"},
		{name: "tsdb status today", path: "/api/v1/status/tsdb", args: url.Values{}, want: "spans 1d", limit: "max_total_query_length"},
		{name: "tsdb status of all time", path: "/api/v1/status/tsdb", args: url.Values{"date": {"1970-01-01"}}, want: "spans 20619d12h", limit: "max_total_query_length"},
		{name: "graphite", path: "/render", args: url.Values{"target": {"x"}, "from": {"-1y"}}, want: "the graphite_render API reads a time range the gateway cannot check", limit: "max_query_lookback"},
		{name: "timeout too long", path: "/api/v1/query", args: url.Values{"query": {"x"}, "timeout": {"1m"}}, want: "query_timeout=30s exceeded: the request asks for timeout=1m", limit: "query_timeout"},
		{name: "timeout within", path: "/api/v1/query", args: url.Values{"query": {"x"}, "timeout": {"10s"}}},
		{name: "repeated start", path: "/api/v1/query_range", args: url.Values{"query": {"x"}, "start": {at(time.Hour), at(48 * time.Hour)}, "step": {"1m"}}, want: "spans 2d", limit: "max_total_query_length"},
		{name: "repeated query", path: "/api/v1/query", args: url.Values{"query": {"x", "rate(x[60d])"}}, want: "60d before now", limit: "max_query_lookback"},
		{name: "write API", path: "/api/v1/import", args: url.Values{"start": {"0"}}},
	}
	for _, c2 := range cases {
		rt := mustRoute(t, c2.path)
		for _, shape := range []string{"URL", "form"} {
			args, form := c2.args, url.Values(nil)
			if shape == "form" {
				args, form = url.Values{}, c2.args
			}
			before := uint64(0)
			if c2.limit != "" {
				before = metrics.GetDefaultSet().GetOrCreateCounter(`vmgateway_querylimits_rejected_total{limit="` + c2.limit + `"}`).Get()
			}
			_, err := c.Check(limited, rt, enforce.Args{URL: args, Form: form}, now)
			switch {
			case c2.want == "" && err != nil:
				t.Errorf("%s (%s): refused: %s", c2.name, shape, err)
			case c2.want != "" && err == nil:
				t.Errorf("%s (%s): served, want a refusal with %q", c2.name, shape, c2.want)
			case c2.want != "":
				if httperr.Status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), c2.want) {
					t.Errorf("%s (%s): %d %s\nwant 422 with %q", c2.name, shape, httperr.Status(err), err, c2.want)
				}
				if !strings.Contains(err.Error(), "tenant 7:0") {
					t.Errorf("%s (%s): the message does not name the tenant: %s", c2.name, shape, err)
				}
				after := metrics.GetDefaultSet().GetOrCreateCounter(`vmgateway_querylimits_rejected_total{limit="` + c2.limit + `"}`).Get()
				if after != before+1 {
					t.Errorf("%s (%s): rejected_total{limit=%q} went from %v to %v", c2.name, shape, c2.limit, before, after)
				}
			}
			// Another tenant has no limits at all.
			if _, err := c.Check(other, rt, enforce.Args{URL: args, Form: form}, now); err != nil {
				t.Errorf("%s (%s): tenant 8 has no limits, yet: %s", c2.name, shape, err)
			}
		}
	}
}

func TestQueryLimitsKeyNamed(t *testing.T) {
	c := mustConfig(t, checkConfig)
	rt := mustRoute(t, "/api/v1/query")
	_, err := c.Check(keyed, rt, enforce.Args{URL: url.Values{"query": {"rate(x[3d])"}}}, checkNow)
	if err == nil || !strings.Contains(err.Error(), `tenant 9:0's for claim:sub="bob" (its own entry)`) {
		t.Errorf("want a refusal naming the key and its value, got %v", err)
	}
	// Tenant 7's own lookback of 30d and its per-sub 40d both hold: the stricter refuses.
	_, err = c.Check(limited, rt, enforce.Args{URL: url.Values{"query": {"rate(x[35d])"}}}, checkNow)
	if err == nil || !strings.Contains(err.Error(), "max_query_lookback=30d") {
		t.Errorf("want the 30d limit to refuse 35d, got %v", err)
	}
}

func TestQueryLimitsTimeout(t *testing.T) {
	c := mustConfig(t, checkConfig)
	rt := mustRoute(t, "/api/v1/query")
	to, err := c.Check(limited, rt, enforce.Args{URL: url.Values{"query": {"x"}}}, checkNow)
	if err != nil || to != "30" {
		t.Errorf("timeout %q, %v; want 30 (seconds) to send upstream", to, err)
	}
	to, err = c.Check(limited, rt, enforce.Args{URL: url.Values{"query": {"x"}}, Form: url.Values{"timeout": {"5s"}}}, checkNow)
	if err != nil || to != "" {
		t.Errorf("a client timeout within the limit stays: got %q, %v", to, err)
	}
	if to, _ := c.Check(other, rt, enforce.Args{URL: url.Values{"query": {"x"}}}, checkNow); to != "" {
		t.Errorf("tenant 8 has no query_timeout, got %q", to)
	}
	// VictoriaMetrics reads the form's first value: an empty one there means no timeout, whatever the URL says;
	// so does one of no whole millisecond above 0, which it does not take.
	for _, in := range []enforce.Args{
		{URL: url.Values{"query": {"x"}, "timeout": {"0"}}},
		{URL: url.Values{"query": {"x"}, "timeout": {"-1s"}}},
		{URL: url.Values{"query": {"x"}, "timeout": {"0.0001"}}},
		{URL: url.Values{"query": {"x"}, "timeout": {"5s"}}, Form: url.Values{"timeout": {""}}},
		{URL: url.Values{"query": {"x"}}, Form: url.Values{"timeout": {"", "5s"}}},
		{URL: url.Values{"query": {"x"}, "timeout": {"", "5s"}}},
	} {
		if to, err := c.Check(limited, rt, in, checkNow); err != nil || to != "30" {
			t.Errorf("URL %v, form %v: timeout %q, %v; want the limit's, since VictoriaMetrics reads an empty one first", in.URL, in.Form, to, err)
		}
	}
}

func TestQueryLimitsBadArgs(t *testing.T) {
	c := mustConfig(t, checkConfig)
	for _, tc := range []struct {
		path string
		args url.Values
		want string
	}{
		{"/api/v1/query_range", url.Values{"query": {"x"}, "start": {"yesterday"}}, `cannot read start="yesterday"`},
		{"/api/v1/query_range", url.Values{"query": {"x"}, "step": {"fast"}}, `cannot read step="fast"`},
		{"/api/v1/query", url.Values{"query": {"sum(("}}, "cannot parse the query"},
		{"/api/v1/status/tsdb", url.Values{"date": {"15/06/2026"}}, "want YYYY-MM-DD"},
		{"/api/v1/query", url.Values{"query": {"x"}, "timeout": {"soon"}}, `cannot read timeout="soon"`},
		// VictoriaMetrics takes a date's nanoseconds in an int64: past 2261 it wraps (2610-08-29 is 2026-02-07 there).
		{"/api/v1/export", url.Values{"match[]": {"x"}, "start": {"2610-08-29T03:00:00Z"}}, "outside the years VictoriaMetrics reads"},
		{"/api/v1/export", url.Values{"match[]": {"x"}, "start": {"2610-01-01"}}, "outside the years VictoriaMetrics reads"},
		{"/api/v1/query", url.Values{"query": {"x"}, "time": {"2610"}}, "outside the years VictoriaMetrics reads"},
		{"/api/v1/query_range", url.Values{"query": {"x"}, "start": {"1600-01-01T00:00:00Z"}}, "outside the years VictoriaMetrics reads"},
	} {
		_, err := c.Check(limited, mustRoute(t, tc.path), enforce.Args{URL: tc.args}, checkNow)
		if err == nil || httperr.Status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: %v, want 400 with %q", tc.path, tc.args, err, tc.want)
		}
	}
}

func TestParseTime(t *testing.T) {
	now := checkNow.UnixMilli()
	for in, want := range map[string]int64{
		"1700000000":           1700000000000,
		"1700000000.5":         1700000000500,
		"2026-06-15T11:00:00Z": now - 3600000,
		"2026-06-15":           now - 12*3600000,
		"now":                  now,
		"now-1h":               now - 3600000,
		"1h":                   now - 3600000,
		"-1h":                  now - 3600000,
		"-100":                 0,
		promMinTime:            0,
	} {
		got, _, err := parseTime(in, now)
		if err != nil || got != want {
			t.Errorf("parseTime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string][2]int64{
		"2026": {2026000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()},
		// A time without a zone is read by current releases in their own: as early as 14 hours before its UTC reading,
		// as late as 12 hours after (an attacker's review, through a v1.151 in UTC+14).
		"2026-06-15T11:00:00":       {time.Date(2026, 6, 14, 21, 0, 0, 0, time.UTC).UnixMilli(), time.Date(2026, 6, 15, 23, 0, 0, 0, time.UTC).UnixMilli()},
		"2026-06-15":                {time.Date(2026, 6, 14, 10, 0, 0, 0, time.UTC).UnixMilli(), time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC).UnixMilli()},
		"2026-06-15T11:00:00Z":      {now - 3600000, now - 3600000},
		"2026-06-15T11:00:00+14:00": {now - 15*3600000, now - 15*3600000},
		"1700000000000":             {1700000000000, 1700000000000000},
		"1700000000":                {1700000000000, 1700000000000},
		"01700000000":               {1700000000000, 1700000000000},
		"99999999999":               {99999999999, 99999999999000}, // milliseconds in current releases
		"+1700000000":               {1700000000000, 1700000000000},
		"0":                         {0, 0},
		// Current releases read the unit from the integer part's size, whatever the form; v1.79 reads seconds.
		"9223372036":          {9223372036000, 9223372036000},
		"9223372037":          {9223372037, 9223372037000},
		"9300000000":          {9300000000, 9300000000000},
		"1000000000000.0":     {1000000000000, 1000000000000000},
		"1.7e12":              {1700000000000, 1700000000000000},
		"1700000000000000":    {1700000000000, 1700000000000000000},
		"1.7e18":              {0, limit}, // v1.79 on amd64: milliseconds past int64, read as 1970
		"1700000000000000000": {0, limit}, // the same
		"1.7e9":               {1700000000000, 1700000000000},
		"-5":                  {0, now - 5000}, // a duration before now in current releases, 1970 in v1.79
	} {
		lo, hi, err := parseTimeRange(in, now)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("parseTimeRange(%q) = %d..%d, %v; want %d..%d", in, lo, hi, err, want[0], want[1])
		}
	}
	for in, want := range map[string]int64{"60": 60000, "060": 60000, "1.5": 1500, "+60": 60000, "1m": 60000, "99999999999": 99999999999000} {
		if got, err := parseDurationArg(in); err != nil || got != want {
			t.Errorf("parseDurationArg(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"NaN", "Inf", "5i", "now+", "tomorrow", ""} {
		if _, _, err := parseTime(in, now); err == nil {
			t.Errorf("parseTime(%q) accepted", in)
		}
	}
}

// TestGatherOrder checks that gather looks up every arg the limits read, and that a request with args the limits
// do not read still has the ones they do read judged.
func TestGatherOrder(t *testing.T) {
	var seen [enforce.NumArgs]int
	for _, k := range gatherOrder {
		seen[k]++
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("gatherOrder has %s %d times", enforce.Arg(k), n)
		}
	}
	c := mustConfig(t, checkConfig)
	rt := mustRoute(t, "/api/v1/query_range")
	args := url.Values{"query": {"x"}, "nocache": {"1"}, "start": {"-30m"}, "max_lookback": {"40d"}}
	_, err := c.Check(limited, rt, enforce.Args{URL: args}, checkNow)
	if httperr.Status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "max_query_lookback") {
		t.Errorf("max_lookback=40d behind an unread arg: %v, want the 422 of max_query_lookback", err)
	}
}

// TestRefusalWithoutQueryText: a refusal that quotes part of the client's query (the expression after @) has a form
// without it, for the access log without -accessLog.queries.
func TestRefusalWithoutQueryText(t *testing.T) {
	c, err := parseConfig([]byte("limits:\n  - max_query_lookback: 1d\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	_, err = c.Check(&auth.Access{}, mustRoute(t, "/api/v1/query"), enforce.Args{URL: url.Values{"query": {"x @ timestamp(team_secret)"}}}, now)
	if err == nil || !strings.Contains(err.Error(), "team_secret") {
		t.Fatalf("the client's message: %v", err)
	}
	if nq := httperr.NoQuery(err); strings.Contains(nq, "team_secret") || !strings.Contains(nq, "the time of @ "+httperr.Elided+" is not known") {
		t.Errorf("without the query: %q", nq)
	}
}

// TestLookbackGraceNoOverflow: a max_query_lookback as long as the config takes (shown as forever) accepts every
// request; its grace added to it overflowed, and every request was refused (a review).
func TestLookbackGraceNoOverflow(t *testing.T) {
	c := mustConfig(t, "limits:\n  - account_id: 7\n    max_query_lookback: 9223372036854675456ms\n")
	rt := mustRoute(t, "/api/v1/query")
	if _, err := c.Check(limited, rt, enforce.Args{URL: url.Values{"query": {"rate(x[1y])"}}}, checkNow); err != nil {
		t.Errorf("a lookback of forever: %v", err)
	}
}
