package enforce

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// Query rewrites a MetricsQL query so that every series selector in it carries the extra labels and one of the
// extra filters. WITH templates are expanded first, so the result has none. A query that does not parse is a
// 400 error carrying the parser's message.
func (e *Enforcer) Query(q string) (string, error) {
	return e.query(q, false, false, nil)
}

// query rewrites q, refusing tenant labels when cluster is set, its selectors of several branches kept as one where
// braces is set (Args.Braces). Dashboards send the same queries again and again, and parsing is most of the cost, so
// results are cached per enforcer; a query not in the cache takes its parse from p when an earlier step of the
// request parsed it.
func (e *Enforcer) query(q string, cluster, braces bool, p *Parsed) (string, error) {
	part, k := p.Partition(), cacheKey{e: e, q: q, cluster: cluster, braces: braces}
	if out, ok := queries.Get(part, k); ok {
		return out, nil
	}
	out, err := e.queryUncached(q, cluster, braces, p)
	if err == nil && len(q) <= cacheMaxQueryLen {
		// A query read from a form may be a part of the whole body: the cache keeps a copy of its own.
		cq := strings.Clone(q)
		if out == q {
			out = cq
		}
		k.q = cq
		queries.Put(part, k, out)
	}
	return out, err
}

func (e *Enforcer) queryUncached(q string, cluster, braces bool, p *Parsed) (string, error) {
	expr, err := parseQuery(q, p)
	if err != nil {
		return "", err
	}
	if err := checkRunnable(expr); err != nil {
		return "", queryError(http.StatusBadRequest, "query "+httperr.Elided+" refused: "+err.Error(), "query %q refused: %s", q, err)
	}
	if cluster {
		if err := checkTenantLabels(expr, argQuery, q); err != nil {
			return "", err
		}
	}
	if !e.Restricted() {
		if err := checkPushdown(expr); err != nil {
			return "", queryError(http.StatusBadRequest, "query "+httperr.Elided+" refused: "+err.Error(), "query %q refused: %s", q, err)
		}
		// An unrestricted token's query goes out as sent, unless a metric name in it would not print back as itself:
		// VictoriaMetrics v1.79 copies a query by printing and parsing it, and panics, and exits, when that fails
		// (-{__name__="on"}, -{__name__=""}: found by an attacker's review).
		if !anchorOddNames(expr) {
			return q, nil
		}
		return string(expr.AppendString(make([]byte, 0, len(q)+16))), nil
	}
	if err := e.rewrite(expr); err != nil {
		return "", err
	}
	expr = absentLabels(expr)
	lifted := expr
	if !braces {
		lifted = liftOr(expr)
	}
	out := lifted.AppendString(make([]byte, 0, len(q)+64))
	if lifted != expr && len(out) > maxLiftedLen && len(out) > len(q) {
		// VictoriaMetrics would refuse the lifted query as too long where it reads the shorter braces.
		out, lifted = expr.AppendString(out[:0]), expr
	}
	// What goes out is weighed: the token's labels add a filter to every selector, and the lift copies the query.
	if err := checkPushdown(lifted); err != nil {
		return "", queryError(http.StatusBadRequest, "query "+httperr.Elided+" refused: "+err.Error(), "query %q refused: %s", q, err)
	}
	return string(out), nil
}

// Selector rewrites one series selector such as a match[] value. Anything but a plain selector is a 400 error.
func (e *Enforcer) Selector(s string) (string, error) {
	me, err := parseSelectorArg(argMatch, s, nil)
	if err != nil {
		return "", err
	}
	if !e.Restricted() {
		return s, nil
	}
	e.rewriteSelector(me)
	return string(me.AppendString(make([]byte, 0, len(s)+64))), nil
}

func parseQuery(q string, p *Parsed) (metricsql.Expr, error) {
	expr, err := parseFrom(q, p)
	if IsGateRefusal(err) {
		return nil, err
	}
	if err != nil {
		return nil, queryError(http.StatusBadRequest, "cannot parse query "+httperr.Elided, "cannot parse query %q: %s", q, err)
	}
	return expr, nil
}

