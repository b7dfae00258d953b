package enforce

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/route"
)

var (
	rtQuery       = route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	rtSeries      = route.Route{API: "series", Kind: route.Read, Args: route.MatchArgs}
	rtLabels      = route.Route{API: "labels", Kind: route.Read, Args: route.MatchArgs}
	rtLabelValues = route.Route{API: "label_values", Kind: route.Read, Args: route.MatchArgs}
	rtExport      = route.Route{API: "export", Kind: route.Read, Args: route.MatchArgs}
	rtDelete      = route.Route{API: "delete_series", Kind: route.Admin, Args: route.MatchArgs}
	rtWrite       = route.Route{API: "import_prometheus", Kind: route.Write, Args: route.WriteArgs}
	rtGraphite    = route.Route{API: "graphite_render", Kind: route.Read, Args: route.Unenforceable}
	rtVMUI        = route.Route{API: "vmui", Kind: route.Read, Args: route.NoSelectors}
)

const formType = "application/x-www-form-urlencoded"

// v builds url.Values from alternating keys and values.
func v(kv ...string) url.Values {
	out := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = append(out[kv[i]], kv[i+1])
	}
	return out
}

// enforceHTTP does to r what the gateway does with a request whose args it must see: parse the URL query and a
// form body once, have e rewrite the values, and put them back. The gateway's own checks of bodies (size, type,
// encoding, deadline) are tested in internal/gateway.
func enforceHTTP(e *Enforcer, r *http.Request, rt route.Route, cluster bool) error {
	return enforceHTTPIn(e, r, rt, cluster, false)
}

// enforceHTTPIn is enforceHTTP for backends that read `or` inside the braces where braces is set (Args.Braces).
func enforceHTTPIn(e *Enforcer, r *http.Request, rt route.Route, cluster, braces bool) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return newError(http.StatusBadRequest, "cannot parse the URL query %q: %s", r.URL.RawQuery, err)
	}
	var form url.Values
	if rt.Kind != route.Write && r.Body != nil && r.Body != http.NoBody {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if len(b) > 0 {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != formType || r.Header.Get("Content-Encoding") != "" {
				return newError(http.StatusUnsupportedMediaType, "a read request body must be application/x-www-form-urlencoded")
			}
			if form, err = url.ParseQuery(string(b)); err != nil {
				return newError(http.StatusBadRequest, "cannot parse the form body: %s", err)
			}
		}
	}
	out, changed, err := e.Request(rt, Args{URL: q, Form: form, Braces: braces}, cluster)
	if err != nil || !changed {
		return err
	}
	r.URL.RawQuery = out.URL.Encode()
	if out.Form != nil {
		body := out.Form.Encode()
		r.Body = io.NopCloser(strings.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
		r.ContentLength = int64(len(body))
		r.Header.Del("Content-Length")
	}
	return nil
}

