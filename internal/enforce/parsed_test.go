package enforce

import (
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/route"
)

// TestParsedShared checks that a request's query is parsed once: a later reader gets the same parse, the rewrite
// takes it over (and changes it), and whoever reads the query after the rewrite gets a parse of its own.
func TestParsedShared(t *testing.T) {
	e := devOnly(t)
	q := `sum(rate(parsed_shared_total{job="api"}[5m]))` // in no other test: the rewrite's cache misses it
	p := &Parsed{}
	first, err := p.Parse(q)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := p.Parse(q); again != first {
		t.Fatalf("a second Parse of %q parsed again", q)
	}
	rt := route.Route{API: "query", Kind: route.Read, Args: route.QueryArg}
	out, _, err := e.Request(rt, Args{URL: url.Values{"query": {q}}, Parsed: p}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.URL.Get("query"); !strings.Contains(got, `team="dev"`) {
		t.Fatalf("rewritten query %q lacks the token's label", got)
	}
	if printed := string(first.AppendString(nil)); !strings.Contains(printed, `team="dev"`) {
		t.Errorf("the rewrite did not take the shared parse over: it still prints %s", printed)
	}
	after, err := p.Parse(q)
	if err != nil {
		t.Fatal(err)
	}
	if after == first || strings.Contains(string(after.AppendString(nil)), "team") {
		t.Errorf("a Parse after the rewrite returned the rewritten tree: %s", after.AppendString(nil))
	}

	// A parse error is shared too, and the rewrite reports it as it always did.
	bad := `sum(parsed_shared_total`
	if _, err := p.Parse(bad); err == nil {
		t.Fatalf("%q parsed", bad)
	}
	_, _, err = e.Request(rt, Args{URL: url.Values{"query": {bad}}, Parsed: p}, false)
	if err == nil || !strings.Contains(err.Error(), "cannot parse query") {
		t.Errorf("the rewrite of %q: %v, want a parse error", bad, err)
	}
	var none *Parsed
	if _, err := none.Parse(q); err != nil {
		t.Errorf("a nil *Parsed: %s", err)
	}
}

// TestParsedMany checks the index a request of many selectors gets: each is found, once taken it is parsed again.
func TestParsedMany(t *testing.T) {
	p := &Parsed{}
	var exprs []string
	for i := 0; i < 3*parsedListMax; i++ {
		exprs = append(exprs, `parsed_many{i="`+strings.Repeat("x", i)+`"}`)
	}
	first := map[string]any{}
	for _, q := range exprs {
		e, err := p.Parse(q)
		if err != nil {
			t.Fatal(err)
		}
		first[q] = e
	}
	for _, q := range exprs {
		if e, _ := p.Parse(q); e != first[q] {
			t.Fatalf("%s parsed again", q)
		}
		if e, _ := p.take(q); e != first[q] {
			t.Fatalf("take(%s) did not return the shared parse", q)
		}
		if e, _ := p.Parse(q); e == first[q] {
			t.Fatalf("%s: a Parse after take returned the taken tree", q)
		}
	}
	// Reset, as for the next request: nothing of this one is found, and the list starts again.
	p.Reset()
	if e, _ := p.Parse(exprs[0]); e == first[exprs[0]] || len(p.qs) != 1 || p.index != nil {
		t.Errorf("after Reset: %d queries, index %v", len(p.qs), p.index != nil)
	}
}
