package querylimits

import (
	"bytes"
	"math"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/gencache"
	"github.com/vmgateway/vmgateway/internal/httperr"
)

// The span of a query is the time range of the samples it reads, computed from the parsed MetricsQL the way
// VictoriaMetrics evaluates it: a rollup over a window W at time t reads (t-W, t]; `offset d` shifts what is under
// it back by d; `@ T` evaluates what is under it at T whatever the range; a subquery `[W:s]` evaluates its inner
// query over [t-W, t] at step s, so nested windows add up; a selector without a window reads one step back (the
// window VictoriaMetrics uses for it, or the request's max_lookback when longer). VictoriaMetrics reads a little more than this model (the step alignment of a
// range and the staleness interval, minutes at most): the limits are meant for days and hours.

// lin is a duration that may depend on the step, as `[5i]` does: a + b×step milliseconds.
type lin struct{ a, b float64 }

func linOf(de *metricsql.DurationExpr) lin {
	if de == nil {
		return lin{}
	}
	a := de.Duration(0)
	var buf [32]byte
	if !bytes.ContainsAny(de.AppendString(buf[:0]), "iI$") {
		return lin{float64(a), 0} // no steps (5i) nor $__interval in it: the text is read once
	}
	return lin{float64(a), float64(de.Duration(1000)-a) / 1000}
}

func (l lin) at(step int64) int64 { return clampF(l.a + l.b*float64(step)) }

type nodeKind uint8

const (
	// kindNone reads nothing: numbers, strings.
	kindNone nodeKind = iota
	// kindSelector is a series selector; on its own it reads one step back.
	kindSelector
	// kindRollup is what metricsql calls a RollupExpr: a window, a subquery, an offset or an @ over its child.
	kindRollup
	// kindGroup is a function, aggregation or operator: it reads what its children read.
	kindGroup
)

// node is a query compiled for the span: the AST reduced to what moves time, built once per query.
type node struct {
	kind     nodeKind
	subquery bool
	window   lin
	offset   lin
	step     lin // subqueries with an explicit step
	hasStep  bool
	at       *atExpr
	children []node
	// countValues marks count_values, which makes a series of each value it meets (CountValues).
	countValues bool
	// implicit marks what VictoriaMetrics runs as a subquery at the step it is evaluated at, over one step, though
	// it has no window of its own: an offset or an @ over anything but a selector (`count_values("v", x) offset 1h`),
	// and a rollup function's arg that is neither a window nor a selector (`max_over_time(sum(x))`), for which compile
	// makes a wrapper node. Only CountValues walks them as subqueries; the limits' walks read a wrapper as its
	// child, as they did before it existed.
	implicit, wrapper bool
	// weight is what a point of a subquery's window costs the rollup function over it, in eighths (callWeight,
	// subEighths); 0 is cheapEighths. rawWeight is what a raw sample of a window over a selector (rawWindow) costs
	// it, in eighths (rawEighths); 0 for the cheapest functions, which are not counted over raw samples.
	weight, rawWeight uint32
	// overTime marks count_values_over_time, which makes a series of each value its windows meet.
	overTime bool
	// sel is, for a window over a selector, the selector as the query prints it, for Range.Windows.
	sel string
	// fan marks the rollup node of a function that makes several series of each series it reads (FanOuts).
	fan *fanNode
	// atUnknown marks an @ whose time compileAt cannot resolve.
	atUnknown bool
	// series is, for a subquery or a window over raw samples, how many series the rollup function over it makes of
	// each series it reads (enforce.SeriesOf: aggr_over_time's names, the rollup family's three); 0 stands for 1.
	series uint32
	// What Work.Total counts of the series a node makes (seriesMade): one marks an aggregation that makes a series in
	// all (`sum(x)`), mult a call that makes mult series of each it reads (quantiles' and histogram_quantiles' phis,
	// prometheus_buckets' le), histogram the aggregation that makes a series of each bucket its series fall in.
	one, histogram bool
	mult           uint32
	// streams marks an aggregation by nothing that VictoriaMetrics does as it goes over a rollup of a selector: the
	// series it reads are not held (Load.Held).
	streams bool
	// nones is how many series of no selector n stands for beside what its kind reads: for a kindNone node, the
	// numbers and calls of no selector it is (0 for a string), and for any other, those among its args that compile
	// dropped. VictoriaMetrics makes a series of each at every point (Load.Held).
	nones uint32
	// whole is what a point of a subquery's window, or a raw sample of a window over a selector, costs the rollup
	// function over it where Work.Total counts all the series, in eighths (wholeEighths); 0 for a raw window it does not
	// count (rate, last_over_time: a window's ends).
	whole uint32
}

// rawWindow says n is a window over a selector's raw samples: `quantile_over_time(0.5, x[1h])`.
func (n *node) rawWindow() bool {
	return n.kind == kindRollup && !n.subquery && !n.implicit && !n.wrapper && n.children[0].kind == kindSelector
}

// callWeight is what a point of its window costs the rollup function x, over a subquery and over raw samples.
// aggr_over_time runs each function it names over the same window: `aggr_over_time(("mad_over_time",
// "median_over_time", "mode_over_time"), x[1d])` costs the three.
func callWeight(x *metricsql.FuncExpr) (sub, raw uint32) {
	return weighNames(x, func(name string) (uint32, uint32) { return subEighths(name), rawEighths(name) })
}

// weighNames is callWeight with the weights of one function that weigh gives.
func weighNames(x *metricsql.FuncExpr, weigh func(name string) (sub, raw uint32)) (sub, raw uint32) {
	names := []string{x.Name}
	if strings.EqualFold(x.Name, "aggr_over_time") && len(x.Args) > 0 {
		names = names[:0]
		switch a := x.Args[0].(type) {
		case *metricsql.StringExpr:
			names = append(names, a.S)
		case *metricsql.FuncExpr:
			for _, e := range a.Args {
				if se, ok := e.(*metricsql.StringExpr); ok {
					names = append(names, se.S)
				}
			}
		}
	}
	for _, name := range names {
		s, r := weigh(name)
		sub += s
		raw += r
	}
	return sub, raw
}

// rawEighths is what a raw sample of its window costs a rollup function, in eighths of a subquery point of the
// cheapest at the old scale (subEighths' 8). Per raw sample v1.151 took 82 ns in quantile_over_time, 44 in
// histogram_over_time, 59 in mode_over_time, 103 in distinct_over_time and 172 in mad_over_time (an attacker's
// review): the functions that sort or keep a map of a window weigh 64. Those that work out a variance or a fit of
// every sample took 3.6-4.7 ns (zscore_over_time, holt_winters: a later review, 35 s of v1.151's CPU for
// `zscore_over_time(x[2d])` over a day at 8 s on 4 series of 1 s samples): 1. The rest (sum_over_time 1 ns, rate and
// the like, which read two samples) are not counted: a 30-day SLO window over a day at 1 minute reads 3.7×10^9
// samples a series at one a second, and takes under 4 s.
func rawEighths(name string) uint32 {
	switch {
	case fitsEverySample(name), rollsUpSeveral(name):
		return 1
	case subEighths(name) > 8:
		return 64
	}
	return 0
}

// subEighths is what a point of a subquery's window costs a rollup function, in eighths. Measured on v1.151 at
// 7.7×10^7 points of one series (a review): quantile_over_time 0.77 s over sorted values, 6.9 s over unsorted ones,
// count_values_over_time 21.6 s; functions that sort a window weigh 64, those that keep a map of its values 256. The
// cheapest (sum, avg, max, last) took about 4 ns a point under a 30-day SLO window (`avg_over_time(ratio[30d:1m])`,
// a legitimate user's review): they weigh 4, half a point, so that such a panel passes at the 2,880 to 4,000 points a
// wide Grafana panel asks (1.2×10^8 points of window read); the functions that fit every point weigh 8.
func subEighths(name string) uint32 {
	switch strings.ToLower(name) {
	case "count_values_over_time", "distinct_over_time", "histogram_over_time", "mode_over_time":
		return 32 * 8
	case "quantile_over_time", "quantiles_over_time", "median_over_time", "mad_over_time", "outlier_iqr_over_time", "iqr_over_time":
		return 8 * 8
	}
	if fitsEverySample(name) {
		return 8
	}
	if rollsUpSeveral(name) {
		return 16
	}
	return cheapEighths
}