func TestRequest(t *testing.T) {
	dev, devF := devOnly(t), devFiltered(t)
	devArgs := func(kv ...string) url.Values { return v(append(kv, "extra_label", "team=dev")...) }
	devFArgs := func(kv ...string) url.Values {
		return v(append(kv, "extra_label", "team=dev", "extra_label", "\x00\x00\x0d=", "extra_filters[]", `{env=~"prod|stage",Env=""}`,
			"extra_filters[]", `{region="eu"}`, "extra_filters[]", `{tier="gold"}`)...)
	}
	tests := []struct {
		name     string
		e        *Enforcer
		rt       route.Route
		method   string
		target   string // path?query
		ctype    string
		body     string
		wantURL  url.Values
		wantBody url.Values // nil: no body
	}{
		{"query in URL", dev, rtQuery, "GET", "/api/v1/query?query=up&time=1", "", "",
			devArgs("query", `up{team="dev"}`, "time", "1"), nil},
		{"query with filters", devF, rtQuery, "GET", "/api/v1/query?query=up", "", "",
			devFArgs("query", lifted(t, `up{`+threeBranches("")+`}`)), nil},
		{"query in body", dev, rtQuery, "POST", "/api/v1/query", formType, "query=rate(foo[5m])&step=60",
			devArgs(), v("query", `rate(foo{team="dev"}[5m])`, "step", "60")},
		{"query in URL and body", dev, rtQuery, "POST", "/api/v1/query?query=a", formType, "query=b",
			devArgs("query", `a{team="dev"}`), v("query", `b{team="dev"}`)},
		{"repeated query args", dev, rtQuery, "POST", "/api/v1/query?query=a&query=b", formType, "query=c&query=d",
			devArgs("query", `a{team="dev"}`, "query", `b{team="dev"}`), v("query", `c{team="dev"}`, "query", `d{team="dev"}`)},
		{"form type with parameters and case", dev, rtQuery, "POST", "/api/v1/query", "Application/X-WWW-Form-Urlencoded; charset=UTF-8", "query=a",
			devArgs(), v("query", `a{team="dev"}`)},
		{"extra_label smuggled in URL and body", dev, rtQuery, "POST",
			"/api/v1/query?query=a&extra_label=team=ops&extra_label=other=x", formType, "extra_label=team%3Dsec&query=b",
			devArgs("query", `a{team="dev"}`), v("query", `b{team="dev"}`)},
		{"extra_filters smuggled in URL and body", devF, rtQuery, "POST",
			"/api/v1/query?query=a&extra_filters=%7Bteam%3D%22ops%22%7D&extra_filters%5B%5D=%7Bteam%3D~%22.*%22%7D", formType,
			"extra_filters[]={team=\"ops\"}&extra_filters={}&query=b",
			devFArgs("query", lifted(t, `a{`+threeBranches("")+`}`)), v("query", lifted(t, `b{`+threeBranches("")+`}`))},
		{"unrelated args are kept", dev, rtQuery, "GET", "/api/v1/query_range?query=a&start=1&end=2&step=3s&nocache=1", "", "",
			devArgs("query", `a{team="dev"}`, "start", "1", "end", "2", "step", "3s", "nocache", "1"), nil},
		{"series match[] rewritten", dev, rtSeries, "GET", "/api/v1/series?match[]=up&match[]={team=\"ops\"}", "", "",
			devArgs("match[]", `up{team="dev"}`, "match[]", `{team="ops",team="dev"}`), nil},
		{"match[] or-groups split into match[] args", devF, rtSeries, "GET", `/api/v1/series?match[]=up{a="1" or b="2"}`, "", "",
			devFArgs("match[]", `up{a="1",team="dev",env=~"prod|stage",Env=""}`, "match[]", `up{a="1",team="dev",region="eu"}`,
				"match[]", `up{a="1",team="dev",tier="gold"}`, "match[]", `up{b="2",team="dev",env=~"prod|stage",Env=""}`,
				"match[]", `up{b="2",team="dev",region="eu"}`, "match[]", `up{b="2",team="dev",tier="gold"}`), nil},
		{"match[] in body", dev, rtSeries, "POST", "/api/v1/series?start=1", formType, "match%5B%5D=up",
			devArgs("start", "1"), v("match[]", `up{team="dev"}`)},
		{"labels without match[] get the token's", dev, rtLabels, "GET", "/api/v1/labels", "", "",
			devArgs("match[]", `{team="dev"}`), nil},
		{"labels without match[], one per filter branch", devF, rtLabels, "GET", "/api/v1/labels", "", "",
			devFArgs("match[]", `{team="dev",env=~"prod|stage",Env=""}`, "match[]", `{team="dev",region="eu"}`, "match[]", `{team="dev",tier="gold"}`), nil},
		{"values of the enforced label", dev, rtLabelValues, "GET", "/api/v1/label/team/values", "", "",
			devArgs("match[]", `{team="dev"}`), nil},
		{"match[] only in the body is not missing", dev, rtLabels, "POST", "/api/v1/labels", formType, "match[]=up",
			devArgs(), v("match[]", `up{team="dev"}`)},
		{"legacy match becomes match[]", dev, rtExport, "GET", "/api/v1/export?match=up", "", "",
			devArgs("match[]", `up{team="dev"}`), nil},
		{"legacy match beside match[] is rewritten too", dev, rtExport, "GET", "/api/v1/export?match[]=a&match=b", "", "",
			devArgs("match[]", `a{team="dev"}`, "match", `b{team="dev"}`), nil},
		{"delete with match[]", dev, rtDelete, "POST", "/api/v1/admin/tsdb/delete_series?match[]={__name__=~\".%2B\"}", "", "",
			devArgs("match[]", `{__name__=~".+",team="dev"}`), nil},
		{"write: the client's extra_label of the token's label removed, its others kept, the token's last", dev, rtWrite, "POST",
			"/api/v1/import/prometheus?extra_label=team=ops&timestamp=5&extra_label=foo=bar&extra_label=teams=x", "text/plain", "up{team=\"ops\"} 1",
			v("timestamp", "5", "extra_label", "foo=bar", "extra_label", "teams=x", "extra_label", "team=dev"), nil},
		{"write with two labels keeps their order last", mustNew(t, []Label{{"team", "dev"}, {"env", "prod"}}, []string{`{x="y"}`}),
			rtWrite, "POST", "/influx/write?db=x&extra_label=env=test&extra_label=team=&extra_label=dc=eu", "", "m f=1",
			v("db", "x", "extra_label", "dc=eu", "extra_label", "team=dev", "extra_label", "env=prod"), nil},
		{"write through filters only: the client's extra_label kept", mustNew(t, nil, []string{`{x="y"}`}), rtWrite, "POST",
			"/api/v1/import/prometheus?extra_label=x=z", "text/plain", "up 1", v("extra_label", "x=z"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(t, tt.method, tt.target, tt.ctype, tt.body)
			if err := enforceHTTP(tt.e, r, tt.rt, false); err != nil {
				t.Fatalf("Request: %s", err)
			}
			if got := mustParse(t, r.URL.RawQuery); !reflect.DeepEqual(got, tt.wantURL) {
				t.Errorf("URL query\n got: %v\nwant: %v", got, tt.wantURL)
			}
			if tt.rt.Args == route.WriteArgs {
				checkBody(t, r, tt.body)
				if got := url.Values(mustParse(t, r.URL.RawQuery))["extra_label"]; !slices.Equal(got[len(got)-len(tt.e.labels):], tt.e.extraLabelArgs) {
					t.Errorf("the token's extra_label args are not last: %q", got)
				}
				return
			}
			if tt.wantBody == nil {
				checkBody(t, r, "")
				return
			}
			if got := mustParse(t, checkBody(t, r, "\x00any")); !reflect.DeepEqual(got, tt.wantBody) {
				t.Errorf("body\n got: %v\nwant: %v", got, tt.wantBody)
			}
		})
	}
}

