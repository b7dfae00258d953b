package enforce

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// Query args VictoriaMetrics reads as enforcement; clients of a restricted token must not set them.
const (
	argExtraLabel      = "extra_label"
	argExtraFilters    = "extra_filters"
	argExtraFiltersArr = "extra_filters[]"
	argQuery           = "query"
	argMatch           = "match[]"
	argMatchLegacy     = "match"
)

// Args are a request's args as the gateway parsed them, once: the URL query and the args of a form-encoded body.
type Args struct {
	URL url.Values
	// Form holds the args of a form body; nil when the request has none.
	Form url.Values
	// Parsed holds the queries and selectors an earlier step of the request parsed (the query limits); nil for none.
	Parsed *Parsed
	// Known holds the values of the Args as the caller split URL and Form, when it recorded them; nil: a reader
	// looks them up (querylimits' gather). Request does not read it and returns none: its args are new.
	Known *Known
	// Handover says the caller gives the maps up: Request may rewrite them in place instead of copying them, and
	// the caller uses only what Request returns. Their slices are still never written into.
	Handover bool
	// Braces says every read backend reads `or` inside a selector's braces (VictoriaMetrics v1.92.0 on): a selector of
	// several branches then goes out as one (liftOr).
	Braces bool
}

// Request returns the args to forward for a request of route rt whose client sent in, and whether they differ
// from in; when they do not, the request goes out as the client sent it. It is a pure function: in is not
// modified. For reads every selector in the URL query and the form is limited to the token's series and the
// token's extra_label / extra_filters[] args are appended; for writes only the URL's extra_label args change (the
// body streams through unread). With cluster set, selectors on the tenant labels are refused for every token. The
// error, if any, carries the HTTP status for the client (400 or 403).
func (e *Enforcer) Request(rt route.Route, in Args, cluster bool) (Args, bool, error) {
	restricted := e.Restricted()
	if rt.Kind != route.Write && (!restricted || rt.Args == route.NoSelectors || rt.Args == route.QueryText) {
		// What VictoriaMetrics parses as MetricsQL and the rewrite below does not read is checked as it is, for every
		// token: a selector nested a million deep stops it (a stack overflow), and a WITH bomb burns its CPU.
		if err := checkSelectors(in, rt, cluster && rt.Args != route.QueryText); err != nil {
			return in, false, err
		}
	}
	if rt.Args == route.QueryText {
		// Checked as an unrestricted token's query is, whatever the token: it reads no series, so nothing is
		// rewritten, and the tenant labels name nothing here.
		return (*Enforcer)(nil).checkQueries(in)
	}
	if !restricted && !cluster {
		if rt.Args == route.QueryArg {
			return e.checkQueries(in)
		}
		return in, false, nil
	}
	switch rt.Args {
	case route.NoSelectors:
		return in, false, nil
	case route.Unenforceable:
		if restricted {
			return in, false, newError(http.StatusForbidden, "the %s API cannot be limited to the token's extra_labels/extra_filters, "+
				"so only tokens without them may call it", rt.API)
		}
		return in, false, nil
	case route.WriteArgs:
		return e.write(in, cluster)
	case route.QueryArg, route.MatchArgs:
		out, err := e.read(in, rt, cluster)
		return out, err == nil, err
	}
	return in, false, newError(http.StatusForbidden, "the %s API has unknown selector args %d: refused", rt.API, rt.Args)
}

