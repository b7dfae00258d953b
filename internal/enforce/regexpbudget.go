package enforce

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
)

// metricsql compiles every regexp label filter while it parses, on the gateway's CPU and before any limit has looked
// at the query. A few bytes of regexp can compile to a large program (a counted repeat copies what it repeats, a
// class such as \pL holds hundreds of ranges): 200 distinct filters of `\pL{128}` in a 4 KiB query took 0.7 s, where
// a query's worth of plain alternatives (a Grafana variable of 1,000 hosts, 22 KiB) takes 16 ms. VictoriaMetrics
// compiles the regexp args of label functions (regexpFuncs) too, as it evaluates them. The string literals of a query
// that has a regexp filter or such a function are weighed before it is parsed, and a query whose regexps would compile
// to more than a few times its own size is refused. The estimate only errs upwards: a literal that is not a regexp alone
// (a piece of a concatenation) counts as if each of its bytes were the largest class in the query, repeated as often
// as its counts say, and under WITH templates, which may use a literal many times, every byte of the expansion counts
// as much as the densest literal's.

// Measured with regexp.Compile of anchored regexps on the 2-core test machine: a literal rune or a node about
// 0.2 µs, a class range about 0.01 µs, so a range weighs 1/rangesPerUnit.
const rangesPerUnit = 16

// regexpBudget is the weight a query of n bytes (its WITH templates expanded) may compile to: plain regexps weigh
// about their length, and the floor leaves room for a few large ones. The most a 16 KiB query may then cost is some
// tens of milliseconds (a long literal repeated 400 times, the worst shape found).
func regexpBudget(n int) int { return 2*n + 16<<10 }

// checkRegexpBudget weighs the regexps of q, a query that may compile one (mayCompileRegexp), from its tokens, in CPU and then in
// memory (regexpmem.go) for partition part; expanded is the size of its WITH templates expanded, 0 without them.
func checkRegexpBudget(q string, toks []string, expanded int, part uint64) error {
	with := expanded > 0
	// Literals joined by + are one string to metricsql: weighed joined. One beside a template's name is a piece
	// of a string this scan cannot see whole, and so is every literal of a WITH query that joins strings.
	var lits []string
	var joined []bool
	concat := false
	for i := 0; i < len(toks); i++ {
		lit, ok := stringLiteral(toks[i])
		if !ok {
			continue
		}
		piece := false
		for i+2 < len(toks) && toks[i+1] == "+" {
			next, ok := stringLiteral(toks[i+2])
			if !ok {
				piece = true
				break
			}
			lit += next
			i += 2
		}
		if i+1 < len(toks) && toks[i+1] == "+" || i > 0 && toks[i-1] == "+" {
			piece, concat = true, true
		}
		lits, joined = append(lits, lit), append(joined, piece)
	}
	if with && concat {
		for i := range joined {
			joined[i] = true
		}
	}
	total, classMost := 0, 1
	density := 1 // the most weight per byte of any literal
	var pieces []string
	res := make([]*syntax.Regexp, len(lits)) // each as the parser compiles it; nil for none
	for i, lit := range lits {
		re, w, err := weighRegexp(lit)
		res[i] = re
		switch {
		case err != nil:
			return err
		case re == nil: // no regexp alone: weighed as a piece, and its fold
			pieces = append(pieces, lit)
			total = addW(total, w)
		case joined[i]:
			pieces = append(pieces, lit)
			classMost = max(classMost, largestClass(re))
		default:
			classMost = max(classMost, largestClass(re))
			total = addW(total, w)
			density = max(density, w/max(len(lit), 1))
		}
	}
	for _, lit := range pieces {
		w := mulW(mulW(max(len(lit), 1), repeatCounts(lit)), classMost)
		total = addW(total, w)
		density = max(density, w/max(len(lit), 1))
	}
	size := len(q)
	if with && concat {
		// A template of strings may make a distinct regexp at each use (identical ones compile once).
		size = max(size, expanded)
		total = max(total, mulW(density, size))
	}
	if budget := regexpBudget(size); total > budget {
		return regexpError(total, budget)
	}
	return checkFiltersMemory(lits, res, joined, part)
}

// checkFiltersMemory weighs in memory every literal of a query that may compile a regexp: any of them may be one
// (which literal a filter takes is the parser's to say, and a scan that disagrees with it on a single byte would let
// a dense one through), and a light one costs nothing. A piece of a string this scan cannot see whole is weighed at
// its largest, and never compiled alone: each of its bytes the largest class of the query, repeated 1000 times (the
// most Go lets counts nest to) when any literal of the query has a count, since a template may put one count around
// another as often as it is used.
func checkFiltersMemory(lits []string, res []*syntax.Regexp, joined []bool, part uint64) error {
	counts, classRunes := 1, 4
	for i, lit := range lits {
		if repeatCounts(lit) > 1 {
			counts = 1000
		}
		if res[i] != nil && !joined[i] {
			classRunes = max(classRunes, largestClassRunes(res[i]))
		}
	}
	for i, lit := range lits {
		if joined[i] {
			upper := addW(2048, mulW(mulW(max(len(lit), 1), counts), 160+24*classRunes))
			if err := checkRegexpMemory(lit, upper, part, false); err != nil {
				return err
			}
			continue
		}
		if res[i] == nil {
			continue // no regexp even as the parser compiles it: not compiled, or refused
		}
		if err := checkRegexpMemory(lit, memoryUpper(res[i]), part, true); err != nil {
			return err
		}
	}
	return nil
}

