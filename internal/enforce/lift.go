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

// maxLifted bounds the selectors a lifted query prints. Copying a rollup call copies its other args, each lifted
// already, so rollups nested in those args multiply the copies (k branches, d levels: k^d); past the bound the
// query goes out with its branches inside the braces.
const maxLifted = 1000

// maxLiftedLen is VictoriaMetrics' default -search.maxQueryLen: a lifted query longer than that goes out with its
// branches inside the braces, which newer releases read, rather than be refused by all.
const maxLiftedLen = 16 << 10

// liftOr returns expr with its selectors of several branches lifted, or expr itself when the lifted query would print
// more than maxLifted selectors. The rewritten expr's nodes are reused, never changed.
func liftOr(expr metricsql.Expr) metricsql.Expr {
	out, n := lift(expr)
	if n > maxLifted {
		return expr
	}
	return out
}

// lift returns expr lifted and the number of selectors it prints, at most maxLifted+1 (saturated: the count grows as
// fast as the copies).
func lift(expr metricsql.Expr) (metricsql.Expr, int) {
	switch t := expr.(type) {
	case *metricsql.MetricExpr:
		if k := len(t.LabelFilterss); k > 1 {
			return union(branchesOf(t, func(me *metricsql.MetricExpr) metricsql.Expr { return me })), k
		}
		return t, 1
	case *metricsql.RollupExpr:
		c := *t
		at, nAt := liftAt(t.At)
		c.At = at
		if t.ForSubquery() {
			inner, n := lift(t.Expr)
			c.Expr = inner
			return &c, saturated(n + nAt)
		}
		if me, ok := t.Expr.(*metricsql.MetricExpr); ok && len(me.LabelFilterss) > 1 && t.Window == nil {
			// `up{a or b} offset 1h` and `up{a or b} @ t` stand for series: one copy per branch.
			return union(branchesOf(me, func(b *metricsql.MetricExpr) metricsql.Expr {
				cb := c
				cb.Expr = b
				return &cb
			})), saturated(len(me.LabelFilterss) * (1 + nAt))
		}
		return &c, saturated(1 + nAt)
	case *metricsql.FuncExpr:
		c := *t
		c.Args = make([]metricsql.Expr, len(t.Args))
		idx := metricsql.GetRollupArgIdx(t)
		others := 0
		for i, a := range t.Args {
			if i != idx {
				var n int
				c.Args[i], n = lift(a)
				others = saturated(others + n)
			}
		}
		if idx < 0 || idx >= len(t.Args) {
			return &c, others
		}
		me, re := rangeSelector(t.Args[idx])
		if me == nil || len(me.LabelFilterss) < 2 || !oneName(me) {
			arg, n := lift(t.Args[idx])
			c.Args[idx] = arg
			return &c, saturated(others + n)
		}
		var at metricsql.Expr
		nAt := 0
		if re != nil {
			at, nAt = liftAt(re.At)
		}
		calls := branchesOf(me, func(b *metricsql.MetricExpr) metricsql.Expr {
			fc := c
			fc.Args = slices.Clone(c.Args)
			fc.Args[idx] = b
			if re != nil {
				rc := *re
				rc.Expr, rc.At = b, at
				fc.Args[idx] = &rc
			}
			return &fc
		})
		n := saturated(len(calls) * saturated(others+1+nAt))
		if strings.EqualFold(t.Name, "absent_over_time") {
			return allAbsent(calls), n
		}
		return union(calls), n
	case *metricsql.AggrFuncExpr:
		c := *t
		c.Args = make([]metricsql.Expr, len(t.Args))
		total := 0
		for i, a := range t.Args {
			var n int
			c.Args[i], n = lift(a)
			total = saturated(total + n)
		}
		return &c, total
	case *metricsql.BinaryOpExpr:
		c := *t
		var nl, nr int
		c.Left, nl = lift(t.Left)
		c.Right, nr = lift(t.Right)
		return &c, saturated(nl + nr)
	}
	return expr, 0
}

func saturated(n int) int { return min(n, maxLifted+1) }

// liftAt lifts the expression of an @ modifier, which may be any query (`up @ end()`, `up @ scalar(x)`).
func liftAt(at metricsql.Expr) (metricsql.Expr, int) {
	if at == nil {
		return nil, 0
	}
	return lift(at)
}

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

func union(args []metricsql.Expr) metricsql.Expr {
	return &metricsql.AggrFuncExpr{Name: "union", Args: args}
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
