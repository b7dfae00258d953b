package enforce

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// maxPushdownWork bounds what VictoriaMetrics' query optimizer does with a query before it runs it, and before any
// of its own limits look at it. metricsql.Optimize, at every binary operator, works out the label filters common to
// both sides from the whole expression below it, then copies them into every selector there. Both grow with the
// size of what is below, so a chain is cubic: `x{a0=""} * x{a1=""} * ...` of 300 selectors (3 KB) took v1.151 5 s of
// CPU, of 600 selectors 31 s; and label_set makes a filter of each of its pairs, dropping each from the others, so
// 40 uses of one label_set of 300 pairs took it 9 s and were answered in 2 ms by its own clock (attackers' reviews).
// It works on filters as printed strings, so a long one costs by its length: one filter of 11 KB under a chain of
// 270 `* x` took v1.151 10 s, vmselect 8 s (another review). The weight below follows Optimize (metricsql's
// optimizer.go) with upper bounds; one unit measured about 0.2 µs of it, and a filter weighs a unit and one per
// bytesPerUnit bytes of it as printed, so the bound admits some 60 ms: a chain of 80 selectors of one short filter
// each, of 30 of 15 filters each.
const maxPushdownWork = 300_000

// bytesPerUnit is how many bytes of a filter, as the optimizer prints it, weigh one unit: it compares and copies
// about 15 of them in a unit's time.
const bytesPerUnit = 16

// maxErrorBytes bounds what VictoriaMetrics allocates for an error that rises through the query. Each binary operator
// (and rollup) it passes wraps it with the whole of its own expression as optimized (`cannot evaluate %q: %w`), so
// the message grows with the square of the depth and what is allocated for it with the cube, times the length of
// the filters the optimizer copied into every selector: a label_replace that fails under a chain of 150 `* x`
// beside one filter of 11 KB (11.6 KB of query) made v1.151 run out of memory past 6.7 GB, and one of 80 took it
// to 1.7 GB (an attacker's review). The estimate is an upper bound of the bytes of the worst error's messages; the
// runtime's own copies come on top.
const maxErrorBytes = 64 << 20

// checkPushdown refuses a query whose optimization would weigh more than maxPushdownWork, or whose error, should
// its evaluation fail, would take more than maxErrorBytes to tell.
func checkPushdown(expr metricsql.Expr) error {
	built, err := checkLabelGrowth(expr)
	if err != nil {
		return err
	}
	w := pushdownWeigher{built: built}
	w.distinctFilters(expr)
	// An error is wrapped at most once per node, each time with at most the whole query as optimized: most queries
	// are too small for their errors to matter, and are not walked for them.
	printed := min(w.allBytes+w.selectors*(w.distinctBytes+w.built+8)+w.nodes*nodeBytes, maxEval)
	errorsMatter := w.nodes*w.nodes > maxErrorBytes/max(printed, 1)
	if errorsMatter {
		w.common = map[*metricsql.BinaryOpExpr]int64{}
	}
	w.walk(expr)
	if w.work > maxPushdownWork {
		return fmt.Errorf("VictoriaMetrics' optimizer would work out and copy label filters across its binary operators for too "+
			"long (weight over %d): split the query, or join fewer selectors, label_set pairs or filters (long ones weigh by their "+
			"length) with operators in one expression", maxPushdownWork)
	}
	if !errorsMatter {
		return nil
	}
	if top := w.errorCost(expr, 0); top.alloc > maxErrorBytes {
		return fmt.Errorf("should the query fail, VictoriaMetrics would repeat its expression, with the filters it copies into "+
			"every selector, at each of its %d levels of operators in the error, over %d MiB in all: nest fewer operators, or "+
			"use shorter filters", top.depth, maxErrorBytes>>20)
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
	// distinct is the weight of the distinct label filters (and strings, which label functions make filters of) in
	// the query: the common filters of any subtree are a set of them. distinctBytes is their length as printed,
	// which is the most the optimizer copies into one selector; heaviest the weight of the heaviest one.
	distinct, distinctBytes, heaviest int64
	// allBytes is the length of all the query's filters and strings as printed; nodes and selectors the number of
	// its nodes and of its selectors, `or` branches apart (at most maxCount).
	allBytes, nodes, selectors int64
	// built bounds the label values the query's label functions make (checkLabelGrowth): VictoriaMetrics copies the
	// labels an operator's first side returns into the selectors of its other side as it runs, as filters.
	built int64
	// common is the weight of each binary operator's common filters (walk), kept only for a query whose errors matter.
	common map[*metricsql.BinaryOpExpr]int64
	buf    []byte
}

// filterLen is the length of lf as the optimizer prints it.
func (w *pushdownWeigher) filterLen(lf *metricsql.LabelFilter) int64 {
	w.buf = lf.AppendString(w.buf[:0])
	return int64(len(w.buf))
}

// stringLen is the length of a string as printed, quoted.
func (w *pushdownWeigher) stringLen(s string) int64 {
	w.buf = strconv.AppendQuote(w.buf[:0], s)
	return int64(len(w.buf))
}

// weight is what a filter or string of n printed bytes weighs.
func weight(n int64) int64 { return 1 + n/bytesPerUnit }

// distinctFilters weighs the distinct label filters of expr but the metric name's, and its distinct strings.
func (w *pushdownWeigher) distinctFilters(expr metricsql.Expr) {
	seen := map[metricsql.LabelFilter]struct{}{}
	add := func(lf metricsql.LabelFilter, n int64) {
		w.allBytes = min(w.allBytes+n, maxEval)
		if _, ok := seen[lf]; ok || len(seen) >= maxCount {
			return
		}
		seen[lf] = struct{}{}
		w.distinct = min(w.distinct+weight(n), maxEval)
		w.distinctBytes = min(w.distinctBytes+n, maxEval)
		w.heaviest = max(w.heaviest, weight(n))
	}
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		w.nodes = min(w.nodes+1, maxCount)
		switch t := x.(type) {
		case *metricsql.MetricExpr:
			w.selectors = min(w.selectors+int64(len(t.LabelFilterss)), maxCount)
			for _, lfs := range t.LabelFilterss {
				for i := range lfs {
					if lfs[i].Label == "__name__" {
						w.allBytes = min(w.allBytes+w.filterLen(&lfs[i]), maxEval) // printed, though not pushed
						continue
					}
					add(lfs[i], w.filterLen(&lfs[i]))
				}
			}
		case *metricsql.StringExpr:
			add(metricsql.LabelFilter{Value: t.S}, w.stringLen(t.S))
		}
	})
}