// parse is ParseMetricsQL for the rewrite, which owns the expression it returns, and refuses what it could not
// print back parseably.
func parse(s string) (metricsql.Expr, error) { return parseFrom(s, nil) }

// parseFrom is parse that takes the expression from p when an earlier step of the request parsed s.
func parseFrom(s string, p *Parsed) (metricsql.Expr, error) {
	if !utf8.ValidString(s) {
		// The parser accepts invalid UTF-8 in names but cannot print it back parseably.
		return nil, fmt.Errorf("the text is not valid UTF-8")
	}
	expr, err := p.take(s)
	if err != nil {
		return nil, err
	}
	if hasEmptyLabelName(expr) {
		// The parser accepts {""="x"} but prints it back as {="x"}, which does not parse.
		return nil, fmt.Errorf(`a label filter has an empty label name, as in {""="x"}; name the label`)
	}
	return expr, nil
}

func hasEmptyLabelName(expr metricsql.Expr) bool {
	found := false
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok || found {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label == "" {
					found = true
				}
			}
		}
	})
	return found
}

// rewrite enforces every MetricExpr in the tree in place. Parse may put one *MetricExpr at several places (a WITH
// template argument used twice), so visited selectors are remembered and rewritten once.
func (e *Enforcer) rewrite(expr metricsql.Expr) error {
	var v visitedSet
	var walk func(x metricsql.Expr) error
	walk = func(x metricsql.Expr) error {
		switch t := x.(type) {
		case *metricsql.MetricExpr:
			if v.seen(t) {
				return nil
			}
			if v.n > maxSelectors {
				return newError(http.StatusBadRequest, "the query has more than %d series selectors after WITH templates are expanded", maxSelectors)
			}
			e.rewriteSelector(t)
		case *metricsql.RollupExpr:
			if err := walk(t.Expr); err != nil {
				return err
			}
			if t.At != nil {
				if _, ok := t.At.(*metricsql.RollupExpr); ok {
					// AppendString prints `x @ y @ z`, which does not parse: a FuncExpr without a name prints parens.
					t.At = &metricsql.FuncExpr{Args: []metricsql.Expr{t.At}}
				}
				return walk(t.At)
			}
		case *metricsql.FuncExpr:
			for _, a := range t.Args {
				if err := walk(a); err != nil {
					return err
				}
			}
		case *metricsql.AggrFuncExpr:
			for _, a := range t.Args {
				if err := walk(a); err != nil {
					return err
				}
			}
		case *metricsql.BinaryOpExpr:
			if err := walk(t.Left); err != nil {
				return err
			}
			return walk(t.Right)
		case *metricsql.NumberExpr, *metricsql.StringExpr, *metricsql.DurationExpr:
		default:
			// Fail closed: a node this walk does not know could hide a selector.
			return queryError(http.StatusBadRequest, fmt.Sprintf("cannot enforce labels in the query: unsupported expression %T %s", x, httperr.Elided),
				"cannot enforce labels in the query: unsupported expression %T %s", x, x.AppendString(nil))
		}
		return nil
	}
	return walk(expr)
}

// maxSelectors bounds the work for one query. WITH templates expand exponentially (`t1 = t0 + t0, t2 = t1 + t1, ...`),
// and VictoriaMetrics refuses queries longer than -search.maxQueryLen (16 KiB) anyway.
const maxSelectors = 10000

// visitedSet remembers selectors already rewritten: a slice for the usual handful, a map beyond.
type visitedSet struct {
	n     int
	small [8]*metricsql.MetricExpr
	big   map[*metricsql.MetricExpr]struct{}
}

