package enforce

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxExpandedBytes bounds the text WITH templates may expand to. metricsql expands templates while parsing, and a
// few hundred bytes of templates that each use the previous one twice (t1=t0+t0, t2=t1+t1, ...) double the work
// per definition: 30 of them keep a core busy for hours. Bytes, not terms: 13 doublings of one 14 KB string are
// only 40,000 terms but 115 MB to parse, print and match. Legitimate queries stay orders of magnitude below.
const maxExpandedBytes = 256 << 10

// checkWithBudget estimates, from the tokens of a query with WITH templates, how many bytes they expand to, and
// refuses the query before metricsql.Parse spends the time; the size is the regexp budget's too. The estimate only
// errs upwards: every identifier that names a template counts as the template's whole size, whatever the scope, and
// a call counts its body once per byte of its arguments.
//
// It estimates how deeply the expansion nests too, as checkDepth does the text's, and refuses a query past
// maxQueryDepth: templates without args that each wrap the one before in calls nest deeper than their text (an
// attacker's review: ten levels a template), and metricsql recurses once a level as it expands them, 20,000 levels in
// 0.4 s and 64 MiB of stack.
func checkWithBudget(toks []string) (int, error) {
	s := withScanner{toks: toks, defs: map[string]int{}, levels: map[string]int{}}
	size := s.expr()
	deepest := s.last
	for s.i < len(s.toks) { // unbalanced leftovers: count them; the parser will reject the query anyway
		size = sat(size + s.expr() + 1)
		deepest = max(deepest, s.last)
		s.i++
	}
	if size > maxExpandedBytes {
		return size, fmt.Errorf("the query's WITH templates expand to more than %d bytes; simplify the templates", maxExpandedBytes)
	}
	if deepest > maxQueryDepth {
		return size, errTooDeep
	}
	return size, nil
}

type withScanner struct {
	toks []string
	i    int
	defs map[string]int // template name → estimated expanded size in bytes
	most int            // the largest of defs: an escaped name no definition matches counts as it
	// levels are the templates' estimated expanded depths, mostLevels the largest; last is the depth of the expr
	// scanned last, below its start.
	levels           map[string]int
	mostLevels, last int
}

// expr sums the sizes of the tokens up to the end of the stream or, at nesting depth 0, a "," or ")" (left unread),
// which ends a template body or a call argument too.
func (s *withScanner) expr() int {
	size, depth := 0, 0
	// The depth as checkDepth counts it: a level for each open parenthesis and each operator up to the end of its
	// argument, and a template's own below where it is used.
	var opsAt []int
	ops, deepest := 0, 0
	defer func() { s.last = deepest }()
	for s.i < len(s.toks) {
		t := s.toks[s.i]
		deepest = max(deepest, depth+ops)
		switch {
		case depth == 0 && (t == "," || t == ")"):
			return size
		case t == "(" || t == "{" || t == "[":
			depth++
			s.i++
			size = sat(size + 1)
			opsAt, ops = append(opsAt, ops), 0
		case t == ")" || t == "}" || t == "]":
			depth = max(depth-1, 0)
			s.i++
			size = sat(size + 1)
			if len(opsAt) > 0 {
				ops, opsAt = opsAt[len(opsAt)-1], opsAt[:len(opsAt)-1]
			}
		case t == ",":
			s.i++
			size = sat(size + 1)
			ops = 0
		case strings.EqualFold(t, "with") && s.peek(1) == "(":
			s.i += 2
			s.definitions()
		case s.size(t) > 0:
			s.i++
			n, levels := s.size(t), s.levelsOf(t)
			if s.peek(0) == "(" { // a template call: each argument may be substituted wherever the body uses it
				s.i++
				args, argLevels := 1, 0
				for s.i < len(s.toks) && s.toks[s.i] != ")" {
					args = sat(args + s.expr())
					argLevels = max(argLevels, s.last)
					if s.peek(0) == "," {
						s.i++
					}
				}
				s.i++
				n = sat(n * args)
				levels = satDepth(levels + argLevels + 1)
			}
			size = sat(size + n)
			deepest = max(deepest, satDepth(depth+ops+levels))
		default:
			s.i++
			size = sat(size + len(t))
			if strings.IndexByte("+-*/%^<>=!", t[0]) >= 0 || isKeywordOp(t) {
				ops++
			}
		}
	}
	return size
}