// sub is what walk learns of a subtree: its selectors, a bound of the weight of its common label filters, and the
// weight of working them out (getCommonLabelFilters), which Optimize does again at every binary operator above it.
type sub struct {
	selectors, filters, eval int64
}

// walk weighs x and adds the work of its binary operators; it stops once the work is over the bound. With common, it
// keeps the weight of each binary operator's common filters, which Optimize copies into every selector below it
// (errorCost).
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
			n, all := int64(0), int64(0)
			for j := range lfs {
				if lfs[j].Label == "__name__" {
					all++ // the optimizer passes over the name, whatever its length
					continue
				}
				wt := weight(w.filterLen(&lfs[j]))
				all += wt
				n += wt
			}
			// `or` branches: their intersection is common.
			if i == 0 || n < s.filters {
				s.filters = n
			}
			widest = max(widest, all)
			s.eval = min(s.eval+all, maxEval)
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
		strs, strsW := int64(0), int64(0)
		for _, a := range t.Args {
			if se, ok := a.(*metricsql.StringExpr); ok {
				strs++
				strsW = min(strsW+weight(w.stringLen(se.S)), maxEval)
			}
			s = w.plus(s, w.walk(a))
		}
		// Label functions drop, keep or add a filter for each name they are given, each against all the others: a
		// label_set of k pairs makes k filters at k² steps. A step of it measured a quarter of a unit.
		s.eval = min(s.eval+strs*(s.filters+strsW)/4, maxEval)
		s.filters = min(s.filters+strsW, w.distinct)
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
			s.filters = min(s.filters, mods*w.heaviest)
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
			s.filters = min(s.filters, groups*w.heaviest)
		}
		// Optimize works the common filters out of the whole subtree here, and copies them into each selector below.
		w.work += s.eval + s.selectors*s.filters
		if w.common != nil {
			w.common[t] = s.filters
		}
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

// nodeBytes bounds what a node adds to its children's text: its name, parentheses, modifiers.
const nodeBytes = 64

// errCost is what errorCost learns of a subtree, for an error rising from it: a bound of its length as printed once
// optimized, of the longest message it can end with, of the bytes of all its messages on the way, and the levels
// that wrapped it.
type errCost struct {
	printed, msg, alloc, depth int64
}