// iteratesWindow names the rollup functions that read each sample of a window over raw samples at each point they are
// evaluated at. The others read a window's ends (rate, increase, delta, last_over_time, count_over_time), which
// VictoriaMetrics slides along the samples: they cost the points and the samples, not their product. The cheapest that
// read every sample are not counted per series (rawEighths), where a 30-day SLO window passes; over all the series
// (Work.Total) they weigh a point a sample (wholeEighths): under a subquery at 1 s,
// `max_over_time(sum_over_time(x[30d])[27h:1s])` read 1.7×10^10 samples a series of 15 s data, 12.6 s of CPU for each
// series, which no bound counted (an attacker's review).
func iteratesWindow(name string) bool {
	if !metricsql.IsRollupFunc(name) {
		return false
	}
	switch strings.ToLower(name) {
	case "rate", "irate", "increase", "increase_pure", "increase_prometheus", "rate_prometheus", "delta", "delta_prometheus",
		"idelta", "ideriv", "deriv_fast", "last_over_time", "first_over_time", "count_over_time", "present_over_time",
		"absent_over_time", "tfirst_over_time", "tlast_over_time", "timestamp", "timestamp_with_name", "lag", "lifetime",
		"default_rollup", "scrape_interval":
		return false
	}
	return true
}

// wholeEighths is what a point of a subquery's window and a raw sample of a window over a selector cost the rollup
// function name where Work.Total counts all the series, in eighths of a point of about 1.3 ns of v1.151's CPU (1.0 ns
// on v1.151, 1.4 on 1.79.5, under max_over_time over a subquery, whose points weigh a half). Measured by attackers'
// reviews, per raw sample on v1.151 (1.79.5's up to twice): sum_over_time 1.15 ns, the rollup family 3.5,
// stddev_over_time, zscore_over_time and holt_winters 5.4 to 7, histogram_over_time 35, quantile_over_time over
// unsorted values 82 (136 a subquery point), mode_over_time 85 (140 on 1.79.5), distinct_over_time 100 (157),
// mad_over_time 172 to 200 (259 a subquery point). The per-series bound weighs these less (subEighths, rawEighths:
// sorted values, the cheapest raw samples not at all), so that its panels pass; over all the series the bound is the
// CPU. Those that read a window's ends (iteratesWindow) are not counted over raw samples.
func wholeEighths(name string) (sub, raw uint32) {
	switch strings.ToLower(name) {
	case "mad_over_time":
		return 208 * 8, 160 * 8
	case "quantile_over_time", "quantiles_over_time", "median_over_time", "iqr_over_time", "outlier_iqr_over_time":
		return 112 * 8, 64 * 8
	case "distinct_over_time", "mode_over_time", "count_values_over_time":
		return 128 * 8, 128 * 8
	case "histogram_over_time":
		return 32 * 8, 32 * 8
	}
	switch {
	case fitsEverySample(name):
		return 5 * 8, 5 * 8
	case rollsUpSeveral(name):
		return 3 * 8, 3 * 8
	case iteratesWindow(name):
		return cheapEighths, 8
	}
	return subEighths(name), 0
}

// rollsUpSeveral names the rollup functions that work out several rollups of a window at once (min, max and avg, or a
// candlestick's four): 2 to 3.6 times max_over_time per point, so they weigh as two points; `count(rollup_rate(x[18180s:
// 1s]))` over 11,000 steps passed at half a point and took v1.151 0.3 s of CPU per series (a review).
func rollsUpSeveral(name string) bool {
	switch strings.ToLower(name) {
	case "rollup", "rollup_candlestick", "rollup_delta", "rollup_deriv", "rollup_increase", "rollup_rate", "rollup_scrape_interval":
		return true
	}
	return false
}

// cheapEighths is the weight of the cheapest rollup functions over a subquery, and what a node's weight of 0 stands for.
const cheapEighths = 4

// fitsEverySample names the rollup functions that work out a variance or a fit of every sample of a window.
func fitsEverySample(name string) bool {
	switch strings.ToLower(name) {
	case "stddev_over_time", "stdvar_over_time", "zscore_over_time", "holt_winters", "double_exponential_smoothing",
		"predict_linear", "deriv", "hoeffding_bound_lower", "hoeffding_bound_upper", "geomean_over_time":
		return true
	}
	return false
}

// atExpr is the time of an @ modifier: a number (Unix seconds), start(), end(), time(), now(), step(), a duration,
// or arithmetic of them, rounded or taken modulo a number: what the enforcer's gate lets through (enforce.checkAt).
// Anything else cannot be resolved before the query runs.
type atExpr struct {
	op   byte // 'n' number, 's' start(), 'e' end(), 't' time(), 'w' now(), 'p' step(), 'd' duration, 'r' round, or + - * / %
	v    float64
	d    lin
	l, r *atExpr
}

// maxDepth bounds the recursion of compile. The enforcer refuses a parsed query deeper than 1000 levels, WITH templates
// expanded, each level one of compile's but a selector's window and an @, which add one each: a query that reaches
// maxDepth here was not parsed by it, and is refused (tree).
const maxDepth = 1008

// nestedTooDeeply is compile's note on a query deeper than maxDepth.
const nestedTooDeeply = "a query nested too deeply"

// compile reduces e to its span tree. unresolved is the text of the first @ modifier it cannot resolve, or
// nestedTooDeeply.
func compile(e metricsql.Expr, depth int, unresolved *string) node {
	n := compileExpr(e, depth, unresolved)
	if n.kind == kindNone && n.nones == 0 {
		if _, ok := e.(*metricsql.StringExpr); !ok {
			n.nones = 1 // a number, or a call of no selector: time(), vector(1)
		}
	}
	return n
}

