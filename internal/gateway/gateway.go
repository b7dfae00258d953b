// Package gateway is the request pipeline: authenticate, route, authorize, limit, enforce, forward.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/labelguard"
	"github.com/vmgateway/vmgateway/internal/membudget"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Authenticator turns a request's token into a verified Access (auth.Verifier).
type Authenticator interface {
	Authenticate(r *http.Request) (*auth.Access, error)
}

// Limiter decides whether a tenant may make one more request of a route's kind, counts it, and sets rate-limit
// headers on the response's h, for allowed and rejected requests alike (ratelimit.Gate).
type Limiter interface {
	Admit(a *auth.Access, rt route.Route, h http.Header) error
}

// CostCounter counts what answered queries cost against the callers' cost limits (ratelimit.Gate): the stats
// VictoriaMetrics ends query answers with. A caller over its budget is refused by the Limiter's next Admit.
type CostCounter interface {
	// Costed reports whether the caller has cost limits: only then are the stats of its answers counted.
	Costed(a *auth.Access) bool
	// Reserve holds what a query about to be forwarded is expected to cost until what it returns (never nil) is
	// called, waiting at most wait while the caller's queries in flight hold the rest of its budget.
	Reserve(ctx context.Context, a *auth.Access, wait time.Duration) (func(), error)
	// Spend charges a query what its answer's stats say, or for one without them what the gateway measured: its
	// time, and the series its answer held.
	Spend(a *auth.Access, seriesFetched int64, execMsec float64)
	// SpendAll charges an answer whose cost could not be learned as the caller's whole budget.
	SpendAll(a *auth.Access)
}

// Config wires the pipeline's parts. Nil Auth means -enable.auth is off; nil Limiter means no rate limiting.
type Config struct {
	ReadURL, WriteURL             *url.URL
	ReadTransport, WriteTransport http.RoundTripper
	// ReadURLs and WriteURLs, when set, replace ReadURL and WriteURL: several backends of one kind (backends.go).
	ReadURLs, WriteURLs []*url.URL
	Backends            BackendOptions
	Cluster             bool
	Auth                Authenticator
	Limiter             Limiter
	// Costs, when set, counts the stats of query answers against cost limits (with the Limiter, the same gate).
	Costs CostCounter
	// Spacing, when set, spaces each unit's deletes across the replicas that share it, beside each replica's own
	// spacing (deletes.go).
	Spacing Spacer
	// AuthHeader is the header that carries the token; it never reaches an upstream.
	AuthHeader string
	// Limits bound concurrency, selector args and bodies; the zero value limits nothing.
	Limits Limits
	// QueryLimits, when set, refuses read requests whose shape exceeds the tenant's query limits.
	QueryLimits QueryLimiter
	// LabelLimit, when set, is the -maxLabelsPerTimeseries of the write backends if one truncates series over it
	// instead of dropping them (VictoriaMetrics before v1.108.0), else 0; the gateway then drops such series from
	// writes through tokens with extra labels (labelguard). It may wait for the first look at the backends. An
	// *httperr.Error it returns is the write's answer (a backend such writes must not reach).
	LabelLimit func(ctx context.Context) (int, error)
	// WriteAddrs, when set, is told the addresses writes go to: once in New, and with -discoverBackendIPs before
	// each change takes effect, so that the check behind LabelLimit can look at a new address before a write
	// reaches it.
	WriteAddrs func([]BackendAddr)
	// ReadAddrs, when set, is told the addresses reads go to, like WriteAddrs, so that their capacity can be
	// learned (SetReadSlots).
	ReadAddrs func([]BackendAddr)
}

