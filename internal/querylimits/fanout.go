package querylimits

import (
	"strings"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// Two rollup functions make several series of each series they read: histogram_over_time a series of each bucket
// (vmrange) its windows' samples fall in, up to 488, and quantiles_over_time one of each phi it is given. VictoriaMetrics
// builds all of them, each as long as the points it evaluates, before it aggregates or answers them, unless the
// function is the only arg of an aggregation it does as it goes (sum, min, max, avg, count, sum2, geomean, any, group
// over a rollup of a selector: getIncrementalAggrFuncCallbacks and tryGetArgRollupFuncWithMetricExpr, the same in
// 1.79.5 and v1.151), which holds one series per group. Measured on v1.151: `histogram_over_time(x[5m])` over an hour at
// 8 s over 300 series of 1 s samples took its memory to 751 MB, which neither -search.maxMemoryPerQuery nor
// -search.maxResponseSeries stopped; under `count(...)` a thousand series left it flat. How many series a selector
// matches only the data knows: FanOuts lists each such function with what the gateway needs to ask the read backends.

// histogramBuckets is the most buckets histogram_over_time makes of one series: VictoriaMetrics' metrics.Histogram has
// 18 a decade from 10^-9 to 10^18, and one below and one above.
const histogramBuckets = 27*18 + 2

// maxValuesCounted stands for the distinct values count_values_over_time may meet in a series: no bound but the data's.
const maxValuesCounted = 1<<31 - 1

// fanNode marks the rollup node of a function that makes several series of each series it reads.
type fanNode struct {
	// name is the function's name, label the label that tells its series apart (vmrange, the phi label), most the
	// series it makes of one series (the aggregation histogram: the buckets of one group), and byData says it makes at
	// most one of each sample (a bucket is made by a sample that falls in it).
	name, label string
	most        int64
	byData      bool
	// src is what it reads, as the query prints it: a selector, or the query of a subquery; args the args before it,
	// as the query prints them, each followed by ", " (count_values_over_time's label).
	src, args string
	// group is the aggregation VictoriaMetrics does as it goes over it; nil when it builds the function's series.
	group *Grouping
	// moving says what it reads depends on the range or time it is evaluated over (moving).
	moving bool
	// valuesBy is count_values' own grouping, within each group of which it counts the distinct values apart.
	valuesBy *Grouping
	// several marks an aggregation of several args, whose series VictoriaMetrics joins (`histogram(x, x)`): src is the
	// first alone, and counts nothing of the others.
	several bool
}

// Grouping is an aggregation by or without labels (Op "", "by" or "without", Labels). Its limit, if any, is not kept:
// VictoriaMetrics holds up to that many groups in each of its workers, up to 32, and cuts them down only at the end
// (an attacker's review: `limit 20000` admitted a query that took v1.151 to 713 MB on 8 cores).
type Grouping struct {
	Op     string
	Labels []string
}

// fanOf is the fanNode of the call f, whose rollup arg is arg; nil when f makes one series of each.
func fanOf(f *metricsql.FuncExpr, arg metricsql.Expr) *fanNode {
	var fn *fanNode
	switch strings.ToLower(f.Name) {
	case "histogram_over_time":
		fn = &fanNode{name: "histogram_over_time", label: "vmrange", most: histogramBuckets, byData: true}
	case "quantiles_over_time":
		if len(f.Args) < 3 {
			return nil // VictoriaMetrics refuses it
		}
		// The label is the first arg's string; one given by an expression (VictoriaMetrics takes the name of the one
		// series it returns) is not known, and "" stands for any (an attacker's review).
		fn = &fanNode{name: "quantiles_over_time", most: int64(len(f.Args) - 2)}
		if s, ok := f.Args[0].(*metricsql.StringExpr); ok && s.S != "" {
			fn.label = s.S
		}
	case "count_values_over_time":
		if len(f.Args) != 2 {
			return nil // VictoriaMetrics refuses it
		}
		// A series of each distinct value of each series, at most one a sample: bounded per series by the window's
		// samples (span.go), and here, in all, by the data (an attacker's review: over 100 of a team's own series of
		// 1 s samples, an hour at 10 s took v1.151 to 2.6 GB).
		fn = &fanNode{name: "count_values_over_time", most: maxValuesCounted, byData: true,
			args: string(f.Args[0].AppendString(nil)) + ", "}
		if s, ok := f.Args[0].(*metricsql.StringExpr); ok && s.S != "" {
			fn.label = s.S
		}
	default:
		return nil
	}
	if re, ok := arg.(*metricsql.RollupExpr); ok {
		arg = re.Expr // a selector, or the query of a subquery
	}
	fn.src, fn.moving = string(arg.AppendString(nil)), moving(arg)
	return fn
}

// moving tells whether e's values at a point depend on more than that point's time: on the range or the time it is
// evaluated over (start(), end(), now(), an @ of time(), the range_ and running_ families, the functions that fill or
// smooth along the range), on chance (rand), or on which series the whole range holds (topk_max and its kin, limitk,
// limit_offset, any, an aggregation's limit). A count of it evaluated over another range bounds nothing (an
// attacker's review: `x and on() (end() == 1700000000)` is empty in any count but the query's own).
func moving(e metricsql.Expr) bool {
	found := false
	metricsql.VisitAll(e, func(e metricsql.Expr) {
		switch x := e.(type) {
		case *metricsql.FuncExpr:
			found = found || movingFunc(x.Name)
		case *metricsql.AggrFuncExpr:
			found = found || x.Limit > 0 || movingFunc(x.Name)
		case *metricsql.RollupExpr:
			if x.At != nil {
				metricsql.VisitAll(x.At, func(e metricsql.Expr) {
					if f, ok := e.(*metricsql.FuncExpr); ok && strings.EqualFold(f.Name, "time") {
						found = true
					}
				})
			}
		}
	})
	return found
}

// movingFunc tells whether the function or aggregation name is one moving marks.
func movingFunc(name string) bool {
	name = strings.ToLower(name)
	if strings.HasPrefix(name, "range_") || strings.HasPrefix(name, "running_") {
		return true
	}
	switch name {
	case "start", "end", "now", "rand", "rand_normal", "rand_exponential", "interpolate", "keep_last_value", "keep_next_value",
		"remove_resets", "smooth_exponential", "limit_offset", "buckets_limit",
		"any", "limitk", "outliersk", "outliers_mad", "outliers_iqr", "topk_avg", "topk_max", "topk_min", "topk_median",
		"topk_last", "bottomk_avg", "bottomk_max", "bottomk_min", "bottomk_median", "bottomk_last":
		return true
	}
	return false
}

// incremental are the aggregations VictoriaMetrics does as it goes over a rollup of a selector.
func incremental(name string) bool {
	switch strings.ToLower(name) {
	case "sum", "min", "max", "avg", "count", "sum2", "geomean", "any", "group":
		return true
	}
	return false
}

// groupOver is the Grouping of the aggregation ae when VictoriaMetrics does it as it goes over its arg: its only arg is
// a rollup function over a selector, with or without a window, not over a subquery.
func groupOver(ae *metricsql.AggrFuncExpr) *Grouping {
	if !incremental(ae.Name) || len(ae.Args) != 1 {
		return nil
	}
	f, ok := ae.Args[0].(*metricsql.FuncExpr)
	if !ok {
		return nil
	}
	i := rollupArg(f)
	if i < 0 {
		return nil
	}
	switch a := f.Args[i].(type) {
	case *metricsql.MetricExpr:
		if a.IsEmpty() {
			return nil
		}
	case *metricsql.RollupExpr:
		me, ok := a.Expr.(*metricsql.MetricExpr)
		if !ok || me.IsEmpty() || a.ForSubquery() {
			return nil
		}
	default:
		return nil
	}
	return &Grouping{Op: strings.ToLower(ae.Modifier.Op), Labels: ae.Modifier.Args}
}

// FanOut is a function that makes up to Most series (told apart by Label, "" when the query does not say which) of each
// series it reads, evaluated at Points points; where it is inside subqueries, the rollups over them make a series of
// each series that reaches them, of Outer points in all (their points added up), while the function's own are still
// held. Args are its args before the one it reads, as the query prints them,
// each followed by ", ". It reads Source: a selector's samples in (t-Window, t] at each of the points From, From+Step, ..., To (ms),
// or, when Subquery, the points of a query evaluated at Inner over those windows. ByData says it makes at most one
// series of each sample or point read. Group is the aggregation VictoriaMetrics does as it goes over it (nil: it
// builds every series). Alt marks one of the other reading of an instant query (Window.Alt). AtUnknown says it is
// under an @ whose time cannot be known before the query runs: From and To are then not what it reads. The aggregation
// count_values is listed as one too, with its own points (countValues).
type FanOut struct {
	Func, Args, Label, Source string
	Most                      int64
	ByData, Subquery          bool
	From, To, Step            int64
	Window, Inner             int64
	Points, Outer             int64
	Group                     *Grouping
	Alt, AtUnknown            bool
	// Moving says what it reads at a point depends on more than the point's time (moving): a count of it bounds nothing.
	Moving bool
	// ValuesBy is count_values' grouping (its by or without): it makes a series of each distinct value of each group.
	ValuesBy *Grouping
	// Several says it aggregates several args, of which Source is the first: what it makes is not counted.
	Several bool
	// InstantRange marks a count_values directly in the subquery an instant query is: /api/v1/query runs that
	// subquery's query as a range query over its window (QueryHandler's IsRollup), whose points are the multiples of its
	// step only where the request's time and the offset are (an attacker's review: `[1h:1s] offset 500ms`).
	InstantRange bool
}

// FanOuts lists the functions of q that make several series of each series they read, walked as SubqueryWork walks q
// when evaluated over rng at time now: an inner one before the query that holds it. Only a gate's refusal, or a range
// that cannot be read, is an error.
func FanOuts(q string, pq *enforce.Parsed, instant bool, rng *Range, now int64) ([]FanOut, error) {
	if !MentionsFanOut(q) {
		return nil, nil
	}
	var fans []FanOut
	r := *rng
	r.Windows, r.fans = nil, &fans
	if _, _, err := walked(q, pq, fanned, hasFanOut, instant, &r, now); err != nil {
		return nil, err
	}
	return fans, nil
}

// MentionsFanOut tells whether q may call histogram_over_time, quantiles_over_time, count_values_over_time,
// count_values or histogram (written with escapes too), which FanOuts lists.
func MentionsFanOut(q string) bool {
	return mentions(q, true, "histogram_over_time", "quantiles_over_time", "count_values") || hasWordFold(q, "histogram")
}

// hasWordFold tells whether q has word (lower case ASCII letters, without an underscore: mentions' scan does not find
// it) in any case of ASCII as a name of its own, neither byte beside it one a name may hold: `histogram(x)`, not
// `histogram_quantile` nor `my_histogram`. It looks for the word's fifth letter in either case, a vectorised search each
// (every read's query is scanned: a search for either case of the first letter, byte by byte, cost a fifth more than
// mentions' whole scan).
func hasWordFold(q, word string) bool {
	const at = 4
	for _, c := range [2]byte{word[at], word[at] - 'a' + 'A'} {
		for i := at; i < len(q); {
			j := strings.IndexByte(q[i:], c)
			if j < 0 {
				break
			}
			start := i + j - at
			end := start + len(word)
			if end <= len(q) && strings.EqualFold(q[start:end], word) && (start == 0 || !nameByte(q[start-1])) &&
				(end == len(q) || !nameByte(q[end])) {
				return true
			}
			i += j + 1
		}
	}
	return false
}

// nameByte says whether b may be part of a name in MetricsQL (bytes past ASCII, which may too, make mentions true).
func nameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == ':' || b == '.'
}

