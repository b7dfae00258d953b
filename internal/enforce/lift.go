package enforce

import (
	"slices"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// VictoriaMetrics before v1.9x (Debian's 1.79.5 here) cannot parse `or` inside a selector's braces, which the rewrite
// writes whenever a selector ends with several branches: a token with several extra_filters, or a client's own
// {a="1" or b="2"}. Every query of such a token failed there. liftOr writes each such selector as the union of one
// selector per branch instead, which every release parses: at the selector where it stands for series
// (up{a or b} becomes union(up{a}, up{b})), and at the nearest rollup call where it stands for a range or a rollup's
// series (rate(up{a or b}[5m]) becomes union(rate(up{a}[5m]), rate(up{b}[5m]))), since a union of ranges does not
// parse. union, unlike `or`, tells series apart by their metric names too, so a series of one branch is never
// hidden by another metric's series of the same labels from another branch, and one of both branches comes once. A
// rollup is lifted only for a selector of one metric name (oneName): absent_over_time, the one rollup over all of its
// series together, is absent only when it is for every branch (the copies are joined with `and on()`). A range
// selector that stands alone (a query of `up{a or b}[5m]`), and a rollup over several metrics, keep the braces.

// maxLiftedLen is VictoriaMetrics' default -search.maxQueryLen: a lifted query longer than that goes out with its
// branches inside the braces, which newer releases read, rather than be refused by all. Copying a rollup call
// copies its other args, each lifted already, so rollups nested in those args multiply the copies (k branches, d
// levels: k^d): the lifted query's length is estimated as it is built, and one estimated past the bound is not
// printed at all.
const maxLiftedLen = 16 << 10

// liftOr returns expr with its selectors of several branches lifted, or expr itself when there is none or the lifted
// query would be longer than maxLiftedLen. The rewritten expr's nodes are reused, never changed.
func liftOr(expr metricsql.Expr) metricsql.Expr {
	if !hasBranches(expr) {
		return expr
	}
	var l lifter
	out, n := l.lift(expr)
	if n > maxLiftedLen {
		return expr
	}
	return out
}

func hasBranches(expr metricsql.Expr) bool {
	found := false
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		if me, ok := x.(*metricsql.MetricExpr); ok && len(me.LabelFilterss) > 1 {
			found = true
		}
	})
	return found
}

// lifter lifts an expression, estimating the length each part prints (saturated past maxLiftedLen, as the copies
// grow); scratch is where selectors are printed to be measured.
type lifter struct{ scratch []byte }

// lift returns expr lifted and about how many bytes it prints.
func (l *lifter) lift(expr metricsql.Expr) (metricsql.Expr, int) {
	switch t := expr.(type) {
	case *metricsql.MetricExpr:
		if len(t.LabelFilterss) > 1 {
			return l.union(branchesOf(t, func(me *metricsql.MetricExpr) metricsql.Expr { return me }), 0)
		}
		return t, l.size(t)
	case *metricsql.RollupExpr:
		// An @ holds only times (checkTimes refused the rest before the rewrite): it is copied as it is.
		nAt := l.sizeOf(t.At)
		if _, sel := t.Expr.(*metricsql.MetricExpr); t.ForSubquery() || !sel {
			// A subquery, and a window, an offset or an @ over anything but a selector, which VictoriaMetrics runs as
			// one (`sum(up)[5m]`, `sum(up) offset 1h`): its query is instant, lifted inside it.
			c := *t
			inner, n := l.lift(t.Expr)
			c.Expr = inner
			return &c, saturated(n + nAt + 32)
		}
		me, ok := t.Expr.(*metricsql.MetricExpr)
		if ok && len(me.LabelFilterss) > 1 && t.Window == nil {
			// `up{a or b} offset 1h` and `up{a or b} @ t` stand for series: one copy per branch.
			copies := branchesOf(me, func(b *metricsql.MetricExpr) metricsql.Expr {
				c := *t
				c.Expr = b
				return &c
			})
			return l.union(copies, saturated((nAt+32)*len(copies)))
		}
		return t, saturated(l.size(t.Expr) + nAt + 32)
	case *metricsql.FuncExpr:
		c := *t
		c.Args = make([]metricsql.Expr, len(t.Args))
		idx := metricsql.GetRollupArgIdx(t)
		others := len(t.Name) + 2*len(t.Args) + 24
		for i, a := range t.Args {
			if i != idx {
				var n int
				c.Args[i], n = l.lift(a)
				others = saturated(others + n)
			}
		}
		if idx < 0 || idx >= len(t.Args) {
			return &c, others
		}
		me, re := rangeSelector(t.Args[idx])
		switch {
		case me == nil || len(me.LabelFilterss) < 2:
			// A subquery or another expression, or one branch.
			arg, n := l.lift(t.Args[idx])
			c.Args[idx] = arg
			return &c, saturated(others + n)
		case !oneName(me):
			// The rollup's own series, of several names, which a union would not tell apart once the rollup drops
			// them: the braces stay, and a union inside the call would make it a subquery.
			c.Args[idx] = t.Args[idx]
			return &c, saturated(others + l.size(t.Args[idx]))
		}
		nAt := 0
		if re != nil {
			nAt = l.sizeOf(re.At)
		}
		calls := branchesOf(me, func(b *metricsql.MetricExpr) metricsql.Expr {
			fc := c
			fc.Args = slices.Clone(c.Args)
			fc.Args[idx] = b
			if re != nil {
				rc := *re
				rc.Expr = b
				fc.Args[idx] = &rc
			}
			return &fc
		})
		// Each copy prints the call's other args and its own branch.
		per := saturated(others + nAt + 32)
		if strings.EqualFold(t.Name, "absent_over_time") {
			out, n := l.union(calls, per*len(calls))
			return allAbsent(out.(*metricsql.AggrFuncExpr).Args), n
		}
		return l.union(calls, per*len(calls))
	case *metricsql.AggrFuncExpr:
		c := *t
		c.Args = make([]metricsql.Expr, len(t.Args))
		total := len(t.Name) + 2*len(t.Args) + 32 + modifierSize(t.Modifier)
		for i, a := range t.Args {
			var n int
			c.Args[i], n = l.lift(a)
			total = saturated(total + n)
		}
		return &c, total
	case *metricsql.BinaryOpExpr:
		c := *t
		var nl, nr int
		c.Left, nl = l.lift(t.Left)
		c.Right, nr = l.lift(t.Right)
		return &c, saturated(nl + nr + 32 + modifierSize(t.GroupModifier) + modifierSize(t.JoinModifier))
	}
	return expr, l.size(expr)
}

