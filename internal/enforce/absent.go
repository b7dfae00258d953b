package enforce

import (
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// VictoriaMetrics gives the series of absent(sel) and absent_over_time(sel[w]) the labels of sel's equality filters,
// but only when sel has one branch: a selector the rewrite gave several (a token with several extra_filters) made an
// absent alert lose every label it was routed and templated by (`absent(up{job="api"})` answered `{}`, where
// VictoriaMetrics' own extra_filters[] answer `{job="api"}`: a legitimate user's review), and so does the union the
// branches are lifted into. absentLabels sets them back: the equality filters every branch holds with the same value,
// which are the client's own (each branch has them) and the token's extra_labels, as on a selector of one branch.

// absentLabels returns expr with each absent call over a selector of several branches wrapped in label_set of the
// labels its branches share, or expr itself when there is none. expr's nodes are reused, never changed.
func absentLabels(expr metricsql.Expr) metricsql.Expr {
	switch t := expr.(type) {
	case *metricsql.FuncExpr:
		args, changed := absentLabelsIn(t.Args)
		c := t
		if changed {
			c = new(metricsql.FuncExpr)
			*c = *t
			c.Args = args
		}
		if me := absentSelector(c); me != nil && len(me.LabelFilterss) > 1 {
			if set := sharedLabels(me.LabelFilterss); len(set) > 0 {
				return &metricsql.FuncExpr{Name: "label_set", Args: append([]metricsql.Expr{c}, set...)}
			}
		}
		return c
	case *metricsql.AggrFuncExpr:
		if args, changed := absentLabelsIn(t.Args); changed {
			c := *t
			c.Args = args
			return &c
		}
	case *metricsql.BinaryOpExpr:
		l, r := absentLabels(t.Left), absentLabels(t.Right)
		if l != t.Left || r != t.Right {
			c := *t
			c.Left, c.Right = l, r
			return &c
		}
	case *metricsql.RollupExpr:
		// A subquery's query, and an @'s (checkTimes leaves only times there, but a time may hold an absent).
		inner, at := absentLabels(t.Expr), t.At
		if at != nil {
			at = absentLabels(at)
		}
		if inner != t.Expr || at != t.At {
			c := *t
			c.Expr, c.At = inner, at
			return &c
		}
	}
	return expr
}

func absentLabelsIn(args []metricsql.Expr) ([]metricsql.Expr, bool) {
	var out []metricsql.Expr
	for i, a := range args {
		if b := absentLabels(a); b != a {
			if out == nil {
				out = append([]metricsql.Expr(nil), args...)
			}
			out[i] = b
		}
	}
	if out == nil {
		return args, false
	}
	return out, true
}

// absentSelector is the selector VictoriaMetrics takes the labels of f's series from, when f is absent or
// absent_over_time: absent's arg when it is a selector, absent_over_time's window's (or subquery's) selector.
func absentSelector(f *metricsql.FuncExpr) *metricsql.MetricExpr {
	if len(f.Args) != 1 {
		return nil
	}
	arg := f.Args[0]
	switch {
	case strings.EqualFold(f.Name, "absent"):
	case strings.EqualFold(f.Name, "absent_over_time"):
		if re, ok := arg.(*metricsql.RollupExpr); ok {
			arg = re.Expr
		}
	default:
		return nil
	}
	me, _ := arg.(*metricsql.MetricExpr)
	return me
}

// sharedLabels are label_set's args for the equality filters every branch holds with the same value, __name__ and
// empty values left out as VictoriaMetrics leaves them out of absent's labels; a name two filters of one branch give
// different values is left out too, since no series has both.
func sharedLabels(branches [][]metricsql.LabelFilter) []metricsql.Expr {
	var out []metricsql.Expr
	for _, lf := range branches[0] {
		if !isEquality(&lf) || lf.Value == "" || holdsLabel(out, lf.Label) {
			continue
		}
		shared := true
		for _, b := range branches {
			if !onlyValue(b, lf.Label, lf.Value) {
				shared = false
				break
			}
		}
		if shared {
			out = append(out, &metricsql.StringExpr{S: lf.Label}, &metricsql.StringExpr{S: lf.Value})
		}
	}
	return out
}

func isEquality(lf *metricsql.LabelFilter) bool {
	return !lf.IsRegexp && !lf.IsNegative && lf.Label != "" && lf.Label != "__name__"
}

// onlyValue says whether branch holds name="value" and no other equality filter on name.
func onlyValue(branch []metricsql.LabelFilter, name, value string) bool {
	found := false
	for i := range branch {
		lf := &branch[i]
		if lf.Label != name || !isEquality(lf) {
			continue
		}
		if lf.Value != value {
			return false
		}
		found = true
	}
	return found
}

// holdsLabel says whether label_set's args set already hold name.
func holdsLabel(set []metricsql.Expr, name string) bool {
	for i := 0; i < len(set); i += 2 {
		if set[i].(*metricsql.StringExpr).S == name {
			return true
		}
	}
	return false
}