// CallsFanOut tells, as metricsql reads q, whether q calls one of the functions FanOuts lists, and whether one of them
// is counted at the multiples of its step, as count_values and histogram are (countValues): a name written with
// escapes, or in another case, is the function, while a backslash or a byte past ASCII elsewhere (a regexp's `\\.`,
// a label value in another script), which MentionsFanOut must take to be one, is not. A query whose parse the gate
// refused is taken to call both.
func CallsFanOut(q string, pq *enforce.Parsed) (fanOut, countValues bool) {
	if !MentionsFanOut(q) {
		return false, false
	}
	c, err := tree(q, pq, fanned, hasFanOut)
	if err != nil {
		return true, true
	}
	if c == nothingCounted {
		return false, false
	}
	return true, anyNode(&c.root, func(n *node) bool { return n.countValues || n.histogram && n.fan != nil })
}

// fanned caches FanOuts' trees, as counted caches CountValues'.
var fanned = newTreeCache()

func hasFanOut(n *node) bool { return anyNode(n, func(n *node) bool { return n.fan != nil }) }

// fanOut lists the function of n, if it makes several series of each series it reads, in w.fans: its rollup is
// evaluated over [a, b] at step, each window win over a selector's samples or, where inner > 0, over a subquery
// evaluated at inner, and its series hold points.
func (w *walk) fanOut(n *node, a, b, step, win, inner, points int64) {
	f := n.fan
	if f == nil || w.fans == nil {
		return
	}
	*w.fans = append(*w.fans, FanOut{Func: f.name, Args: f.args, Label: f.label, Source: f.src, Most: f.most, ByData: f.byData, Subquery: inner > 0,
		From: a, To: b, Step: max(step, 1), Window: win, Inner: inner, Points: points, Outer: w.outer, Group: f.group, Alt: w.alt,
		AtUnknown: w.atUnknown > 0, Moving: f.moving, ValuesBy: f.valuesBy, Several: f.several,
		InstantRange: (f.name == "count_values" || f.name == "histogram") && w.rootSubquery && w.aligned == 1})
}