// size is how many bytes x prints.
func (l *lifter) size(x metricsql.Expr) int {
	l.scratch = x.AppendString(l.scratch[:0])
	return saturated(len(l.scratch))
}

// sizeOf is size, 0 for no expression (an @ that is not there).
func (l *lifter) sizeOf(x metricsql.Expr) int {
	if x == nil {
		return 0
	}
	return l.size(x)
}

func modifierSize(m metricsql.ModifierExpr) int {
	n := len(m.Op) + 2
	for _, a := range m.Args {
		n += len(a) + 2
	}
	return n
}

// union joins the copies of one selector's branches; extra is what they print beside their selectors (their calls'
// other args), which is added to the selectors' own length.
func (l *lifter) union(copies []metricsql.Expr, extra int) (metricsql.Expr, int) {
	n := saturated(extra + 8 + 2*len(copies))
	for _, c := range copies {
		n = saturated(n + l.size(selectorOf(c)))
	}
	return &metricsql.AggrFuncExpr{Name: "union", Args: copies}, n
}

// selectorOf is the selector a copy made by branchesOf reads.
func selectorOf(x metricsql.Expr) metricsql.Expr {
	switch t := x.(type) {
	case *metricsql.FuncExpr:
		if i := metricsql.GetRollupArgIdx(t); i >= 0 && i < len(t.Args) {
			if me, _ := rangeSelector(t.Args[i]); me != nil {
				return me
			}
		}
	case *metricsql.RollupExpr:
		return t.Expr
	}
	return x
}

func saturated(n int) int { return min(n, maxLiftedLen+1) }

// rangeSelector returns the selector a rollup's argument reads series from (`up`, `up[5m]`, `up offset 1h`), and the
// RollupExpr around it, if any; nil when the argument is a subquery or another expression.
func rangeSelector(arg metricsql.Expr) (*metricsql.MetricExpr, *metricsql.RollupExpr) {
	switch t := arg.(type) {
	case *metricsql.MetricExpr:
		return t, nil
	case *metricsql.RollupExpr:
		if me, ok := t.Expr.(*metricsql.MetricExpr); ok && !t.ForSubquery() {
			return me, t
		}
	}
	return nil, nil
}

// oneName reports whether every branch of me selects one and the same metric name. Most rollup functions drop the
// name from what they return, and union then takes two metrics' series of the same labels from different branches for
// one; series of one name that are alike without it are one series, which both branches selected.
func oneName(me *metricsql.MetricExpr) bool {
	name := ""
	for i, b := range me.LabelFilterss {
		n, ok := "", false
		for j := range b {
			if isMetricName(&b[j]) {
				if ok && b[j].Value != n {
					return false
				}
				n, ok = b[j].Value, true
			}
		}
		if !ok || (i > 0 && n != name) {
			return false
		}
		name = n
	}
	return true
}

// branchesOf makes one expression per branch of me, from a selector of that branch alone.
func branchesOf(me *metricsql.MetricExpr, build func(*metricsql.MetricExpr) metricsql.Expr) []metricsql.Expr {
	out := make([]metricsql.Expr, 0, len(me.LabelFilterss))
	for _, b := range me.LabelFilterss {
		out = append(out, build(&metricsql.MetricExpr{LabelFilterss: [][]metricsql.LabelFilter{b}}))
	}
	return out
}

// allAbsent joins absent_over_time calls so that the result is there only when each of them is. It has no labels, as
// absent_over_time of a selector of several branches has none: each copy has the labels its branch sets.
func allAbsent(calls []metricsql.Expr) metricsql.Expr {
	var out metricsql.Expr = &metricsql.FuncExpr{Name: "vector", Args: []metricsql.Expr{&metricsql.NumberExpr{N: 1}}}
	for _, c := range calls {
		out = &metricsql.BinaryOpExpr{Op: "and", Left: out, Right: c, GroupModifier: metricsql.ModifierExpr{Op: "on"}}
	}
	return out
}