// Gateway is the http.Handler for every proxied VictoriaMetrics API.
type Gateway struct {
	cluster      bool
	auth         Authenticator
	limiter      Limiter
	costs        CostCounter
	read, write  *upstream
	dropHeaders  []string
	unrestricted *auth.Access
	limits       Limits
	conc         *concurrency
	// memReads is the read balancer where reads wait for the backends' query memory (nil: they do not), told the unit
	// of a read without a slot while the memory is contended.
	memReads *balancer
	// backendDedup is the read backends' -dedup.minScrapeInterval (SetBackendDedup), in nanoseconds; 0: not known.
	backendDedup atomic.Int64
	// backendMaxQueryLen is the read backends' -search.maxQueryLen (SetBackendMaxQueryLen); 0: not known.
	backendMaxQueryLen atomic.Int64
	// backendBraces says every read backend reads `or` inside a selector's braces (SetBackendBraces).
	backendBraces atomic.Bool
	// backendWorkers is the most workers a read backend runs one query on (SetBackendWorkers); 0: not known.
	backendWorkers atomic.Int64
	// backendMaxSeries is the most series a read backend selects of one selector (SetBackendMaxSeries); 0: not known.
	backendMaxSeries atomic.Int64
	// backendLinearCountValues says every read backend's count_values is linear in the series it reads
	// (SetBackendLinearCountValues); false while one is not known.
	backendLinearCountValues atomic.Bool
	deletes                  *deleteGate
	// authHeader is the header of -auth.httpHeader when it is not Authorization, which preflights allow too.
	authHeader  string
	reads       *fairSlots
	writes      *fairSlots
	stops       []func()
	queryLimits QueryLimiter
	refused     refusals
	labelLimit  func(ctx context.Context) (int, error)
	discovering bool
	labelBudget *labelguard.Budget
	bodyBudget  *membudget.Budget
}

// New builds the pipeline.
func New(cfg Config) (*Gateway, error) {
	readURLs, writeURLs := cfg.ReadURLs, cfg.WriteURLs
	if len(readURLs) == 0 && cfg.ReadURL != nil {
		readURLs = []*url.URL{cfg.ReadURL}
	}
	if len(writeURLs) == 0 && cfg.WriteURL != nil {
		writeURLs = []*url.URL{cfg.WriteURL}
	}
	if len(readURLs) == 0 || len(writeURLs) == 0 {
		return nil, errors.New("both -read.url and -write.url must be set")
	}
	g := &Gateway{
		cluster: cfg.Cluster,
		auth:    cfg.Auth,
		limiter: cfg.Limiter,
		costs:   cfg.Costs,
		// The token is the client's credential for the gateway, never for the upstream; the tenant headers would
		// let a client pick a tenant behind the gateway's back. Canonical, as the request's header map holds them.
		dropHeaders:  []string{"Authorization", http.CanonicalHeaderKey("AccountID"), http.CanonicalHeaderKey("ProjectID")},
		unrestricted: &auth.Access{Mode: auth.ModeFull},
		limits:       cfg.Limits,
		queryLimits:  cfg.QueryLimits,
		labelLimit:   cfg.LabelLimit,
		discovering:  cfg.Backends.DiscoverInterval > 0,
		conc:         newConcurrency(cfg.Limits.MaxConcurrentRequests, cfg.Limits.MaxConcurrentPerTenantRequests, cfg.Limits.MaxQueueDuration),
		deletes:      newDeleteGate(cfg.Limits.DeleteInterval, cfg.Spacing),
		reads:        newFairSlots(cfg.Limits.ReadQueueDuration, true),
		writes:       newFairSlots(cfg.Limits.WriteQueueDuration, false),
	}
	if size := cfg.Limits.ReadBodyMemory; size > 0 {
		g.bodyBudget = newBodyBudget(size, cfg.Limits.MaxReadBodySize)
	}
	if cfg.Limits.LabelGuardMemory > 0 {
		g.labelBudget = labelguard.NewBudget(cfg.Limits.LabelGuardMemory)
	}
	if h := http.CanonicalHeaderKey(cfg.AuthHeader); h != "" && h != "Authorization" {
		g.dropHeaders = append(g.dropHeaders, h)
		g.authHeader = h
	}
	var stopRead, stopWrite func()
	g.read, stopRead = newBackendUpstream("read", readURLs, cfg.ReadTransport, cfg.Backends, cfg.ReadAddrs)
	g.write, stopWrite = newBackendUpstream("write", writeURLs, cfg.WriteTransport, cfg.Backends, cfg.WriteAddrs)
	g.read.refused, g.write.refused = &g.refused, &g.refused
	if b, ok := g.read.rt.(*balancer); ok {
		// A read refused for the backends' full query memory waits as it would wait for a slot (memwait.go).
		b.memWait = cfg.Limits.ReadQueueDuration
		if b.memWait > 0 {
			g.memReads = b
		}
	}
	g.read.set.slotsTo, g.write.set.slotsTo = g.reads.setLimit, g.writes.setLimit
	g.write.set.pacedTo = g.writes.paced.Store
	g.reads.lend = cfg.Limits.ReadSlotLending
	g.stops = []func(){stopRead, stopWrite}
	return g, nil
}

