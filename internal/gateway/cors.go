package gateway

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// A browser asks before it sends a request with a token to another origin (a CORS preflight): OPTIONS with Origin
// and Access-Control-Request-Method, never with the token, so the gateway refused it 401 and no page on another
// origin could call it (a legitimate user's review; VictoriaMetrics answers preflights). The gateway answers it
// itself, before authentication: it carries nothing to authenticate and reaches no upstream, and the request that
// follows is authenticated as any other. Any origin may ask: a token is no browser credential (a cookie) that a page
// could use without being given it.

// maxPreflightHeaders bounds the headers a preflight's answer allows.
const maxPreflightHeaders = 32

// preflight answers r when it is a CORS preflight, and says whether it was.
func (g *Gateway) preflight(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodOptions || r.Header.Get("Origin") == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", allowedMethods)
	// Authorization must be named: a "*" does not cover it. The headers asked for are allowed as asked, when they
	// are header names.
	allowed := []string{"Authorization"}
	if g.authHeader != "" {
		allowed = append(allowed, g.authHeader)
	}
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); httpguts.ValidHeaderFieldName(name) && len(allowed) < maxPreflightHeaders {
				allowed = append(allowed, name)
			}
		}
	}
	h.Set("Access-Control-Allow-Headers", strings.Join(allowed, ", "))
	h.Set("Access-Control-Max-Age", "600")
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
	return true
}
