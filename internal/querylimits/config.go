// Package querylimits refuses, per tenant, the read requests whose shape would hurt everyone: too long a time
// range, data read too far back (windows, offsets, subqueries and @ modifiers counted from the parsed MetricsQL),
// too fine a step, too large an expression, a blocked query. The limits carry Grafana Mimir's names. A request over
// a limit gets 422 naming the limit; nothing is clamped in silence.
package querylimits

import (
	"bytes"
	"math"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metricsql"
	"go.yaml.in/yaml/v3"

	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// field is one limit of an entry.
type field uint8

const (
	maxTotalQueryLength field = iota
	maxQueryLookback
	minStep
	maxExprSize
	queryTimeout
	numFields
)

var fieldNames = [numFields]string{
	maxTotalQueryLength: "max_total_query_length",
	maxQueryLookback:    "max_query_lookback",
	minStep:             "min_step",
	maxExprSize:         "max_query_expression_size_bytes",
	queryTimeout:        "query_timeout",
}

const blockedQueries = "blocked_queries"

func (f field) String() string { return fieldNames[f] }

// isDuration says whether the field's value is a duration in milliseconds; else it is a number of bytes.
func (f field) isDuration() bool { return f != maxExprSize }

// entry is one item of the limits list.
type entry struct {
	line      int
	tenant    tenant.ID
	hasTenant bool
	key       limitfile.Key
	// vals are milliseconds (durations) or bytes; 0 means the entry does not set the field.
	vals [numFields]int64
	// blocked indexes config.patterns; blockedSet tells an explicit empty list from none.
	blocked    []int
	blockedSet bool
}

// pattern is one blocked query: exact (the query, or one of its subexpressions, equals it up to formatting) or an
// anchored regexp over the query's canonical form.
type pattern struct {
	text      string
	canonical string // exact patterns: metricsql's canonical form
	re        *regexp.Regexp
	// literals are texts every match of re contains: a query without one of them is told apart without running re.
	literals []string
	line     int
}

// matches reports whether the regexp pattern matches s.
func (pt *pattern) matches(s string) bool {
	for _, l := range pt.literals {
		if !strings.Contains(s, l) {
			return false
		}
	}
	return pt.re.MatchString(s)
}

// matchesBytes is matches for a text held in bytes.
func (pt *pattern) matchesBytes(b []byte) bool {
	for _, l := range pt.literals {
		if !bytes.Contains(b, []byte(l)) {
			return false
		}
	}
	return pt.re.Match(b)
}

// requiredLiterals returns texts that every match of re contains: the case-sensitive literals that a match cannot
// skip (parts of a concatenation, of a group, of a repetition taken at least once). Alternations and optional parts
// contribute nothing, so the list may be empty; it never holds a text some match lacks.
func requiredLiterals(re *syntax.Regexp, out []string) []string {
	switch re.Op {
	case syntax.OpLiteral:
		// The regexp reads invalid UTF-8 as U+FFFD, which the text itself does not contain.
		if re.Flags&syntax.FoldCase == 0 && !slices.Contains(re.Rune, utf8.RuneError) {
			out = append(out, string(re.Rune))
		}
	case syntax.OpConcat:
		for _, sub := range re.Sub {
			out = requiredLiterals(sub, out)
		}
	case syntax.OpCapture, syntax.OpPlus:
		out = requiredLiterals(re.Sub[0], out)
	case syntax.OpRepeat:
		if re.Min >= 1 {
			out = requiredLiterals(re.Sub[0], out)
		}
	}
	return out
}

// rule is one limit in force for a tenant, and the entry it comes from (named in refusals).
type rule struct {
	v int64
	e *entry
}

type blockRule struct {
	patterns []int
	e        *entry
}

// ruleSet is every limit in force for one tenant. Every rule must hold: a tenant's own entry replaces the default
// entry of the same key field by field, and entries of different keys all apply, as in -ratelimit.config.
type ruleSet struct {
	rules   [numFields][]rule
	blocked []blockRule
	// timeout is the strictest query_timeout in seconds, as the timeout arg sends it.
	timeout string
}

func (rs *ruleSet) empty() bool {
	if rs == nil {
		return true
	}
	for _, r := range rs.rules {
		if len(r) > 0 {
			return false
		}
	}
	return len(rs.blocked) == 0
}

// config is a parsed query limits config, immutable once built but for its cache of parsed queries.
type config struct {
	entries  []*entry
	patterns []pattern
	defaults *ruleSet
	own      map[tenant.ID]*ruleSet
	cache    *cache
}

// forTenant returns the limits in force for id; nil when it has none.
func (c *config) forTenant(id tenant.ID) *ruleSet {
	if c == nil {
		return nil
	}
	if rs, ok := c.own[id]; ok {
		return rs
	}
	return c.defaults
}

func newConfig(entries []*entry, patterns []pattern) *config {
	c := &config{entries: entries, patterns: patterns, own: map[tenant.ID]*ruleSet{}, cache: newCache()}
	var defaults []*entry
	owned := map[tenant.ID][]*entry{}
	for _, e := range entries {
		if e.hasTenant {
			owned[e.tenant] = append(owned[e.tenant], e)
		} else {
			defaults = append(defaults, e)
		}
	}
	c.defaults = buildRules(nil, defaults)
	if c.defaults.empty() {
		c.defaults = nil
	}
	for id, own := range owned {
		c.own[id] = buildRules(own, defaults)
	}
	return c
}

// buildRules merges a tenant's own entries over the defaults: for each key and field, the tenant's value if it has
// one, else the default's.
func buildRules(own, defaults []*entry) *ruleSet {
	rs := &ruleSet{}
	ownByKey, defByKey := map[limitfile.Key]*entry{}, map[limitfile.Key]*entry{}
	var keys []limitfile.Key
	for _, es := range [][]*entry{own, defaults} {
		for _, e := range es {
			if _, ok := ownByKey[e.key]; !ok {
				if _, ok := defByKey[e.key]; !ok {
					keys = append(keys, e.key)
				}
			}
		}
		for _, e := range es {
			if e.hasTenant {
				ownByKey[e.key] = e
			} else {
				defByKey[e.key] = e
			}
		}
	}
	for _, k := range keys {
		o, d := ownByKey[k], defByKey[k]
		for f := field(0); f < numFields; f++ {
			switch {
			case o != nil && o.vals[f] != 0:
				rs.rules[f] = append(rs.rules[f], rule{v: o.vals[f], e: o})
			case d != nil && d.vals[f] != 0:
				rs.rules[f] = append(rs.rules[f], rule{v: d.vals[f], e: d})
			}
		}
		b := d
		if o != nil && o.blockedSet {
			b = o
		}
		if b != nil && len(b.blocked) > 0 {
			rs.blocked = append(rs.blocked, blockRule{patterns: b.blocked, e: b})
		}
	}
	if rules := rs.rules[queryTimeout]; len(rules) > 0 {
		lim := rules[0].v
		for _, r := range rules[1:] {
			lim = min(lim, r.v)
		}
		rs.timeout = strconv.FormatFloat(float64(lim)/1000, 'f', -1, 64)
	}
	return rs
}

type addFunc func(n *yaml.Node, format string, args ...any)

// parseConfig reads a query limits config; source names it in errors. Every problem is reported with its line.
func parseConfig(data []byte, source string) (*config, error) {
	list, p, err := confsource.TopList{What: "query limits config", Key: "limits", Items: "entries", ForNone: "for no limits"}.Parse(data, source)
	if err != nil {
		return nil, err
	}
	addf := p.Add
	var entries []*entry
	var patterns []pattern
	if list != nil {
		type who struct {
			t         tenant.ID
			hasTenant bool
			key       limitfile.Key
		}
		seen := map[who]int{}
		for _, item := range list.Content {
			item = confsource.Resolve(item)
			e, ok := parseEntry(item, addf, &patterns)
			if !ok {
				continue
			}
			w := who{e.tenant, e.hasTenant, e.key}
			if line, dup := seen[w]; dup {
				addf(item, "duplicate entry: %s already has one at line %d; put all its limits in one entry", e.who(), line)
				continue
			}
			seen[w] = item.Line
			entries = append(entries, e)
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return newConfig(entries, patterns), nil
}

// who names whom an entry is for.
func (e *entry) who() string {
	s := "the default for all tenants"
	if e.hasTenant {
		s = "tenant " + e.tenant.String()
	}
	if !e.key.IsZero() {
		s += " by " + e.key.String()
	}
	return s
}

const idRange = "an integer in [0..4294967295]"

func parseEntry(item *yaml.Node, addf addFunc, patterns *[]pattern) (*entry, bool) {
	if item.Kind != yaml.MappingNode {
		addf(item, "want an entry (a mapping of limits, with account_id, project_id and key to choose whom it is for), got %s", confsource.Describe(item))
		return nil, false
	}
	e := &entry{line: item.Line}
	bad := 0
	addf2 := func(n *yaml.Node, format string, args ...any) { bad++; addf(n, format, args...) }
	var accNode, projNode *yaml.Node
	set := 0
	confsource.EachKey(item, addf2, func(key, val *yaml.Node) {
		switch key.Value {
		case "account_id":
			accNode = val
			return
		case "project_id":
			projNode = val
			return
		case "key":
			if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!str" {
				addf2(val, "key: want claim:<name> or label:<name>, got %s", confsource.Describe(val))
			} else if k, err := limitfile.ParseKey(val.Value); err != nil {
				addf2(val, "key: %s", err)
			} else {
				e.key = k
			}
			return
		case blockedQueries:
			set++
			e.blockedSet = true
			parseBlocked(val, addf2, e, patterns)
			return
		}
		for f := field(0); f < numFields; f++ {
			if key.Value != fieldNames[f] {
				continue
			}
			set++
			if f.isDuration() {
				if d, ok := parseDuration(val); ok {
					e.vals[f] = d
				} else {
					addf2(val, "%s: want a positive duration such as 30s, 1h or 30d, got %s", f, confsource.Describe(val))
				}
			} else if v, ok := parseInt(val, math.MaxInt32); ok && v > 0 {
				e.vals[f] = int64(v)
			} else {
				addf2(val, "%s: want a positive integer, got %s", f, confsource.Describe(val))
			}
			return
		}
		addf2(key, "unknown key %q: an entry has account_id, project_id, key, %s and %s", key.Value, strings.Join(fieldNames[:], ", "), blockedQueries)
	})
	if accNode != nil {
		if v, ok := parseInt(accNode, math.MaxUint32); ok {
			e.tenant.AccountID, e.hasTenant = uint32(v), true
		} else {
			addf2(accNode, "account_id: want %s, got %s", idRange, confsource.Describe(accNode))
		}
	}
	if projNode != nil {
		if v, ok := parseInt(projNode, math.MaxUint32); ok {
			e.tenant.ProjectID = uint32(v)
		} else {
			addf2(projNode, "project_id: want %s, got %s", idRange, confsource.Describe(projNode))
		}
		if accNode == nil {
			addf2(projNode, "project_id without account_id: an entry is for one tenant (account_id, and project_id which defaults to 0) or, without both, for all tenants")
		}
	}
	if set == 0 && bad == 0 {
		addf2(item, "the entry sets no limit: want at least one of %s, %s", strings.Join(fieldNames[:], ", "), blockedQueries)
	}
	return e, bad == 0
}

func parseBlocked(list *yaml.Node, addf addFunc, e *entry, patterns *[]pattern) {
	if list.Kind != yaml.SequenceNode {
		addf(list, "%s: want a list of {pattern: ..., regex: true|false}, got %s", blockedQueries, confsource.Describe(list))
		return
	}
	for _, item := range list.Content {
		item = confsource.Resolve(item)
		if item.Kind != yaml.MappingNode {
			addf(item, "%s: want {pattern: ..., regex: true|false}, got %s", blockedQueries, confsource.Describe(item))
			continue
		}
		var patNode, reNode *yaml.Node
		confsource.EachKey(item, addf, func(key, val *yaml.Node) {
			switch key.Value {
			case "pattern":
				patNode = val
			case "regex":
				reNode = val
			default:
				addf(key, "unknown key %q in a blocked query: want pattern and regex", key.Value)
			}
		})
		if patNode == nil {
			addf(item, "a blocked query without pattern")
			continue
		}
		if patNode.Kind != yaml.ScalarNode || patNode.ShortTag() != "!!str" || strings.TrimSpace(patNode.Value) == "" {
			addf(patNode, "pattern: want a non-empty string, got %s", confsource.Describe(patNode))
			continue
		}
		isRegex := false
		if reNode != nil {
			if reNode.Kind != yaml.ScalarNode || reNode.ShortTag() != "!!bool" {
				addf(reNode, "regex: want true or false, got %s", confsource.Describe(reNode))
				continue
			}
			isRegex = reNode.Value == "true" || reNode.Value == "True" || reNode.Value == "TRUE"
		}
		pt := pattern{text: patNode.Value, line: patNode.Line}
		if isRegex {
			re, err := regexp.Compile("^(?:" + pt.text + ")$")
			if err != nil {
				addf(patNode, "pattern: not a valid regexp: %s", err)
				continue
			}
			pt.re = re
			if sre, err := syntax.Parse(pt.re.String(), syntax.Perl); err == nil {
				pt.literals = requiredLiterals(sre.Simplify(), nil)
			}
		} else {
			c, err := canonical(pt.text)
			if err != nil {
				addf(patNode, "pattern: not a valid MetricsQL query (an exact pattern is compared as parsed, so spaces and "+
					"quoting do not matter; use regex: true to match text): %s", err)
				continue
			}
			pt.canonical = c
		}
		e.blocked = append(e.blocked, len(*patterns))
		*patterns = append(*patterns, pt)
	}
}

// canonical is a query's normal form: as metricsql prints it once parsed (WITH templates expanded, one spelling for
// each construct, so that blocking `count({__name__=~".+"})` also blocks `count( {__name__ =~ ".+"} )`), with the
// rewrites that keep its meaning undone (normalize.go).
func canonical(q string) (string, error) {
	e, err := enforce.ParseMetricsQL(q)
	if err != nil {
		return "", err
	}
	return string(normalize(e).AppendString(nil)), nil
}

// parseDuration reads a positive duration with a unit (s, m, h, d, w, y; ms), in milliseconds.
func parseDuration(n *yaml.Node) (int64, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return 0, false
	}
	return parseDurationString(n.Value)
}

func parseDurationString(s string) (int64, bool) {
	if s == "" || strings.ContainsAny(s, "iI") {
		// `i` is a number of steps: it has no meaning outside a query.
		return 0, false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, false // a unit is required: 30 could be seconds or milliseconds
	}
	d, err := metricsql.DurationValue(s, 0)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// parseInt accepts a YAML integer in [0..max]; quoted numbers are strings, not integers.
func parseInt(n *yaml.Node, max uint64) (uint64, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return 0, false
	}
	var v uint64
	if err := n.Decode(&v); err != nil || v > max {
		return 0, false
	}
	return v, true
}
