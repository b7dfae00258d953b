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

// maxLimitOffset bounds limit_offset's limit and offset: far more series than any answer holds, well within an int.
const maxLimitOffset = math.MaxInt32

// maxPhis bounds the phi values of quantiles, quantiles_over_time and histogram_quantiles, each of which makes a
// series of every phi for each series (or group) it would otherwise make: 2,000 phis over a team's 300 series made
// 600,000, and ran v1.151, 1.79.5 and the cluster's vmselect out of memory in a 14 KB query (an attacker's review).
// Nested calls multiply: three of 20 phis, one in another, made 8,000 series of each (the review of the first
// version, which bounded each call alone). Dashboards ask for a few (0.5, 0.9, 0.99, 0.999).
const maxPhis = 20

// phiFanOut is the most series the calls of the quantiles family in x make of one, the phis of nested calls
// multiplied, and the name of the outermost call that reaches it; 1 and "" without one. depth bounds the walk as
// metricsql bounds a query's nesting.
func phiFanOut(x metricsql.Expr, depth int) (int, string) {
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
		if n, nm := phiFanOut(a, depth+1); n > most {
			most, name = n, nm
		}
	}
	if k, nm := phisOf(x); k > 0 {
		// Capped, so that deep nesting cannot overflow an int.
		most, name = min(most*k, 1<<30), nm
	}
	return most, name
}

// phisOf is how many phi values a call of the quantiles family gives, and its name; 0 for any other call.
func phisOf(x metricsql.Expr) (int, string) {
	switch x := x.(type) {
	case *metricsql.AggrFuncExpr:
		if strings.EqualFold(x.Name, "quantiles") {
			return len(x.Args) - 2, x.Name
		}
	case *metricsql.FuncExpr:
		if strings.EqualFold(x.Name, "quantiles_over_time") || strings.EqualFold(x.Name, "histogram_quantiles") {
			return len(x.Args) - 2, x.Name
		}
	}
	return 0, ""
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
	if n, name := phiFanOut(expr, 0); n > maxPhis {
		return fmt.Errorf("%s() and the calls of the quantiles family within it make %d series of each with their phi values; "+
			"at most %d phi values are allowed, nested calls multiplied, since each phi makes as many series as the call "+
			"would without it", name, n, maxPhis)
	}
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		if err != nil {
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
