package enforce

import (
	"fmt"

	"github.com/VictoriaMetrics/metricsql"
)

// maxPushdownWork bounds what VictoriaMetrics' query optimizer does with a query before it runs it, and before any
// of its own limits look at it. metricsql.Optimize pushes the label filters common to both sides of each binary
// operator into every selector below it, copying them there; its work grows with the selectors under each operator
// times the filters among them, so it is cubic in a chain: `x{a0=""} * x{a1=""} * ...` of 300 selectors (3 KB) took
// v1.151 5 s of CPU, of 600 selectors 31 s, and no query limit saw it (an attacker's review). Measured with
// metricsql's Optimize, the bound admits about 0.1 s of it (a chain of 80 selectors of one filter, of 30 of 15
// filters); dashboards' queries weigh a few hundred.
const maxPushdownWork = 200_000

// checkPushdown refuses a query whose optimization would exceed maxPushdownWork. The weight of a binary operator is
// the selectors below it times the label filters among them but the metric name's, at most the distinct ones of the
// query (an upper bound of what the optimizer copies there),
// and a query weighs the sum over its operators.
func checkPushdown(expr metricsql.Expr) error {
	w := pushdownWeigher{distinct: distinctFilters(expr)}
	w.walk(expr)
	if w.work > maxPushdownWork {
		return fmt.Errorf("VictoriaMetrics' optimizer would copy label filters into the selectors under its binary operators "+
			"more than %d times: split the query, or join fewer selectors with operators in one expression", maxPushdownWork)
	}
	return nil
}

// maxCount caps the counts, whose product is then below 2^30.
const maxCount = 1 << 15

type pushdownWeigher struct {
	work int
	// distinct is the number of distinct label filters in the query: the optimizer copies a filter into a selector
	// once, so a subtree's filters count at most that many (a dashboard's team="dev" in every selector is one).
	distinct int
}

// distinctFilters counts the distinct label filters of expr but the metric name's, up to maxCount.
func distinctFilters(expr metricsql.Expr) int {
	seen := map[metricsql.LabelFilter]struct{}{}
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok || len(seen) >= maxCount {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label != "__name__" {
					seen[lf] = struct{}{}
				}
			}
		}
	})
	return len(seen)
}

// walk returns the selectors and label filters of x, each capped at maxCount; it stops once the work is over the
// bound, so that nothing it sums overflows, on 32 bits too.
func (w *pushdownWeigher) walk(x metricsql.Expr) (selectors, filters int) {
	if w.work > maxPushdownWork {
		return 0, 0
	}
	add := func(s, f int) {
		selectors, filters = min(selectors+s, maxCount), min(filters+f, maxCount)
	}
	switch t := x.(type) {
	case *metricsql.MetricExpr:
		n := 0 // the metric name is not pushed down
		for _, lfs := range t.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label != "__name__" {
					n++
				}
			}
		}
		return 1, min(n, maxCount)
	case *metricsql.RollupExpr:
		add(w.walk(t.Expr))
		if t.At != nil {
			add(w.walk(t.At))
		}
	case *metricsql.FuncExpr:
		for _, a := range t.Args {
			add(w.walk(a))
		}
	case *metricsql.AggrFuncExpr:
		for _, a := range t.Args {
			add(w.walk(a))
		}
	case *metricsql.BinaryOpExpr:
		add(w.walk(t.Left))
		add(w.walk(t.Right))
		w.work += selectors * min(filters, w.distinct)
	}
	return selectors, filters
}
