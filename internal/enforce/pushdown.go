package enforce

import (
	"fmt"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// maxPushdownWork bounds what VictoriaMetrics' query optimizer does with a query before it runs it, and before any
// of its own limits look at it. metricsql.Optimize, at every binary operator, works out the label filters common to
// both sides from the whole expression below it, then copies them into every selector there. Both grow with the
// size of what is below, so a chain is cubic: `x{a0=""} * x{a1=""} * ...` of 300 selectors (3 KB) took v1.151 5 s of
// CPU, of 600 selectors 31 s; and label_set makes a filter of each of its pairs, dropping each from the others, so
// 40 uses of one label_set of 300 pairs took it 9 s and were answered in 2 ms by its own clock (attackers' reviews).
// The weight below follows Optimize (metricsql's optimizer.go) with upper bounds; one unit measured about 0.2 µs of
// it, so the bound admits some 60 ms: a chain of 80 selectors of one filter each, of 30 of 15 filters each.
const maxPushdownWork = 300_000

// checkPushdown refuses a query whose optimization would weigh more than maxPushdownWork.
func checkPushdown(expr metricsql.Expr) error {
	w := pushdownWeigher{distinct: distinctFilters(expr)}
	w.walk(expr)
	if w.work > maxPushdownWork {
		return fmt.Errorf("VictoriaMetrics' optimizer would work out and copy label filters across its binary operators for too "+
			"long (weight over %d): split the query, or join fewer selectors, label_set pairs or filters with operators in one expression", maxPushdownWork)
	}
	return nil
}

// maxCount caps the counts and maxEval the weights of one subtree, so that no sum or product below overflows.
const (
	maxCount = 1 << 20
	maxEval  = 1 << 40
)

type pushdownWeigher struct {
	work int64
	// distinct is the number of distinct label filters (and strings, which label functions make filters of) in
	// the query: the common filters of any subtree are a set of them.
	distinct int64
}

// distinctFilters counts the distinct label filters of expr but the metric name's, and its distinct strings.
func distinctFilters(expr metricsql.Expr) int64 {
	seen := map[metricsql.LabelFilter]struct{}{}
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		if len(seen) >= maxCount {
			return
		}
		switch t := x.(type) {
		case *metricsql.MetricExpr:
			for _, lfs := range t.LabelFilterss {
				for _, lf := range lfs {
					if lf.Label != "__name__" {
						seen[lf] = struct{}{}
					}
				}
			}
		case *metricsql.StringExpr:
			seen[metricsql.LabelFilter{Value: t.S}] = struct{}{}
		}
	})
	return int64(len(seen))
}

// sub is what walk learns of a subtree: its selectors, a bound of its common label filters, and the weight of
// working them out (getCommonLabelFilters), which Optimize does again at every binary operator above it.
type sub struct {
	selectors, filters, eval int64
}

// walk weighs x and adds the work of its binary operators; it stops once the work is over the bound.
func (w *pushdownWeigher) walk(x metricsql.Expr) sub {
	if w.work > maxPushdownWork {
		return sub{}
	}
	switch t := x.(type) {
	case *metricsql.MetricExpr:
		branches := int64(len(t.LabelFilterss))
		s := sub{selectors: min(branches, maxCount)}
		widest := int64(0)
		for i, lfs := range t.LabelFilterss {
			n := int64(0)
			for _, lf := range lfs {
				if lf.Label != "__name__" {
					n++
				}
			}
			// `or` branches: their intersection is common.
			if i == 0 || n < s.filters {
				s.filters = n
			}
			widest = max(widest, int64(len(lfs)))
			s.eval += int64(len(lfs))
		}
		if branches > 1 {
			// Every branch is a selector of its own to the optimizer: the filters pushed down are copied into each, and
			// every operator above works them out of each branch again at its grown size (a review: 1,000 branches
			// under a few operators took it 2-5 s).
			s.eval = min(s.selectors*(widest+w.distinct), maxEval)
		}
		s.filters = min(s.filters, w.distinct)
		return s
	case *metricsql.RollupExpr:
		s := w.walk(t.Expr)
		if t.At != nil {
			s = w.plus(s, w.walk(t.At))
		}
		return s
	case *metricsql.FuncExpr:
		var s sub
		strs := int64(0)
		for _, a := range t.Args {
			if _, ok := a.(*metricsql.StringExpr); ok {
				strs++
			}
			s = w.plus(s, w.walk(a))
		}
		// Label functions drop, keep or add a filter for each name they are given, each against all the others: a
		// label_set of k pairs makes k filters at k² steps. A step of it measured a quarter of a unit.
		s.eval = min(s.eval+strs*(s.filters+strs)/4, maxEval)
		s.filters = min(s.filters+strs, w.distinct)
		return s
	case *metricsql.AggrFuncExpr:
		var s sub
		for _, a := range t.Args {
			s = w.plus(s, w.walk(a))
		}
		mods := int64(len(t.Modifier.Args))
		s.eval = min(s.eval+s.filters*(1+mods), maxEval)
		switch strings.ToLower(t.Modifier.Op) {
		case "by":
			s.filters = min(s.filters, mods)
		case "without":
		default:
			s.filters = 0 // an aggregate without by() or without() keeps no label
		}
		return s
	case *metricsql.BinaryOpExpr:
		l, r := w.walk(t.Left), w.walk(t.Right)
		groups := int64(len(t.GroupModifier.Args))
		s := sub{
			selectors: min(l.selectors+r.selectors, maxCount),
			eval:      min(l.eval+r.eval+(l.filters+r.filters)*(1+groups), maxEval),
		}
		switch strings.ToLower(t.Op) {
		case "or":
			s.filters = min(l.filters, r.filters)
		case "unless", "ifnot":
			s.filters = l.filters
		default:
			s.filters = min(l.filters+r.filters, w.distinct)
		}
		if strings.EqualFold(t.GroupModifier.Op, "on") {
			s.filters = min(s.filters, groups)
		}
		// Optimize works the common filters out of the whole subtree here, and copies them into each selector below.
		w.work += s.eval + s.selectors*s.filters
		return s
	}
	return sub{}
}

// plus is the subtree of two siblings.
func (w *pushdownWeigher) plus(a, b sub) sub {
	return sub{
		selectors: min(a.selectors+b.selectors, maxCount),
		filters:   min(a.filters+b.filters, w.distinct),
		eval:      min(a.eval+b.eval, maxEval),
	}
}
