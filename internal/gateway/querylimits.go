package gateway

import (
	"net/http"
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

// limitArgs are what the query limits and the enforcer share of one request: the args the limits read, recorded
// as the args are split, the queries parsed and the parse slot they were parsed in. They are kept between
// requests: most requests find their query in the caches and parse nothing.
type limitArgs struct {
	known  enforce.Known
	parsed enforce.Parsed
	gate   parseGate
}

var limitArgsPool = sync.Pool{New: func() any { return &limitArgs{} }}

// releaseLimitArgs returns la to the pool once the request no longer reads it, holding nothing of the request.
func releaseLimitArgs(la *limitArgs) {
	la.known.Reset()
	la.parsed.Reset()
	la.gate.release()
	limitArgsPool.Put(la)
}

// checkQueryLimits checks the args prepareArgs read (URL and form, with the args the limits read recorded in
// in.Known and a list in in.Parsed for the queries it parses, which the enforcer takes over) against the tenant's
// query limits; the timeout they impose is set in in.URL, where the enforcer keeps it, in place of the client's. It reports whether in.URL
// changed. A request whose tenant has no limits that concern it has nothing recorded and is not checked.
func (g *Gateway) checkQueryLimits(a *auth.Access, rt route.Route, in enforce.Args, body []byte, isForm bool, r *http.Request) (bool, error) {
	if in.Known == nil {
		return false, nil
	}
	if len(body) > 0 && !isForm {
		// VictoriaMetrics reads args from any form body, multipart included: a body the limits cannot read could
		// carry a start or query they never saw.
		return false, httperr.New(http.StatusUnsupportedMediaType, "the tenant has query limits: a read request body must be an "+
			"uncompressed application/x-www-form-urlencoded form, got Content-Type "+r.Header.Get("Content-Type"))
	}
	timeout, err := g.queryLimits.Check(a, rt, in, time.Now())
	if err != nil || timeout == "" {
		return false, err
	}
	// The client's own timeouts, which VictoriaMetrics would read before the gateway's: the form's first.
	if in.Form != nil {
		in.Form.Del("timeout")
	}
	in.URL.Set("timeout", timeout)
	return true, nil
}