// levelsOf is the expanded depth of the template t names, as size reads its name.
func (s *withScanner) levelsOf(t string) int { return lookup(s.levels, s.mostLevels, t) }

// satDepth keeps a depth estimate from growing past what any check compares it with.
func satDepth(n int) int { return min(n, 1<<20) }

// definitions reads `name[(args)] = body, ...)` after `with (`.
func (s *withScanner) definitions() {
	for s.i < len(s.toks) && s.toks[s.i] != ")" {
		name := unescapeIdent(s.toks[s.i])
		s.i++
		if s.peek(0) == "(" { // argument names: skip to the closing parenthesis
			for s.i < len(s.toks) && s.toks[s.i] != ")" {
				s.i++
			}
			s.i++
		}
		if s.peek(0) == "=" {
			s.i++
		}
		body := s.expr()
		if body < 1 {
			body = 1
		}
		s.defs[name] = max(s.defs[name], body)
		s.most = max(s.most, body)
		s.levels[name] = max(s.levels[name], s.last)
		s.mostLevels = max(s.mostLevels, s.last)
		if s.peek(0) == "," {
			s.i++
		}
	}
	s.i++ // the closing parenthesis of the definitions
}

// size is the expanded size of the template t names, 0 when it names none. metricsql unescapes a name before it
// looks it up (`\t0` is t0): so does size, and a name with an escape it does not read counts as the largest
// template, since it may be one.
func (s *withScanner) size(t string) int { return lookup(s.defs, s.most, t) }

// lookup is what m holds of the template t names, as size reads its name; most for a name with an escape it does not
// read.
func lookup(m map[string]int, most int, t string) int {
	if !strings.Contains(t, `\`) {
		return m[t]
	}
	if n, ok := m[unescapeIdent(t)]; ok {
		return n
	}
	return most
}

// unescapeIdent reads an identifier's escapes as metricsql does: \xNN, \uNNNN, or a printable character.
func unescapeIdent(t string) string {
	if !strings.Contains(t, `\`) {
		return t
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] != '\\' || i+1 >= len(t) {
			b.WriteByte(t[i])
			continue
		}
		// An escape it cannot read stays as written, backslash included.
		rest := t[i+1:]
		hexDigits := 0
		switch rest[0] {
		case 'x', 'X':
			hexDigits = 2
		case 'u', 'U':
			hexDigits = 4
		}
		if hexDigits > 0 {
			v, err := strconv.ParseUint(rest[1:min(1+hexDigits, len(rest))], 16, 32)
			if err != nil || len(rest) < 1+hexDigits || !isHex(rest[1]) {
				b.WriteByte('\\')
				continue
			}
			b.WriteRune(rune(v))
			i += 1 + hexDigits
			continue
		}
		r, n := utf8.DecodeRuneInString(rest)
		if !unicode.IsPrint(r) {
			b.WriteByte('\\')
			continue
		}
		b.WriteString(rest[:n])
		i += n
	}
	return b.String()
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func (s *withScanner) peek(k int) string {
	if s.i+k < len(s.toks) {
		return s.toks[s.i+k]
	}
	return ""
}

func sat(n int) int { return min(n, maxExpandedBytes+1) }

// tokenize splits a query into identifiers, punctuation and opaque literals: a string is one token of its whole
// text, quotes included, so that its length counts; a comment is none.
func tokenize(q string) []string {
	var toks []string
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r': // metricsql's isSpaceChar
			i++
		case c == '#':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			// As metricsql scans strings: a backslash escapes the next byte in every kind of quote, backticks too.
			j := i + 1
			for j < len(q) && q[j] != c {
				if q[j] == '\\' {
					j++
				}
				j++
			}
			toks = append(toks, q[i:min(j+1, len(q))])
			i = j + 1
		case isIdentByte(c) || c == '\\' || c >= utf8.RuneSelf:
			j := i
			for j < len(q) && (isIdentByte(q[j]) || (q[j] >= '0' && q[j] <= '9') || q[j] == '.' || q[j] >= utf8.RuneSelf || q[j] == '\\') {
				if q[j] == '\\' {
					j++
				}
				j++
			}
			toks = append(toks, q[i:min(j, len(q))])
			i = j
		default:
			toks = append(toks, q[i:i+1])
			i++
		}
	}
	return toks
}

func isIdentByte(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
