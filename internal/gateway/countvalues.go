package gateway

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/metrics"
	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
)

// Before v1.88.0 (1.79.5, Debian's), VictoriaMetrics' count_values finds the distinct values of a group's series, then
// for each of them walks every point of every series of the group: D×S×P comparisons for D distinct values of S series
// at P points, in one goroutine that no query timeout stops. Measured on 1.79.5: 2,000 of a team's own series of a
// value each over an hour at 15 s, 2.9 s of a core; 6,000 over 2 hours at 5 s, 451 s past its 30 s
// -search.maxQueryDuration. From v1.88.0 on (its /metrics lists -search.maxSeriesPerAggrFunc, which came with it),
// count_values builds a map of values as it goes, linear in the series, and v1.151 answered the second in 1.5 s.
//
// Where a read backend is older, or not known yet (SetBackendLinearCountValues), the gateway bounds those comparisons
// by -search.maxCountValuesComparisons, counted on the read backends as the memory the series made is counted
// (fanout.go), in the team's tenant and through its restriction, each count linear in the data (comparisons): for each
// group of the arg's series, its distinct values at most the distinct values of each series added up, which a fleet's
// 6,000 hosts of one version make 6,000; where that is past the bound, closer ones (the series' last points, their
// first and last, each point's values, whole numbers' least to most). One point (an instant query's) is counted
// exactly. A counted call whose arg holds a count_values is refused first: its counts would run it again.

var (
	countValuesAdmitted = metrics.NewCounter(`vmgateway_query_countvalues_measured_total{result="admitted"}`)
	countValuesRefused  = metrics.NewCounter(`vmgateway_query_countvalues_measured_total{result="refused"}`)
)

