package enforce

import (
	"fmt"
	"math"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// VictoriaMetrics (1.79.5, the v1.150 cluster's vmselect, v1.151) also exits on times it cannot hold in an int64 of
// milliseconds, and on @ modifiers it cannot copy (found by an attacker's review):
//   - an @ time past that range, written (`time() @ 1e19`) or computed (`@ scalar(vector(1e19))`, `@ (end()*1e10)`);
//   - an @ whose time is itself a range, a subquery, an offset or an @ (`-(time() @ (time() @ 1))`): it copies a
//     query by printing it without the parentheses around the time, and cannot parse the copy;
//   - a duration past that range (`m[300000000y]` on 1.79.5) or a subquery step that overflows as it is aligned
//     (`rate(m[5m:99999999999d])`).
// So an @ time must be a number of seconds within maxAtSeconds, one of timeFuncs, or sums and differences of those and
// of durations, which VictoriaMetrics keeps in range (it clamps start and end); and no duration may pass
// maxDurationMillis, VictoriaMetrics' own bound on a query's step.

const (
	maxAtSeconds      = 1e11          // the year 5138, either way of 1970
	maxDurationMillis = 3153600000000 // 100 years
)

// timeFuncs are the functions of no args whose value is a time VictoriaMetrics keeps within range: the query's
// start and end (clamped), the time of each step between them, and the clock.
var timeFuncs = map[string]bool{"start": true, "end": true, "time": true, "now": true}

// checkTimes refuses the @ modifiers and durations of expr that would make VictoriaMetrics exit.
func checkTimes(expr metricsql.Expr) error {
	var err error
	metricsql.VisitAll(expr, func(x metricsql.Expr) {
		if err != nil {
			return
		}
		switch t := x.(type) {
		case *metricsql.DurationExpr:
			err = checkDuration(t)
		case *metricsql.RollupExpr:
			if t.At != nil {
				err = checkAt(t.At)
			}
		}
	})
	return err
}

func checkDuration(d *metricsql.DurationExpr) error {
	s := string(d.AppendString(nil))
	// A step-based duration (5i) counts as if the step were a second; the query's step is not known here.
	ms, perr := metricsql.DurationValue(s, 1000)
	if perr != nil || ms > maxDurationMillis || ms < -maxDurationMillis {
		return fmt.Errorf("the duration %s is longer than 100 years; VictoriaMetrics cannot run it", s)
	}
	return nil
}

// checkAt accepts an @ time that VictoriaMetrics keeps within range.
func checkAt(at metricsql.Expr) error {
	switch t := at.(type) {
	case *metricsql.NumberExpr:
		if math.Abs(t.N) <= maxAtSeconds {
			return nil
		}
	case *metricsql.DurationExpr:
		return checkDuration(t)
	case *metricsql.FuncExpr:
		if len(t.Args) == 0 && timeFuncs[strings.ToLower(t.Name)] {
			return nil
		}
	case *metricsql.BinaryOpExpr:
		if t.Op == "+" || t.Op == "-" {
			if err := checkAt(t.Left); err != nil {
				return err
			}
			return checkAt(t.Right)
		}
	}
	text := at.AppendString(nil)
	if len(text) > 64 {
		text = append(text[:61], "..."...)
	}
	return fmt.Errorf("the @ modifier's time must be a unix time in seconds (at most %g either way), start(), end(), time(), now(), or a sum or "+
		"difference of those and durations; VictoriaMetrics cannot run @ %s", float64(maxAtSeconds), text)
}