// compileExpr is compile's work on e itself.
func compileExpr(e metricsql.Expr, depth int, unresolved *string) node {
	if depth > maxDepth {
		*unresolved = nestedTooDeeply
		return node{kind: kindNone}
	}
	switch x := e.(type) {
	case *metricsql.MetricExpr:
		return node{kind: kindSelector, sel: string(x.AppendString(nil))}
	case *metricsql.RollupExpr:
		n := node{kind: kindRollup, window: linOf(x.Window), offset: linOf(x.Offset)}
		child := compile(x.Expr, depth+1, unresolved)
		// A window over anything but a selector is a subquery; the child node alone cannot tell, since a
		// function of one selector compiles to the selector.
		me, sel := x.Expr.(*metricsql.MetricExpr)
		n.subquery = x.ForSubquery() || (x.Window != nil && !sel)
		n.implicit = !n.subquery && !sel
		if sel && !n.subquery {
			n.sel = string(me.AppendString(nil))
		}
		if x.Step != nil {
			n.step, n.hasStep = linOf(x.Step), true
		}
		if x.At != nil {
			n.at = compileAt(x.At, depth+1)
			if n.at == nil {
				n.atUnknown = true
				if *unresolved == "" {
					*unresolved = "@ " + string(x.At.AppendString(nil))
				}
			}
		}
		n.children = []node{child}
		return n
	case *metricsql.FuncExpr:
		if i := implicitSubqueryArg(x); i >= 0 {
			sq := node{kind: kindRollup, implicit: true, wrapper: true, children: []node{compile(x.Args[i], depth+1, unresolved)},
				fan: fanOf(x, x.Args[i]), series: uint32(enforce.SeriesOf(x))}
			rest := group(slices.Delete(slices.Clone(x.Args), i, i+1), depth, unresolved)
			if rest.kind == kindNone {
				sq.nones = rest.nones // the numbers among its other args: quantile_over_time's phi
				return sq
			}
			return node{kind: kindGroup, children: []node{sq, rest}}
		}
		args := x.Args
		if i := bareSelectorArg(x); i >= 0 {
			// A rollup function over a selector without a window reads a window of the step (or max_lookback):
			// compiled as that window, so that its function weighs it (a review: quantile_over_time(0.99, x) at
			// step=30d over ten years was not counted at all, where x[30d] was refused).
			args = slices.Clone(args)
			args[i] = &metricsql.RollupExpr{Expr: args[i]}
		}
		n := compileCall(x.Name, args, depth, unresolved)
		if i := rollupArg(x); i >= 0 {
			// The rolled-up arg's node: the call's, or the last of its group when other args read series too
			// (`quantiles_over_time("phi", scalar(y), x[5m])`); only quantiles_over_time has other args.
			switch last := len(n.children) - 1; {
			case n.kind == kindRollup:
				n.fan = fanOf(x, args[i])
			case n.kind == kindGroup && i == len(args)-1 && n.children[last].kind == kindRollup:
				n.children[last].fan = fanOf(x, args[i])
			}
		}
		overTime := strings.EqualFold(x.Name, "count_values_over_time")
		sub, raw := callWeight(x)
		wholeSub, wholeRaw := weighNames(x, wholeEighths)
		weighs, series := sub != cheapEighths || raw > 0, enforce.SeriesOf(x)
		// The windows this function rolls up, subqueries or raw samples: the arg itself, or one of a group of args. Of
		// each series a subquery makes, it makes series more.
		mark := func(c *node) {
			switch {
			case c.kind != kindRollup:
			case c.subquery:
				if weighs {
					c.weight, c.overTime = sub, overTime
				}
				if series > 1 {
					c.series = uint32(series)
				}
				c.whole = wholeSub
			case c.rawWindow():
				if raw > 0 {
					c.rawWeight, c.overTime = raw, overTime
				}
				c.whole = wholeRaw
				if series > 1 {
					c.series = uint32(series)
				}
			}
		}
		mark(&n)
		if n.kind == kindGroup {
			for i := range n.children {
				mark(&n.children[i])
			}
		}
		if m := madeOf(x); m > 1 && rollupArg(x) < 0 && n.kind != kindNone {
			return node{kind: kindGroup, mult: m, children: []node{n}}
		}
		return n
	case *metricsql.AggrFuncExpr:
		n := compileCall(x.Name, x.Args, depth, unresolved)
		if n.fan != nil && strings.EqualFold(x.Name, "count_values") {
			// It counts the distinct values of each of its groups apart.
			f := *n.fan
			f.valuesBy = &Grouping{Op: strings.ToLower(x.Modifier.Op), Labels: x.Modifier.Args}
			n.fan = &f
			return n
		}
		if n.fan != nil {
			if g := groupOver(x); g != nil {
				f := *n.fan
				f.group = g
				n.fan = &f
			}
		}
		// Wrapped for what Work.Total counts of the series it makes; the other walks read a wrapper as its child, and
		// the checks of a query's root look through it (unwrapped).
		name := strings.ToLower(x.Name)
		if name == "histogram" && len(x.Args) > 0 {
			// Listed as count_values is (FanOuts): a series of each bucket of each group, each as long as the points,
			// whatever its arg reads (`histogram(label_set(rand(), ...))` reads nothing and makes hundreds, a review).
			h := node{kind: kindGroup, histogram: true}
			if n.kind != kindNone {
				h.children = []node{n}
			} else {
				h.nones = n.nones
			}
			h.fan = &fanNode{name: "histogram", label: "vmrange", most: histogramBuckets, byData: true,
				src: string(x.Args[0].AppendString(nil)), moving: moving(x.Args[0]), several: len(x.Args) > 1,
				valuesBy: &Grouping{Op: strings.ToLower(x.Modifier.Op), Labels: x.Modifier.Args}}
			return h
		}
		if n.kind == kindNone {
			return n
		}
		if (reducesToOne(name) || name == "quantiles") && len(x.Modifier.Args) == 0 && !strings.EqualFold(x.Modifier.Op, "without") {
			n = node{kind: kindGroup, one: true, streams: streams(x), children: []node{n}}
		}
		if name == "quantiles" {
			n = node{kind: kindGroup, mult: uint32(enforce.SeriesOf(x)), children: []node{n}}
		}
		return n
	case *metricsql.BinaryOpExpr:
		return group([]metricsql.Expr{x.Left, x.Right}, depth, unresolved)
	}
	return node{kind: kindNone}
}

// reducesToOne names the aggregations that make a series of each group: by nothing, one series in all. The others
// keep series they read (topk, limitk, outliersk, zscore, share, ...) or make several of each group (quantiles,
// histogram, count_values).
func reducesToOne(name string) bool {
	switch name {
	case "sum", "sum2", "min", "max", "avg", "count", "group", "geomean", "stddev", "stdvar", "mode", "mad", "median",
		"distinct", "any", "quantile":
		return true
	}
	return false
}

// streams tells whether VictoriaMetrics does the aggregation x as it goes over its arg, as groupOver tells, or over a
// selector or a window over one, which it reads as default_rollup's (tryGetArgRollupFuncWithMetricExpr).
func streams(x *metricsql.AggrFuncExpr) bool {
	if groupOver(x) != nil {
		return true
	}
	if !incremental(x.Name) || len(x.Args) != 1 {
		return false
	}
	switch a := x.Args[0].(type) {
	case *metricsql.MetricExpr:
		return !a.IsEmpty()
	case *metricsql.RollupExpr:
		me, ok := a.Expr.(*metricsql.MetricExpr)
		return ok && !me.IsEmpty() && !a.ForSubquery()
	}
	return false
}

// madeOf is how many series the function x, neither a rollup function nor an aggregation, makes at most of each
// series it reads: histogram_quantiles a series of each phi, prometheus_buckets an le bucket of each vmrange one
// and of the start of a range that does not follow the last, and +Inf in each group; 1 for any other.
func madeOf(x *metricsql.FuncExpr) uint32 {
	switch strings.ToLower(x.Name) {
	case "histogram_quantiles":
		return uint32(enforce.SeriesOf(x))
	case "prometheus_buckets":
		return 3
	}
	return 1
}

// unwrapped is n, or the node under the wrappers of an aggregation or a call Work.Total counts the series of: a
// query whose root is a rollup under them is one rollup to the checks that read its root, as it was before they were.
func (n *node) unwrapped() *node {
	for n.kind == kindGroup && len(n.children) == 1 && (n.one || n.histogram || n.mult > 0) {
		n = &n.children[0]
	}
	return n
}

// rollupArg is the index of the arg the rollup function f rolls up; -1 when f is none or has none.
func rollupArg(f *metricsql.FuncExpr) int {
	if !metricsql.IsRollupFunc(f.Name) {
		return -1
	}
	if i := metricsql.GetRollupArgIdx(f); i >= 0 && i < len(f.Args) {
		return i
	}
	return -1
}

// bareSelectorArg is the index of the arg a rollup function rolls up when it is a selector without a window; -1
// otherwise.
func bareSelectorArg(f *metricsql.FuncExpr) int {
	i := rollupArg(f)
	if i < 0 {
		return -1
	}
	if _, ok := f.Args[i].(*metricsql.MetricExpr); !ok {
		return -1
	}
	return i
}

// implicitSubqueryArg is the index of the arg a rollup function rolls up when VictoriaMetrics runs it as a subquery,
// being neither a window nor a selector; -1 otherwise.
func implicitSubqueryArg(f *metricsql.FuncExpr) int {
	i := rollupArg(f)
	if i < 0 {
		return -1
	}
	switch f.Args[i].(type) {
	case *metricsql.RollupExpr, *metricsql.MetricExpr:
		return -1
	}
	return i
}

// compileCall compiles a function or an aggregation: what its args read, and whether it is count_values. Written
// with escapes (count\_values) count_values is a plain function, which VictoriaMetrics may run as the aggregate (the
// enforcer refuses it too).
func compileCall(name string, args []metricsql.Expr, depth int, unresolved *string) node {
	n := group(args, depth, unresolved)
	if !strings.EqualFold(name, "count_values") {
		return n
	}
	cv := node{kind: kindGroup, countValues: true}
	if n.kind != kindNone {
		cv.children = []node{n}
	} else {
		cv.nones = n.nones
	}
	if len(args) == 2 {
		cv.fan = &fanNode{name: "count_values", most: maxValuesCounted, byData: true, src: string(args[1].AppendString(nil)),
			args: string(args[0].AppendString(nil)) + ", ", moving: moving(args[1])}
		if s, ok := args[0].(*metricsql.StringExpr); ok {
			cv.fan.label = s.S
		}
	}
	return cv
}

// group compiles the args of a function, aggregation or operator. It reads what they read: with one arg that reads
// anything it is that arg (`sum(rate(x[5m]))` is the rollup), so that a query's tree holds few nodes to allocate.
func group(args []metricsql.Expr, depth int, unresolved *string) node {
	var first node
	var n node
	count, nones := 0, uint32(0)
	for _, a := range args {
		c := compile(a, depth+1, unresolved)
		if c.kind == kindNone {
			nones = uint32(min(uint64(nones)+uint64(c.nones), math.MaxUint32))
			continue
		}
		count++
		switch count {
		case 1:
			first = c
		case 2:
			n = node{kind: kindGroup, children: append(make([]node, 0, len(args)), first, c)}
		default:
			n.children = append(n.children, c)
		}
	}
	switch count {
	case 0:
		return node{kind: kindNone, nones: nones}
	case 1:
		n = first
	default:
		n.children = slices.Clip(n.children) // room was made for every arg, numbers too, which it dropped
	}
	n.nones = uint32(min(uint64(n.nones)+uint64(nones), math.MaxUint32))
	return n
}

