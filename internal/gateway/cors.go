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

// A page may read an answer to another origin only when the answer allows it (Access-Control-Allow-Origin):
// VictoriaMetrics' answers do, and the gateway's own did not, so a browser app that was refused (401 for an expired
// token, 422 for a query limit, 429 with the time to wait) saw a network error instead of the reason. Every answer to
// a request from a page (with Origin) now allows it, and lets the page read Retry-After; a forwarded answer carries
// the upstream's own CORS headers instead (unCORS), as before.

// corsExposed are the headers of the gateway's own answers a page may read beside the CORS-safelisted ones.
const corsExposed = "Retry-After"

// allowOrigin lets a page on any origin read the gateway's answer to r.
func allowOrigin(w http.ResponseWriter, r *http.Request) {
	if len(r.Header["Origin"]) == 0 {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", corsExposed)
}

// unCORS takes allowOrigin's headers out of h, which the upstream's answer is about to fill: the page reads a
// forwarded answer as the upstream allows it, and two Access-Control-Allow-Origin make a browser refuse it.
func unCORS(h http.Header) {
	if len(h["Access-Control-Allow-Origin"]) == 0 {
		return
	}
	delete(h, "Access-Control-Allow-Origin")
	delete(h, "Access-Control-Expose-Headers")
}

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
