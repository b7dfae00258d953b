package enforce

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/route"
)

// MaxFormBodySize is the largest application/x-www-form-urlencoded read body the enforcer reads; beyond it the
// request is refused with 413. Grafana's longest queries are a few tens of KiB; VictoriaMetrics refuses queries
// longer than -search.maxQueryLen (16 KiB by default) anyway. cmd/vmgateway sets it once at start from
// -maxReadBodySize, before any request is served.
var MaxFormBodySize = 4 << 20

// Query args VictoriaMetrics reads as enforcement; clients of a restricted token must not set them.
const (
	argExtraLabel      = "extra_label"
	argExtraFilters    = "extra_filters"
	argExtraFiltersArr = "extra_filters[]"
	argQuery           = "query"
	argMatch           = "match[]"
	argMatchLegacy     = "match"
)

// Request rewrites a request in place before it is forwarded, following rt.Args: for reads, every selector in
// the URL query and in a form-encoded body is limited to the token's series and the token's extra_label /
// extra_filters[] args are appended; for writes only the URL's extra_label args change and the body is never read.
// With cluster set, selectors on the tenant labels are refused for every token. The error, if any, carries the
// HTTP status for the client (400, 403, 413 or 415).
func (e *Enforcer) Request(r *http.Request, rt route.Route, cluster bool) error {
	restricted := e.Restricted()
	if !restricted && !cluster {
		return nil
	}
	switch rt.Args {
	case route.NoSelectors:
		return nil
	case route.Unenforceable:
		if restricted {
			return newError(http.StatusForbidden, "the %s API cannot be limited to the token's extra_labels/extra_filters, "+
				"so only tokens without them may call it", rt.API)
		}
		return nil
	case route.WriteArgs:
		return e.write(r, cluster)
	case route.QueryArg, route.MatchArgs:
		return e.read(r, rt, cluster)
	}
	return newError(http.StatusForbidden, "the %s API has unknown selector args %d: refused", rt.API, rt.Args)
}

// write replaces the client's extra_label args in the URL with the token's, last so they win in VictoriaMetrics.
// VictoriaMetrics reads extra_label of writes from the URL only, so the body streams through untouched.
func (e *Enforcer) write(r *http.Request, cluster bool) error {
	if !e.Restricted() && r.URL.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return newError(http.StatusBadRequest, "cannot parse the URL query %q: %s", r.URL.RawQuery, err)
	}
	if cluster {
		for _, v := range q[argExtraLabel] {
			if name, _, _ := strings.Cut(v, "="); tenantLabels[name] {
				return newError(http.StatusForbidden, "extra_label=%s is not allowed: the tenant comes from the token only", v)
			}
		}
	}
	if !e.Restricted() {
		return nil
	}
	delete(q, argExtraLabel)
	q[argExtraLabel] = append([]string(nil), e.extraLabelArgs...)
	setRawQuery(r, q.Encode())
	return nil
}

// read rewrites the selectors of a read or delete request in the URL query and in a form body.
func (e *Enforcer) read(r *http.Request, rt route.Route, cluster bool) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return newError(http.StatusBadRequest, "cannot parse the URL query %q: %s", r.URL.RawQuery, err)
	}
	form, err := readForm(r)
	if err != nil {
		return err
	}
	restricted := e.Restricted()
	for _, vs := range []url.Values{q, form} {
		if vs == nil {
			continue
		}
		if err := e.rewriteValues(vs, rt, cluster); err != nil {
			return err
		}
	}
	if restricted && rt.Args == route.MatchArgs && len(q[argMatch]) == 0 && len(form[argMatch]) == 0 {
		if rt.Kind == route.Admin {
			// Without match[] VictoriaMetrics refuses to delete; building one from the token would turn a
			// mistaken call into "delete all of the team's series".
			return newError(http.StatusBadRequest, "the %s API needs at least one match[] arg", rt.API)
		}
		// Listing APIs without match[] would list every team's names and values.
		q[argMatch] = append([]string(nil), e.matchArgs...)
	}
	if restricted {
		q[argExtraLabel] = append([]string(nil), e.extraLabelArgs...)
		q[argExtraFiltersArr] = append([]string(nil), e.extraFiltersArgs...)
	}
	setRawQuery(r, q.Encode())
	if form != nil {
		setBody(r, form.Encode())
	}
	return nil
}