// checkBody reads the body and GetBody and checks ContentLength; want "\x00any" accepts any content.
func checkBody(t *testing.T, r *http.Request, want string) string {
	t.Helper()
	var got []byte
	if r.Body != nil {
		got, _ = io.ReadAll(r.Body)
	}
	if want != "\x00any" && string(got) != want {
		t.Errorf("body %q; want %q", got, want)
	}
	if r.ContentLength != int64(len(got)) && !(r.ContentLength == -1 && r.Method == "POST") {
		t.Errorf("ContentLength %d; the body has %d bytes", r.ContentLength, len(got))
	}
	if r.GetBody != nil && len(got) > 0 {
		rc, err := r.GetBody()
		if err != nil {
			t.Fatalf("GetBody: %s", err)
		}
		again, _ := io.ReadAll(rc)
		if !bytes.Equal(again, got) {
			t.Errorf("GetBody gives %q; Body gave %q", again, got)
		}
	}
	if cl := r.Header.Get("Content-Length"); cl != "" && cl != itoa(len(got)) {
		t.Errorf("Content-Length header %s; the body has %d bytes", cl, len(got))
	}
	return string(got)
}

func itoa(n int) string { return strconv.Itoa(n) }

func newRequest(t *testing.T, method, target, ctype, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, strings.ReplaceAll(target, " ", "%20"), rd)
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	return r
}