// seen reports whether me was added before, and adds it.
func (v *visitedSet) seen(me *metricsql.MetricExpr) bool {
	if v.big != nil {
		if _, ok := v.big[me]; ok {
			return true
		}
		v.big[me] = struct{}{}
		v.n++
		return false
	}
	if slices.Contains(v.small[:v.n], me) {
		return true
	}
	if v.n < len(v.small) {
		v.small[v.n] = me
		v.n++
		return false
	}
	v.big = make(map[*metricsql.MetricExpr]struct{}, 2*len(v.small))
	for _, x := range v.small {
		v.big[x] = struct{}{}
	}
	v.big[me] = struct{}{}
	v.n++
	return false
}

// rewriteSelector replaces me's branches with (me's branches) × (filter branches), each with the extra labels.
func (e *Enforcer) rewriteSelector(me *metricsql.MetricExpr) {
	client := me.LabelFilterss
	if len(client) == 0 {
		// `{}`: one branch without matchers.
		client = [][]metricsql.LabelFilter{nil}
	}
	n := len(e.branches)
	if n == 0 {
		n = 1
	}
	out := make([][]metricsql.LabelFilter, 0, len(client)*n)
	for _, c := range client {
		out = append(out, e.selectorBranches(c)...)
	}
	fixMixedNames(out)
	for _, b := range out {
		if len(b) < 2 || !isMetricName(&b[0]) {
			continue
		}
		if v := b[0].Value; printsAsOther(v) {
			b[0] = anchored(v)
		}
		for i := 1; i < len(b); i++ {
			if isMetricName(&b[i]) {
				// The parser takes a second name after an empty one ({"", "x"} or {"", __name__="x"}) but refuses the
				// x{__name__=""} it prints; the anchored regexp selects the same (no series) and prints parseably.
				b[i] = anchored(b[i].Value)
			}
		}
	}
	me.LabelFilterss = out
}

// printsAsOther reports whether a metric name, printed bare as metricsql prints names, would read back as something
// else, where the client could still select it as {__name__="..."}. A non-ASCII name does not parse in older
// VictoriaMetrics (v1.79 here), a name such as nan or Inf reads back as a number, a keyword such as on or bool as the
// keyword, and the empty name as nothing at all. The regexp form (anchored) prints inside the braces and selects the
// same series. v1.79 panics, and exits, on the keywords and the empty name: it copies a query by printing it without
// the parentheses metricsql puts around an operand (0 - (on{team="dev"}) becomes 0 - on{team="dev"}) and parsing it
// again.
func printsAsOther(name string) bool {
	return name == "" || !isASCII(name) || IsNumberWord(name) || isKeyword(name)
}

// anchorOddNames replaces every metric name of expr that printsAsOther, or that is an aggregate function's name, by
// its anchored regexp, and reports whether there was one. An unrestricted token's selector may be a name alone,
// which VictoriaMetrics prints bare: `{__name__="sum"} or x` as `sum or x`, which does not parse, and it exits (found
// by an attacker's review; a restricted token's selector always prints its braces).
func anchorOddNames(expr metricsql.Expr) bool {
	found := false
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, b := range me.LabelFilterss {
			for i := range b {
				if isMetricName(&b[i]) && (printsAsOther(b[i].Value) || metricsql.IsAggrFunc(b[i].Value)) {
					b[i] = anchored(b[i].Value)
					found = true
				}
			}
		}
	})
	return found
}

// anchored is the __name__ regexp matcher that selects exactly the metric name, for where a name matcher would not
// print parseably; metricsql anchors regexps as VictoriaMetrics does.
func anchored(name string) metricsql.LabelFilter {
	return metricsql.LabelFilter{Label: "__name__", Value: regexp.QuoteMeta(name), IsRegexp: true}
}

// IsNumberWord reports whether metricsql reads s, written as a bare metric name, as a number (inf or nan, in any case).
func IsNumberWord(s string) bool { return strings.EqualFold(s, "inf") || strings.EqualFold(s, "nan") }

