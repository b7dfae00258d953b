package querylimits

import (
	"cmp"
	"reflect"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// An exact blocked pattern is compared with queries in a normal form, so that a query rewritten to read the same
// data the same way is blocked too: an attacker holding a valid token tries `offset 0s`, `by ()`, `[300s]` for
// `[5m]`, `.{1,}` for `.+` or a second matcher that matches everything. Each rewrite below keeps the query's
// meaning; a query it cannot normalize is compared as printed.

// normalize returns e's normal form. It never changes e, the request's own parse shared with the other steps:
// a node that changes is copied.
func normalize(e metricsql.Expr) metricsql.Expr { return normalizeIn(e, false) }

// normalizeIn is normalize of e, inRollup when e is the expression of a rollup or subquery ((e)[5m]).
func normalizeIn(e metricsql.Expr, inRollup bool) metricsql.Expr {
	switch t := e.(type) {
	case *metricsql.MetricExpr:
		c := *t
		c.LabelFilterss = normalFilterss(t.LabelFilterss)
		return &c
	case *metricsql.RollupExpr:
		c := *t
		c.Expr = normalizeIn(t.Expr, true)
		if t.At != nil {
			c.At = normalize(t.At)
		}
		c.Window = normalDuration(t.Window)
		c.Step = normalDuration(t.Step)
		c.Offset = normalDuration(t.Offset)
		if c.Offset != nil && c.Offset.Duration(0) == 0 && !strings.ContainsAny(string(c.Offset.AppendString(nil)), "iI") {
			switch _, selector := c.Expr.(*metricsql.MetricExpr); {
			case c.Window != nil || c.Step != nil || c.InheritStep:
				c.Offset = nil // x[5m] offset 0s is x[5m]
			case selector && !inRollup && c.At == nil:
				return c.Expr // x offset 0s is x; inside a rollup, or on anything but a selector, an offset makes a subquery
			}
		}
		return &c
	case *metricsql.FuncExpr:
		c := *t
		// VictoriaMetrics looks functions up lower-cased: Rate(x[5m]) is rate(x[5m]).
		c.Name = strings.ToLower(t.Name)
		c.Args = normalAll(t.Args)
		return &c
	case *metricsql.AggrFuncExpr:
		c := *t
		c.Args = normalAll(t.Args)
		c.Modifier = normalModifier(t.Modifier)
		if c.Modifier.Op == "by" && len(c.Modifier.Args) == 0 {
			c.Modifier.Op = "" // sum by () (x) is sum(x)
		}
		return &c
	case *metricsql.BinaryOpExpr:
		c := *t
		c.Left, c.Right = normalize(t.Left), normalize(t.Right)
		c.GroupModifier = normalModifier(t.GroupModifier)
		c.JoinModifier = normalModifier(t.JoinModifier)
		if c.GroupModifier.Op == "ignoring" && len(c.GroupModifier.Args) == 0 && c.JoinModifier.Op == "" {
			c.GroupModifier.Op = "" // ignoring no label is the default matching (a group_left needs it written)
		}
		if strings.EqualFold(c.Op, "or") && c.GroupModifier.Op == "" && c.FillLeft == nil && c.FillRight == nil && !c.KeepMetricNames &&
			mayPrintAlike(c.Left, c.Right) && string(c.Left.AppendString(nil)) == string(c.Right.AppendString(nil)) {
			return c.Left // x or x is x
		}
		return &c
	case *metricsql.NumberExpr:
		n := t.N
		if n == 0 {
			n = 0 // -0 prints as a unary minus, which reads back as 0
		}
		return &metricsql.NumberExpr{N: n} // 0.0, 0e0 and 0 print alike
	}
	return e
}

// mayPrintAlike is false when a and b cannot print alike: expressions of different kinds, or operations of different
// operators. It spares printing both sides of every `or` of a long chain (`a or b or c ...` nests to the left, each
// level beside a selector), which would print the chain once per level.
func mayPrintAlike(a, b metricsql.Expr) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	if x, ok := a.(*metricsql.BinaryOpExpr); ok {
		return strings.EqualFold(x.Op, b.(*metricsql.BinaryOpExpr).Op)
	}
	return true
}

func normalAll(es []metricsql.Expr) []metricsql.Expr {
	out := make([]metricsql.Expr, len(es))
	for i, e := range es {
		out[i] = normalize(e)
	}
	return out
}

// normalModifier puts a by, without, on, ignoring or group_left list in order: each is a set of labels.
func normalModifier(m metricsql.ModifierExpr) metricsql.ModifierExpr {
	args := slices.Clone(m.Args)
	slices.Sort(args)
	return metricsql.ModifierExpr{Op: strings.ToLower(m.Op), Args: slices.Compact(args)}
}