// SetReadSlots fixes how many reads the gateway forwards at once to the read backends together, whatever their
// capacity (SetReadCapacity learns it instead). Past it, reads wait at the gateway, each isolation unit in turn, within
// -read.maxQueueDuration. 0 sets no limit.
func (g *Gateway) SetReadSlots(n int) {
	g.read.set.capacity.Store(nil)
	g.reads.setLimit(n)
}

// SetWriteSlots fixes how many writes the gateway forwards at once to the write backends together; past it, writes
// wait at the gateway, each isolation unit in turn, within -write.maxQueueDuration, and hold their turn for their
// whole body. 0 sets no limit.
func (g *Gateway) SetWriteSlots(n int) {
	g.write.set.capacity.Store(nil)
	g.writes.paced.Store(false)
	g.writes.setLimit(n)
}

// Close stops the background work of backend discovery.
func (g *Gateway) Close() {
	for _, stop := range g.stops {
		stop()
	}
}

// ServeHTTP runs the pipeline top to bottom; the first step that refuses answers the client. Each step that
// learns something about the request writes it in the request's access-log entry, which is also the writer that
// knows the status sent.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	e := accesslog.Of(w)
	api := "unknown"
	var up *upstream // where the request went, once it is forwarded
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				// Only the proxy aborts, after up is set: a response whose upstream broke mid-way, or whose client
				// went away. Re-raised, so the server closes the connection.
				code := up.aborted(r)
				reason := "the client went away during the response"
				if code != 499 {
					reason = "the " + up.kind + " upstream broke off the response; the client got it incomplete"
					g.refused.addUpstream(code, up.kind, "aborted_response", reason, time.Now())
				}
				e.SetOutcome(code, reason)
				observe(api, code, start)
				panic(p)
			}
			panicsTotal.Inc()
			slog.Error("panic while handling a request", "path", r.URL.Path, "request_id", e.RequestID(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if !e.Wrote() {
				httperr.WriteStatus(e, http.StatusInternalServerError, "internal error while handling the request; it has been logged")
			}
		}
		observe(api, e.Status(), start)
	}()

	// The path is classified first only so that metrics name the API even of a refused token; a client without a
	// valid token learns nothing about the path, since authentication answers before routing does.
	rt, routeErr := route.Lookup(r.URL.EscapedPath())
	if routeErr == nil {
		api = rt.API
	}
	e.SetAPI(api)
	if g.preflight(e, r) {
		return
	}
	allowOrigin(e, r)
	access, err := g.authenticate(r)
	if err != nil {
		g.reject(e, err)
		return
	}
	vouch(w)
	e.SetAccess(access.Tenant, access.Subject, access.Mode.String())
	if routeErr != nil {
		g.reject(e, routeErr)
		return
	}
	if !forwardedMethod(r.Method) {
		e.Header().Set("Allow", allowedMethods)
		g.reject(e, httperr.New(http.StatusMethodNotAllowed, fmt.Sprintf("the method %q is not forwarded: VictoriaMetrics' APIs "+
			"take %s", r.Method, allowedMethods)))
		return
	}
	t, err := g.authorize(access, rt)
	if err != nil {
		g.reject(e, err)
		return
	}
	if t != access.Tenant {
		// Only without -enable.auth in cluster mode: the path names the tenant, and the limiter must see it.
		access = &auth.Access{Tenant: t, Mode: auth.ModeFull}
		e.SetTenant(t)
	}
	if g.limiter != nil {
		if err := g.limiter.Admit(access, rt, e.Header()); err != nil {
			g.reject(e, err)
			return
		}
	}
	// Read bodies are read and checked first: a slot is taken only by a request ready to be forwarded. A body that
	// is to be read takes one of the unit's body slots until it is in (acquireBody).
	var queued time.Duration
	var bodySlot *tenantSlots
	if rt.Kind != route.Write && r.Body != nil && r.Body != http.NoBody {
		if bodySlot, queued, err = g.conc.acquireBody(r.Context(), t, access.Enforcer); err != nil {
			g.reject(e, err)
			return
		}
	}
	// The body, read whole, is held until the request ends: while it waits for its slots too.
	var body membudget.Hold
	defer body.Release()
	defer func() { g.conc.releaseBody(bodySlot) }() // on a panic too
	err = g.prepareArgs(e, r, rt, access, &queued, &body)
	g.conc.releaseBody(bodySlot)
	bodySlot = nil
	if err != nil {
		g.reject(e, err)
		return
	}
	if rt.Deletes() {
		if err := g.deletes.admit(r.Context(), unitOf(t, access.Enforcer), t, access.Enforcer, time.Now()); err != nil {
			g.reject(e, err)
			return
		}
	}
	// A query (or an export) of a caller with cost limits holds what it is expected to cost from here, once it is ready to go and
	// before it takes any slot, until it ends; while the caller's queries in flight hold the rest of its budget it
	// waits for them, as long as a read waits for the backends (ratelimit.Gate.Reserve). A listing request is charged
	// its time once it ends, and holds nothing: what a query is expected to cost is no guide to it.
	charged := rt.Charged()
	costed := g.costs != nil && (charged || rt.Timed()) && g.costs.Costed(access)
	// The read backends' slot of the request, taken below: a read kept past its timeout holds it, and its cost, until
	// the backend answers.
	var slot *hold
	if costed && charged {
		start := time.Now()
		release, err := g.costs.Reserve(r.Context(), access, g.reads.queue)
		defer func() { slot.afterBackend(release) }()
		if err != nil {
			if err == r.Context().Err() {
				err = errGoneInQueue
			}
			g.reject(e, err)
			return
		}
		queued += time.Since(start)
	}
	ts, err := g.conc.acquire(r.Context(), t, access.Enforcer, queued)
	if err != nil {
		g.reject(e, err)
		return
	}
	defer g.conc.release(ts)
	up = g.upstreamOf(rt)
	// fr, not r: the recover above judges an aborted answer by the client's own request.
	fr := r
	// Whatever goes to the read backends takes a slot there (graphite tag registration and the admin APIs too, which
	// VictoriaMetrics runs under the same limit); vmui's static files do not. So does every write at the write
	// backends, held while its body comes where they are paced (writeturns.go).
	slots := g.writes
	if up == g.read {
		slots = g.reads
	}
	if rt.API != "vmui" && (up == g.read || rt.Kind == route.Write) {
		h, err := slots.acquire(r.Context(), unitOf(t, access.Enforcer))
		if err != nil {
			g.reject(e, err)
			return
		}
		defer slots.release(h)
		slot = h
		if h != nil {
			// VictoriaMetrics runs a query to its end once it has begun, whether its client is there or not (1.79.5
			// and v1.151 alike), so a client that went away must not free the slot before the backend is done: the
			// upstream request is not cancelled with the client's (the hold's context is not), and goes until its
			// answer begins, which the forward step then stops at its first write to the gone client (v1.151 then stops
			// a streamed export too; 1.79.5 runs it to its end, a later issue). So for a write whose whole body was read:
			// the backend goes on with it in its own slot (a client that leaves before breaks the body, and the
			// upstream request with it).
			if up == g.read {
				// Nor does a read whose answer does not begin within -read.timeout free it (hold.Keep).
				h.keepOnTimeout()
			}
			fr = r.WithContext(h)
			if rt.Kind == route.Write && slots.paced.Load() && fr.Body != nil && fr.Body != http.NoBody {
				fr.Body = pacedBodyOf(fr.Body, h)
			}
		}
	}
	if slot == nil && up == g.read && g.memReads != nil && g.memReads.mem.contended(g.memReads.memWait) {
		// The balancer holds back only the reads of the units in the contention for the backends' query memory
		// (memwait.go), and knows a read's unit by its slot: without one, by its context, which costs a context and a
		// request, so only while a read was refused for the memory lately.
		fr = r.WithContext(withMemUnit(r.Context(), unitOf(t, access.Enforcer)))
	}
	if slot == nil && rt.Kind == route.Write {
		// Likewise without a slot: the server cancels a request whose client left with its whole body sent, even
		// before the body is read (a write waiting for its slots above is dropped then), and the write must still go
		// to the backend whole, not be cut where the cancel found it. A client that leaves mid-body breaks the body.
		fr = r.WithContext(context.WithoutCancel(r.Context()))
	}
	fr, endCost := g.withCost(withAnswerFilter(fr, access, rt, t, g.auth != nil), r.Context(), access, costed, charged, slot)
	defer endCost()
	g.forward(e, fr, rt, access, up, slot)
}