// isKeyword reports whether s, in any case, is a word of MetricsQL's syntax that an operand may stand next to:
// binary operators and their modifiers, aggregation modifiers, offset, keep_metric_names and WITH.
func isKeyword(s string) bool {
	switch strings.ToLower(s) {
	case "and", "or", "unless", "if", "ifnot", "default", "atan2", "on", "ignoring", "group_left", "group_right", "bool",
		"fill", "fill_left", "fill_right", "prefix", "by", "without", "limit", "offset", "keep_metric_names", "with":
		return true
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// fixMixedNames keeps the parser from widening the metric name to other branches. When some or-branches name a
// metric and others have no __name__ matcher, metricsql.Parse (here and in VictoriaMetrics) prepends the common
// name to the unnamed branches, which would narrow a branch that a filter granted without a name. An anchored
// regexp matcher selects the same series and is not a "metric name" to the parser.
func fixMixedNames(bs [][]metricsql.LabelFilter) {
	if len(bs) < 2 {
		return
	}
	named, unnamed := false, false
	for _, b := range bs {
		switch {
		case len(b) > 0 && isMetricName(&b[0]):
			named = true
		case !hasLabel(b, "__name__"):
			unnamed = true
		}
	}
	if !named || !unnamed {
		return
	}
	for _, b := range bs {
		if len(b) > 0 && isMetricName(&b[0]) {
			b[0] = anchored(b[0].Value)
		}
	}
}

func hasLabel(lfs []metricsql.LabelFilter, name string) bool {
	return slices.ContainsFunc(lfs, func(lf metricsql.LabelFilter) bool { return lf.Label == name })
}

// selectorBranches returns the branches a series matching the client branch c must match as well:
// c + labels + filter branch, one per filter branch.
func (e *Enforcer) selectorBranches(c []metricsql.LabelFilter) [][]metricsql.LabelFilter {
	if len(e.branches) == 0 {
		return [][]metricsql.LabelFilter{mergeFilters(c, e.selFilters, nil)}
	}
	out := make([][]metricsql.LabelFilter, 0, len(e.branches))
	for _, f := range e.branches {
		out = append(out, mergeFilters(c, e.selFilters, f))
	}
	return out
}

// mergeFilters ANDs client matchers c, the extra labels and filter branch f into one branch. The metric name
// matcher must stay first and appear once (the parser refuses two names), so a filter's metric name that
// differs from the client's becomes an anchored regexp matcher, which still ANDs: such a branch matches nothing.
func mergeFilters(c, labels, f []metricsql.LabelFilter) []metricsql.LabelFilter {
	out := make([]metricsql.LabelFilter, 0, len(c)+len(labels)+len(f)+1)
	clientName := len(c) > 0 && isMetricName(&c[0])
	var filterName *metricsql.LabelFilter
	if len(f) > 0 && isMetricName(&f[0]) {
		filterName = &f[0]
		f = f[1:]
	}
	switch {
	case filterName == nil:
	case !clientName:
		out = append(out, *filterName)
		filterName = nil
	case c[0].Value == filterName.Value:
		filterName = nil
	}
	out = append(out, c...)
	if filterName != nil {
		out = append(out, anchored(filterName.Value))
	}
	out = appendUnique(out, labels)
	out = appendUnique(out, f)
	return out
}

func isMetricName(lf *metricsql.LabelFilter) bool {
	return lf.Label == "__name__" && !lf.IsNegative && !lf.IsRegexp
}

func appendUnique(dst, src []metricsql.LabelFilter) []metricsql.LabelFilter {
	for _, lf := range src {
		if !slices.Contains(dst, lf) {
			dst = append(dst, lf)
		}
	}
	return dst
}

// newError is an error for the client with the status the gateway answers with: 400, 403, 413 or 415.
func newError(status int, format string, args ...any) error {
	return httperr.Errorf(status, format, args...)
}

// queryError is newError for a message that quotes the client's query: noQuery says it with httperr.Elided in its
// place, for the access log without -accessLog.queries.
func queryError(status int, noQuery, format string, args ...any) error {
	return httperr.WithQuery(status, fmt.Sprintf(format, args...), noQuery)
}