// errorCost bounds the messages of an error rising through x, whose selectors Optimize gave pushed bytes of filters
// from the binary operators above. A binary operator gives those below it its common filters, at most bytesPerUnit
// bytes per unit of their weight; what several operators give one selector is bounded by the most any of them gives
// (the common filters of nested operators mostly contain each other).
func (w *pushdownWeigher) errorCost(x metricsql.Expr, pushed int64) errCost {
	switch t := x.(type) {
	case *metricsql.MetricExpr:
		c := errCost{printed: 2}
		for _, lfs := range t.LabelFilterss {
			own := int64(0) // a branch gains only the filters it lacks
			for j := range lfs {
				if lf := &lfs[j]; lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative {
					// Printed as the metric's name, escaped as the quoted value is (a control byte takes four).
					c.printed += max(int64(len(lf.Value)), w.filterLen(lf)-int64(len(`__name__=""`)))
					continue
				}
				n := w.filterLen(&lfs[j])
				c.printed += n + 1
				own += n
			}
			c.printed += max(min(pushed, max(w.distinctBytes-own, 0)), min(pushed, w.built)) + 4
		}
		c.printed = min(c.printed, maxEval)
		// A selector's own error names it.
		c.msg, c.alloc = c.printed, c.printed
		return c
	case *metricsql.RollupExpr:
		c := w.errorCost(t.Expr, pushed)
		if t.At != nil {
			c = errPlus(c, w.errorCost(t.At, pushed))
		}
		return errWrap(c, 16+int64(len(t.Window.AppendString(nil))+len(t.Step.AppendString(nil))+len(t.Offset.AppendString(nil))))
	case *metricsql.FuncExpr:
		c := errCost{}
		for _, a := range t.Args {
			c = errPlus(c, w.errorCost(a, pushed))
		}
		if metricsql.IsRollupFunc(t.Name) {
			return errWrap(c, int64(len(t.Name))+2) // a rollup wraps the errors of its subquery
		}
		return errOwn(c, int64(len(t.Name))+2)
	case *metricsql.AggrFuncExpr:
		c := errCost{}
		for _, a := range t.Args {
			c = errPlus(c, w.errorCost(a, pushed))
		}
		return errOwn(c, int64(len(t.Name))+16+modifierLen(t.Modifier))
	case *metricsql.BinaryOpExpr:
		p := pushed
		if !strings.EqualFold(t.Op, "or") {
			// An `or` gives below it only the filters all its branches have already.
			p = max(min(max(pushed, w.common[t]*bytesPerUnit), w.distinctBytes), w.built)
		}
		c := errPlus(w.errorCost(t.Left, p), w.errorCost(t.Right, p))
		return errWrap(c, int64(len(t.Op))+4+modifierLen(t.GroupModifier)+modifierLen(t.JoinModifier))
	case *metricsql.StringExpr:
		n := w.stringLen(t.S)
		return errCost{printed: n}
	}
	return errCost{printed: 24} // a number or a duration
}

func modifierLen(m metricsql.ModifierExpr) int64 {
	if m.Op == "" {
		return 0
	}
	n := int64(len(m.Op) + 2)
	for _, a := range m.Args {
		n += int64(len(a)) + 2
	}
	return n
}

// errPlus is the cost of two siblings: an error rises from either, and both are printed.
func errPlus(a, b errCost) errCost {
	return errCost{
		printed: min(a.printed+b.printed, maxEval),
		msg:     max(a.msg, b.msg),
		alloc:   max(a.alloc, b.alloc),
		depth:   max(a.depth, b.depth),
	}
}

// errWrap is c under a node of own bytes that wraps every error from below with its whole text (binary operators,
// rollups: `cannot evaluate %q: %w`).
func errWrap(c errCost, own int64) errCost {
	c.printed = min(c.printed+own, maxEval)
	c.msg = min(c.msg+c.printed+24, maxEval)
	c.alloc = min(c.alloc+c.msg, maxEval)
	c.depth++
	return c
}

// errOwn is c under a node of own bytes that passes its children's errors as they are and wraps only its own
// (transforms, aggregates).
func errOwn(c errCost, own int64) errCost {
	c.printed = min(c.printed+own, maxEval)
	c.msg = max(c.msg, c.printed+24)
	c.alloc = max(c.alloc, c.msg)
	return c
}