func compileAt(e metricsql.Expr, depth int) *atExpr {
	if depth > maxDepth {
		return nil
	}
	switch x := e.(type) {
	case *metricsql.NumberExpr:
		return &atExpr{op: 'n', v: x.N}
	case *metricsql.DurationExpr:
		return &atExpr{op: 'd', d: linOf(x)}
	case *metricsql.FuncExpr:
		// VictoriaMetrics reads function names in any case: `@ END()` is end() (a first version resolved only the
		// lower case, and took the rest not to shift the span).
		switch name := strings.ToLower(x.Name); {
		case name == "round" && (len(x.Args) == 1 || len(x.Args) == 2):
			at := &atExpr{op: 'r', l: compileAt(x.Args[0], depth+1), r: &atExpr{op: 'n', v: 1}}
			if len(x.Args) == 2 {
				at.r = compileAt(x.Args[1], depth+1)
			}
			if at.l == nil || at.r == nil {
				return nil
			}
			return at
		case len(x.Args) != 0:
			return nil
		case name == "start":
			return &atExpr{op: 's'}
		case name == "end":
			return &atExpr{op: 'e'}
		case name == "time":
			return &atExpr{op: 't'}
		case name == "now":
			return &atExpr{op: 'w'}
		case name == "step":
			return &atExpr{op: 'p'}
		}
	case *metricsql.BinaryOpExpr:
		switch x.Op {
		case "+", "-", "*", "/", "%":
			l, r := compileAt(x.Left, depth+1), compileAt(x.Right, depth+1)
			if l == nil || r == nil {
				return nil
			}
			return &atExpr{op: x.Op[0], l: l, r: r}
		}
	}
	return nil
}

// eval is the @ time in seconds, with start() and end() of the range it is evaluated in at step. VictoriaMetrics
// evaluates the time over the range and takes its first value: time() is the range's start.
func (x *atExpr) eval(a, b, now, step int64) float64 {
	switch x.op {
	case 'n':
		return x.v
	case 'd':
		return float64(x.d.at(step)) / 1000
	case 's', 't':
		return float64(a) / 1000
	case 'e':
		return float64(b) / 1000
	case 'w':
		return float64(now) / 1000
	case 'p':
		return float64(step) / 1000
	}
	l, r := x.l.eval(a, b, now, step), x.r.eval(a, b, now, step)
	switch x.op {
	case '+':
		return l + r
	case '-':
		return l - r
	case '*':
		return l * r
	case '%':
		return math.Mod(l, r)
	case 'r':
		// As transformRound: to the nearest multiple of r, halves away from zero (its decimal clean-up aside).
		if r == 0 {
			return math.NaN()
		}
		return math.Round(l/r) * r
	}
	return l / r
}

// walk accumulates the span of one evaluation.
type walk struct {
	now int64
	// lookback is the max_lookback arg: a selector without a window reads back the longer of it and the step.
	lookback int64
	from, to int64
	// minSubStep is the finest explicit subquery step met, for min_step; 0 when none.
	minSubStep int64
	// points walks for CountValues: subqueries over the range VictoriaMetrics evaluates them over, implicit ones
	// included. cv counts each count_values met: as many series of each series as the points per series it is
	// evaluated at, each that long.
	points bool
	cv     fanOut
	// work is, for such a walk, the points the rollups over subqueries read per series: at each point a subquery is
	// evaluated at, the points of its window; and over raw samples, for the functions that sort or count a window, its
	// samples at one per interval (SubqueryWork); for Work.Total (counts set), over all the series, as counts counts them.
	work float64
	// interval is the least time between two samples of a series the walk assumes (-search.minSampleInterval, ms);
	// 0 leaves the windows over raw samples uncounted.
	interval int64
	// ot is cv for count_values_over_time (overTimeValues).
	ot fanOut
	// windows is Range.Windows; alt marks the walk of an instant query's other reading (Window.Alt).
	windows *[]Window
	// fans gets, for FanOuts, each function that makes several series of each series it reads.
	fans *[]FanOut
	alt  bool
	// atNaN is set when an @ time is not a number (a division by zero): the span is then unknown.
	atNaN bool
	// counts, for Work.Total, counts the series of the selectors and the samples of the windows over raw samples:
	// each subquery's work is then over every series its query makes (span). countErr is its first error.
	counts   *Counts
	countErr error
	// held is, for Work.Total, the points of the series the query's selectors, rollups and the calls that make several
	// series of each (quantiles' phis) make, added up over all of them (hold); fetched, the series its selectors read.
	held, fetched float64
	// atUnknown counts the @ modifiers compileAt could not resolve above the node walked.
	atUnknown int
	// outer is the points of the evaluations of the subqueries above the node walked, added up, each level's times the
	// series its rollup makes of each (node.series): what the rollups make of each series the node makes, while
	// VictoriaMetrics still holds the node's own.
	outer int64
	// aligned counts the subqueries above the node walked: inside one, VictoriaMetrics evaluates at the multiples of
	// its step. rootSubquery says the walk's root is the subquery an instant query is, which is not so (countValues).
	aligned      int
	rootSubquery bool
	// steps is the step of the request and of each subquery above the node walked, to each of which VictoriaMetrics may
	// align the range it evaluates there (series).
	steps int64
}