// vouch tells the server that the connection's client showed a valid token (or needs none, without -enable.auth): idle
// between its requests, its connection keeps the whole eviction grace at -http.maxConnections, where one nobody vouched
// for (clients without a token polling /health) keeps a hundredth of it and goes first (h1.Server.MaxConns).
func vouch(w http.ResponseWriter) {
	for {
		switch x := w.(type) {
		case interface{ VouchConnection() }:
			x.VouchConnection()
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// allowedMethods are the methods VictoriaMetrics' clients send. VictoriaMetrics answers any method as GET, so any other
// (TRACE, CONNECT, `get`) was forwarded as sent, for whatever proxy stood between to act on (a review).
const allowedMethods = "GET, HEAD, POST, PUT, OPTIONS"

func forwardedMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodOptions:
		return true
	}
	return false
}

// authenticate yields the request's Access: the verified token, or an unrestricted one when -enable.auth is off.
func (g *Gateway) authenticate(r *http.Request) (*auth.Access, error) {
	if g.auth == nil {
		return g.unrestricted, nil
	}
	return g.auth.Authenticate(r)
}

// authorize checks the token's mode against the API and decides the upstream tenant, which comes from the token
// alone: a tenant in the client's path must agree with it.
func (g *Gateway) authorize(a *auth.Access, rt route.Route) (tenant.ID, error) {
	if !a.Mode.Allows(rt.Kind) {
		return tenant.ID{}, httperr.New(http.StatusForbidden, fmt.Sprintf("the token's mode %q does not allow %s API %q", a.Mode, rt.Kind, rt.API))
	}
	t := a.Tenant
	if err := TenantAllowed(g.cluster, t); err != nil {
		return t, err
	}
	if r, ok := notForTokens[rt.API]; ok && g.auth != nil && (g.cluster || !r.clusterOnly) {
		if r.clusterOnly {
			return t, httperr.New(http.StatusForbidden, "the "+rt.API+" API is not served to tenants' tokens in cluster mode: "+r.why)
		}
		return t, httperr.New(http.StatusForbidden, "the "+rt.API+" API is not served to tokens: "+r.why)
	}
	if !g.cluster {
		if rt.HasPathTenant && rt.PathTenant != (tenant.ID{}) {
			return t, httperr.New(http.StatusBadRequest, fmt.Sprintf("tenant %s in the path: single-node VictoriaMetrics has no tenants; use the single-node path or tenant 0:0", rt.PathTenant))
		}
		return t, nil
	}
	if !rt.HasPathTenant {
		return t, nil
	}
	if g.auth == nil {
		// Without tokens the gateway is a plain router: the path names the tenant.
		return rt.PathTenant, nil
	}
	if rt.PathTenant != t {
		return t, httperr.New(http.StatusForbidden, fmt.Sprintf("tenant %s in the path is not the token's tenant; the token allows tenant %s only", rt.PathTenant, t))
	}
	return t, nil
}

// notForTokens are the read APIs a gateway with tokens refuses to every token, each with why: in cluster mode those
// whose vmselect answer is not one tenant's, whatever tenant the path names; in both modes those whose args
// VictoriaMetrics parses in a way the gateway cannot bound. (Found by attackers' reviews on real backends.)
var notForTokens = map[string]struct {
	clusterOnly bool
	why         string
}{
	// Its answer holds the tenant's own queries only, but the list is one for all: how fast the tenant's entries leave
	// it counts the others' queries (the ids of active_queries were the same, and are removed).
	"status_top_queries": {true, "vmselect keeps one list of recent queries for every tenant (-search.queryStats.lastQueriesCount), so how this tenant's " +
		"queries leave it would count the other tenants' queries; ask the operator, who can read it on vmselect"},
	// vmselect with -vmalert.proxyURL passes them to its one vmalert without the tenant: every tenant's rules, their
	// queries and labels, and every firing alert with its value and annotations.
	"rules":  {true, vmalertAcrossTenants},
	"alerts": {true, vmalertAcrossTenants},
	// Its relabel_configs' `if` are MetricsQL selectors the gateway does not read: a rule nested a million deep
	// stopped v1.151.
	"metric_relabel_debug": {false, "VictoriaMetrics parses the `if` selectors of its relabel_configs without the bounds the gateway sets on " +
		"every query; use it on VictoriaMetrics directly"},
}

const vmalertAcrossTenants = "vmselect passes it to its one vmalert (-vmalert.proxyURL) without the tenant, so the answer holds every tenant's rules " +
	"and alerts, with their queries, labels and values; ask vmalert of your tenant, or the operator"

// TenantAllowed says whether a gateway in this mode serves a token of tenant t. Single-node VictoriaMetrics holds
// one data set, tenant 0:0: a token issued for another tenant must not be read as a pass to it, since that would
// hand a cluster tenant's token everyone's data. `vmgateway token explain` asks the same question.
func TenantAllowed(cluster bool, t tenant.ID) error {
	if cluster || t == (tenant.ID{}) {
		return nil
	}
	return httperr.New(http.StatusForbidden, fmt.Sprintf("the token is for tenant %s, but this gateway serves single-node VictoriaMetrics, which has only tenant 0:0; use a token without tenant_id (or with 0:0), or run the gateway with -clusterMode", t))
}

func (g *Gateway) reject(w http.ResponseWriter, err error) {
	g.refused.add(err, time.Now())
	var ae interface{ WWWAuthenticate() string }
	if errors.As(err, &ae) {
		w.Header().Set("WWW-Authenticate", ae.WWWAuthenticate())
	}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		w.Header().Set("Retry-After", fmt.Sprint(int((ra.RetryAfter()+time.Second-1)/time.Second)))
	}
	httperr.Write(w, err)
}