func mustParse(t *testing.T, s string) url.Values {
	t.Helper()
	vs, err := url.ParseQuery(s)
	if err != nil {
		t.Fatalf("cannot parse %q: %s", s, err)
	}
	return vs
}

func TestRequestErrors(t *testing.T) {
	dev := devOnly(t)
	var unrestricted *Enforcer
	tests := []struct {
		name    string
		e       *Enforcer
		rt      route.Route
		cluster bool
		method  string
		target  string
		ctype   string
		body    string
		status  int
		msg     string
	}{
		{"unparsable query", dev, rtQuery, false, "GET", "/api/v1/query?query=up{", "", "", 400, "cannot parse query"},
		{"unparsable query in body", dev, rtQuery, false, "POST", "/api/v1/query", formType, "query=sum(", 400, "cannot parse query"},
		{"match[] not a selector", dev, rtSeries, false, "GET", "/api/v1/series?match[]=rate(up[5m])", "", "", 400, "must be a series selector"},
		{"legacy match not a selector", dev, rtExport, false, "GET", "/api/v1/export?match=sum(up)", "", "", 400, "must be a series selector"},
		{"cluster: encoded tenant label in a write extra_label", unrestricted, rtWrite, true, "POST", `/api/v1/import/prometheus?extra%5Flabel=vm%5Faccount%5Fid%3D3`, "text/plain", "up 1", 403, "vm_account_id"},
		{"unenforceable API", dev, rtGraphite, false, "GET", "/render?target=a.b", "", "", 403, "graphite_render API cannot be limited"},
		{"delete without match[]", dev, rtDelete, false, "POST", "/api/v1/admin/tsdb/delete_series", "", "", 400, "needs at least one match[]"},
		{"delete with an empty match[]", dev, rtDelete, false, "POST", "/api/v1/admin/tsdb/delete_series?match[]=", "", "", 400, "cannot parse match[]"},
		{"cluster: vm_account_id in query", unrestricted, rtQuery, true, "GET", `/api/v1/query?query=sum(up{vm_account_id="1"})`, "", "", 403, "vm_account_id"},
		{"cluster: vm_project_id in an or branch", dev, rtQuery, true, "GET", `/api/v1/query?query=up{a="1" or vm_project_id="2"}`, "", "", 403, "vm_project_id"},
		{"cluster: tenant label in a WITH template", unrestricted, rtQuery, true, "POST", "/api/v1/query", formType, `query=with (t = {vm_account_id="7"}) up{t}`, 403, "vm_account_id"},
		{"cluster: tenant label in match[]", unrestricted, rtSeries, true, "GET", `/api/v1/series?match[]={vm_project_id=~".*"}`, "", "", 403, "vm_project_id"},
		{"cluster: tenant label in client extra_filters[]", unrestricted, rtQuery, true, "GET", `/api/v1/query?query=up&extra_filters[]={vm_account_id="1"}`, "", "", 403, "vm_account_id"},
		{"cluster: tenant label in client extra_filters", unrestricted, rtQuery, true, "GET", `/api/v1/query?query=up&extra_filters={vm_account_id="1"}`, "", "", 403, "vm_account_id"},
		{"cluster: tenant label in client extra_label", unrestricted, rtLabels, true, "GET", `/api/v1/labels?extra_label=vm_account_id=1`, "", "", 403, "vm_account_id"},
		{"cluster: tenant label in a write extra_label", unrestricted, rtWrite, true, "POST", `/api/v1/import/prometheus?extra_label=vm_project_id=3`, "text/plain", "up 1", 403, "vm_project_id"},
		{"write extra_label without a value", dev, rtWrite, false, "POST", `/api/v1/import/prometheus?extra_label=env`, "text/plain", "up 1", 400, "extra_label=env: want name=value"},
		{"write extra_label without a name", dev, rtWrite, false, "POST", `/api/v1/import/prometheus?extra_label==x`, "text/plain", "up 1", 400, "want name=value"},
		{"cluster: restricted token, tenant label in the body", dev, rtQuery, true, "POST", "/api/v1/query", formType, `query=up{vm_account_id!="0"}`, 403, "vm_account_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(t, tt.method, tt.target, tt.ctype, tt.body)
			err := enforceHTTP(tt.e, r, tt.rt, tt.cluster)
			if statusOf(err) != tt.status {
				t.Fatalf("Request: %v (status %d); want status %d", err, statusOf(err), tt.status)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q; want it to say %q", err, tt.msg)
			}
		})
	}
}

