package ratelimit

import (
	"net/http"
	"testing"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// check is Admit without response headers.
func (g *Gate) check(a *auth.Access, rt route.Route) error { return g.Admit(a, rt, nil) }

// shown is the status page's line for limit l of tenant id, from the tenant's own entry (not a key value's): the
// usage the gate enforces against l and where it came from. found is false when the page does not list it.
func shown(t *testing.T, g *Gate, id tenant.ID, l limitfile.Limit) (sl statusLimit, found bool) {
	t.Helper()
	code, p, body := getStatus(t, g, "?tenant="+id.String())
	if code != http.StatusOK {
		t.Fatalf("status page for tenant %s: %d %s", id, code, body)
	}
	for _, e := range p.Usage {
		if e.KeyValue != nil {
			continue
		}
		for _, sl := range e.Limits {
			if sl.statusLimitSpec == spec(l) && sl.Scope == scope(l) {
				return sl, true
			}
		}
	}
	return statusLimit{}, false
}

// redisOf is the gate's Redis store, for the tests of its health and calls.
func redisOf(g *Gate) *redisStore { return g.tally.store.(*redisStore) }
