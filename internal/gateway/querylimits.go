package gateway

import (
	"net/http"
	"net/url"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// QueryLimiter judges a read request's shape against its tenant's query limits (querylimits.Limiter). Check
// returns the timeout to send upstream ("" for none) or the refusal.
type QueryLimiter interface {
	Applies(a *auth.Access, rt route.Route) bool
	Check(a *auth.Access, rt route.Route, args, form url.Values, now time.Time) (string, error)
}

// checkQueryLimits reads the request's URL and form args (the body is put back for the next steps) and checks them
// against the tenant's query limits; the timeout they impose is added to the URL, where the enforcer keeps it.
func (g *Gateway) checkQueryLimits(r *http.Request, rt route.Route, a *auth.Access) error {
	if g.queryLimits == nil || !g.queryLimits.Applies(a, rt) {
		return nil
	}
	args, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return httperr.New(http.StatusBadRequest, "cannot parse the URL query to check the query limits: "+err.Error())
	}
	var form url.Values
	if hasBody(r) {
		// VictoriaMetrics reads args from any form body, multipart included: a body the limits cannot read could
		// carry a start or query they never saw.
		if !isPlainForm(r) {
			return httperr.New(http.StatusUnsupportedMediaType, "the tenant has query limits: a read request body must be an "+
				"uncompressed application/x-www-form-urlencoded form, got Content-Type "+r.Header.Get("Content-Type"))
		}
		limit := g.limits.MaxReadBodySize
		if limit <= 0 {
			limit = int64(enforce.MaxFormBodySize) // no -maxReadBodySize: still a bound on what is held in memory
		}
		b, err := readBody(r.Body, limit)
		if err != nil {
			return err
		}
		putBody(r, b)
		if form, err = url.ParseQuery(string(b)); err != nil {
			return httperr.New(http.StatusBadRequest, "cannot parse the form body to check the query limits: "+err.Error())
		}
	}
	timeout, err := g.queryLimits.Check(a, rt, args, form, time.Now())
	if err != nil {
		return err
	}
	if timeout != "" {
		args.Set("timeout", timeout)
		r.URL.RawQuery = args.Encode()
		r.URL.ForceQuery = false
	}
	return nil
}
