package enforce

import (
	"fmt"
	"regexp/syntax"
	"strconv"
	"strings"
)

// metricsql compiles every regexp label filter while it parses, on the gateway's CPU and before any limit has looked
// at the query. A few bytes of regexp can compile to a large program (a counted repeat copies what it repeats, a
// class such as \pL holds hundreds of ranges): 200 distinct filters of `\pL{128}` in a 4 KiB query took 0.7 s, where
// a query's worth of plain alternatives (a Grafana variable of 1,000 hosts, 22 KiB) takes 16 ms. The string literals
// of a query that has a regexp filter are weighed before it is parsed, and a query whose regexps would compile to
// more than a few times its own size is refused. The estimate only errs upwards: a literal that is not a regexp alone
// (a piece of a concatenation) counts as if each of its bytes were the largest class in the query, repeated as often
// as its counts say, and under WITH templates, which may use a literal many times, every byte of the expansion counts
// as much as the densest literal's.

// Measured with regexp.Compile of anchored regexps on the 2-core test machine: a literal rune or a node about
// 0.2 µs, a class range about 0.01 µs, so a range weighs 1/rangesPerUnit.
const rangesPerUnit = 16

// regexpBudget is the weight a query of n bytes (its WITH templates expanded) may compile to: plain regexps weigh
// about their length, and the floor leaves room for a few large ones.
func regexpBudget(n int) int { return 4*n + 32<<10 }

func checkRegexpBudget(q string) error {
	if !strings.Contains(q, "=~") && !strings.Contains(q, "!~") {
		return nil
	}
	toks := tokenize(q)
	total, literalBytes, classMost := 0, 0, 1
	density := 1 // the most weight per byte of any literal
	var pieces []string
	for _, t := range toks {
		lit, ok := stringLiteral(t)
		if !ok {
			continue
		}
		literalBytes += len(lit)
		re, err := syntax.Parse(lit, syntax.Perl)
		if err != nil {
			pieces = append(pieces, lit)
			continue
		}
		w := RegexpWeight(re, weightCap)
		total = addW(total, w)
		density = max(density, w/max(len(lit), 1))
		classMost = max(classMost, largestClass(re))
	}
	for _, lit := range pieces {
		w := mulW(mulW(max(len(lit), 1), repeatCounts(lit)), classMost)
		total = addW(total, w)
		density = max(density, w/max(len(lit), 1))
	}
	size := len(q)
	if containsFold(q, "with") {
		size = max(size, withExpandedSize(toks))
		total = max(total, mulW(density, size))
	}
	if budget := regexpBudget(size); total > budget {
		return fmt.Errorf("the query's regexps would compile to a program of about %d units, over the %d a query of its size may "+
			"(large classes such as \\pL, counted repeats such as {128}); simplify them", total, budget)
	}
	return nil
}

// RegexpWeight is about what re compiles to: its literal runes and nodes, and its class ranges by rangesPerUnit,
// with counted repeats written out; more than most once it passes most.
func RegexpWeight(re *syntax.Regexp, most int) int {
	n := 1
	switch re.Op {
	case syntax.OpLiteral:
		n = len(re.Rune)
	case syntax.OpCharClass:
		n = 1 + len(re.Rune)/2/rangesPerUnit
	}
	for _, sub := range re.Sub {
		n = addW(n, RegexpWeight(sub, most))
	}
	if re.Op == syntax.OpRepeat {
		n = mulW(n, max(re.Min, re.Max, 1))
	}
	return min(n, most+1)
}

func largestClass(re *syntax.Regexp) int {
	n := 1
	if re.Op == syntax.OpCharClass {
		n = 1 + len(re.Rune)/2/rangesPerUnit
	}
	for _, sub := range re.Sub {
		n = max(n, largestClass(sub))
	}
	return n
}

// repeatCounts is the product of the counts of {n} and {n,m} in s, 1 when it has none.
func repeatCounts(s string) int {
	p := 1
	for i := 0; i < len(s); i++ {
		if s[i] != '{' {
			continue
		}
		j := i + 1
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == ',') {
			j++
		}
		most := 0
		for _, f := range strings.Split(s[i+1:j], ",") {
			if n, err := strconv.Atoi(f); err == nil && n >= 0 {
				most = max(most, n)
			}
		}
		p = mulW(p, max(most, 1))
		i = j - 1
	}
	return p
}

// stringLiteral is the text of a string token, as metricsql reads it (Go escapes in "..." and '...', none in
// `...`); a token that does not unquote counts as its raw text.
func stringLiteral(t string) (string, bool) {
	if len(t) < 2 || (t[0] != '"' && t[0] != '\'' && t[0] != '`') {
		return "", false
	}
	switch t[0] {
	case '`':
		return strings.Trim(t, "`"), true
	case '\'':
		t = `"` + strings.ReplaceAll(strings.ReplaceAll(t[1:len(t)-1], `\'`, `'`), `"`, `\"`) + `"`
	}
	if s, err := strconv.Unquote(t); err == nil {
		return s, true
	}
	return t[1 : len(t)-1], true
}

// weightCap keeps weights from overflowing: far past any budget, and its square still fits an int64.
const weightCap = 1 << 30

func addW(a, b int) int { return min(a+b, weightCap) }

func mulW(a, b int) int {
	if a == 0 || b == 0 {
		return 0
	}
	if a >= weightCap/b {
		return weightCap
	}
	return a * b
}