// TestClusterWriteOfUnrestrictedToken: in cluster mode an unrestricted (nil) enforcer still checks a write's
// extra_label args for the tenant labels, and passes the others as sent.
func TestClusterWriteOfUnrestrictedToken(t *testing.T) {
	var e *Enforcer
	in := Args{URL: v("extra_label", "env=prod", "db", "x")}
	out, changed, err := e.Request(rtWrite, in, true)
	if err != nil || changed || !reflect.DeepEqual(out.URL, in.URL) {
		t.Fatalf("Request: %v, changed %v, %v; want the args as sent", err, changed, out.URL)
	}
}

// TestRequestIsPure: Request leaves the values it is given alone, for every kind of rewrite, and a write's form
// (there is none to read: the body streams) comes back as it was.
func TestRequestIsPure(t *testing.T) {
	for _, tc := range []struct {
		e       *Enforcer
		rt      route.Route
		cluster bool
	}{{devFiltered(t), rtQuery, false}, {devOnly(t), rtSeries, true}, {nil, rtExport, true}, {devOnly(t), rtWrite, false}, {devOnly(t), rtLabels, false}} {
		in := Args{URL: v("query", "up", "match", "a", "extra_label", "team=ops", "x", "1"), Form: v("query", "b", "match[]", "c", "extra_filters[]", "{}")}
		if tc.rt.Kind == route.Write {
			in.Form = nil
		}
		before := Args{URL: cloneValues(in.URL), Form: cloneValues(in.Form)}
		out, changed, err := tc.e.Request(tc.rt, in, tc.cluster)
		if err != nil || !changed {
			t.Fatalf("%s: %v, changed=%v", tc.rt.API, err, changed)
		}
		if !reflect.DeepEqual(in, before) {
			t.Errorf("%s: the input changed to %v", tc.rt.API, in)
		}
		if reflect.DeepEqual(out, before) {
			t.Errorf("%s: nothing was rewritten: %v", tc.rt.API, out)
		}
	}
}

func TestRequestUnrestrictedIsUntouched(t *testing.T) {
	var unrestricted *Enforcer
	for _, rt := range []route.Route{rtQuery, rtSeries, rtLabels, rtDelete, rtWrite, rtGraphite, rtVMUI} {
		in := Args{URL: v("query", `up{team="ops"}`, "extra_label", "team=ops", "match[]", "up"), Form: v("query", "sum(up) by (job)")}
		out, changed, err := unrestricted.Request(rt, in, false)
		if err != nil || changed || !reflect.DeepEqual(out, in) {
			t.Errorf("%s: %v, changed=%v, %v; want it untouched", rt.API, err, changed, out)
		}
	}
	// In a cluster unrestricted reads are parsed for tenant labels but keep their meaning, extra args included.
	r := newRequest(t, "GET", `/api/v1/query?query=sum(up{team="ops"})&extra_label=team=ops&extra_filters[]={env="x"}`, "", "")
	if err := enforceHTTP(unrestricted, r, rtQuery, true); err != nil {
		t.Fatal(err)
	}
	want := v("query", `sum(up{team="ops"})`, "extra_label", "team=ops", "extra_filters[]", `{env="x"}`)
	if got := mustParse(t, r.URL.RawQuery); !reflect.DeepEqual(got, want) {
		t.Errorf("cluster, unrestricted: %v; want %v", got, want)
	}
}