// span adds to w what n reads when evaluated over [a, b] at step. For Work.Total (w.counts set), it returns the most
// series n makes there, from the series its selectors read as counted; otherwise 0.
func (w *walk) span(n *node, a, b, step int64) float64 {
	if n.nones > 0 && n.kind != kindNone {
		w.hold(float64(n.nones), max(b-a, 0)/max(step, 1)+1) // the numbers among its args
	}
	switch n.kind {
	case kindNone:
		// Numbers, or series of no selector: vector(1), time(). VictoriaMetrics makes a series of each at every point
		// (an attacker's review: 5,000 arms of `1` over 10,801 points took v1.151 to 540 MB).
		w.hold(float64(n.nones), max(b-a, 0)/max(step, 1)+1)
		return 1
	case kindSelector:
		from := sub(a, max(step, w.lookback))
		w.add(from, b)
		read := w.series(n.sel, from, b, step)
		w.fetched += read
		w.hold(read, max(b-a, 0)/max(step, 1)+1+seriesPoints)
		return read
	case kindGroup:
		if n.countValues && step > 0 {
			// Counted as the range's points are, (b-a)/step: a count_values of a range query at its limit passes.
			p := max(b-a, 0) / step
			w.cv.add(p, p)
		}
		// What the children hold and fetch apart from the rest: counts may be infinite, and Inf-Inf is NaN.
		held, fetched := w.held, w.fetched
		w.fetched = 0
		read := 0.0
		for i := range n.children {
			read += w.span(&n.children[i], a, b, step)
		}
		w.countValues(n, a, b, step) // after what it reads: an inner one is listed first
		defer func() { w.fetched += fetched }()
		points := max(b-a, 0)/max(step, 1) + 1
		made := seriesMade(n, read, points)
		switch {
		case n.streams:
			// The rollup's series are added up as they are made, into one; each it reads is still fetched (an attacker's
			// review: 300 arms of `sum(x)` over 20,000 series took v1.151 to 2.7 GB), not each it would make (a bucket of
			// each: a diff review).
			w.held = held
			w.hold(w.fetched, seriesPoints)
		case n.mult > 0:
			w.hold(made, points)
		}
		return made
	}
	// A function that makes several series of each makes them as long as the points over [a, b], under @ too:
	// VictoriaMetrics evaluates it at one time and copies its values to every point.
	points := max(b-a, 0)/max(step, 1) + 1
	if n.atUnknown {
		w.atUnknown++
		defer func() { w.atUnknown-- }()
	}
	if n.at != nil {
		t := n.at.eval(a, b, w.now, step) * 1000
		if math.IsNaN(t) {
			w.atNaN = true
			return 0
		}
		a, b = clampF(t), clampF(t)
	}
	off := n.offset.at(step)
	a, b = sub(a, off), sub(b, off)
	child := &n.children[0]
	if n.wrapper && !w.points {
		return w.span(child, a, b, step)
	}
	if n.subquery || (n.implicit && w.points) {
		win := n.window.at(step)
		if win <= 0 {
			win = step
		}
		inner := step
		if n.hasStep {
			if s := n.step.at(step); s > 0 {
				inner = s
				if w.minSubStep == 0 || s < w.minSubStep {
					w.minSubStep = s
				}
			}
		}
		lo, hi := sub(a, win), b
		if w.points {
			// VictoriaMetrics (1.79.5 and since) evaluates a subquery from a step and its staleness interval earlier,
			// to a step later: 5 minutes at a step of 25 ms are 12,000 points (found by an attacker's review).
			lo, hi = sub(lo, staleness+inner), clamp(clamp(hi)+clamp(inner))
		}
		// What a function inside makes is rolled up at this level's points, a series of each (an attacker's review:
		// `max_over_time(count_values_over_time("v", x[20m])[20m:20m])` at a step of 1.2 s was counted at the
		// subquery's 5 points, and built 30,600 series of 3,001, 1.09 GB), beside the series it rolls up.
		was := w.outer
		// Capped far above any bound, so that many names over nested subqueries cannot overflow it.
		w.outer = int64(min(float64(max(n.series, 1))*float64(points+w.outer), 1<<53))
		w.aligned++
		w.steps = clamp(w.steps + clamp(inner))
		read := w.span(child, lo, hi, inner)
		w.steps = clamp(w.steps - clamp(inner))
		w.outer = was
		w.aligned--
		if w.points && n.subquery {
			// Counted as the range's points are, (b-a)/step, and at least the one point of an instant query.
			at := max(b-a, 0)/max(step, 1) + 1
			eighths := n.weight
			if eighths == 0 {
				eighths = cheapEighths
			}
			work := float64(at) * float64(max(win/max(inner, 1), 1)) * float64(eighths) / 8
			if w.counts != nil {
				// Over each series the subquery's query makes, at what a point costs its function there.
				work *= read * float64(max(n.whole, eighths)) / float64(eighths)
			}
			w.work += work
			if n.overTime {
				w.overTimeValues(at, (max(b-a, 0)+win)/max(inner, 1)+1)
			}
		}
		w.fanOut(n, a, b, step, win, inner, points) // after what it reads: an inner one is listed first
		w.hold(read*float64(max(n.series, 1)), points)
		return w.rolledUp(n, read, (max(b-a, 0)+win)/max(inner, 1)+1)
	}
	if child.kind == kindSelector {
		win := max(step, w.lookback)
		if n.window != (lin{}) {
			if v := n.window.at(step); v > 0 {
				win = v
			}
		}
		w.add(sub(a, win), b)
		read := w.series(n.sel, sub(a, win), b, step)
		if w.points && w.interval > 0 && (n.rawWeight > 0 || w.counts != nil && n.whole > 0) {
			// A window over raw samples: the function reads each of its samples at each point, however many the data
			// has, which only VictoriaMetrics knows; at most one per interval is assumed (the gateway may count them,
			// Range.Windows). `count(quantile_over_time(0.5, x[1d]))` over a day at 8 s took v1.151 two minutes of both
			// cores for 4 series of 1 s samples, past its -search.maxQueryDuration (an attacker's review).
			at := max(b-a, 0)/max(step, 1) + 1
			samples := win/w.interval + 1
			assumed := float64(at) * float64(samples)
			wd := Window{Selector: n.sel, From: a, To: b, Step: max(step, 1), Window: win, Weight: n.rawWeight, Assumed: assumed, Alt: w.alt}
			if w.windows != nil {
				*w.windows = append(*w.windows, wd)
			}
			eighths := float64(n.rawWeight)
			if w.counts != nil {
				eighths = float64(max(n.whole, n.rawWeight))
			}
			w.work += w.samples(wd, read) * eighths / 8
			if n.overTime {
				w.overTimeValues(at, (max(b-a, 0)+win)/w.interval+1)
			}
		}
		w.fanOut(n, a, b, step, win, 0, points)
		w.fetched += read
		w.hold(read*float64(max(n.series, 1)), points)
		w.hold(read, seriesPoints)
		return w.rolledUp(n, read, (max(b-a, 0)+win)/max(w.interval, 1)+1)
	}
	return w.span(child, a, b, step)
}

// seriesPoints is what VictoriaMetrics holds of each series an arm reads beside its points, in points of 8 bytes:
// its name and labels, and what fetching it takes (an attacker's review: 300 arms of a selector of 20,000 series of
// 200-byte label sets, an instant query of 6×10^6 points, took v1.151 to 6 GB, about 1 KB a series an arm).
const seriesPoints = 128

// hold adds to w.held the points of made series evaluated at points, for Work.Total. The functions that make a series
// of each bucket or value they meet are not held here: -search.maxFanOutPoints counts them, finer (FanOuts).
func (w *walk) hold(made float64, points int64) {
	if w.counts != nil {
		w.held += made * float64(points)
	}
}

// The counts of the series a walk over every series (Work.Total) reads and makes.

// Counts is what Work.Total asks the read backends: Series, the series of a selector that have samples in [from, to]
// (ms: what the walk reads of it, widened by what VictoriaMetrics may read beyond: series); Samples, the samples a
// window over raw samples reads of all of them at all its points (at most).
type Counts struct {
	Series  func(selector string, from, to int64) (float64, error)
	Samples func(w Window) (float64, error)
}

// series is what w.counts counts of the selector sel, read over [from, to] at step; 0 for the walks that count no
// series. The first error stops the counts, and is Work.Total's.
//
// The span is widened to what VictoriaMetrics may read there beyond this model: it aligns a subquery's range to the
// subquery's step, and a range query's to its step where its cache is on, before it evaluates an @ in it, at every
// level (attackers' reviews: `count(max_over_time((m @ end())[3h:7s]))` was counted over a window of 7 s at the walk's
// end(), which held no sample, and the query read 2,000 series at VictoriaMetrics' aligned one, 16.9 s of v1.151's CPU;
// widened by the steps of the selector and the request only, an @ under a subquery of a day's step moved by up to a
// day); and a selector without a window finds the last sample up to its staleness interval back, whatever the step.
func (w *walk) series(sel string, from, to, step int64) float64 {
	if w.counts == nil || w.countErr != nil {
		return 0
	}
	slack := clamp(clamp(step) + w.steps)
	n, err := w.counts.Series(sel, sub(from, slack+staleness), clamp(clamp(to)+slack))
	if err != nil {
		w.countErr = err
	}
	return n
}

// samples is what the window win reads of the series of its selector, read of them: per series, the samples assumed
// at one per interval; for Work.Total, in all, the least of that and what w.counts counts.
func (w *walk) samples(win Window, read float64) float64 {
	if w.counts == nil {
		return win.Assumed
	}
	if w.countErr != nil || read == 0 {
		return 0
	}
	n, err := w.counts.Samples(win)
	if err != nil {
		w.countErr = err
	}
	return min(win.Assumed*read, n)
}

// rolledUp is the most series the rollup n makes of read, the series it reads, over values samples or points of a
// window: those its function makes of each (node.series), or its fan: a bucket of each sample, a series of each
// value, a series of each phi.
func (w *walk) rolledUp(n *node, read float64, values int64) float64 {
	made := read * float64(max(n.series, 1))
	if f := n.fan; f != nil {
		most := f.most
		if f.byData {
			most = min(most, max(values, 1))
		}
		made *= float64(most)
	}
	return made
}

// seriesMade is the most series the function, aggregation or operator n makes of read, the series its args make, at
// points points: an operator's or a function's, no more than its args together (`or` makes both sides'; the others, a
// series of one side's each); an aggregation's, a series of each of its groups (at most of each it reads), one by
// nothing; histogram's and count_values', a series of each bucket or value each of its points meets, at most one of
// each series it reads at each.
func seriesMade(n *node, read float64, points int64) float64 {
	switch {
	case n.one:
		return min(read, 1)
	case n.histogram:
		return read * float64(min(points, histogramBuckets))
	case n.countValues:
		return read * float64(points)
	case n.mult > 0:
		return read * float64(n.mult)
	}
	return read
}

// overTimeValues counts a count_values_over_time evaluated at points that may meet values distinct values: as many
// series of each series it reads, each as long as the points (VictoriaMetrics allocates each whole). Its memory is
// bounded as count_values' is, as one evaluated at the larger of the two: a range query of it over a day of 1 s samples
// at 8 s ran v1.151 out of memory from one series, and an instant one over two days made 9.5 million series of 60
// (an attacker's review).
func (w *walk) overTimeValues(points, values int64) { w.ot.add(values, max(points, values)) }

