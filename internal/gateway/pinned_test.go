package gateway

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestPinnedOnlyWhenCounted: through the whole pipeline, an instant query that calls a counted function goes upstream
// pinned (nocache=1, so that VictoriaMetrics evaluates it at the time counted), and one whose text only looks as if it
// might (an escaped regexp, a label value past ASCII, a counted name in a string) goes without, VictoriaMetrics' cache
// on, as the client sent it: before, every query with a backslash or a byte past ASCII was pinned.
func TestPinnedOnlyWhenCounted(t *testing.T) {
	read := vmtest.NewRecorder(t)
	ru, _ := url.Parse(read.URL)
	dev, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ReadURL: ru, WriteURL: ru, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: byToken{"dev": {Mode: auth.ModeFull, Enforcer: dev}}, AuthHeader: "X-Token", Limits: Limits{MaxFanOutPoints: 2e7}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query  string
		pinned bool
	}{
		{`sum(rate(http_requests_total{instance=~"10\\.0\\..*"}[5m]))`, false},
		{`up{city="Zürich"}`, false},
		{`up{job="histogram_over_time"}`, false},
		{`histogram_over_time(x[5m])`, true},
		{`histogram\_over\_time(x{city="Zürich"}[5m])`, true},
	} {
		rec := serve(g, http.MethodGet, "/api/v1/query?time=1700000000&query="+url.QueryEscape(tc.query), "X-Token", "dev")
		reqs := read.Requests()
		if rec.Code != http.StatusOK || len(reqs) == 0 {
			t.Fatalf("%s: %d %s, %d requests forwarded", tc.query, rec.Code, rec.Body.String(), len(reqs))
		}
		sent := reqs[len(reqs)-1] // after the counts a counted call asks for
		if sent.Query.Get("query") == "" || sent.Query.Get("time") != "1700000000" || (sent.Query.Get("nocache") == "1") != tc.pinned {
			t.Errorf("%s: forwarded %s; want pinned %v", tc.query, sent.RawQuery, tc.pinned)
		}
	}
}
