package gateway

import (
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// QueryLimiter judges a read request's shape against its tenant's query limits (querylimits.Limiter). Check
// parses the queries through in.Parsed and returns the timeout to send upstream ("" for none) or the refusal. The
// args are lent for the call only: the enforcer rewrites them in place afterwards.
type QueryLimiter interface {
	Applies(a *auth.Access, rt route.Route) bool
	Check(a *auth.Access, rt route.Route, in enforce.Args, now time.Time) (string, error)
}

// parsedPool keeps the lists of parsed queries between requests: a request with query limits needs one, and most
// find their query in the limits' cache and parse nothing.
var parsedPool = sync.Pool{New: func() any { return &enforce.Parsed{} }}

// releaseParsed returns p to the pool once the request no longer reads it; nil is ignored.
func releaseParsed(p *enforce.Parsed) {
	if p != nil {
		p.Reset()
		parsedPool.Put(p)
	}
}

// checkQueryLimits checks the args prepareArgs read (URL and form) against the tenant's query limits; the timeout
// they impose is set in q, where the enforcer keeps it. It returns the queries it parsed, for the enforcer (nil
// when it parsed none; releaseParsed when done), and whether q changed.
func (g *Gateway) checkQueryLimits(a *auth.Access, rt route.Route, q, form url.Values, body []byte, isForm bool, r *http.Request) (*enforce.Parsed, bool, error) {
	if g.queryLimits == nil || !g.queryLimits.Applies(a, rt) {
		return nil, false, nil
	}
	if len(body) > 0 && !isForm {
		// VictoriaMetrics reads args from any form body, multipart included: a body the limits cannot read could
		// carry a start or query they never saw.
		return nil, false, httperr.New(http.StatusUnsupportedMediaType, "the tenant has query limits: a read request body must be an "+
			"uncompressed application/x-www-form-urlencoded form, got Content-Type "+r.Header.Get("Content-Type"))
	}
	parsed := parsedPool.Get().(*enforce.Parsed)
	timeout, err := g.queryLimits.Check(a, rt, enforce.Args{URL: q, Form: form, Parsed: parsed}, time.Now())
	if err != nil || timeout == "" {
		return parsed, false, err
	}
	q.Set("timeout", timeout)
	return parsed, true, nil
}