// judgeCountValuesWork refuses the count_values of fans, of one reading of a query (querylimits.Window.Alt), that
// would together make more than l.MaxCountValuesComparisons comparisons on a read backend whose count_values is not
// linear, as count counts them.
func judgeCountValuesWork(fans []querylimits.FanOut, alt bool, l Limits, count fanCounter, lookback string) error {
	if !l.countsComparisons() || count == nil {
		return nil
	}
	var cvs []querylimits.FanOut
	distinct := map[string]bool{}
	for _, f := range fans {
		if f.Alt != alt || f.Func != "count_values" {
			continue
		}
		const what = "the comparisons its count_values makes on a read backend before v1.88.0 (-search.maxCountValuesComparisons)"
		if f.Moving {
			return movingError(f, what)
		}
		if f.AtUnknown {
			return atUnknownError(f, what)
		}
		if f.InstantRange {
			return instantRangeError("-search.maxCountValuesComparisons")
		}
		cvs = append(cvs, f)
		distinct[fmt.Sprintf("%s %d %d %d", f.Source, f.From, f.To, f.Step)] = true
	}
	if len(cvs) == 0 {
		return nil
	}
	if len(distinct) > measureMax {
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("the query has %d calls of count_values whose comparisons the gateway "+
			"would count (-search.maxCountValuesComparisons); at most %d are counted for one query: split the query",
			len(distinct), measureMax))
	}
	limit, total := float64(l.MaxCountValuesComparisons), 0.0
	err := count(func(ask func(q, at string) (float64, error)) error {
		for _, f := range cvs {
			n, err := comparisons(f, ask, limit-total, lookback)
			if err != nil {
				return err
			}
			if total += n; total > limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		fanOutFailed.Inc()
		return countFailed(err, func(refused error) string {
			return fmt.Sprintf("the gateway could not count the comparisons count_values in the query makes (-search.maxCountValuesComparisons): %s", refused)
		}, func(err error) string {
			return fmt.Sprintf("the read backends did not count the comparisons count_values in the query makes "+
				"(-search.maxCountValuesComparisons): %s; send the query again", err)
		})
	}
	if total > limit {
		countValuesRefused.Inc()
		return httperr.New(http.StatusBadRequest, fmt.Sprintf("count_values in the query would make about %.3g comparisons on a read "+
			"backend before VictoriaMetrics v1.88.0 (each distinct value of its arg against each series of its group, at each of "+
			"its points: as the read backends counted them, its work grows with the square of the series, and no query timeout "+
			"stops it); at most %d are accepted (-search.maxCountValuesComparisons): count fewer distinct values (round them "+
			"first, as in `count_values(\"v\", round(x, 10))`), group it by more labels, select fewer series, or use a coarser "+
			"step or a shorter range; the operator may upgrade the read backends to v1.88.0 or later, where it is linear",
			total, l.MaxCountValuesComparisons))
	}
	countValuesAdmitted.Inc()
	return nil
}

// countsRerunCountValues refuses, where l counts the comparisons of count_values, a query with a call the gateway
// counts whose arg holds a count_values: any count of it runs that count_values again, over the count's span, whose
// work on such a backend grows with the square of the series and which no timeout stops, before its comparisons are
// judged (an attacker's review: a nested count_values refused on its count took 1.79.5 58 s of CPU in the counts, a
// histogram_over_time over one 122 s). Judged before any count.
func countsRerunCountValues(fans []querylimits.FanOut, l Limits) error {
	if !l.countsComparisons() {
		return nil
	}
	for _, f := range fans {
		if querylimits.MentionsCountValues(f.Source) {
			return httperr.New(http.StatusBadRequest, fmt.Sprintf("%s in the query reads %s, whose count_values the gateway would "+
				"run again to count what it makes, on a read backend before VictoriaMetrics v1.88.0, whose count_values work "+
				"grows with the square of the series (-search.maxCountValuesComparisons): aggregate the inner count_values "+
				"outside the call, or split the query; the operator may upgrade the read backends to v1.88.0 or later", f.Func, f.Source))
		}
	}
	return nil
}

// countsComparisons says whether l bounds the comparisons of count_values: a read backend's is not linear, or not known.
func (l Limits) countsComparisons() bool {
	return l.MaxCountValuesComparisons > 0 && !l.linearCountValues
}

// comparisons is about how many comparisons count_values f makes, at most: for each of its groups, its distinct values
// times its series, times its points. left is what the bound leaves for it.
//
// Every operand after a binary operator's first is put under label_del of a label no series has: 1.79.5 copies the
// first side's label values into the other side's selectors as filters, past the rollup functions that make those
// labels, and `sum((distinct(x) by (phi)) * (count(x) by (phi)))` over a quantiles_over_time's phi counted nothing (a
// second attacker's review: 2.5×10^9 comparisons admitted, 11 s of 1.79.5's CPU); it does not copy them into a label
// function.
func comparisons(f querylimits.FanOut, ask func(q, at string) (float64, error), left float64, lookback string) (float64, error) {
	by := countValuesGroups(f)
	points := float64(f.Points)
	arg, sub := withNames(f.Source + by)
	shield := func(x string) string { return fmt.Sprintf("label_del(%s, %q)", x, arg) }
	if f.From == f.To {
		// One point: its distinct values, as the distinct aggregate counts them, times its series, in each group.
		n, err := ask(fmt.Sprintf("sum((distinct(%[1]s)%[2]s) * %[3]s)", f.Source, by, shield("count("+f.Source+")"+by)),
			vmSeconds(f.To)+lookback)
		return n * points, err
	}
	// The arg as probeCountValues counts it: evaluated at f's step over its points and a step either side, bound once
	// in a WITH template, so that a count is no longer than a copy of it and a few of its own (a Grafana variable of many
	// values makes a long arg, and VictoriaMetrics refuses a query past its -search.maxQueryLen: an attacker's review).
	span := f.To - f.From + 2*f.Step
	with := fmt.Sprintf("WITH (%s = %s, %s = (%s)[%dms:%dms]) ", arg, f.Source, sub, arg, span, f.Step)
	at := vmSeconds(f.To+f.Step) + lookback
	series := shield(fmt.Sprintf("count(count_over_time(%s))%s", sub, by))
	summed := fmt.Sprintf("sum(distinct_over_time(%s))%s", sub, by)
	n, err := ask(fmt.Sprintf("%ssum((%s) * %s)", with, summed, series), at)
	if err != nil || n*points <= left {
		return n * points, err
	}
	// Closer, the values of a group are at most those of its series' last points, with those each series has besides
	// its last; or those of their first and last points, with those each has besides both, which a rolling upgrade's
	// hosts have none of; and at most those of each point added up, which many series' few shared values are.
	closer := fmt.Sprintf("distinct(last_over_time(%[1]s))%[2]s + %[3]s - %[4]s", sub, by,
		shield(fmt.Sprintf("sum(distinct_over_time(%s) - 1)%s", sub, by)),
		shield(fmt.Sprintf("clamp_min(sum(first_over_time(%[1]s) != bool %[3]s)%[2]s - %[4]s, 0)", sub, by,
			shield("last_over_time("+sub+")"), shield("distinct(first_over_time("+sub+"))"+by))))
	each := shield(fmt.Sprintf("sum_over_time((distinct(%s)%s)[%dms:%dms])", arg, by, span, f.Step))
	// A backend that refuses one (series told apart by their names alone match twice in a comparison) leaves the counts
	// before it (tighter).
	if n, err = tighter(ask, fmt.Sprintf("%ssum((((%s) <= %s) or %s) * %s)", with, closer, each, each, series), at, n); err != nil || n*points <= left {
		return n * points, err
	}
	// Values that are all whole numbers are at most those from their least to their most: a status panel's 0 and 1,
	// which many series flapping between them make many changes and many points of.
	whole := fmt.Sprintf("(max_over_time((max(%[1]s)%[2]s)[%[3]dms:%[4]dms]) - %[5]s + 1) and %[6]s", arg, by, span, f.Step,
		shield(fmt.Sprintf("min_over_time((min(%s)%s)[%dms:%dms])", arg, by, span, f.Step)),
		shield(fmt.Sprintf("sum_over_time((sum((%s %% 1) != bool 0)%s)[%dms:%dms]) == 0", arg, by, span, f.Step)))
	n, err = tighter(ask, fmt.Sprintf("%ssum(((%s) or %s) * %s)", with, whole, shield(summed), series), at, n)
	return n * points, err
}

// withNames are two names for WITH templates that the arg src does not hold: a template would stand in for a metric
// or label of its name there.
func withNames(src string) (arg, sub string) {
	low := strings.ToLower(src)
	for i := 0; ; i++ {
		arg, sub = fmt.Sprintf("vmgw_arg%d", i), fmt.Sprintf("vmgw_sub%d", i)
		if !strings.Contains(low, arg) && !strings.Contains(low, sub) {
			return arg, sub
		}
	}
}

// countValuesGroups is the modifier of the groups count_values f counts its values in, as the counts print it after an
// aggregation: its by less its label, or its without and its label, as VictoriaMetrics groups them; "" (one group of all
// the series, which counts more comparisons) where the label is not known or the modifier names a label the counts
// cannot group by (the metric name, which count_over_time drops, or their own distinct_value).
func countValuesGroups(f querylimits.FanOut) string {
	g := f.ValuesBy
	if g == nil || g.Op == "" || f.Label == "" || slices.ContainsFunc(g.Labels, func(l string) bool {
		return l == "__name__" || l == "*" || l == "distinct_value"
	}) {
		return ""
	}
	m := metricsql.ModifierExpr{Op: strings.ToLower(g.Op)}
	switch m.Op {
	case "by":
		for _, l := range g.Labels {
			if l != f.Label {
				m.Args = append(m.Args, l)
			}
		}
		if len(m.Args) == 0 {
			return ""
		}
	case "without":
		m.Args = append(slices.Clone(g.Labels), f.Label, "distinct_value")
	default:
		return ""
	}
	return " " + string(m.AppendString(nil))
}