// fanOut sums the load of the functions that make a series of each value they meet: each adds the series it may make
// of one series times their length to cost, and counts in count; most is the most series of one.
type fanOut struct {
	cost        float64
	count, most int64
}

func (f *fanOut) add(series, length int64) {
	f.cost += float64(series) * float64(length)
	f.count++
	f.most = max(f.most, series)
}

// load is f as CountValuesLoad gives it: points is what one function would be evaluated at for as much memory.
func (f *fanOut) load() (count, most, points int64) {
	return f.count, f.most, int64(math.Ceil(math.Sqrt(f.cost)))
}

func (w *walk) add(from, to int64) {
	if from < w.from {
		w.from = from
	}
	if to > w.to {
		w.to = to
	}
}

// Times are kept within ±limit so that no sum of a time and a window overflows.
const limit = int64(1) << 61

func clamp(v int64) int64 { return max(-limit, min(limit, v)) }

func clampF(v float64) int64 {
	switch {
	case math.IsNaN(v):
		return 0
	case v >= float64(limit):
		return limit
	case v <= -float64(limit):
		return -limit
	}
	return int64(v)
}

func sub(a, d int64) int64 { return clamp(clamp(a) - clamp(d)) }

// spanOf is the time range [from, to] that root reads when evaluated over [a, b] at step, at time now, with the
// request's max_lookback (0 for none).
func spanOf(root *node, a, b, step, now, lookback int64) walk {
	w := walk{now: now, lookback: lookback, from: math.MaxInt64, to: math.MinInt64}
	w.span(root, a, b, step)
	return w
}

// reach is the span of a query without @ modifiers reduced to a few numbers when compiled, so that a check of a
// cached query is arithmetic rather than a walk of its tree: without @ every selector reads back from the start of
// the range by a fixed sum of the offsets and windows above it, plus its own window, which may be the step it is
// evaluated at or the request's max_lookback. The three kinds of selectors give three maxima.
type reach struct {
	// ok says the query qualifies: no @ modifier, no duration in steps (5i), every duration far from the clamp.
	ok bool
	// any says some selector is read at all.
	any bool
	// fixed is the longest reach of a selector with its own window: offsets and windows above it, and its window.
	fixed int64
	// own and ownBack are for the selectors without a window under a subquery with an explicit step s: the longest
	// reach above one plus its s, and the longest reach above one (plus the max_lookback when that is longer).
	own, ownBack int64
	// req is the longest reach above a selector without a window read at the request's step.
	req int64
	// minSubStep is the finest explicit subquery step; 0 when none.
	minSubStep int64
}

// reachBound keeps the sums of a reach exact: a duration beyond it (centuries) sends the query to the walk, which
// clamps.
const reachBound = int64(1) << 50

// reachOf reduces root to its reach; reach.ok is false when the query must be walked.
func reachOf(root *node) reach {
	r := reach{ok: true, fixed: math.MinInt64, own: math.MinInt64, ownBack: math.MinInt64, req: math.MinInt64}
	r.add(root, 0, 0)
	return r
}

// add adds what n reads when evaluated back to c before the start of the range, at the request's step (s == 0) or
// at the explicit step s of a subquery above it.
func (r *reach) add(n *node, c, s int64) {
	if !r.ok {
		return
	}
	if c < -reachBound || c > reachBound {
		r.ok = false
		return
	}
	bare := func(c int64) {
		r.any = true
		if s == 0 {
			r.req = max(r.req, c)
		} else {
			r.own, r.ownBack = max(r.own, c+s), max(r.ownBack, c)
		}
	}
	switch n.kind {
	case kindNone:
		return
	case kindSelector:
		bare(c)
		return
	case kindGroup:
		for i := range n.children {
			r.add(&n.children[i], c, s)
		}
		return
	}
	if n.wrapper {
		r.add(&n.children[0], c, s) // read as the function's query (node.implicit)
		return
	}
	if n.at != nil || n.offset.b != 0 || n.window.b != 0 || (n.hasStep && n.step.b != 0) {
		r.ok = false
		return
	}
	off := n.offset.at(0)
	if off < -reachBound || off > reachBound {
		r.ok = false
		return
	}
	c += off
	child := &n.children[0]
	if n.subquery {
		win := n.window.at(0)
		if win <= 0 {
			if s == 0 {
				r.ok = false // the window is the request's step: walk
				return
			}
			win = s
		}
		if win > reachBound {
			r.ok = false
			return
		}
		if n.hasStep {
			if st := n.step.at(0); st > 0 {
				if st > reachBound {
					r.ok = false
					return
				}
				s = st
				if r.minSubStep == 0 || st < r.minSubStep {
					r.minSubStep = st
				}
			}
		}
		r.add(child, c+win, s)
		return
	}
	if child.kind == kindSelector {
		if win := n.window.at(0); n.window != (lin{}) && win > 0 {
			if win > reachBound {
				r.ok = false
				return
			}
			r.any = true
			r.fixed = max(r.fixed, c+win)
			return
		}
		bare(c)
		return
	}
	r.add(child, c, s)
}

// from is where the query begins to read when evaluated over a range starting at a, at step, with the request's
// max_lookback; math.MaxInt64 when it reads no series. It is what spanOf returns for a query of the reach.
func (r *reach) from(a, step, lookback int64) int64 {
	if !r.any {
		return math.MaxInt64
	}
	back := r.fixed
	if r.own != math.MinInt64 {
		back = max(back, r.own, r.ownBack+lookback)
	}
	if r.req != math.MinInt64 {
		back = max(back, r.req+max(step, lookback))
	}
	return clamp(a - back)
}

// CountValuesLoad is what the count_values of a query cost VictoriaMetrics, in points per series: Count of them are
// evaluated, one at Most points at most, and Points is the points one count_values would be evaluated at for as much
// memory as all of them (the root of the sum of their squares: v1.150 evaluates a union's args at once, and the
// rewrite of a token with several filters copies a rollup call into each arg of one).
type CountValuesLoad struct {
	Count, Most, Points int64
	// OverTime is the same for count_values_over_time: Count of them, one making up to Most series of each series it
	// reads, and Points its load as count_values at that many points.
	OverTime struct{ Count, Most, Points int64 }
}

// CountValues returns the load of the count_values of the query q when q is evaluated over rng, [a, b] (milliseconds;
// a == b for an instant query) at step, at time now. count_values makes a series of each value it meets, each as long
// as the evaluation, so its memory grows with the square of these points where most functions' grows with them:
// `count_values("v", time())[29000s:1s]` took VictoriaMetrics 1.79.5 to 7 GB. A subquery [W:s] evaluated over [a, b]
// evaluates its query over [a-W, b] at s, from a step and 5 minutes of staleness earlier, nested ones within that; an
// offset, an @ or a window over anything but a selector, and a rollup function's arg that is neither a window nor a
// selector, are subqueries at the step they are evaluated at; an @ narrows what is under it to its time (one it cannot
// resolve is taken not to). A query not cached yet is parsed through pq; a gate's refusal, a query that does not parse
// (tree), or a range that cannot be read, is an error.
func CountValues(q string, pq *enforce.Parsed, instant bool, rng *Range, now int64) (CountValuesLoad, error) {
	if !MentionsCountValues(q) {
		return CountValuesLoad{}, nil
	}
	w, alt, err := walked(q, pq, counted, hasCountValues, instant, rng, now)
	if w == nil {
		return CountValuesLoad{}, err
	}
	if alt != nil && alt.cv.cost+alt.ot.cost > w.cv.cost+w.ot.cost {
		w = alt
	}
	var load CountValuesLoad
	load.Count, load.Most, load.Points = w.cv.load()
	load.OverTime.Count, load.OverTime.Most, load.OverTime.Points = w.ot.load()
	return load, nil
}

// SubqueryWork returns the subquery points the rollup functions over the subqueries of q read per series when q is
// evaluated over rng at time now: for each subquery, the
// points it is evaluated at times the points of its window, walked as CountValues walks them. VictoriaMetrics bounds
// the points of each subquery, not this product, nor does -search.maxQueryDuration stop a rollup midway:
// `max_over_time((quantile_over_time(0.5, (cpu)[1h:100ms]))[1h:100ms])`, 80 bytes, read 1.3×10^9 points per series
// and took v1.151 38 s of CPU for each series (an attacker's review). A point weighs what it costs the function over
// it (subEighths). Only a gate's refusal, or a range that cannot be read, is an error.
func SubqueryWork(q string, pq *enforce.Parsed, instant bool, rng *Range, now int64) (float64, error) {
	if strings.IndexByte(q, '[') < 0 && strings.IndexByte(q, '(') < 0 {
		// No window and no function: no subquery, nor a rollup over a selector. A window over anything but a
		// selector is a subquery without a colon (`max_over_time(rate(x[5m])[1h])`): a first version skipped queries
		// without one, and `max_over_time(quantile_over_time(0.5, (cpu*1)[1h])[1h])` at step=100ms took v1.151 38 s
		// of CPU per series (a review); a rollup function over a selector without a window reads one of the step
		// (`quantile_over_time(0.99, x)` at step=30d: another review).
		return 0, nil
	}
	w, alt, err := walked(q, pq, subqueried, hasSubquery, instant, rng, now)
	if w == nil {
		return 0, err
	}
	if alt != nil {
		return max(w.work, alt.work), nil
	}
	return w.work, nil
}

