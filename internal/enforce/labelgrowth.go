package enforce

import (
	"fmt"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// Label functions build label values as a query runs, where none of VictoriaMetrics' limits look (no more series are
// selected, and -search.maxMemoryPerQuery is 0 by default). Nested ones multiply a value: label_join(b, "a", "", "a",
// "a") doubles a's, so 24 of them turn 16 bytes into 256 MB per series, and 752 bytes of query took v1.151 6 s and
// 2.7 GB; a 4 MB label made so, pushed into the selectors of an operator's other side and repeated in a failing
// query's error at every level, ran it out of memory from 641 bytes. And copies add up: a 60 KB value copied into a
// hundred labels (label_copy, label_join of one source, label_replace with $1) took it to 3.8 GB from 5 KB, and two
// hundred out of memory (attackers' reviews). labelBytes bounds, for each series a query can return, its longest
// label value and the bytes of all its labels, from what data carries (a value of at most maxDataLabelLen, and at
// most maxDataLabels of them: VictoriaMetrics' -maxLabelValueLen and -maxLabelsPerTimeseries) and the query's own
// strings, through each label function, and a query past maxSeriesLabelBytes is refused.

const (
	// maxDataLabelLen and maxDataLabels bound the labels a series comes with: VictoriaMetrics' -maxLabelValueLen
	// (4 KiB in v1.151) and -maxLabelsPerTimeseries (40).
	maxDataLabelLen = 4 << 10
	maxDataLabels   = 40
	// maxSeriesLabelBytes is the most a query's label functions may make the labels of one series weigh, data's
	// included: a label_join of sixteen data values, or a replacement of a few dozen bytes per character.
	maxSeriesLabelBytes = 256 << 10
)

// labelSize bounds the labels of a query's series: the longest value, and all of them together.
type labelSize struct{ one, total int64 }

var dataLabels = labelSize{one: maxDataLabelLen, total: maxDataLabels * maxDataLabelLen}

// checkLabelGrowth refuses a query whose label functions could make a series' labels weigh more than
// maxSeriesLabelBytes. It returns a bound of what they add to the values that come in (0 when they add nothing), which
// the error's bound copies into the selectors of every operator's other side.
func checkLabelGrowth(expr metricsql.Expr) (int64, error) {
	var built int64
	if n := labelBytes(expr, &built); n.one > maxSeriesLabelBytes || n.total > maxSeriesLabelBytes {
		return 0, fmt.Errorf("the query's label functions could make the labels of one series weigh over %d KiB (label_join, "+
			"label_replace, label_transform or label_copy in each other, each copying or multiplying values): VictoriaMetrics "+
			"would build them for every series; nest fewer", maxSeriesLabelBytes>>10)
	}
	return built, nil
}

// labelBytes bounds the labels of x's series, and adds to built what its label functions add to the longest value.
func labelBytes(x metricsql.Expr, built *int64) labelSize {
	switch t := x.(type) {
	case *metricsql.FuncExpr:
		in := dataLabels
		var strs []string // the string args, in order; series args are weighed
		for _, a := range t.Args {
			if s, ok := a.(*metricsql.StringExpr); ok {
				strs = append(strs, s.S)
				continue
			}
			n := labelBytes(a, built)
			in = labelSize{one: max(in.one, n.one), total: max(in.total, n.total)}
		}
		str := func(i int) string {
			if i < len(strs) {
				return strs[i]
			}
			return ""
		}
		// written is the value each label the function writes may hold, and labels how many it writes.
		var written, labels int64
		switch strings.ToLower(t.Name) {
		case "label_set": // label_set(q, name, value, ...)
			for i := 1; i < len(strs); i += 2 {
				written, labels = max(written, int64(len(strs[i]))), labels+1
			}
		case "label_map": // label_map(q, label, from, to, ...)
			for i := 2; i < len(strs); i += 2 {
				written = max(written, int64(len(strs[i])))
			}
			labels = 1
		case "alias":
			written, labels = int64(len(str(0))), 1
		case "label_join": // label_join(q, dst, sep, src...)
			k := int64(max(len(strs)-2, 0))
			written, labels = k*in.one+max(k-1, 0)*int64(len(str(1))), 1
		case "label_replace": // label_replace(q, dst, replacement, src, regex)
			written, labels = replaced(str(1), in.one), 1
		case "label_transform": // label_transform(q, label, regex, replacement): each match of the value replaced
			repl := str(2)
			written, labels = in.one+in.one*int64(len(repl))+replaced(repl, in.one), 1
		case "label_copy", "label_move": // label_copy(q, src, dst, ...): a value per pair
			written, labels = in.one, int64(len(strs)/2)
		case "label_graphite_group":
			written, labels = in.one, 1
		default:
			return in
		}
		out := labelSize{one: min(max(in.one, written), maxEval), total: min(in.total+labels*written, maxEval)}
		*built = min(*built+out.one-in.one, maxEval)
		return out
	case *metricsql.AggrFuncExpr:
		n := dataLabels
		for _, a := range t.Args {
			m := labelBytes(a, built)
			n = labelSize{one: max(n.one, m.one), total: max(n.total, m.total)}
		}
		return n
	case *metricsql.BinaryOpExpr:
		// group_left(labels) and group_right(labels) copy the labels they name from one side onto the other's series.
		l, r := labelBytes(t.Left, built), labelBytes(t.Right, built)
		n := labelSize{one: max(l.one, r.one), total: max(l.total, r.total)}
		if copied := int64(len(t.JoinModifier.Args)); copied > 0 {
			n.total = min(n.total+copied*n.one, maxEval)
		}
		return n
	case *metricsql.RollupExpr:
		return labelBytes(t.Expr, built)
	}
	return dataLabels
}

// replaced bounds what a regexp replacement makes of a value of n bytes: its text, and the value for each reference
// to a group ($1, ${name}).
func replaced(replacement string, n int64) int64 {
	return int64(len(replacement)) + int64(strings.Count(replacement, "$"))*n
}