// normalDuration prints d in milliseconds. Durations in steps (`5i`) stay as written.
func normalDuration(d *metricsql.DurationExpr) *metricsql.DurationExpr {
	if d == nil {
		return nil
	}
	s := string(d.AppendString(nil))
	if strings.ContainsAny(s, "iI") {
		return d
	}
	ms, err := metricsql.DurationValue(s, 0)
	if err != nil {
		return d
	}
	if nd := durations.get(strconv.FormatInt(ms, 10), millisDuration); nd != nil {
		return nd
	}
	return d
}

// millisDuration is a DurationExpr of ms milliseconds. It keeps its text unexported: a parse gives one with the text
// wanted. Nodes are never changed once made, so one serves every query.
func millisDuration(ms string) *metricsql.DurationExpr {
	e, err := metricsql.Parse("x offset " + ms + "ms")
	if re, ok := e.(*metricsql.RollupExpr); err == nil && ok {
		return re.Offset
	}
	return nil
}

// memo keeps up to memoSize results of a function of a short string: dashboards repeat their durations and
// regexps. A longer key is computed each time, so the memo holds at most memoSize × 4 × memoKeyMax bytes or so.
type memo[V any] struct {
	m sync.Map
	n atomic.Int64
}

const (
	memoSize   = 4096
	memoKeyMax = 128
)

func (m *memo[V]) get(k string, f func(string) V) V {
	if v, ok := m.m.Load(k); ok {
		return v.(V)
	}
	v := f(k)
	if len(k) <= memoKeyMax && m.n.Load() < memoSize {
		if _, loaded := m.m.LoadOrStore(k, v); !loaded {
			m.n.Add(1)
		}
	}
	return v
}

var (
	durations memo[*metricsql.DurationExpr]
	regexps   memo[regexpForm]
)

// normalFilterss gives each label filter one spelling and each list one order.
func normalFilterss(lfss [][]metricsql.LabelFilter) [][]metricsql.LabelFilter {
	outs := make([][]metricsql.LabelFilter, len(lfss))
	for i, lfs := range lfss {
		out := make([]metricsql.LabelFilter, 0, len(lfs))
		for _, lf := range lfs {
			lf = normalFilter(lf)
			if !lf.IsNegative && lf.IsRegexp && lf.Value == matchAll {
				continue // matches every value, the empty one too: no filter at all
			}
			out = append(out, lf)
		}
		if len(out) == 0 {
			// A selector needs a filter: one that matches everything is refused as it was written.
			out = slices.Clone(lfs)
		}
		slices.SortFunc(out, compareFilters)
		outs[i] = slices.Compact(out)
	}
	if len(outs) > 1 {
		for _, out := range outs {
			if len(out) == 1 && isName(out[0]) {
				// A branch that keeps only the name matches every series of it: so does the whole selector.
				return [][]metricsql.LabelFilter{out}
			}
		}
		slices.SortFunc(outs, func(a, b []metricsql.LabelFilter) int { return slices.CompareFunc(a, b, compareFilters) })
		outs = slices.CompactFunc(outs, func(a, b []metricsql.LabelFilter) bool { return slices.Equal(a, b) })
	}
	for _, out := range outs {
		if isName(out[0]) && enforce.IsNumberWord(out[0].Value) {
			// A metric named inf or nan (written with an escape: nA\n) would print as a bare name that reads back as
			// a number: its name is a regexp of itself, which prints in braces and reads back as the same metric.
			out[0] = metricsql.LabelFilter{Label: out[0].Label, Value: out[0].Value, IsRegexp: true}
		}
	}
	return outs
}

func isName(lf metricsql.LabelFilter) bool {
	return lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative
}