// largestClassRunes is the length of the rune list of re's largest class (twice its ranges), 0 when it has none.
func largestClassRunes(re *syntax.Regexp) int {
	n := 0
	if re.Op == syntax.OpCharClass {
		n = len(re.Rune)
	}
	for _, sub := range re.Sub {
		n = max(n, largestClassRunes(sub))
	}
	return n
}

func regexpError(total, budget int) error {
	return fmt.Errorf("the query's regexps would compile to a program of about %d units, over the %d a query of its size may "+
		"(large classes such as \\pL, counted repeats such as {128}, case-insensitive ranges); simplify them", total, budget)
}

// parseAnchored parses a regexp filter's text as metricsql compiles it, `^(?:lit)$`: a text that is no regexp alone
// may be one so (`)\pL{900}(?:`), and that is what takes the memory and the time.
func parseAnchored(lit string) (*syntax.Regexp, error) {
	return syntax.Parse(anchoredText(lit), syntax.Perl)
}

// mayCompileRegexp says whether VictoriaMetrics may compile a regexp of q: q has a regexp filter, or calls a function
// whose args it compiles as regexps when it evaluates them (regexpFuncs). Every string literal of such a query is then
// weighed as one could be.
func mayCompileRegexp(q string) bool {
	if strings.Contains(q, "=~") || strings.Contains(q, "!~") {
		return true
	}
	for _, f := range regexpFuncs {
		if containsFold(q, f) {
			return true
		}
	}
	return false
}

// regexpFuncs are the MetricsQL functions with a regexp arg. Their regexps were weighed only in a query that also had a
// regexp filter: a union of 200 label_replace of `(?:(?:\pL{30}){30})B<i>` took v1.151 2.6 s of CPU and 1.5 GB of
// memory that stayed in its regexp cache (an attacker's review).
var regexpFuncs = []string{"label_replace", "label_transform", "label_match", "label_mismatch"}

// weighRegexp parses lit as a regexp (nil when it is none alone) and weighs what Go compiles it to, the one-pass
// analysis of short programs included. A case-insensitive range is folded rune by rune while it is parsed (3.5 ms
// for one over all of Unicode): its span is weighed first, on a parse without the flag, and too large a span is
// refused before the fold.
func weighRegexp(lit string) (*syntax.Regexp, int, error) {
	fold := 0
	if strings.Contains(lit, "(?") && flagGroups.MatchString(lit) {
		if fold = foldSpan(lit) / 7; fold > regexpBudget(len(lit)) {
			return nil, 0, regexpError(fold, regexpBudget(len(lit)))
		}
	}
	re, err := parseAnchored(lit)
	if err != nil {
		return nil, fold, nil
	}
	w := addW(RegexpWeight(re, weightCap), fold) // the fold is paid again by every parse of the query
	// Go analyses programs under 1000 instructions for a one-pass match, copying the rune sets of the instructions
	// after each: about instructions × ranges.
	ranges := classRanges(re)
	if inst := RegexpWeight(re, 1000) - ranges/rangesPerUnit; inst < 1000 {
		w = max(w, mulW(max(inst, 1), ranges)/rangesPerUnit)
	}
	return re, w, nil
}

// flagGroups are the flag groups of a regexp's text that set i, (?i) and (?is: among them.
var flagGroups = regexp.MustCompile(`\(\?[A-Za-z]*i[A-Za-z]*(-[A-Za-z]*)?[:)]`)

// classRanges is the number of class ranges in re, counted repeats written out (at most weightCap).
func classRanges(re *syntax.Regexp) int {
	n := 0
	if re.Op == syntax.OpCharClass {
		n = len(re.Rune) / 2
	}
	for _, sub := range re.Sub {
		n = addW(n, classRanges(sub))
	}
	if re.Op == syntax.OpRepeat {
		n = mulW(n, max(re.Min, re.Max, 1))
	}
	return n
}

// foldSpan is how many runes case folding would visit in the class ranges of a regexp's text, as written: the
// parser folds each range before it merges them, so N copies of one range cost N times. A range with an escape at
// either end is taken to span all of Unicode.
func foldSpan(lit string) int {
	rs := []rune(lit)
	n, in := 0, false
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\\':
			// An escape of one character at the low end of a range: taken to span all. A class escape (\w, \d,
			// \p{L}) cannot start a range, and a - before ] is a plain -.
			if in && i+3 < len(rs) && rs[i+2] == '-' && rs[i+3] != ']' && !strings.ContainsRune("wWdDsSpP", rs[i+1]) {
				n = addW(n, 0x1E943)
			}
			i++
		case !in && r == '[':
			in = true
			if i+1 < len(rs) && rs[i+1] == '^' {
				i++
			}
		case in && r == ']':
			in = false
		case in && i+2 < len(rs) && rs[i+1] == '-' && rs[i+2] != ']':
			hi := rs[i+2]
			if hi == '\\' {
				hi = 0x1E943
			}
			lo, hi := max(r, 'A'), min(hi, 0x1E943)
			if hi >= lo {
				n = addW(n, int(hi-lo)+1)
			}
			i += 2
		}
	}
	return n
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

// largestClass is the weight of re's largest class, 1 when it has none.
func largestClass(re *syntax.Regexp) int { return 1 + largestClassRunes(re)/2/rangesPerUnit }

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