// upstreamOf is the upstream of the route's kind.
func (g *Gateway) upstreamOf(rt route.Route) *upstream {
	if rt.Insert() {
		return g.write
	}
	return g.read
}

// forward sends the request to up, on the path the gateway builds itself.
func (g *Gateway) forward(e *accesslog.Entry, r *http.Request, rt route.Route, a *auth.Access, up *upstream, slot *hold) {
	for _, h := range g.dropHeaders {
		delete(r.Header, h)
	}
	r.URL.Path, r.URL.RawPath = rt.UpstreamPath(g.cluster, a.Tenant)
	bs := up.set.backends()
	several := len(bs) > 1
	if e.Logging() {
		// Of several backends the balancer picks one per attempt, and only the request reaches it.
		if !several {
			e.AddUpstream(bs[0].name)
		} else {
			r = r.WithContext(accesslog.NewContext(r.Context(), e))
		}
	}
	if (several || g.discovering) && rt.Kind != route.Read {
		// The balancer picks among bs, the list the label guard below is decided for: discovery may change the
		// list meanwhile, and it tells the check of an address only before it is in a list.
		r = r.WithContext(context.WithValue(r.Context(), changesDataKey{}, bs))
	}
	if rt.Kind == route.Write {
		var done func()
		r, done = g.streamWriteBody(e, r)
		defer done()
		release, err := g.guardLabels(r, rt, a)
		if err != nil {
			g.reject(e, err)
			return
		}
		defer release()
	}
	up.forward(e, r, slot)
}