// compareFilters puts the metric name first, where it is printed before the braces.
func compareFilters(a, b metricsql.LabelFilter) int {
	return cmp.Or(-compareBool(isName(a), isName(b)), cmp.Compare(a.Label, b.Label), compareBool(a.IsNegative, b.IsNegative), compareBool(a.IsRegexp, b.IsRegexp),
		cmp.Compare(a.Value, b.Value))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Regexps are compared as Go's regexp/syntax prints them simplified, `.` taken to match a newline too (a label
// value rarely holds one): `.{1,}` is `.+`, and a value that is not empty (`!=""`, `!~""`) is `=~".+"`.
var (
	matchAll      = readRegexp(".*").text
	matchNonEmpty = readRegexp(".+").text
)

// maxRegexpText bounds the regexps normalized: a longer one is compared as written.
const maxRegexpText = 1024

// maxExpanded bounds what a regexp prints once its counted repeats are written out (enforce.RegexpWeight), for it
// to be simplified: Simplify writes [a-z]{1000} as a thousand classes, and a class such as \pL prints hundreds of
// ranges.
const maxExpanded = 256

// tidy drops what changes nothing of a whole match, which is how VictoriaMetrics matches label values (anchored
// at both ends): anchors at the ends (^.+$ is .+), laziness (.+? is .+), and a class of every rune ([\s\S] is .).
func tidy(re *syntax.Regexp) *syntax.Regexp {
	re = withoutLaziness(re)
	switch re.Op {
	case syntax.OpAlternate:
		for i, sub := range re.Sub {
			re.Sub[i] = unanchored(sub)
		}
		return re
	}
	return unanchored(re)
}

func unanchored(re *syntax.Regexp) *syntax.Regexp {
	switch re.Op {
	case syntax.OpBeginText, syntax.OpEndText:
		return &syntax.Regexp{Op: syntax.OpEmptyMatch}
	case syntax.OpConcat:
		subs := re.Sub
		for len(subs) > 0 && subs[0].Op == syntax.OpBeginText {
			subs = subs[1:]
		}
		for len(subs) > 0 && subs[len(subs)-1].Op == syntax.OpEndText {
			subs = subs[:len(subs)-1]
		}
		switch len(subs) {
		case 0:
			return &syntax.Regexp{Op: syntax.OpEmptyMatch}
		case 1:
			return subs[0]
		}
		re.Sub = subs
	}
	return re
}

func withoutLaziness(re *syntax.Regexp) *syntax.Regexp {
	re.Flags &^= syntax.NonGreedy
	if re.Op == syntax.OpCharClass && len(re.Rune) == 2 && re.Rune[0] == 0 && re.Rune[1] == unicode.MaxRune {
		return &syntax.Regexp{Op: syntax.OpAnyChar, Flags: re.Flags}
	}
	for i, sub := range re.Sub {
		re.Sub[i] = withoutLaziness(sub)
	}
	return re
}

// withoutCaptures drops capture groups, which change nothing of what a label filter matches.
func withoutCaptures(re *syntax.Regexp) *syntax.Regexp {
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	for i, sub := range re.Sub {
		re.Sub[i] = withoutCaptures(sub)
	}
	return re
}

// hasCase says whether r has another case, which (?i) would match too.
func hasCase(r rune) bool { return unicode.SimpleFold(r) != r }

// normalFilter spells lf one way: a regexp that is a plain text is an equality (`=~"x"` is `="x"`), a
// non-empty test is a regexp.
func normalFilter(lf metricsql.LabelFilter) metricsql.LabelFilter {
	if !lf.IsRegexp {
		if lf.IsNegative && lf.Value == "" {
			return metricsql.LabelFilter{Label: lf.Label, Value: matchNonEmpty, IsRegexp: true}
		}
		return lf
	}
	f := regexps.get(lf.Value, readRegexp)
	switch {
	case f.empty && lf.IsNegative:
		return metricsql.LabelFilter{Label: lf.Label, Value: matchNonEmpty, IsRegexp: true}
	case f.empty:
		return metricsql.LabelFilter{Label: lf.Label}
	case f.literal:
		return metricsql.LabelFilter{Label: lf.Label, Value: f.text, IsNegative: lf.IsNegative}
	}
	lf.Value = f.text
	return lf
}

// regexpForm is a regexp's normal form: the text it matches alone, the empty text alone, or its simplified print.
type regexpForm struct {
	text           string
	literal, empty bool
}

func readRegexp(s string) regexpForm {
	if len(s) > maxRegexpText {
		return regexpForm{text: s}
	}
	re, err := syntax.Parse(s, syntax.Perl|syntax.DotNL)
	if err != nil || enforce.RegexpWeight(re, maxExpanded) > maxExpanded {
		return regexpForm{text: s} // refused by VictoriaMetrics too, or too large to simplify: compared as written
	}
	// Without its groups and anchors a regexp may simplify further ((0)0 is 00): read it again until its print stays.
	re = tidy(withoutCaptures(re.Simplify()))
	printed := re.String()
	for range 8 {
		again, err := syntax.Parse(printed, syntax.Perl|syntax.DotNL)
		if err != nil {
			break
		}
		re = tidy(withoutCaptures(again.Simplify()))
		p := re.String()
		if p == printed {
			break
		}
		printed = p
	}
	switch {
	case re.Op == syntax.OpEmptyMatch:
		return regexpForm{empty: true}
	case re.Op == syntax.OpLiteral && (re.Flags&syntax.FoldCase == 0 || !slices.ContainsFunc(re.Rune, hasCase)) &&
		!slices.Contains(re.Rune, utf8.RuneError): // the regexp reads any invalid byte as U+FFFD, the text only that
		return regexpForm{text: string(re.Rune), literal: true}
	case len(printed) > 4*len(s)+64:
		return regexpForm{text: s} // printed out of proportion (a class of many ranges): compared as written
	}
	return regexpForm{text: printed}
}
