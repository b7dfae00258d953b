package enforce

import (
	"net/url"
	"reflect"
	"testing"

	"github.com/vmgateway/vmgateway/internal/enforce/corpus"
)

// FuzzRewrite: whatever query metricsql accepts, the rewrite parses again and every selector in it carries the
// token's labels and one of its filter branches. Seeds are the shared testdata/queries.txt at the top level.
func FuzzRewrite(f *testing.F) {
	f.Add(`sum(rate(http_requests_total{job="api",status=~"5.."}[5m])) by (instance)`)
	qs, err := corpus.Queries()
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range qs {
		f.Add(q)
	}
	enforcers := []*Enforcer{
		devOnly(f),
		devFiltered(f),
		mustNew(f, []Label{{"team", "dev"}, {"env", "prod"}}, []string{`up{job="a"}`, `{__name__=~"node_.+",region="eu"}`}),
		nil, // unrestricted: the query goes out as sent, or with its odd metric names inside the braces
	}
	f.Fuzz(func(t *testing.T, q string) {
		expr, err := parse(q)
		if err == nil {
			err = checkRunnable(expr)
		}
		if err != nil {
			// What does not parse, or would stop VictoriaMetrics, is refused.
			for _, e := range enforcers {
				if _, qerr := e.Query(q); statusOf(qerr) != 400 {
					t.Fatalf("Query(%q): %v; want a 400 error like %q", q, qerr, err)
				}
			}
			return
		}
		for _, e := range enforcers {
			out, err := e.Query(q)
			if err != nil {
				t.Fatalf("Query(%q) with %s: %s", q, e, err)
			}
			if !e.Restricted() {
				back, err := parse(out)
				if err != nil {
					t.Fatalf("Query(%q) unrestricted = %s, which does not parse: %s", q, out, err)
				}
				if anchorOddNames(back) {
					t.Fatalf("Query(%q) unrestricted = %s, which keeps a metric name that prints as something else", q, out)
				}
				continue
			}
			if err := checkEnforced(e, out); err != nil {
				t.Fatalf("Query(%q) with %s = %s: %s", q, e, out, err)
			}
		}
	})
}

// FuzzRequest: whatever URL query and form body a client sends, the args Request returns carry only the token's
// extra_label / extra_filters[] args, and every query and match[] in them is enforced.
func FuzzRequest(f *testing.F) {
	f.Add("query=up&extra_label=team%3Dops", "query=sum(rate(a[5m]))&extra_filters[]=%7B%7D", false)
	f.Add("match[]=up&match=x&extra_filters=%7Bteam%3D%22ops%22%7D", "match%5B%5D=%7Ba%3D%221%22+or+b%3D%222%22%7D", true)
	f.Add("", "", true)
	f.Add("query=a&query=b", "query=c&extra_label=team=sec&extra%5Flabel=x=y", false)
	e := devFiltered(f)
	f.Fuzz(func(t *testing.T, rawQuery, body string, match bool) {
		rt := rtQuery
		if match {
			rt = rtSeries
		}
		in, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // the gateway refuses it before the enforcer sees it
		}
		inForm, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		out, changed, err := e.Request(rt, Args{URL: in, Form: inForm}, false)
		if err != nil {
			if st := statusOf(err); st < 400 || st > 499 {
				t.Fatalf("error %q with status %d", err, st)
			}
			return
		}
		if !changed {
			t.Fatalf("a restricted token's read came back unchanged")
		}
		// What the gateway forwards is the encoded values: they must parse back to the same.
		q, err := url.ParseQuery(out.URL.Encode())
		if err != nil {
			t.Fatalf("the rewritten URL query does not parse: %s", err)
		}
		form, err := url.ParseQuery(out.Form.Encode())
		if err != nil {
			t.Fatalf("the rewritten body does not parse: %s", err)
		}
		if !reflect.DeepEqual(q["extra_label"], e.readLabelArgs) || !reflect.DeepEqual(q["extra_filters[]"], e.extraFiltersArgs) ||
			len(q["extra_filters"]) > 0 {
			t.Fatalf("URL enforcement args: %v", q)
		}
		for _, k := range []string{"extra_label", "extra_filters", "extra_filters[]"} {
			if len(form[k]) > 0 {
				t.Fatalf("the body still has %s: %q", k, form[k])
			}
		}
		n := 0
		for _, vs := range []url.Values{q, form} {
			if !match {
				for _, s := range vs["query"] {
					if err := checkEnforced(e, s); err != nil {
						t.Fatalf("query %q: %s", s, err)
					}
				}
				continue
			}
			n += len(vs["match[]"])
			for _, k := range []string{"match[]", "match"} {
				for _, s := range vs[k] {
					if err := checkEnforced(e, s); err != nil {
						t.Fatalf("%s %q: %s", k, s, err)
					}
				}
			}
		}
		if match && n == 0 {
			t.Fatalf("no match[] left: %v %v", q, form)
		}
	})
}
