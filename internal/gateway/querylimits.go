package gateway

import (
	"net/http"
	"net/url"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// QueryLimiter judges a read request's shape against its tenant's query limits (querylimits.Limiter). Check
// returns the timeout to send upstream ("" for none) or the refusal. args and form are lent for the call only: the
// enforcer rewrites them in place afterwards.
type QueryLimiter interface {
	Applies(a *auth.Access, rt route.Route) bool
	Check(a *auth.Access, rt route.Route, args, form url.Values, now time.Time) (string, error)
}

// checkQueryLimits checks the args prepareArgs read (URL and form) against the tenant's query limits; the timeout
// they impose is set in q, where the enforcer keeps it. It reports whether q changed.
func (g *Gateway) checkQueryLimits(a *auth.Access, rt route.Route, q, form url.Values, body []byte, isForm bool, r *http.Request) (bool, error) {
	if g.queryLimits == nil || !g.queryLimits.Applies(a, rt) {
		return false, nil
	}
	if len(body) > 0 && !isForm {
		// VictoriaMetrics reads args from any form body, multipart included: a body the limits cannot read could
		// carry a start or query they never saw.
		return false, httperr.New(http.StatusUnsupportedMediaType, "the tenant has query limits: a read request body must be an "+
			"uncompressed application/x-www-form-urlencoded form, got Content-Type "+r.Header.Get("Content-Type"))
	}
	timeout, err := g.queryLimits.Check(a, rt, q, form, time.Now())
	if err != nil || timeout == "" {
		return false, err
	}
	q.Set("timeout", timeout)
	return true, nil
}
