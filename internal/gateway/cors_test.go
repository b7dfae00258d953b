package gateway

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
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