// checkSelectors checks, without changing them, the selector args of a read that VictoriaMetrics parses and the
// enforcer would not otherwise read: extra_filters on every read API, and match[] on those that take it; in a
// cluster, a selector on the tenant labels is refused. Restricted tokens' match[] args are rewritten (and so
// checked) and their extra_filters dropped by read, but on an API without selectors they are only checked here.
func checkSelectors(in Args, rt route.Route, cluster bool) error {
	var none *Enforcer
	for _, vs := range []url.Values{in.URL, in.Form} {
		for _, k := range []string{argExtraFiltersArr, argExtraFilters, argMatch, argMatchLegacy} {
			if (k == argMatch || k == argMatchLegacy) && rt.Args != route.MatchArgs {
				continue // not read there
			}
			for _, v := range vs[k] {
				if _, err := none.selector(k, v, cluster, in.Parsed); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkQueries reads the queries of an unrestricted token on a single-node VictoriaMetrics, which is shared by every
// team as much as a cluster is: a query that would stop it is refused, and one whose metric names would not print
// back as themselves is forwarded with them inside the braces (see query); every other query goes out as sent.
func (e *Enforcer) checkQueries(in Args) (Args, bool, error) {
	var outs [2][]string
	changed := false
	for i, vs := range []url.Values{in.URL, in.Form} {
		qs := vs[argQuery]
		for j, q := range qs {
			s, err := e.query(q, false, false, in.Parsed)
			if err != nil {
				return in, false, err
			}
			if s != q && outs[i] == nil {
				// The caller's slices are never written into.
				outs[i] = slices.Clone(qs)
			}
			if outs[i] != nil {
				outs[i][j] = s
				changed = true
			}
		}
	}
	if !changed {
		return in, false, nil
	}
	out := Args{URL: in.URL, Form: in.Form, Handover: in.Handover}
	if !in.Handover {
		out.URL, out.Form = maps.Clone(in.URL), maps.Clone(in.Form)
	}
	if outs[0] != nil {
		out.URL[argQuery] = outs[0]
	}
	if outs[1] != nil {
		out.Form[argQuery] = outs[1]
	}
	return out, true, nil
}

// write keeps the client's extra_label args of other names than the token's labels, in their order, and appends the
// token's last, so they win in VictoriaMetrics: vmagent setups that add a label by URL keep it, and no arg of the
// client's can name a label the token sets, nor a sibling of one (siblings.go). VictoriaMetrics reads extra_label of
// writes from the URL only, so the body streams through untouched.
func (e *Enforcer) write(in Args, cluster bool) (Args, bool, error) {
	for _, v := range in.URL[argExtraLabel] {
		name, _, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			// VictoriaMetrics refuses it too; the label guard must know how many labels each arg adds.
			return in, false, newError(http.StatusBadRequest, "extra_label=%s: want name=value", v)
		}
		if cluster && tenantLabels[name] {
			return in, false, newError(http.StatusForbidden, "extra_label=%s is not allowed: the tenant comes from the token only", v)
		}
	}
	if e == nil || len(e.extraLabelArgs) == 0 {
		return in, false, nil
	}
	q := in.URL
	if !in.Handover {
		q = maps.Clone(q)
	}
	kept := make([]string, 0, len(q[argExtraLabel])+len(e.extraLabelArgs))
	for _, v := range q[argExtraLabel] {
		if name, _, _ := strings.Cut(v, "="); !e.labelNamed(name) && !e.siblingOf(name) {
			kept = append(kept, v)
		}
	}
	q[argExtraLabel] = append(kept, e.extraLabelArgs...)
	return Args{URL: q, Form: in.Form, Handover: in.Handover}, true, nil
}

// labelNamed reports whether the token sets a label of that name.
func (e *Enforcer) labelNamed(name string) bool {
	for _, l := range e.labels {
		if l.Name == name {
			return true
		}
	}
	return false
}

// read rewrites the selectors of a read or delete request in the URL query and in the form.
func (e *Enforcer) read(in Args, rt route.Route, cluster bool) (Args, error) {
	// Copies of the maps only: rewriteValues replaces the slices it changes and never writes into the caller's.
	q, form := in.URL, in.Form
	if !in.Handover {
		q, form = maps.Clone(q), maps.Clone(form)
	}
	if q == nil {
		q = url.Values{}
	}
	restricted := e.Restricted()
	for _, vs := range []url.Values{q, form} {
		if vs == nil {
			continue
		}
		if err := e.rewriteValues(vs, rt, cluster, in.Braces, in.Parsed); err != nil {
			return in, err
		}
	}
	if restricted && rt.Args == route.MatchArgs && len(q[argMatch]) == 0 && len(form[argMatch]) == 0 {
		if rt.Kind == route.Admin {
			// Without match[] VictoriaMetrics refuses to delete; building one from the token would turn a
			// mistaken call into "delete all of the team's series".
			return in, newError(http.StatusBadRequest, "the %s API needs at least one match[] arg", rt.API)
		}
		// Listing APIs without match[] would list every team's names and values.
		q[argMatch] = append([]string(nil), e.matchArgs...)
	}
	e.EnforceArgs(q)
	return Args{URL: q, Form: form, Handover: in.Handover}, nil
}

// EnforceArgs sets in q the args with which VictoriaMetrics enforces a restricted token's series a second time,
// extra_label and extra_filters[]: every read the enforcer rewrites carries them, and so does a read the gateway
// makes itself of selectors rewritten already (the count of a query's samples).
func (e *Enforcer) EnforceArgs(q url.Values) {
	if !e.Restricted() {
		return
	}
	q[argExtraLabel] = append([]string(nil), e.readLabelArgs...)
	q[argExtraFiltersArr] = append([]string(nil), e.extraFiltersArgs...)
}

// rewriteValues rewrites the selector args in one set of values (the URL query or the form body).
func (e *Enforcer) rewriteValues(vs url.Values, rt route.Route, cluster, braces bool, p *Parsed) error {
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
				if _, err := e.selector(k, v, cluster, p); err != nil {
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
		// A new slice: the one in vs is the caller's (read copies the maps, not their values).
		qs := make([]string, len(vs[argQuery]))
		for i, q := range vs[argQuery] {
			out, err := e.query(q, cluster, braces, p)
			if err != nil {
				return err
			}
			qs[i] = out
		}
		if len(qs) > 0 {
			vs[argQuery] = qs
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
				sel, err := e.selector(k, m, cluster, p)
				if err != nil {
					return err
				}
				out = append(out, sel...)
			}
			vs[k] = out
		}
	}
	return nil
}

// selector checks one selector arg (match[], or an unrestricted token's extra_filters in a cluster) and returns
// what it becomes: itself for an unrestricted token, else one selector per `or` branch, rewritten. Like queries,
// the outcomes are cached, so that a dashboard's variables are parsed once, not at every refresh. The returned
// slice is the cache's: callers must not change it.
func (e *Enforcer) selector(arg, s string, cluster bool, p *Parsed) ([]string, error) {
	part, k := p.Partition(), cacheKey{e: e, q: s, cluster: cluster}
	if out, ok := selectors.Get(part, k); ok {
		return out, nil
	}
	me, err := parseSelectorArg(arg, s, p)
	if err != nil {
		return nil, err
	}
	if cluster {
		if err := checkTenantLabels(me, arg, s); err != nil {
			return nil, err
		}
	}
	out := []string{s}
	if e.Restricted() {
		// One arg per branch: match[] args are ORed, and older VictoriaMetrics (v1.79 here) cannot parse `or`
		// inside a selector.
		e.rewriteSelector(me)
		out = out[:0]
		for _, b := range me.LabelFilterss {
			one := metricsql.MetricExpr{LabelFilterss: [][]metricsql.LabelFilter{b}}
			out = append(out, string(one.AppendString(nil)))
		}
	}
	if len(s) <= cacheMaxQueryLen {
		// An arg read from a form may be a part of the whole body: the cache keeps a copy of its own.
		k.q = strings.Clone(s)
		if !e.Restricted() {
			out[0] = k.q
		}
		selectors.Put(part, k, out)
	}
	return out, nil
}

func parseSelectorArg(arg, s string, p *Parsed) (*metricsql.MetricExpr, error) {
	expr, err := parseFrom(s, p)
	if IsGateRefusal(err) {
		return nil, err
	}
	if err != nil {
		return nil, queryError(http.StatusBadRequest, "cannot parse "+arg+"="+httperr.Elided, "cannot parse %s=%q: %s", arg, s, err)
	}
	me, ok := expr.(*metricsql.MetricExpr)
	if !ok {
		return nil, queryError(http.StatusBadRequest, fmt.Sprintf("%s=%s must be a series selector such as up{job=\"x\"}; got %s", arg, httperr.Elided, exprKind(expr)),
			"%s=%q must be a series selector such as up{job=\"x\"}; got %s", arg, s, exprKind(expr))
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
		return queryError(http.StatusForbidden, fmt.Sprintf("%s=%s filters on the label %s: not allowed, the tenant comes from the token only", arg, httperr.Elided, found),
			"%s=%q filters on the label %s: not allowed, the tenant comes from the token only", arg, s, found)
	}
	return nil
}
