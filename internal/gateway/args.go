package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/membudget"
	"github.com/vmgateway/vmgateway/internal/route"
)

// The gateway is the one reader of a request's args: it reads a read request's body in full, parses the URL
// query and the form once, bounds them, and hands the values to the token's enforcer, all before the request
// takes a concurrency slot, so a client that sends its body slowly holds nothing but its own connection.

var (
	bodyTimeouts  = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="body_timeout"}`)
	tracesRemoved = metrics.NewCounter(`vmgateway_trace_args_removed_total`)
)

// badURLQuery refuses a URL query that does not parse; the parser's words quote it.
func badURLQuery(r *http.Request, err error) error {
	return httperr.WithQuery(http.StatusBadRequest, fmt.Sprintf("cannot parse the URL query %q: %s", r.URL.RawQuery, err),
		"cannot parse the URL query "+httperr.Elided)
}

// prepareArgs reads, checks and rewrites the args of r before it is forwarded, and adds to queued (what the request
// waited for its body's slot) how long it waited for a parse slot. Write bodies are not read here: they stream to the upstream (see idleBody).
func (g *Gateway) prepareArgs(w http.ResponseWriter, r *http.Request, rt route.Route, a *auth.Access, queued *time.Duration, held *membudget.Hold) error {
	if rt.Kind == route.Write {
		if !g.seesArgs(a, rt) {
			return nil
		}
		ra := rawArgsPool.Get().(*rawArgs)
		defer releaseRawArgs(ra)
		q, err := splitRecording(r.URL.RawQuery, nil, enforce.FromURL, &ra.url)
		if err != nil {
			return badURLQuery(r, err)
		}
		out, changed, err := a.Enforcer.Request(rt, enforce.Args{URL: q, Handover: true}, g.cluster)
		if err != nil {
			return err
		}
		if changed {
			setQueryArgs(r, ra.url, out.URL)
		}
		return nil
	}

	if r.ContentLength > 0 && !formMethod(r.Method) {
		return bodyNotRead(r.Method)
	}
	if limit := g.limits.MaxReadBodySize; limit > 0 && r.ContentLength > limit {
		return bodyTooLarge(r.ContentLength, limit)
	}
	if r.Body != nil && r.Body != http.NoBody {
		*held = g.bodyBudget.Hold(unitOf(a.Tenant, a.Enforcer))
	}
	body, err := g.readBody(w, r, held)
	if err != nil {
		return err
	}
	if len(body) > 0 && !formMethod(r.Method) {
		return bodyNotRead(r.Method)
	}
	strict := g.seesArgs(a, rt)
	// The args the query limits read are recorded as the args are split, for a tenant that has limits.
	var known *enforce.Known
	var parsed *enforce.Parsed
	var gate *parseGate
	limited := g.queryLimits != nil && g.queryLimits.Applies(a, rt)
	if limited || strict {
		// Queries that are parsed, by the limits or the rewrite, are parsed in a parse slot of the token's unit.
		la := limitArgsPool.Get().(*limitArgs)
		defer func() {
			*queued = la.gate.queued
			releaseLimitArgs(la)
		}()
		la.gate.init(g.conc, r.Context(), a.Tenant, a.Enforcer, *queued)
		la.parsed.SetGate(&la.gate, la.gate.unit.partition())
		parsed, gate = &la.parsed, &la.gate
		if limited {
			known = &la.known
		}
	}
	// The args as sent, for those the gateway does not change (appendArgs).
	ra := rawArgsPool.Get().(*rawArgs)
	defer releaseRawArgs(ra)
	// Unless strict, the values are only for the limits: what does not parse is forwarded as sent.
	q, err := splitRecording(r.URL.RawQuery, known, enforce.FromURL, &ra.url)
	if err != nil && strict {
		return badURLQuery(r, err)
	}
	var form url.Values
	isForm := false
	if len(body) > 0 {
		isForm, err = plainForm(r)
		if err != nil && strict {
			return err
		}
		if isForm {
			if form, err = splitRecording(string(body), known, enforce.FromForm, &ra.form); err != nil && strict {
				return httperr.WithQuery(http.StatusBadRequest, "cannot parse the form body: "+err.Error(), "cannot parse the form body: "+httperr.Elided)
			}
		}
	}
	if err := g.checkArgs(rt, q, form); err != nil {
		return err
	}
	if (rt.Charged() && !rt.Evaluates() || rt.API == "graphite_render") && g.costs != nil && g.costs.Costed(a) {
		if err := checkCountedExport(rt, q, form); err != nil {
			return err
		}
	}
	if e := accesslog.From(w); e.LogsQueries() {
		e.SetQuery(queryText(q, form))
	}
	// A query is parsed once: the query limits parse it, the enforcer takes the parse over.
	changed, err := g.checkQueryLimits(a, rt, enforce.Args{URL: q, Form: form, Parsed: parsed, Known: known}, body, isForm, r)
	if err != nil {
		return err
	}
	if strict {
		if g.removeTrace(a, rt, q, form) {
			changed = true
		}
		// The rewrite may push a query past the backends' -search.maxQueryLen: its length as sent, where one is known.
		maxLen, sent := g.backendQueryLen(rt), 0
		if maxLen > 0 {
			sent = longestQuery(q, form)
		}
		// The values are the gateway's own, parsed above, and only what Request returns is used from here on.
		out, rewritten, err := a.Enforcer.Request(rt, enforce.Args{URL: q, Form: form, Parsed: parsed, Handover: true,
			Braces: rt.Kind == route.Read && g.backendBraces.Load()}, g.cluster)
		if err != nil {
			return err
		}
		if rewritten {
			q, form, changed = out.URL, out.Form, true
			if err := checkQueryLen(a, maxLen, sent, q, form); err != nil {
				return err
			}
		}
		// The query as it goes upstream: the rewrite may copy a count_values into each arg of a union.
		l, now := g.evalLimits(), time.Now()
		if err := checkEvaluation(rt, q, form, parsed, l, now, g.measurerFor(r.Context(), a, gate)); err != nil {
			return err
		}
		if (l.MaxFanOutPoints > 0 || l.countsComparisons()) && g.read != nil && pinSpan(rt, q, form, parsed, now) {
			changed = true
		}
		count := g.fanCounterFor(r.Context(), a, gate)
		if err := checkFanOut(rt, q, form, parsed, l, now, count); err != nil {
			return err
		}
		if err := checkQueryWork(rt, q, form, parsed, l, now, count); err != nil {
			return err
		}
	}
	if changed {
		setQueryArgs(r, ra.url, q)
		if form != nil {
			// Not nil even when the rewrite left no args: the body read is replaced, by an empty one then.
			body = appendArgs([]byte{}, "", ra.form, form)
		}
	}
	if isForm && len(body) > vmMaxFormSize {
		return httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the form body would reach VictoriaMetrics with %d bytes "+
			"(as rewritten for the token); VictoriaMetrics reads at most %d bytes of a form and would silently "+
			"answer from the URL args alone: send fewer or shorter args", len(body), vmMaxFormSize))
	}
	if body != nil {
		setBody(r, body)
	}
	return nil
}

// seesArgs reports whether the gateway must read every arg of a request, and refuse one it cannot read: every read
// (VictoriaMetrics parses its query, match[] and extra_filters as MetricsQL, and the gateway checks them for what
// would stop it, for every token; a trace is removed for most tokens), and a write whose URL the enforcer rewrites
// (a restricted token) or checks for the tenant labels (cluster mode). Other writes are forwarded as sent.
func (g *Gateway) seesArgs(a *auth.Access, rt route.Route) bool {
	return rt.Kind != route.Write || g.cluster || a.Enforcer.Restricted()
}

// removeTrace drops the trace arg, which VictoriaMetrics reads from the URL and the form on every read API, for
// tokens that are not unrestricted full ones, and for every token of a cluster-mode gateway: vmstorage's trace names
// the monthly index partitions the search opened, which all tenants share, so one tenant learnt in which months the
// others had data (an attacker's review on v1.150), and /admin/tenants' counts the tenants that the answer filter
// hides (another). It reports whether there was one.
func (g *Gateway) removeTrace(a *auth.Access, rt route.Route, q, form url.Values) bool {
	if a.Mode == auth.ModeFull && !a.Enforcer.Restricted() && (g.auth == nil || !g.cluster && rt.API != "admin_tenants") {
		return false
	}
	_, inURL := q["trace"]
	_, inForm := form["trace"]
	if !inURL && !inForm {
		return false
	}
	delete(q, "trace")
	delete(form, "trace")
	tracesRemoved.Inc()
	return true
}

// formMethod says whether VictoriaMetrics reads the form body of a request with method m: as Go's ParseForm, only a
// POST's, PUT's or PATCH's. The args of another's body would be checked and rewritten by the gateway and never read
// upstream, which would answer from the URL's args alone: a selector sent in a GET's body kept the token's own
// match[] out of the URL (an attacker's review), leaving the token's series to the extra_label args alone.
func formMethod(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

func bodyNotRead(method string) error {
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("VictoriaMetrics does not read the body of a %s request; "+
		"send the args in the URL, or as a form with POST", method))
}

// plainForm reports whether the body is an uncompressed form, the only read body whose args the gateway reads; the
// error says why another body cannot be read (415).
func plainForm(r *http.Request) (bool, error) {
	for _, ce := range r.Header["Content-Encoding"] {
		// Neither the gateway nor VictoriaMetrics' form parser decodes it; refuse rather than guess. Every value: a
		// second header (`identity`, then `gzip`) was let through unread (a review).
		if ce != "" && !strings.EqualFold(strings.TrimSpace(ce), "identity") {
			return false, httperr.New(http.StatusUnsupportedMediaType, fmt.Sprintf("a read request body must not be compressed; got Content-Encoding %q", ce))
		}
	}
	ct := r.Header.Get("Content-Type")
	mt := ""
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return false, httperr.New(http.StatusUnsupportedMediaType, fmt.Sprintf("cannot parse Content-Type %q: %s", ct, err))
		}
	}
	if mt != "application/x-www-form-urlencoded" {
		// VictoriaMetrics could read args from it (multipart) that were neither checked nor rewritten.
		return false, httperr.New(http.StatusUnsupportedMediaType, fmt.Sprintf("a read request body must be application/x-www-form-urlencoded; got Content-Type %q", ct))
	}
	return true, nil
}

// readBodyStart bounds the buffer a read body's declared length reserves before its bytes come.
const readBodyStart = 64 << 10

// readBody reads the body of a read or admin request in full, at most -maxReadBodySize of it and within
// -http.readBodyTimeout, into memory taken from held; nil without a body.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, held *membudget.Hold) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if d := g.limits.ReadBodyTimeout; d > 0 {
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(d)) == nil {
			// Cleared at once: the server's background read of the idle connection must not time out and cancel the
			// request while the upstream answers.
			defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
		}
	}
	body := io.Reader(r.Body)
	limit := g.limits.MaxReadBodySize
	if limit > 0 {
		body = io.LimitReader(body, limit+1)
	}
	b, err := readWhole(body, r.ContentLength, limit, held)
	_ = r.Body.Close()
	var full *httperr.Error
	switch {
	case err == nil:
	case errors.As(err, &full):
		// -maxReadBodyMemory: the rest of the body is not read.
		w.Header().Set("Connection", "close")
		return nil, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		bodyTimeouts.Inc()
		w.Header().Set("Connection", "close")
		return nil, httperr.New(http.StatusRequestTimeout, fmt.Sprintf("the request body did not arrive within -http.readBodyTimeout=%s "+
			"(%d bytes came): send the whole body at once", g.limits.ReadBodyTimeout, len(b)))
	default:
		return nil, httperr.New(http.StatusBadRequest, "cannot read the request body: "+err.Error())
	}
	if limit > 0 && int64(len(b)) > limit {
		return nil, bodyTooLarge(-1, limit)
	}
	return b, nil
}

// readWhole reads body to its end. A declared length is only a claim, so what is reserved for it grows with the
// bytes that come: readBodyStart at first, then up to eight times what has come each time that is full, the
// declared length once that is less. A client that declares megabytes and sends one byte makes the gateway hold
// readBodyStart until -http.readBodyTimeout (before the request takes a concurrency slot), and one that sends part
// of it at most eight times that part. A body that does come is copied by the growths only in part (an eighth of
// it, and less), where a buffer doubling as it grows copies all of it once more and holds one and a half times it
// at its last growth. On an error it returns what came.
//
// limit, when above 0, is -maxReadBodySize: body gives at most one byte more, which refuses it, and nothing is
// reserved past that, whatever the length is or claims.
func readWhole(body io.Reader, declared, limit int64, held *membudget.Hold) ([]byte, error) {
	// One byte of room past the declared length: the read that meets the end needs somewhere to go.
	start := min(max(declared, 0), readBodyStart) + 1
	// Twice the buffer is held: the args split from the body, and the body rewritten from them, take about as much
	// again, until the request ends.
	if err := held.Grow(2 * start); err != nil {
		return nil, err
	}
	b := make([]byte, 0, start)
	for {
		if len(b) == cap(b) {
			n := int64(max(8*len(b), 512))
			if declared >= int64(len(b)) {
				n = min(n, declared+1)
			}
			if limit > 0 {
				n = min(n, limit+2)
			}
			if err := held.Grow(2 * (n - int64(cap(b)))); err != nil {
				return b, err
			}
			b = slices.Grow(b, int(n)-len(b))
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// maxArgs is the most args url.ParseQuery splits (its default urlmaxqueryparams); more are refused as it refuses them.
const maxArgs = 10000

// splitRecording splits a URL query or a form body into its args as url.ParseQuery does (the same values, the same
// first error, the same bound on the number of args), recording the values of the enforce.Args in known (nil:
// none) as coming from where (enforce.FromURL, enforce.FromForm), so that the query limits find them without a
// lookup. It also appends the args that split well to *rec (nil: not recorded), as sent, so that the ones the
// gateway does not change can be forwarded as they came (appendArgs); it records none when they are more than
// maxSpliced.
func splitRecording(raw string, known *enforce.Known, where int, rec *[]rawArg) (url.Values, error) {
	vs := make(url.Values)
	if raw == "" {
		return vs, nil
	}
	seps := strings.Count(raw, "&")
	if seps >= maxArgs {
		return vs, errors.New("number of URL query parameters exceeded limit")
	}
	if seps >= maxSpliced {
		rec = nil
	}
	// The values of the names sent once share one array; a second value of a name moves its values out (the
	// slices are capped), and nothing writes into them (enforce.Args.Handover).
	backing := make([]string, 0, seps+1)
	var err error
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if strings.Contains(kv, ";") {
			err = errors.New("invalid semicolon separator in query")
			continue
		}
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := queryUnescape(k)
		if err1 != nil {
			if err == nil {
				err = err1
			}
			continue
		}
		if v, err1 = queryUnescape(v); err1 != nil {
			if err == nil {
				err = err1
			}
			continue
		}
		if rec != nil {
			*rec = append(*rec, rawArg{kv: kv, name: k, value: v})
		}
		if known != nil {
			if a, ok := enforce.ArgOf(k); ok {
				known.Add(a, where, v)
				continue
			}
		}
		if old, ok := vs[k]; ok {
			vs[k] = append(old, v)
			continue
		}
		backing = append(backing, v)
		vs[k] = backing[len(backing)-1 : len(backing) : len(backing)]
	}
	if known != nil {
		known.Into(vs, where)
	}
	return vs, err
}

// setQueryArgs sets the query of r to the args to forward (appendArgs, from raw and vs), and its request target to
// the target as sent with that query: the path is not rewritten here, so it is not built again, and a target that
// had a query is one string with the new one, which is its end.
func setQueryArgs(r *http.Request, raw []rawArg, vs url.Values) {
	path, _, hadQuery := strings.Cut(r.RequestURI, "?")
	var query string
	if hadQuery {
		target := argsString(appendArgs(nil, r.RequestURI[:len(path)+1], raw, vs))
		query = target[len(path)+1:]
		r.RequestURI = target
		if query == "" {
			r.RequestURI = path
		}
	} else {
		query = argsString(appendArgs(nil, "", raw, vs))
		if r.RequestURI != "" && query != "" {
			r.RequestURI = path + "?" + query
		}
	}
	r.URL.RawQuery = query
	r.URL.ForceQuery = false
	// Anything parsed before holds the client's args.
	r.Form, r.PostForm = nil, nil
}

// setBody replaces a body that was read with b, of known length.
func setBody(r *http.Request, b []byte) {
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
	if r.Header.Get("Content-Length") != "" {
		r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	}
	r.Form, r.PostForm = nil, nil
	if len(b) == 0 {
		r.Body, r.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// queryText is what -accessLog.queries writes: the query arg as the client sent it, or else its match[] args
// joined with " or " (VictoriaMetrics selects the series any of them match).
func queryText(q, form url.Values) string {
	if v := q["query"]; len(v) > 0 {
		return v[0]
	}
	if v := form["query"]; len(v) > 0 {
		return v[0]
	}
	return strings.Join(slices.Concat(q["match[]"], form["match[]"]), " or ")
}

// newBodyBudget is the budget of -maxReadBodyMemory: size bytes, a quarter of it for one isolation unit, and at least
// what one body of maxBody may need (twice its buffer, readWhole), so that no body within the bounds is refused for
// ever.
func newBodyBudget(size, maxBody int64) *membudget.Budget {
	return membudget.New(size, max(size/4, min(size, 2*(maxBody+2))), func(size int64) error {
		return httperr.New(http.StatusServiceUnavailable, fmt.Sprintf("the gateway holds all the read and admin request bodies it may "+
			"now (-maxReadBodyMemory=%d bytes for all teams, a quarter of that for one team's): send the request again later", size))
	})
}
