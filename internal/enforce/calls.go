package enforce

import (
	"fmt"
	"math"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// VictoriaMetrics (1.79.5, the v1.150 cluster's vmselect, v1.151) panics, and the process exits, on a few calls that
// parse: limit_offset with a limit or an offset that is negative, past an int or not a number (a string, NaN: it
// slices its series with them), and a rollup function called without the argument it rolls up
// (sum(quantiles_over_time()), whose argument index is then -1). One such query of one team would stop the backend
// for every team, so checkCalls refuses them before anything is forwarded (found by an attacker's review).

// maxLimitOffset bounds limit_offset's limit and offset, and an aggregate's limit clause: far more series than any
// answer holds, well within an int. VictoriaMetrics v1.151 multiplies the aggregate's limit by its CPUs to estimate a
// query's memory, unchecked: sum(x) by (i) limit 4611686018427387905 came to 4 series on 4 CPUs, and passed
// -search.maxMemoryPerQuery where limit 1000 was refused (TestVMAggregateLimitWraps).
const maxLimitOffset = math.MaxInt32

// maxSeriesOfEach bounds the series a call makes of each series (or group) it would otherwise make: the phi values of
// quantiles, quantiles_over_time and histogram_quantiles, the functions aggr_over_time names, and the three rollups of
// the rollup family (four of rollup_candlestick) without a tag. 2,000 phis over a team's 300 series made 600,000, and
// ran v1.151, 1.79.5 and the cluster's vmselect out of memory in a 14 KB query (an attacker's review); 200 names in
// aggr_over_time took v1.151 to 277 MB over 300 series, and to 2.5 GB over a subquery of 10 series' histograms
// (another). Nested calls multiply: three of 20 phis, one in another, made 8,000 series of each (the review of the
// first version, which bounded each call alone). Dashboards ask for a few (0.5, 0.9, 0.99, 0.999).
const maxSeriesOfEach = 20

// seriesFanOut is the most series the calls of x make of one, those of nested calls multiplied (SeriesOf), and the
// name of the outermost call that reaches it; 1 and "" without one. depth bounds the walk as metricsql bounds a
// query's nesting.
func seriesFanOut(x metricsql.Expr, depth int) (int, string) {
	if depth > maxQueryDepth {
		return 1, ""
	}
	most, name := 1, ""
	var args []metricsql.Expr
	switch x := x.(type) {
	case *metricsql.FuncExpr:
		args = x.Args
	case *metricsql.AggrFuncExpr:
		args = x.Args
	case *metricsql.BinaryOpExpr:
		args = []metricsql.Expr{x.Left, x.Right}
	case *metricsql.RollupExpr:
		args = []metricsql.Expr{x.Expr}
	}
	for _, a := range args {
		if n, nm := seriesFanOut(a, depth+1); n > most {
			most, name = n, nm
		}
	}
	if k := SeriesOf(x); k > 1 {
		// Capped, so that deep nesting cannot overflow an int.
		most = min(most*k, 1<<30)
		switch x := x.(type) {
		case *metricsql.FuncExpr:
			name = x.Name
		case *metricsql.AggrFuncExpr:
			name = x.Name
		}
	}
	return most, name
}

// SeriesOf is how many series the call x makes of each series (or group) it would otherwise make: its phi values for
// the quantiles family, the functions it names for aggr_over_time, 3 for the rollup family (min, max and avg) and 4
// for rollup_candlestick (open, close, low, high) without a tag; 1 for any other expression. VictoriaMetrics builds
// each of them (getRollupConfigs), and aggr_over_time's names may repeat.
func SeriesOf(x metricsql.Expr) int {
	switch x := x.(type) {
	case *metricsql.AggrFuncExpr:
		if strings.EqualFold(x.Name, "quantiles") {
			return max(len(x.Args)-2, 1)
		}
	case *metricsql.FuncExpr:
		switch strings.ToLower(x.Name) {
		case "quantiles_over_time", "histogram_quantiles":
			return max(len(x.Args)-2, 1)
		case "aggr_over_time":
			if len(x.Args) == 0 {
				return 1
			}
			if names, ok := x.Args[0].(*metricsql.FuncExpr); ok && names.Name == "" {
				return max(len(names.Args), 1) // ("a", "b", ...)
			}
		case "rollup", "rollup_rate", "rollup_deriv", "rollup_increase", "rollup_delta", "rollup_scrape_interval":
			if len(x.Args) < 2 {
				return 3
			}
		case "rollup_candlestick":
			if len(x.Args) < 2 {
				return 4
			}
		}
	}
	return 1
}

// checkRunnable refuses what in expr would make VictoriaMetrics exit: its calls (checkCalls) and its times
// (checkTimes).
func checkRunnable(expr metricsql.Expr) error {
	if err := checkCalls(expr); err != nil {
		return err
	}
	return checkTimes(expr)
}

// checkCalls refuses the calls of expr that would make VictoriaMetrics exit, by a panic or out of memory.
func checkCalls(expr metricsql.Expr) error {
	var err error
	if n, name := seriesFanOut(expr, 0); n > maxSeriesOfEach {
		return fmt.Errorf("%s() and the calls within it make %d series of each series they read, one of each of their phi "+
			"values (the quantiles family), of the functions aggr_over_time names, or of the rollups of rollup (3) and "+
			"rollup_candlestick (4) without a tag; at most %d are allowed, nested calls multiplied", name, n, maxSeriesOfEach)
	}
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		if err != nil {
			return
		}
		if ae, ok := x.(*metricsql.AggrFuncExpr); ok && ae.Limit > maxLimitOffset {
			err = fmt.Errorf("%s(...) limit %d: the limit of an aggregate must be at most %d", ae.Name, ae.Limit, maxLimitOffset)
			return
		}
		fe, ok := x.(*metricsql.FuncExpr)
		if !ok {
			return
		}
		if metricsql.IsAggrFunc(fe.Name) {
			// Only escapes make a call of an aggregate's name a plain function (count\_values(...)). VictoriaMetrics
			// reads it either way: "unknown func" alone, the aggregate where it copies the query by printing it (`time() +
			// count\_values("v", x)` is answered), and so does whatever the gateway prints from the parse.
			err = fmt.Errorf("%q is an aggregate function written with escapes, which VictoriaMetrics reads as the aggregate or as no "+
				"function depending on where it stands: write it without escapes", fe.Name)
			return
		}
		if metricsql.IsRollupFunc(fe.Name) {
			if i := metricsql.GetRollupArgIdx(fe); i < 0 || i >= len(fe.Args) {
				err = fmt.Errorf("%s() is called without the series it rolls up (argument %d); VictoriaMetrics cannot run it", fe.Name, max(i, 0)+1)
				return
			}
		}
		if strings.EqualFold(fe.Name, "limit_offset") && len(fe.Args) == 3 {
			for i, what := range []string{"limit", "offset"} {
				if n, ok := fe.Args[i].(*metricsql.NumberExpr); !ok || !(n.N >= 0 && n.N <= maxLimitOffset) {
					err = fmt.Errorf("limit_offset's %s must be a number from 0 to %d, written as such", what, maxLimitOffset)
					return
				}
			}
		}
	})
	return err
}
