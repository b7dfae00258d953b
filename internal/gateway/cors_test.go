package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// refuseAll refuses every request 401, as the verifier refuses one without a token.
type refuseAll struct{}

func (refuseAll) Authenticate(*http.Request) (*auth.Access, error) {
	return nil, httperr.New(http.StatusUnauthorized, "no token")
}

// TestPreflight: a browser's CORS preflight, which never carries the token, is answered by the gateway itself (204,
// Authorization and the headers asked for allowed) and reaches no upstream; an OPTIONS that is no preflight still
// needs a token.
func TestPreflight(t *testing.T) {
	up := vmtest.NewRecorder(t)
	u, _ := url.Parse(up.URL)
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: refuseAll{}, AuthHeader: "X-Token"})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(g, http.MethodOptions, "/api/v1/query", "Origin", "https://app.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type, x-grafana-org-id, bad header")
	h := rec.Header()
	if rec.Code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
		h.Get("Access-Control-Allow-Headers") != "Authorization, X-Token, authorization, content-type, x-grafana-org-id" ||
		h.Get("Access-Control-Allow-Methods") != allowedMethods {
		t.Errorf("preflight: %d %v", rec.Code, h)
	}
	if rec := serve(g, http.MethodOptions, "/api/v1/query"); rec.Code != http.StatusUnauthorized {
		t.Errorf("OPTIONS without Origin: %d, want 401", rec.Code)
	}
	if rec := serve(g, http.MethodOptions, "/api/v1/query", "Origin", "https://app.example"); rec.Code != http.StatusUnauthorized {
		t.Errorf("OPTIONS with an Origin but no Access-Control-Request-Method: %d, want 401", rec.Code)
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("%d requests reached the upstream", n)
	}
}

// TestAnswersAllowOrigin: the gateway's own answers to a page (a request with Origin) let it read them, the reason
// for a refusal and the time to wait included, and a forwarded answer carries the upstream's CORS headers alone (a
// legitimate user's review: a page saw a network error for every refusal).
func TestAnswersAllowOrigin(t *testing.T) {
	const origin = "https://app.example"
	corsOf := func(rec *httptest.ResponseRecorder) string {
		h := rec.Header()
		return fmt.Sprintf("%q %q", h.Values("Access-Control-Allow-Origin"), h.Values("Access-Control-Expose-Headers"))
	}
	g, read, _ := newGateway(t, false, refuseAll{}, nil)
	rec := serve(g, http.MethodGet, "/api/v1/query?query=up", "Origin", origin)
	if got := corsOf(rec); rec.Code != http.StatusUnauthorized || got != `["*"] ["Retry-After"]` {
		t.Errorf("refused: %d, CORS headers %s", rec.Code, got)
	}
	errorOf(t, rec)
	if rec := serve(g, http.MethodGet, "/api/v1/query?query=up"); corsOf(rec) != "[] []" {
		t.Errorf("refused without Origin: CORS headers %s", corsOf(rec))
	}

	g, read, _ = newGateway(t, true, fixedAuth{a: &auth.Access{Tenant: tenant.ID{AccountID: 15}, Mode: auth.ModeFull}}, denyAll{})
	rec = serve(g, http.MethodGet, "/api/v1/query?query=up", "Origin", origin)
	if got := corsOf(rec); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || got != `["*"] ["Retry-After"]` {
		t.Errorf("limited: %d, Retry-After %q, CORS headers %s", rec.Code, rec.Header().Get("Retry-After"), got)
	}

	g, read, _ = newGateway(t, false, fixedAuth{a: &auth.Access{Mode: auth.ModeFull}}, nil)
	for _, upstream := range []string{"*", ""} {
		read.Respond(func(w http.ResponseWriter, r *http.Request) {
			if upstream != "" {
				w.Header().Set("Access-Control-Allow-Origin", upstream)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
		})
		rec := serve(g, http.MethodGet, "/api/v1/query?query=up", "Origin", origin)
		want := "[] []"
		if upstream != "" {
			want = `["*"] []`
		}
		if got := corsOf(rec); rec.Code != http.StatusOK || got != want {
			t.Errorf("forwarded, the upstream allowing %q: %d, CORS headers %s; want %s", upstream, rec.Code, got, want)
		}
	}
}
