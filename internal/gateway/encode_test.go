package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// rewriteAsToken changes vs as the enforcer and the trace rule change a restricted token's args: every query and
// match[] rewritten, the client's enforcement args and trace removed, the token's extra_label added.
func rewriteAsToken(vs url.Values) {
	for _, k := range []string{"query", "match[]"} {
		if old := vs[k]; len(old) > 0 {
			out := make([]string, len(old))
			for i, q := range old {
				out[i] = q + `{team="dev"}`
			}
			vs[k] = out
		}
	}
	delete(vs, "extra_label")
	delete(vs, "extra_filters")
	delete(vs, "extra_filters[]")
	delete(vs, "trace")
	vs["extra_label"] = []string{"team=dev"}
}

// checkSpliced checks what appendArgs makes of raw as rewritten by rewrite: it reads back as exactly the values
// rewritten (url.ParseQuery, as VictoriaMetrics reads it), is clean (cleanQuery forwards it as it is), reads the
// same as the values encoded whole, and is exactly url.Values.Encode's output when raw was.
func checkSpliced(t *testing.T, raw string, rewrite func(url.Values)) string {
	t.Helper()
	var rec []rawArg
	vs, _ := splitRecording(raw, nil, enforce.FromURL, &rec)
	rewrite(vs)
	out := string(appendArgs(nil, "", rec, vs))
	got, err := url.ParseQuery(out)
	if err != nil {
		t.Fatalf("%q: the spliced args %q do not parse: %v", raw, out, err)
	}
	want := url.Values{}
	for k, v := range vs {
		if len(v) > 0 {
			want[k] = v
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: the spliced args %q read back as\n%q; want\n%q", raw, out, got, want)
	}
	if clean, err := (&upstream{kind: "read"}).cleanQuery(out); err != nil || clean != out {
		t.Fatalf("%q: the spliced args %q are not forwarded as they are: %q, %v", raw, out, clean, err)
	}
	whole, _ := url.ParseQuery(vs.Encode())
	if !reflect.DeepEqual(got, whole) {
		t.Fatalf("%q: spliced %q, encoded whole %q", raw, got, whole)
	}
	// A client that encodes its args as Go does gets them forwarded byte for byte as url.Values.Encode wrote them.
	if sent, err := url.ParseQuery(raw); err == nil && sent.Encode() == raw && out != vs.Encode() {
		t.Fatalf("%q, encoded as Go encodes: spliced as %q, url.Values.Encode wrote %q", raw, out, vs.Encode())
	}
	return out
}

func TestAppendArgs(t *testing.T) {
	keep := func(url.Values) {}
	many := strings.Repeat("x=1&", maxSpliced) + "query=up"
	for _, tc := range []struct {
		name, raw string
		rewrite   func(url.Values)
		want      string
	}{
		{"nothing changed, sorted", "query=up&start=1&end=2", keep, "end=2&query=up&start=1"},
		{"no args", "", rewriteAsToken, "extra_label=team%3Ddev"},
		{"a Grafana range: as url.Values.Encode wrote it", "query=up&start=1781517600&end=1781521200&step=15", rewriteAsToken,
			"end=1781521200&extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&start=1781517600&step=15"},
		{"unchanged args keep their escaping", "start=%31%37&step=1+2&end=%2b60&nocache", rewriteAsToken,
			"end=%2b60&extra_label=team%3Ddev&nocache&start=%31%37&step=1+2"},
		{"a spelled-out name is its name", "%71uery=up&start=1", rewriteAsToken, "extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&start=1"},
		{"duplicate queries, one spelled out", "query=a&start=1&%71uery=b", rewriteAsToken,
			"extra_label=team%3Ddev&query=a%7Bteam%3D%22dev%22%7D&query=b%7Bteam%3D%22dev%22%7D&start=1"},
		{"the client's extra_label, spelled out or not", "extra_label=team%3Dops&query=up&%65xtra%5Flabel=team=ops&extra_label=team=dev", rewriteAsToken,
			"extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D"},
		{"the client's extra_label equal to the token's decodes the same: kept", "extra_label=team%3ddev&x=1", rewriteAsToken, "extra_label=team%3ddev&x=1"},
		{"the client's extra_label twice, equal to the token's", "extra_label=team=dev&x=1&extra_label=team=dev", rewriteAsToken, "extra_label=team%3Ddev&x=1"},
		{"the client's extra_filters", "extra_filters%5B%5D=%7Bteam%3D%22ops%22%7D&extra_filters={a=%22b%22}&extra_filters[]=x&x=1", rewriteAsToken, "extra_label=team%3Ddev&x=1"},
		{"trace removed", "trace=1&x=1&tr%61ce=", rewriteAsToken, "extra_label=team%3Ddev&x=1"},
		{"one of several match[] changed changes them all", "match[]=a&x=1&match%5B%5D=b", func(vs url.Values) { vs["match[]"] = []string{"a", "c"} },
			"match%5B%5D=a&match%5B%5D=c&x=1"},
		{"a value added to a name", "x=1&y=2", func(vs url.Values) { vs["x"] = append(vs["x"], "3") }, "x=1&x=3&y=2"},
		{"a value removed from a name", "x=1&y=2&x=3", func(vs url.Values) { vs["x"] = vs["x"][:1] }, "x=1&y=2"},
		{"values reordered", "x=1&y=2&x=3", func(vs url.Values) { vs["x"] = []string{"3", "1"} }, "x=3&x=1&y=2"},
		{"a name emptied", "x=1&y=2", func(vs url.Values) { vs["x"] = nil }, "y=2"},
		{"empty names and empty pieces", "=1&&a&b=&=", rewriteAsToken, "=1&=&a&b=&extra_label=team%3Ddev"},
		{"empty name changed", "=1&x=2&=3", func(vs url.Values) { vs[""] = []string{"4"} }, "=4&x=2"},
		{"semicolon separators are dropped", "a=1;extra_label=x&start=1&extra_label=y;b", rewriteAsToken, "extra_label=team%3Ddev&start=1"},
		{"bad escapes are dropped", "a=%zz&%zz=1&start=1&query=%", rewriteAsToken, "extra_label=team%3Ddev&start=1"},
		{"a plus in a name", "a+b=1&x=1&a%20b=2", keep, "a+b=1&a%20b=2&x=1"},
		{"a plus in a name, changed", "a+b=1&x=1&a%20b=2", func(vs url.Values) { vs["a b"] = []string{"1"} }, "a+b=1&x=1"},
		{"an added name that sorts first", "z=1", func(vs url.Values) { vs["a"] = []string{"&=;%"} }, "a=%26%3D%3B%25&z=1"},
		{"non-ASCII values", "query=%E2%82%AC&x=%E2%82%AC", rewriteAsToken, "extra_label=team%3Ddev&query=%E2%82%AC%7Bteam%3D%22dev%22%7D&x=%E2%82%AC"},
		{"past maxSpliced args: encoded whole", many, rewriteAsToken, "extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&x=" + strings.Repeat("1&x=", maxSpliced-1) + "1"},
		{"at maxSpliced args: spliced", strings.Repeat("x=1&", maxSpliced-1) + "query=up", rewriteAsToken,
			"extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&x=1" + strings.Repeat("&x=1", maxSpliced-2)},
		{"at maxSpliced args, unchanged bytes: spliced", strings.Repeat("x=%31&", maxSpliced-1) + "query=up", rewriteAsToken,
			"extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&x=%31" + strings.Repeat("&x=%31", maxSpliced-2)},
		{"past maxSpliced args, unchanged bytes: encoded whole", strings.Repeat("x=%31&", maxSpliced) + "query=up", rewriteAsToken,
			"extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&x=1" + strings.Repeat("&x=1", maxSpliced-1)},
	} {
		if got := checkSpliced(t, tc.raw, tc.rewrite); got != tc.want {
			t.Errorf("%s: %q became\n%q; want\n%q", tc.name, tc.raw, got, tc.want)
		}
	}
	// At url.ParseQuery's bound the args are not split and nothing of them is forwarded (strict requests are refused).
	checkSpliced(t, strings.Repeat("x&", maxArgs)+"query=up", rewriteAsToken)
}

func FuzzAppendArgs(f *testing.F) {
	for _, s := range splitSeeds {
		f.Add(s, true)
	}
	f.Add("extra_label=team%3Ddev&%71uery=up&query=x&extra_filters%5B%5D=a&trace=", true)
	f.Add(strings.Repeat("a=1&", maxSpliced)+"extra_label=x", false)
	f.Add("end=2&extra_label=team%3Dops&query=up&start=1&step=15&trace=1", true)
	f.Fuzz(func(t *testing.T, raw string, token bool) {
		rewrite := rewriteAsToken
		if !token {
			// A timeout set, as the query limits set it.
			rewrite = func(vs url.Values) { vs.Set("timeout", "1s") }
		}
		checkSpliced(t, raw, rewrite)
	})
}

// TestSplicedArgsForwarded: through the gateway, a restricted token's query and form reach the upstream with the
// args it did not change as they were sent and nothing of the client's enforcement args or the values it changed,
// however they were spelled or repeated.
func TestSplicedArgsForwarded(t *testing.T) {
	rec := vmtest.NewRecorder(t)
	gw := serveGateway(t, rec.URL, tlsclient.Options{}, func(c *Config) { c.Auth = headerAuth{} })
	for _, tc := range []struct {
		name, target, body  string
		wantQuery, wantBody string
	}{
		{"Grafana range in the URL", "/api/v1/query_range?query=sum(rate(x[5m]))&start=1781517600&end=1781521200&step=15", "",
			"end=1781521200&extra_label=team%3Ddev&query=sum%28rate%28x%7Bteam%3D%22dev%22%7D%5B5m%5D%29%29&start=1781517600&step=15", ""},
		{"Grafana range in the form", "/api/v1/query_range", "query=up&start=%31&end=2&step=1+5",
			"extra_label=team%3Ddev", "end=2&query=up%7Bteam%3D%22dev%22%7D&start=%31&step=1+5"},
		{"smuggled enforcement args", "/api/v1/query?%71uery=up&extra%5Flabel=team%3Dops&extra_filters%5B%5D=%7Bteam%3D%22ops%22%7D&extra_filters=%7B%7D&time=5", "extra_label=team=ops&x=1",
			"extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D&time=5", "x=1"},
		{"match[] spelled two ways", "/api/v1/series?match%5B%5D=a&start=1&match[]=b", "",
			"extra_label=team%3Ddev&match%5B%5D=a%7Bteam%3D%22dev%22%7D&match%5B%5D=b%7Bteam%3D%22dev%22%7D&start=1", ""},
		{"legacy match becomes match[]", "/api/v1/export?match=a&start=1", "",
			"extra_label=team%3Ddev&match%5B%5D=a%7Bteam%3D%22dev%22%7D&start=1", ""},
		{"a form whose every arg is removed", "/api/v1/query?query=up", "trace=1&extra_label=team%3Dops",
			"extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D", ""},
		{"empty names and pieces", "/api/v1/labels?=1&&nocache&x=", "",
			"=1&extra_label=team%3Ddev&match%5B%5D=%7Bteam%3D%22dev%22%7D&nocache&x=", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, ctype := http.MethodGet, ""
			if tc.body != "" {
				method, ctype = http.MethodPost, formType
			}
			req, err := http.NewRequest(method, gw.URL+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			req.Header.Set("X-Team", "dev")
			if code, _, _, raw := send(t, req); code != 200 {
				t.Fatalf("%d %s", code, raw)
			}
			got := rec.Requests()
			if len(got) != 1 {
				t.Fatalf("forwarded %d requests", len(got))
			}
			if got[0].RawQuery != tc.wantQuery || got[0].Body != tc.wantBody {
				t.Errorf("forwarded\n%q\n%q; want\n%q\n%q", got[0].RawQuery, got[0].Body, tc.wantQuery, tc.wantBody)
			}
			if method == http.MethodPost && got[0].Header.Get("Content-Length") != fmt.Sprint(len(got[0].Body)) {
				t.Errorf("a body of %d bytes forwarded with Content-Length %q", len(got[0].Body), got[0].Header.Get("Content-Length"))
			}
		})
	}
}

// TestSetQueryArgs: the rewritten query replaces the one of the request target as sent, or is added to it, and no
// query leaves the path alone; a request without a target (a client's) keeps none.
func TestSetQueryArgs(t *testing.T) {
	for _, tc := range []struct{ target, query, rewritten, wantTarget string }{
		{"/api/v1/query?query=up", "query=up", "query=up&extra_label=team%3Ddev", "/api/v1/query?extra_label=team%3Ddev&query=up"},
		{"/api/v1/query?trace=1", "trace=1", "", "/api/v1/query"},
		{"/api/v1/labels", "", "match[]=x", "/api/v1/labels?match%5B%5D=x"},
		{"/api/v1/labels", "", "", "/api/v1/labels"},
		{"", "query=up", "query=x", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
		r.RequestURI = tc.target
		var rec []rawArg
		_, _ = splitRecording(tc.query, nil, enforce.FromURL, &rec)
		vs, _ := url.ParseQuery(tc.rewritten)
		setQueryArgs(r, rec, vs)
		if r.RequestURI != tc.wantTarget || r.URL.RawQuery != vs.Encode() {
			t.Errorf("%q rewritten to %q: target %q, query %q; want %q, %q", tc.target, tc.rewritten, r.RequestURI, r.URL.RawQuery, tc.wantTarget, vs.Encode())
		}
	}
}