// Work is a query ready for the walk over all the series it reads (Total): its tree and its range, read, which the
// walk uses and nothing else of the request (the counts of a query run on while the request that parsed it may be
// gone). The walk is SubqueryWork's over every series: each subquery's points times the points of its window times the
// series its query makes there, and each window over raw samples of a function that reads its every sample, the
// samples it reads of all its series, each weighed by what it costs the function (wholeEighths). VictoriaMetrics
// bounds neither: `count(max_over_time(m[3h:1s]))` at step=1s over 3 hours, 5.8×10^7 points a series, within
// -search.maxSubqueryWindowPoints, took v1.151 74.5 s of CPU over a team's 2,000 series (an attacker's review).
//
// The walk also holds the points of the series the query makes (Load.Held): every selector, rollup and subquery, and
// the calls that make several series of each they read (quantiles' phis), each over the points it is evaluated at, all
// its arms added up, since VictoriaMetrics evaluates every arg of a union or an operator before it joins them. No limit
// of VictoriaMetrics sums them: each arm's selector is bounded alone (-search.maxUniqueTimeseries), and a union of 200
// arms of one selector over 50 of a team's series took v1.151 from 648 to 1,267 MB, ten arms of `quantiles` of 20 phis
// to 1 GB (an attacker's review).
type Work struct {
	c                         *compiled
	instant                   bool
	a, b, step, now, interval int64
}

// Load is what Work.Total counts of a query over all the series it reads.
type Load struct {
	// Work is the points its rollups read over subqueries and windows over raw samples, weighed by what they cost.
	Work float64
	// Held is the points of the series its selectors, rollups, subqueries and the calls that make several series of
	// each they read make, all of them added up.
	Held float64
}

// UncountedArms is the most series a query may make of one series of each selector it reads, added up over its
// selectors, rollups, subqueries and phis as Load.Held adds them, for its Held not to be counted (ManyArms): a
// query of a few arms holds what as many plain queries would, which VictoriaMetrics bounds arm by arm and the read
// slots bound query by query. Dashboards' queries hold fewer: `sum(rate(a[5m])) / sum(rate(b[5m]))` 2,
// `max_over_time(rate(x[5m])[1h:1m])` 2, `quantiles("phi", 0.5, 0.9, 0.99, x) by (job)` 4.
const UncountedArms = 10

// ManyArms tells whether the query makes more series of one series of each selector than UncountedArms, added up
// as Load.Held adds them: only then is its Held worth counting.
func (wk *Work) ManyArms() bool { return wk.c.arms > UncountedArms }

// Selectors is how many selectors the query has, each read apart (a union of one selector at 600 offsets read it 600
// times: an attacker's review). A query of more than UncountedArms has its Work.
func (wk *Work) Selectors() int { return wk.c.selectors }

// Numbers tells whether the query makes series of no selector (numbers, time()): only then may they alone hold more
// than a bound on Held.
func (wk *Work) Numbers() bool { return wk.c.numbers > 0 }

// manyNumbers is the most series of no selector (numbers, time(), vector(1)) a query may make for its Work not to be
// prepared for them: at the 11,000 points a range query may ask, 100 hold 1.1×10^6, far below any bound on Held.
const manyNumbers = 100

// tally counts the selectors of n and the series of no selector it makes.
func tally(n *node) (selectors, numbers int) {
	if n.kind == kindSelector {
		selectors++
	}
	numbers = int(n.nones)
	for i := range n.children {
		s, m := tally(&n.children[i])
		selectors, numbers = selectors+s, min(numbers+m, math.MaxInt32)
	}
	return selectors, numbers
}

// prepared says a query's Work is worth preparing: it has what Load.Work counts, arms enough for Load.Held to be
// counted, or series of no selector enough to be judged on them alone.
func prepared(n *node) bool {
	if hasWork(n) || heldArms(n) > UncountedArms {
		return true
	}
	_, numbers := tally(n)
	return numbers > manyNumbers
}

// PrepareWork is q's Work when evaluated over the range read gives (read only when q has what the walk counts) at time
// now, windows over raw samples assumed to hold a sample per interval (ms); nil when the walk counts nothing in it (no
// subquery, no window over raw samples it counts, few arms and numbers, a step VictoriaMetrics refuses). A gate's
// refusal, a query that does not parse (tree), or a range that cannot be read, is an error.
func PrepareWork(q string, pq *enforce.Parsed, instant bool, read func() (a, b, step int64, err error), interval, now int64) (*Work, error) {
	if enforce.OneSelector(q) {
		return nil, nil // not looked up nor parsed again: a dashboard variable's thousands of values, past 16 KiB (a review)
	}
	c, err := tree(q, pq, worked, prepared)
	if c == nothingCounted {
		return nil, err
	}
	a, b, step, err := read()
	if err != nil || step <= 0 {
		return nil, err // a step VictoriaMetrics refuses goes on to it
	}
	return &Work{c: c, instant: instant, a: a, b: b, step: step, now: now, interval: interval}, nil
}

// Total is the load of wk over the series and samples c counts; the first error of c is Total's.
func (wk *Work) Total(c *Counts) (Load, error) {
	w, alt := run(wk.c, wk.instant, wk.a, wk.b, wk.step, wk.now, &Range{SampleInterval: wk.interval, counts: c})
	switch {
	case w.countErr != nil:
		return Load{}, w.countErr
	case alt != nil && alt.countErr != nil:
		return Load{}, alt.countErr
	case alt != nil:
		return Load{Work: max(w.work, alt.work), Held: max(w.held, alt.held)}, nil
	}
	return Load{Work: w.work, Held: w.held}, nil
}

// heldArms is what Load.Held adds up of n over one series of each selector and one point: the series n's selectors,
// rollups, subqueries and the calls that make several of each make. The functions that make a series of each bucket
// or value they meet count one: -search.maxFanOutPoints bounds them.
func heldArms(n *node) float64 {
	_, held := arms(n)
	return held
}

// arms is what n makes of one series of each selector, and what heldArms adds up for it, as span walks it.
func arms(n *node) (made, held float64) {
	switch n.kind {
	case kindNone:
		return 0, 0
	case kindSelector:
		return 1, 1
	case kindGroup:
		read := 0.0
		for i := range n.children {
			m, h := arms(&n.children[i])
			read, held = read+m, held+h
		}
		switch {
		case n.one:
			return min(read, 1), held
		case n.mult > 0:
			made = read * float64(n.mult)
			return made, min(held+made, 1<<53)
		}
		return read, held
	}
	child := &n.children[0]
	made, held = arms(child)
	made *= float64(max(n.series, 1))
	if child.kind == kindSelector && !n.subquery && !n.implicit {
		return made, made // the rollup reads the selector's samples as it goes
	}
	return made, min(held+made, 1<<53)
}

// tree is q's span tree from cache, compiled and kept there when not yet: nothingCounted where has finds nothing in it.
// A query that does not parse, or that nests deeper than compile goes, is refused (400) and not kept.
func tree(q string, pq *enforce.Parsed, cache *gencache.Cache[string, *compiled], has func(*node) bool) (*compiled, error) {
	part := pq.Partition()
	if c, ok := cache.Get(part, q); ok {
		return c, nil
	}
	e, err := pq.Parse(q)
	switch {
	case enforce.IsGateRefusal(err):
		return nothingCounted, err
	case err != nil:
		// The query as it goes upstream: the enforcer parsed the client's, and its rewrite may make it one the parse
		// refuses (a level deeper: `absent` of a token's filters under label_set). Read as reading nothing, it would
		// pass every limit (a review); it is refused, and not kept.
		return nothingCounted, httperr.WithQuery(http.StatusBadRequest, "cannot parse the query as it goes upstream to check "+
			"the query limits: "+err.Error(), "cannot parse the query as it goes upstream to check the query limits: "+httperr.Elided)
	}
	var unresolved string
	root := compile(e, 0, &unresolved)
	if unresolved == nestedTooDeeply {
		// Every walk would read such a query as reading nothing (an attacker's review got past every limit so).
		return nothingCounted, httperr.New(http.StatusBadRequest, "the query nests too deeply for the query limits to "+
			"judge it; simplify it")
	}
	c := nothingCounted
	if has(&root) {
		re, ok := e.(*metricsql.RollupExpr)
		c = &compiled{root: root, rangeRoot: ok && re.Window != nil, arms: heldArms(&root)}
		c.selectors, c.numbers = tally(&root)
	}
	if len(q) <= cacheMaxQueryLen {
		cache.Put(part, strings.Clone(q), c)
	}
	return c, nil
}

