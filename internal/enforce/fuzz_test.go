package enforce

import (
	"testing"
)

// FuzzRewrite: whatever query metricsql accepts, the rewrite parses again and every selector in it carries the
// token's labels and one of its filter branches. Seeds are in testdata/fuzz/FuzzRewrite.
func FuzzRewrite(f *testing.F) {
	f.Add(`sum(rate(http_requests_total{job="api",status=~"5.."}[5m])) by (instance)`)
	enforcers := []*Enforcer{
		devOnly(f),
		devFiltered(f),
		mustNew(f, []Label{{"team", "dev"}, {"env", "prod"}}, []string{`up{job="a"}`, `{__name__=~"node_.+",region="eu"}`}),
	}
	f.Fuzz(func(t *testing.T, q string) {
		if _, err := parse(q); err != nil {
			for _, e := range enforcers {
				if _, err := e.Query(q); statusOf(err) != 400 {
					t.Fatalf("Query(%q): %v; want a 400 error like the parser's", q, err)
				}
			}
			return
		}
		for _, e := range enforcers {
			out, err := e.Query(q)
			if err != nil {
				t.Fatalf("Query(%q) with %s: %s", q, e, err)
			}
			if err := checkEnforced(e, out); err != nil {
				t.Fatalf("Query(%q) with %s = %s: %s", q, e, out, err)
			}
		}
	})
}
