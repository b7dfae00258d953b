package enforce

import (
	"fmt"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// maxQueryDepth bounds how deeply a query may nest. metricsql parses, expands and prints a query recursively, with
// about 2 KiB of stack per level: 16 KiB of unary minus signs (`----…up`) took 32 MiB of stack and 60 ms to parse,
// so 250 of them in one form body kept a core busy for 20 s. Real queries nest a few dozen levels.
const maxQueryDepth = 1000

// checkDepth estimates from the text alone how deeply the parsed query nests, and refuses the query before
// metricsql recurses that deep. The estimate only errs upwards: each parenthesis opens a level, and each operator
// counts as one more level up to the end of its argument or parentheses, since `a + b + c` and `- - a` are trees
// one level deeper per operator. Strings, comments and what is inside {} and [] do not nest.
func checkDepth(q string) error {
	var stack []int // operators seen at each open level, outermost first
	ops, depth, deepest := 0, 0, 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(q, i)
		case c == '#':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '{':
			i = skipTo(q, i, '}')
		case c == '[':
			i = skipTo(q, i, ']')
		case c == '(':
			stack = append(stack, ops)
			ops = 0
			depth++
		case c == ')':
			if len(stack) == 0 {
				continue // unbalanced: the parser refuses it
			}
			depth -= 1 + ops
			ops = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		case c == ',':
			// The next argument is a subtree of its own: the operators of the previous one do not deepen it.
			depth -= ops
			ops = 0
		case strings.IndexByte("+-*/%^<>=!", c) >= 0:
			ops++
			depth++
		case isIdentByte(c):
			j := i
			for j < len(q) && (isIdentByte(q[j]) || q[j] >= '0' && q[j] <= '9' || q[j] == '.') {
				j++
			}
			if isKeywordOp(q[i:j]) {
				ops++
				depth++
			}
			i = j - 1
		}
		if depth > deepest {
			deepest = depth
			if deepest > maxQueryDepth {
				return fmt.Errorf("the query nests more than %d levels deep (each parenthesis and each operator, "+
					"a unary minus included, counts one level up to the end of its argument); simplify it", maxQueryDepth)
			}
		}
	}
	return nil
}

// errTooDeep refuses a query that nests more than maxQueryDepth levels as parsed, its WITH templates expanded: the
// text's own depth is checkDepth's to refuse, with its own words.
var errTooDeep = fmt.Errorf("the query nests more than %d levels deep as parsed, its WITH templates expanded (each call, "+
	"operator and window is a level); simplify it", maxQueryDepth)

// exprDepth is how deeply e nests: each call, aggregation, operator and window is a level above its args, as the
// walks over a parsed query recurse. It walks with a stack of its own, so that a tree of any depth costs no more than
// its nodes.
func exprDepth(e metricsql.Expr) int {
	type level struct {
		e     metricsql.Expr
		depth int
	}
	deepest := 0
	stack := []level{{e, 0}}
	for len(stack) > 0 {
		l := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		deepest = max(deepest, l.depth)
		push := func(args ...metricsql.Expr) {
			for _, a := range args {
				if a != nil {
					stack = append(stack, level{a, l.depth + 1})
				}
			}
		}
		switch x := l.e.(type) {
		case *metricsql.FuncExpr:
			push(x.Args...)
		case *metricsql.AggrFuncExpr:
			push(x.Args...)
		case *metricsql.BinaryOpExpr:
			push(x.Left, x.Right)
		case *metricsql.RollupExpr:
			push(x.Expr)
			if x.At != nil {
				push(x.At)
			}
		}
	}
	return deepest
}

// OneSelector tells, from the text alone, that q is one selector and nothing else: no call, window, operator, list,
// offset or template. The query limits need not parse such a query again for what its arms hold.
func OneSelector(q string) bool {
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(q, i)
		case c == '{':
			i = skipTo(q, i, '}')
		case strings.IndexByte("()[]+-*/%^<>=!,@#", c) >= 0:
			return false
		case c == '\\' || isIdentByte(c):
			j := i
			for j < len(q) && (q[j] == '\\' || isIdentByte(q[j]) || q[j] >= '0' && q[j] <= '9' || q[j] == '.') {
				if q[j] == '\\' {
					j++
				}
				j++
			}
			word := q[i:min(j, len(q))]
			if strings.IndexByte(word, '\\') >= 0 || isKeywordOp(word) {
				return false // an escape may spell anything
			}
			switch strings.ToLower(word) {
			case "offset", "with", "bool", "on", "ignoring", "group_left", "group_right", "keep_metric_names", "limit", "by", "without":
				return false
			}
			i = j - 1
		}
	}
	return true
}

// isKeywordOp reports whether an identifier is a binary operator of MetricsQL.
func isKeywordOp(s string) bool {
	for _, op := range [...]string{"and", "or", "unless", "atan2", "default", "if", "ifnot"} {
		if strings.EqualFold(s, op) {
			return true
		}
	}
	return false
}

// skipString returns the index of the quote that closes the string literal opening at q[i] (len(q)-1 if none).
func skipString(q string, i int) int {
	quote := q[i]
	for j := i + 1; j < len(q); j++ {
		switch {
		case q[j] == '\\' && quote != '`':
			j++
		case q[j] == quote:
			return j
		}
	}
	return len(q) - 1
}

// skipTo returns the index of the first `end` after q[i] outside string literals (len(q)-1 if none).
func skipTo(q string, i int, end byte) int {
	for j := i + 1; j < len(q); j++ {
		switch c := q[j]; {
		case c == '"' || c == '\'' || c == '`':
			j = skipString(q, j)
		case c == end:
			return j
		}
	}
	return len(q) - 1
}