// rewriteValues rewrites the selector args in one set of values (the URL query or the form body).
func (e *Enforcer) rewriteValues(vs url.Values, rt route.Route, cluster bool) error {
	restricted := e.Restricted()
	if cluster && !restricted {
		// The client's own enforcement args stay for unrestricted tokens, but not on the tenant labels.
		for _, v := range vs[argExtraLabel] {
			if name, _, _ := strings.Cut(v, "="); tenantLabels[name] {
				return newError(http.StatusForbidden, "extra_label=%s is not allowed: the tenant comes from the token only", v)
			}
		}
		for _, k := range []string{argExtraFilters, argExtraFiltersArr} {
			for _, v := range vs[k] {
				me, err := parseSelectorArg(k, v)
				if err != nil {
					return err
				}
				if err := checkTenantLabels(me, k, v); err != nil {
					return err
				}
			}
		}
	}
	if restricted {
		delete(vs, argExtraLabel)
		delete(vs, argExtraFilters)
		delete(vs, argExtraFiltersArr)
	}
	switch rt.Args {
	case route.QueryArg:
		qs := vs[argQuery]
		for i, q := range qs {
			out, err := e.query(q, cluster)
			if err != nil {
				return err
			}
			qs[i] = out
		}
	case route.MatchArgs:
		if len(vs[argMatch]) == 0 && len(vs[argMatchLegacy]) > 0 {
			// VictoriaMetrics' export falls back to `match` when there is no match[]; other APIs ignore it and
			// would list everything. As match[] it means the same to export and narrows the others.
			vs[argMatch] = vs[argMatchLegacy]
			delete(vs, argMatchLegacy)
		}
		for _, k := range []string{argMatch, argMatchLegacy} {
			ms := vs[k]
			if len(ms) == 0 {
				continue
			}
			var out []string
			for _, m := range ms {
				me, err := parseSelectorArg(k, m)
				if err != nil {
					return err
				}
				if cluster {
					if err := checkTenantLabels(me, k, m); err != nil {
						return err
					}
				}
				if !restricted {
					out = append(out, m)
					continue
				}
				// One arg per branch: match[] args are ORed, and older VictoriaMetrics (v1.79 here) cannot parse
				// `or` inside a selector.
				e.rewriteSelector(me)
				for _, b := range me.LabelFilterss {
					one := metricsql.MetricExpr{LabelFilterss: [][]metricsql.LabelFilter{b}}
					out = append(out, string(one.AppendString(nil)))
				}
			}
			vs[k] = out
		}
	}
	return nil
}

func parseSelectorArg(arg, s string) (*metricsql.MetricExpr, error) {
	expr, err := parse(s)
	if err != nil {
		return nil, newError(http.StatusBadRequest, "cannot parse %s=%q: %s", arg, s, err)
	}
	me, ok := expr.(*metricsql.MetricExpr)
	if !ok {
		return nil, newError(http.StatusBadRequest, "%s=%q must be a series selector such as up{job=\"x\"}; got %s", arg, s, exprKind(expr))
	}
	return me, nil
}

// checkTenantLabels refuses selectors on vm_account_id / vm_project_id: in a cluster the tenant is the token's.
func checkTenantLabels(expr metricsql.Expr, arg, s string) error {
	var found string
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok || found != "" {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if tenantLabels[lf.Label] {
					found = lf.Label
					return
				}
			}
		}
	})
	if found != "" {
		return newError(http.StatusForbidden, "%s=%q filters on the label %s: not allowed, the tenant comes from the token only", arg, s, found)
	}
	return nil
}

// readForm reads and parses a form-encoded body. Read APIs take args in the URL or in such a body only: any other
// non-empty body is refused, since VictoriaMetrics could read args from it (multipart) that were not rewritten.
func readForm(r *http.Request) (url.Values, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// Neither this parser nor VictoriaMetrics' form parser decodes it; refuse rather than guess.
		return nil, newError(http.StatusUnsupportedMediaType, "a read request body must not be compressed; got Content-Encoding %q", ce)
	}
	ct := r.Header.Get("Content-Type")
	mt := ""
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, newError(http.StatusUnsupportedMediaType, "cannot parse Content-Type %q: %s", ct, err)
		}
	}
	if mt != "application/x-www-form-urlencoded" {
		if r.ContentLength <= 0 {
			// Unknown length (0 counts as unknown for a client-side request with a Body): it may still be empty.
			var b [1]byte
			n, err := io.ReadFull(r.Body, b[:])
			if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				setBody(r, "")
				return nil, nil
			}
		}
		return nil, newError(http.StatusUnsupportedMediaType, "a read request body must be application/x-www-form-urlencoded; got Content-Type %q", ct)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(MaxFormBodySize)+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, newError(http.StatusRequestEntityTooLarge, "the request body is larger than %d bytes", mbe.Limit)
		}
		return nil, newError(http.StatusBadRequest, "cannot read the request body: %s", err)
	}
	_ = r.Body.Close()
	if len(b) > MaxFormBodySize {
		return nil, newError(http.StatusRequestEntityTooLarge, "the form body is larger than %d bytes", MaxFormBodySize)
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, newError(http.StatusBadRequest, "cannot parse the form body: %s", err)
	}
	return form, nil
}

func setRawQuery(r *http.Request, raw string) {
	r.URL.RawQuery = raw
	r.URL.ForceQuery = false
	if r.RequestURI != "" {
		r.RequestURI = r.URL.RequestURI()
	}
	// Anything parsed before holds the client's args.
	r.Form, r.PostForm = nil, nil
}

func setBody(r *http.Request, body string) {
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	r.TransferEncoding = nil
	if r.Header.Get("Content-Length") != "" {
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	r.Form, r.PostForm = nil, nil
	if body == "" {
		r.Body = http.NoBody
		r.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	}
}
