package enforce

import (
	"fmt"
	"math"
	"strings"
	"time"

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
	maxAtTerms        = 64            // the terms of an @ time's sum
)

// MaxStep is the longest step a query may ask for. VictoriaMetrics takes up to 100 years, but a duration in steps
// (`3000000i`) is that many times the client's step, past an int64 of milliseconds with a step of 100 years (found by
// an attacker's review): durations in steps are weighed at this step, so a step bound and a duration bound together
// keep them in range. No dashboard asks for a point a year.
const MaxStep = 365 * 24 * time.Hour

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
	// A duration in steps (5i) counts at the longest step the gateway forwards; the query's own is not known here.
	ms, perr := metricsql.DurationValue(s, MaxStep.Milliseconds())
	if perr != nil || ms > maxDurationMillis || ms < -maxDurationMillis {
		return fmt.Errorf("the duration %s is longer than 100 years; VictoriaMetrics cannot run it", s)
	}
	return nil
}

// checkAt accepts an @ time that VictoriaMetrics keeps within range.
func checkAt(at metricsql.Expr) error {
	terms := 0
	return checkAtTerm(at, at, &terms)
}

// checkAtTerm accepts one term of the @ time at: each is within range, and so is their sum, as there are few.
func checkAtTerm(at, x metricsql.Expr, terms *int) error {
	if *terms++; *terms > maxAtTerms {
		return atError(at)
	}
	switch t := x.(type) {
	case *metricsql.NumberExpr:
		if math.Abs(t.N) <= maxAtSeconds {
			return nil
		}
	case *metricsql.DurationExpr:
		return checkDuration(t)
	case *metricsql.FuncExpr:
		name := strings.ToLower(t.Name)
		switch {
		case len(t.Args) == 0 && (timeFuncs[name] || name == "step"):
			return nil
		case name == "round" && (len(t.Args) == 1 || len(t.Args) == 2 && isDivisor(t.Args[1])):
			// round(end(), 3600): a time rounded stays one.
			return checkAtTerm(at, t.Args[0], terms)
		}
	case *metricsql.BinaryOpExpr:
		switch {
		case t.Op == "+" || t.Op == "-":
			if err := checkAtTerm(at, t.Left, terms); err != nil {
				return err
			}
			return checkAtTerm(at, t.Right, terms)
		case t.Op == "%" && isDivisor(t.Right):
			// end() - end() % 86400: a remainder is smaller than what it divides by.
			return checkAtTerm(at, t.Left, terms)
		}
	}
	return atError(at)
}

// isDivisor accepts the number a time is rounded to or taken modulo: at least 1, so that the result is a number too
// (end() % 0 is NaN, which VictoriaMetrics casts to no time it can hold).
func isDivisor(x metricsql.Expr) bool {
	n, ok := x.(*metricsql.NumberExpr)
	return ok && math.Abs(n.N) >= 1 && math.Abs(n.N) <= maxAtSeconds
}

func atError(at metricsql.Expr) error {
	text := at.AppendString(nil)
	if len(text) > 64 {
		text = append(text[:61], "..."...)
	}
	return fmt.Errorf("the @ modifier's time must be a unix time in seconds (at most %g either way), start(), end(), time(), now(), step(), or a few of those "+
		"and durations added, subtracted, rounded or taken modulo a number; VictoriaMetrics cannot run @ %s", float64(maxAtSeconds), text)
}