// TestRequestUnrestrictedQueries: the queries of an unrestricted token go out as sent on a single node too, but what
// would stop VictoriaMetrics is refused and a metric name that would not print back as itself goes inside the braces;
// the other args are never touched, nor the caller's maps.
func TestRequestUnrestrictedQueries(t *testing.T) {
	var unrestricted *Enforcer
	for _, tc := range []struct {
		name, url, form string
		want, wantForm  string // the query forwarded in the URL and the form; "" when untouched
		status          int
	}{
		{name: "as sent", url: "sum(up) by (job)", form: "rate(x[5m])"},
		{name: "with templates kept", url: "WITH (f = up) f + f"},
		{name: "a keyword name", url: `-{__name__="on"}`, want: `0 - {__name__=~"on"}`},
		{name: "the empty name", url: `-{__name__=""}`, want: `0 - {__name__=~""}`},
		{name: "in the form", url: "up", form: `1 - {__name__="BY",job="a"}`, wantForm: `1 - {__name__=~"BY",job="a"}`},
		{name: "a number word", url: `{__name__="Inf"} offset 5m`, want: `{__name__=~"Inf"} offset 5m`},
		{name: "a non-ASCII name", url: `{__name__="é"}`, want: `{__name__=~"é"}`},
		{name: "an aggregate function's name", url: `{__name__="sum"} or vector(1)`, want: `{__name__=~"sum"} or vector(1)`},
		{name: "limit_offset with a string", url: `limit_offset("a", "b", x)`, status: 400},
		{name: "a rollup without its series", form: "sum(quantiles_over_time())", status: 400},
		{name: "does not parse", url: "sum(", status: 400},
	} {
		in := Args{URL: v("query", tc.url, "extra_label", "team=ops"), Handover: true}
		if tc.form != "" {
			in.Form = v("query", tc.form)
		}
		before := Args{URL: cloneValues(in.URL), Form: cloneValues(in.Form), Handover: true}
		out, changed, err := unrestricted.Request(rtQuery, in, false)
		if tc.status != 0 {
			if statusOf(err) != tc.status {
				t.Errorf("%s: %v; want %d", tc.name, err, tc.status)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if changed != (tc.want != "" || tc.wantForm != "") {
			t.Errorf("%s: changed=%v", tc.name, changed)
		}
		want := Args{URL: cloneValues(before.URL), Form: cloneValues(before.Form), Handover: true}
		if tc.want != "" {
			want.URL["query"] = []string{tc.want}
		}
		if tc.wantForm != "" {
			want.Form["query"] = []string{tc.wantForm}
		}
		if !reflect.DeepEqual(out, want) {
			t.Errorf("%s: %+v; want %+v", tc.name, out, want)
		}
		if before.URL["query"][0] != tc.url || (tc.form != "" && before.Form["query"][0] != tc.form) {
			t.Errorf("%s: the caller's slices were written into", tc.name)
		}
	}
	// Without the handover the caller's maps are left as they were.
	in := Args{URL: v("query", `-{__name__="on"}`)}
	if out, _, err := unrestricted.Request(rtQuery, in, false); err != nil || in.URL["query"][0] != `-{__name__="on"}` || out.URL["query"][0] != `0 - {__name__=~"on"}` {
		t.Errorf("without the handover: %v, in %v, out %v", err, in.URL, out.URL)
	}
	// In a cluster too.
	if out, err := unrestricted.query(`0 - {__name__="or"}`, true, false, nil); err != nil || out != `0 - {__name__=~"or"}` {
		t.Errorf("cluster: %q %v", out, err)
	}
}

func TestRequestNoSelectors(t *testing.T) {
	r := newRequest(t, "GET", "/vmui/?extra_label=team=ops", "", "")
	if err := enforceHTTP(devOnly(t), r, rtVMUI, true); err != nil || r.URL.RawQuery != "extra_label=team=ops" {
		t.Errorf("vmui: %v, %q; want it untouched", err, r.URL.RawQuery)
	}
	// An unrestricted token may call unenforceable APIs, in a cluster too.
	var unrestricted *Enforcer
	for _, cluster := range []bool{false, true} {
		r := newRequest(t, "GET", "/render?target=a.b", "", "")
		if err := enforceHTTP(unrestricted, r, rtGraphite, cluster); err != nil {
			t.Errorf("cluster=%v: %s", cluster, err)
		}
	}
}

// TestRequestQueryText: the query of vmui's expand and prettify buttons is checked like any query for every token,
// restricted or not, in a cluster or not (VictoriaMetrics v1.151 and vmselect v1.150 exited on the refused shapes
// below, found by an attacker's review), and is never rewritten: it reads no series.
func TestRequestQueryText(t *testing.T) {
	rt := route.Route{API: "prettify_query", Kind: route.Read, Args: route.QueryText}
	deep := strings.Repeat("(", 1100) + "x" + strings.Repeat(")", 1100)
	for _, tk := range []struct {
		name    string
		e       *Enforcer
		cluster bool
	}{{"unrestricted", nil, false}, {"restricted", devOnly(t), false}, {"restricted, cluster", devOnly(t), true}, {"unrestricted, cluster", nil, true}} {
		for _, tc := range []struct {
			query, want string // want: the query forwarded; "" when untouched
			status      int
		}{
			{query: `sum(rate(x{job="a"}[5m])) by (job)`},
			{query: `WITH (f = up) f + f`},
			{query: `{__name__="sum"} or vector(1)`, want: `{__name__=~"sum"} or vector(1)`},
			{query: `-{__name__="on"}`, want: `0 - {__name__=~"on"}`},
			{query: `-(time() @ (time() @ 1))`, status: 400},
			{query: `limit_offset("a", "b", x)`, status: 400},
			{query: `sum(quantiles_over_time())`, status: 400},
			{query: deep, status: 400},
			{query: `sum(`, status: 400},
		} {
			in := Args{URL: v("query", tc.query, "extra_label", "team=ops"), Handover: true}
			out, changed, err := tk.e.Request(rt, in, tk.cluster)
			if tc.status != 0 {
				if statusOf(err) != tc.status {
					t.Errorf("%s, %.40q: %v; want %d", tk.name, tc.query, err, tc.status)
				}
				continue
			}
			want := tc.query
			if tc.want != "" {
				want = tc.want
			}
			if err != nil || changed != (tc.want != "") || out.URL.Get("query") != want || out.URL.Get("extra_label") != "team=ops" {
				t.Errorf("%s, %q: %v, changed=%v, %v; want query %q and the args as sent", tk.name, tc.query, err, changed, out.URL, want)
			}
		}
	}
}

// TestRequestSelectorsEverywhere: VictoriaMetrics parses extra_filters on every read API and match[] where it reads
// it; what the rewrite does not read is checked as it is for every token (a million nested parentheses in
// extra_filters[] on the Graphite tag APIs stopped v1.151 and vmselect v1.150: a review), and forwarded unchanged.
func TestRequestSelectorsEverywhere(t *testing.T) {
	deep := strings.Repeat("(", 1100) + "x" + strings.Repeat(")", 1100)
	graphite := route.Route{API: "graphite_tags_autocomplete_tags", Kind: route.Read, Args: route.Unenforceable}
	series := route.Route{API: "series", Kind: route.Read, Args: route.MatchArgs}
	vmui := route.Route{API: "vmui", Kind: route.Read, Args: route.NoSelectors}
	for _, tc := range []struct {
		name    string
		e       *Enforcer
		cluster bool
		rt      route.Route
		in      url.Values
		status  int // 0: forwarded as sent
	}{
		{"graphite, fine", nil, false, graphite, v("extra_filters[]", `{env="x"}`), 0},
		{"graphite, deep", nil, false, graphite, v("extra_filters[]", deep), 400},
		{"graphite, deep, cluster", nil, true, graphite, v("extra_filters[]", deep), 400},
		{"graphite, the tenant label, cluster", nil, true, graphite, v("extra_filters", `{vm_account_id="2"}`), 403},
		{"graphite, no selector", nil, false, graphite, v("extra_filters", `sum(x)`), 400},
		{"series, deep match[]", nil, false, series, v("match[]", deep), 400},
		{"series, deep legacy match", nil, false, series, v("match", deep), 400},
		{"series, deep extra_filters", nil, false, series, v("match[]", "up", "extra_filters[]", deep), 400},
		{"series, fine", nil, false, series, v("match[]", "up", "extra_filters[]", `{a="b"}`), 0},
		{"vmui, deep, restricted", devOnly(t), false, vmui, v("extra_filters[]", deep), 400},
		{"vmui, match[] not read there", nil, false, vmui, v("match[]", deep), 0},
	} {
		out, changed, err := tc.e.Request(tc.rt, Args{URL: tc.in}, tc.cluster)
		if tc.status != 0 {
			if statusOf(err) != tc.status {
				t.Errorf("%s: %v; want %d", tc.name, err, tc.status)
			}
			continue
		}
		if err != nil || changed || !reflect.DeepEqual(out.URL, tc.in) {
			t.Errorf("%s: %v, changed=%v, %v; want it as sent", tc.name, err, changed, out.URL)
		}
	}
}

// cloneValues copies vs deeply, so that a comparison with it sees a change inside a slice too; nil stays nil.
func cloneValues(vs url.Values) url.Values {
	if vs == nil {
		return nil
	}
	out := make(url.Values, len(vs))
	for k, v := range vs {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// TestRequestHandover: with the maps handed over, Request rewrites exactly as it does on a copy, and still never
// writes into a slice of the caller's (the gateway's parsed values may share them with nothing, but a cache could).
func TestRequestHandover(t *testing.T) {
	for _, tc := range []struct {
		e       *Enforcer
		rt      route.Route
		cluster bool
	}{{devFiltered(t), rtQuery, false}, {devOnly(t), rtSeries, true}, {nil, rtExport, true}, {devOnly(t), rtWrite, false}, {devOnly(t), rtLabels, false}} {
		in := Args{URL: v("query", "up", "match", "a", "extra_label", "team=ops", "x", "1"), Form: v("query", "b", "match[]", "c", "extra_filters[]", "{}")}
		if tc.rt.Kind == route.Write {
			in.Form = nil
		}
		want, wantChanged, wantErr := tc.e.Request(tc.rt, Args{URL: cloneValues(in.URL), Form: cloneValues(in.Form)}, tc.cluster)
		// Every slice of the caller's, as handed over, with a copy of what it held.
		type held struct{ s, was []string }
		var slices []held
		for _, vs := range []url.Values{in.URL, in.Form} {
			for _, s := range vs {
				slices = append(slices, held{s, append([]string(nil), s...)})
			}
		}
		handed := Args{URL: in.URL, Form: in.Form, Handover: true}
		got, changed, err := tc.e.Request(tc.rt, handed, tc.cluster)
		if (err != nil) != (wantErr != nil) || changed != wantChanged {
			t.Fatalf("%s: %v, changed=%v; on a copy %v, changed=%v", tc.rt.API, err, changed, wantErr, wantChanged)
		}
		if !reflect.DeepEqual(got.URL, want.URL) || !reflect.DeepEqual(got.Form, want.Form) {
			t.Errorf("%s: handed over %v %v; on a copy %v %v", tc.rt.API, got.URL, got.Form, want.URL, want.Form)
		}
		for _, h := range slices {
			if !reflect.DeepEqual(h.s, h.was) {
				t.Errorf("%s: a slice of the caller's was written into: %q, was %q", tc.rt.API, h.s, h.was)
			}
		}
	}
}