// walked walks q as CountValues and SubqueryWork do, its tree compiled once and kept in cache (per isolation unit,
// as the enforcer caches its rewrites) when has finds in it what they count; nil when it has none (one that does not
// parse is tree's error). alt is the walk of the other reading of an instant query that is
// one rollup: /api/v1/query runs it on a path of its own (instantReading, as parsed.instantSpan reads it), where
// `count_values("v", x)[12000i:1h]` is 12,000 points, not 1,000 at the default step of 5 minutes; nil when the same.
func walked(q string, pq *enforce.Parsed, cache *gencache.Cache[string, *compiled], has func(*node) bool,
	instant bool, rng *Range, now int64) (w, alt *walk, err error) {
	c, err := tree(q, pq, cache, has)
	if c == nothingCounted {
		return nil, nil, err
	}
	a, b, step, err := rng.get()
	if err != nil || step <= 0 {
		return nil, nil, err // a step VictoriaMetrics refuses goes on to it
	}
	w, alt = run(c, instant, a, b, step, now, rng)
	return w, alt, nil
}

// run walks the tree c over [a, b] at step, as walked does, with what rng gives the walks to fill.
func run(c *compiled, instant bool, a, b, step, now int64, rng *Range) (w, alt *walk) {
	cw := countWalk(now, rng.SampleInterval)
	cw.windows, cw.fans, cw.counts = rng.Windows, rng.fans, rng.counts
	cw.rootSubquery, cw.steps = instant && c.rangeRoot, step
	cw.span(&c.root, a, b, step)
	if r := c.root.unwrapped(); instant && r.kind == kindRollup {
		if reading, changed := instantReading(r, step); changed {
			wa := countWalk(now, rng.SampleInterval)
			wa.windows, wa.fans, wa.alt, wa.rootSubquery = rng.Windows, rng.fans, true, cw.rootSubquery
			wa.counts, wa.steps = rng.counts, step
			wa.span(&reading, a, b, step)
			alt = &wa
		}
	}
	return &cw, alt
}

// Range is the range a query is evaluated over, [a, b] at step (milliseconds), which Read gives (an error for args it
// cannot read) the first time a walk needs it: most queries have no count_values nor subquery, and their args are not
// read for them.
type Range struct {
	Read func() (a, b, step int64, err error)
	// SampleInterval is the least time between two samples of a series the walks assume, for the windows over raw
	// samples (-search.minSampleInterval, ms); 0 leaves those uncounted.
	SampleInterval int64
	// Windows, when set, gets each window over raw samples the walks count at SampleInterval, once for each time
	// they count it.
	Windows *[]Window
	// fans is FanOuts' list; counts Work.Total's.
	fans       *[]FanOut
	counts     *Counts
	a, b, step int64
	err        error
	read       bool
}

func (r *Range) get() (a, b, step int64, err error) {
	if !r.read {
		r.a, r.b, r.step, r.err = r.Read()
		r.read = true
	}
	return r.a, r.b, r.step, r.err
}

// Window is a window over raw samples a function that sorts or counts it reads at each point of its evaluation: the
// points From, From+Step, ..., To (ms, as VictoriaMetrics aligns them, to a step), each reading Selector's samples in
// (t-Window, t]. Weight is what a sample costs the function, in eighths, and Assumed the samples a series was
// counted to read there at SampleInterval. Alt marks a window of the other reading of an instant query that is one
// rollup (instantReading): VictoriaMetrics runs one reading or the other, and the work is the larger of the two.
type Window struct {
	Selector               string
	From, To, Step, Window int64
	Weight                 uint32
	Assumed                float64
	Alt                    bool
}

// subqueried caches SubqueryWork's trees, as counted caches CountValues'.
var subqueried = newTreeCache()

// worked caches Work.Total's trees, as subqueried caches SubqueryWork's: it counts more windows over raw samples.
var worked = newTreeCache()

func hasWork(n *node) bool {
	return anyNode(n, func(n *node) bool { return n.kind == kindRollup && (n.subquery || n.rawWeight > 0 || n.whole > 0) })
}

func hasSubquery(n *node) bool {
	return anyNode(n, func(n *node) bool { return n.kind == kindRollup && (n.subquery || n.rawWeight > 0) })
}

// countWalk is a walk for CountValues: an empty span, subqueries walked over the range they are evaluated over.
func countWalk(now, interval int64) walk {
	return walk{now: now, from: math.MaxInt64, to: math.MinInt64, points: true, interval: interval}
}

// staleness is VictoriaMetrics' maxSilenceInterval, by which it starts a subquery earlier.
const staleness = int64(5 * 60 * 1000)

// MentionsCountValues tells whether q has the name count_values in any case of ASCII, as metricsql reads names; a
// query with other bytes than ASCII is taken to have it. A query that runs count_values says so, since the enforcer
// refuses an aggregate's name written with escapes (count\_values).
func MentionsCountValues(q string) bool { return mentions(q, false, "count_values") }

// mentions tells whether q has one of names in any case of ASCII, as metricsql reads names, or other bytes than ASCII,
// or, where escapes is set, a backslash: a function's name written with escapes is the function. Each of names has an
// underscore, which every place it appears at has too: the scan jumps from one underscore of q to the next (every
// read's query is scanned, twice; byte by byte, that was 2 % of the gateway's CPU per read).
func mentions(q string, escapes bool, names ...string) bool {
	if escapes && strings.IndexByte(q, '\\') >= 0 {
		return true
	}
	if !isASCII(q) {
		return true
	}
	for i := strings.IndexByte(q, '_'); i >= 0; {
		for _, name := range names {
			at := i - strings.IndexByte(name, '_')
			if at >= 0 && at+len(name) <= len(q) && strings.EqualFold(q[at:at+len(name)], name) {
				return true
			}
		}
		next := strings.IndexByte(q[i+1:], '_')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return false
}

// isASCII tells whether s has only ASCII bytes, eight at a time (the compiler loads the eight in one).
func isASCII(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if w&0x8080808080808080 != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// compiled is a query's span tree, as CountValues caches it.
// rangeRoot says the query is a window over anything alone, which /api/v1/query runs as a range query over it
// (QueryHandler's IsRollup), not as a subquery.
type compiled struct {
	root      node
	rangeRoot bool
	// arms is heldArms of root; selectors and numbers count its selectors and the series of no selector it makes.
	arms               float64
	selectors, numbers int
}

// nothingCounted stands in the cache for a query without what a walk counts.
var nothingCounted = &compiled{}

// counted caches CountValues' trees per isolation unit, as the enforcer caches its rewrites (enforce/cache.go).
var counted = newTreeCache()

func hasCountValues(n *node) bool {
	return anyNode(n, func(n *node) bool { return n.countValues || n.overTime })
}

// anyNode tells whether has holds for n or a node below it.
func anyNode(n *node, has func(*node) bool) bool {
	if has(n) {
		return true
	}
	for i := range n.children {
		if anyNode(&n.children[i], has) {
			return true
		}
	}
	return false
}

// newTreeCache is a cache of compiled span trees by query, per isolation unit, as the enforcer caches its rewrites
// (enforce/cache.go).
func newTreeCache() *gencache.Cache[string, *compiled] {
	return gencache.New(cacheBytes/4, func(q string, c *compiled) int { return len(q) + 64 + nodeBytes(&c.root) })
}

// nodeBytes is about what n's tree holds in memory.
func nodeBytes(n *node) int {
	c := int(unsafe.Sizeof(node{})) + len(n.sel)
	if n.fan != nil {
		c += 128 + len(n.fan.src)
	}
	for i := range n.children {
		c += nodeBytes(&n.children[i])
	}
	return c
}