// countValues lists the count_values of n, if it is one, in w.fans: evaluated over [a, b] at step, it makes a series
// of each distinct value its arg takes at those points, each as long as them: at most one of each point of each series
// of its arg, which only the data bounds (an attacker's review: over 10 of a team's own series of values that never
// repeat, an hour at 1 s took v1.151 to 1.1 GB; under a subquery of 10 minutes at 1 s over 300, past 14.5 GB). It is
// listed with its own points as From..To at Step, Subquery when they are a subquery's (multiples of Step). One point
// (From == To, an instant query's) makes no more series than its arg, but is listed all the same: before v1.88.0
// VictoriaMetrics compares each distinct value with each series of its group at each point, whose work grows with the
// square of the series. The aggregation histogram is listed the same way: a series of each bucket each of its groups'
// values fall in at those points, all of them as long as the points (an attacker's review: `histogram(x) by (s)` over
// 50 of a team's series of 121 samples, 8 hours at 3 s, took v1.151 and vmselect to half a GB, and a union of four
// such to 2.1 GB, while the same count_values was refused).
func (w *walk) countValues(n *node, a, b, step int64) {
	if !n.countValues && !(n.histogram && n.fan != nil) || step <= 0 || b < a {
		return
	}
	inner := int64(0)
	if w.aligned > 0 {
		inner = step
	}
	w.fanOut(n, a, b, step, 0, inner, (b-a)/step+1)
}
