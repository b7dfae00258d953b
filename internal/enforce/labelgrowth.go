package enforce

import (
	"fmt"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// Label functions build label values as a query runs, and nested ones multiply them: label_join(b, "a", "", "a",
// "a") doubles a's value, so 24 of them in each other turn 16 bytes into 256 MB per series, and a query of 700
// bytes took v1.151 0.6-6 s of CPU and 0.7-2.7 GB of memory, where no limit of its own looks (no series are
// selected); with 4 MB labels pushed into the selectors of an operator's other side and repeated in a failing
// query's error at every level, 641 bytes ran it out of memory (an attacker's review). labelLen bounds the longest
// label value a query can make, from the values data carries (maxDataLabelLen, VictoriaMetrics' -maxLabelValueLen)
// and its strings, through each label function, and a query over maxBuiltLabel is refused.

// maxDataLabelLen bounds a label value that comes with the data: VictoriaMetrics' -maxLabelValueLen (4 KiB in
// v1.151's vminsert and single-node).
const maxDataLabelLen = 4 << 10

// maxBuiltLabel is the longest label value a query may make: sixteen data values joined, or a few nested functions.
const maxBuiltLabel = 64 << 10

// checkLabelGrowth refuses a query whose label functions could make a label value over maxBuiltLabel. It returns
// a bound of what they add to the values that come in (0 when they add nothing), which the error's bound copies into
// the selectors of every operator's other side.
func checkLabelGrowth(expr metricsql.Expr) (int64, error) {
	var built int64
	n := labelLen(expr, &built)
	if n > maxBuiltLabel {
		return 0, fmt.Errorf("the query's label functions could make a label value of over %d KiB (label_join, label_replace or "+
			"label_transform in each other, each multiplying it): VictoriaMetrics would build it for every series; nest fewer", maxBuiltLabel>>10)
	}
	return built, nil
}

// labelLen bounds the longest label value of x's series, and adds to built what its label functions add.
func labelLen(x metricsql.Expr, built *int64) int64 {
	switch t := x.(type) {
	case *metricsql.FuncExpr:
		in := int64(maxDataLabelLen)
		var strs []string // the string args, in order; series args are weighed
		for _, a := range t.Args {
			if s, ok := a.(*metricsql.StringExpr); ok {
				strs = append(strs, s.S)
				continue
			}
			in = max(in, labelLen(a, built))
		}
		out := in
		str := func(i int) string {
			if i < len(strs) {
				return strs[i]
			}
			return ""
		}
		longest := func(from int) int64 {
			n := int64(0)
			for i := from; i < len(strs); i++ {
				n = max(n, int64(len(strs[i])))
			}
			return n
		}
		switch strings.ToLower(t.Name) {
		case "label_set", "label_map", "alias":
			out = max(in, longest(0))
		case "label_join": // label_join(q, dst, sep, src...)
			if k := int64(max(len(strs)-2, 0)); k > 0 {
				out = max(in, k*in+(k-1)*int64(len(str(1))))
			}
		case "label_replace": // label_replace(q, dst, replacement, src, regex)
			out = max(in, replaced(str(1), in))
		case "label_transform": // label_transform(q, label, regex, replacement): every match of the value
			out = max(in, in+(in+1)*replaced(str(2), in))
		}
		out = min(out, maxEval)
		// What the function adds beyond what came in: values as long as the data's come with any selector, and the
		// query's own strings are weighed as its filters are.
		*built = min(*built+out-in, maxEval)
		return out
	case *metricsql.AggrFuncExpr:
		n := int64(maxDataLabelLen)
		for _, a := range t.Args {
			n = max(n, labelLen(a, built))
		}
		return n
	case *metricsql.BinaryOpExpr:
		return max(labelLen(t.Left, built), labelLen(t.Right, built))
	case *metricsql.RollupExpr:
		return labelLen(t.Expr, built)
	}
	return maxDataLabelLen
}

// replaced bounds what a regexp replacement makes of a value of n bytes: its text, and the value for each reference
// to a group ($1, ${name}).
func replaced(replacement string, n int64) int64 {
	return int64(len(replacement)) + int64(strings.Count(replacement, "$"))*n
}
