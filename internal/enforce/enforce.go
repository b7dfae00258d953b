// Package enforce limits a request to a token's series: it rewrites MetricsQL and series selectors and sets the
// extra_label / extra_filters args that VictoriaMetrics enforces again.
//
// Enforcement happens at selection: every series selector gets the token's matchers, so only the token's series
// are ever read. Functions that rename labels afterwards (label_replace, label_join, label_set, count_values,
// absent's labels) can make a result *look* like another team's, but cannot read another team's data; a
// client matcher on an enforced label (team="ops" for a team="dev" token) is ANDed and selects nothing.
package enforce

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// Label is one enforced label: name="value".
type Label struct{ Name, Value string }

// Enforcer holds one token's extra labels and filters, parsed once. It is immutable and safe for concurrent use.
// A nil Enforcer is unrestricted.
type Enforcer struct {
	labels  []Label
	filters []string

	// labelFilters are the labels as `name="value"` matchers; selFilters them and the labels' sibling guards
	// (siblings.go), ANDed into every selector branch.
	labelFilters, selFilters []metricsql.LabelFilter
	// branches are the or-branches of all extra filters together, each with the sibling guards of its names: a
	// series must match one of them.
	branches [][]metricsql.LabelFilter

	// Precomputed query args: extra_label of writes, and of reads with the sibling guards of the labels and of the raw
	// sort keys (`Namespace=`, which VictoriaMetrics reads as the label's absence; siblings.go); extra_filters[] of
	// reads.
	extraLabelArgs, readLabelArgs []string
	extraFiltersArgs              []string
	// matchArgs are the match[] values added to listing APIs called without any match[].
	matchArgs []string
	// fingerprint identifies the restriction; see Fingerprint.
	fingerprint Fingerprint
}

// New validates labels and filters and parses the filters once. Label names follow the Prometheus syntax;
// `__name__` and the cluster tenant labels are refused. Each filter must be a series selector such as
// `{env="prod"}`, `up{env=~"dev|stage"}` or `{a="1" or b="2"}`; the filters are ORed.
func New(labels []Label, filters []string) (*Enforcer, error) {
	e := &Enforcer{}
	seen := make(map[string]string, len(labels))
	for _, l := range labels {
		if err := CheckLabelName(l.Name); err != nil {
			return nil, fmt.Errorf("invalid extra label %q: %w", l.Name+"="+l.Value, err)
		}
		if l.Value == "" {
			// `team=""` selects series WITHOUT the label and strips the label on writes: almost surely a mistake.
			return nil, fmt.Errorf("invalid extra label %q: the value is empty; an empty value would select only "+
				"series without the label %q; use an extra filter such as {%s=\"\"} if that is meant", l.Name+"=", l.Name, l.Name)
		}
		if v, ok := seen[l.Name]; ok {
			return nil, fmt.Errorf("extra label %q is given twice (values %q and %q); give each label name once", l.Name, v, l.Value)
		}
		seen[l.Name] = l.Value
		e.labels = append(e.labels, l)
		e.labelFilters = append(e.labelFilters, metricsql.LabelFilter{Label: l.Name, Value: l.Value})
		e.extraLabelArgs = append(e.extraLabelArgs, l.Name+"="+l.Value)
	}
	for _, f := range filters {
		me, err := parseFilter(f)
		if err != nil {
			return nil, err
		}
		e.filters = append(e.filters, f)
		e.branches = append(e.branches, me.LabelFilterss...)
	}
	if err := e.guardSiblings(); err != nil {
		return nil, err
	}
	// One extra_filters[] per branch: VictoriaMetrics ORs them, and older versions (v1.79 here) cannot parse `or`
	// inside a selector.
	for _, b := range e.branches {
		me := &metricsql.MetricExpr{LabelFilterss: [][]metricsql.LabelFilter{b}}
		e.extraFiltersArgs = append(e.extraFiltersArgs, string(me.AppendString(nil)))
	}
	if !e.Restricted() {
		return nil, nil
	}
	// match[] for listing APIs: one per filter branch (VictoriaMetrics ORs match[] args), each with the labels.
	for _, b := range e.selectorBranches(nil) {
		me := &metricsql.MetricExpr{LabelFilterss: [][]metricsql.LabelFilter{b}}
		e.matchArgs = append(e.matchArgs, string(me.AppendString(nil)))
	}
	e.fingerprint = fingerprint(e.extraLabelArgs, e.extraFiltersArgs)
	return e, nil
}

// Fingerprint identifies the series an enforcer restricts to: enforcers of the same labels and filter branches
// have the same one, whatever their order; an unrestricted (nil) enforcer has the zero one and a restricted one never
// has. The gateway keys its concurrency pools and budgets by it, so that teams of one tenant never share one. It is
// a hash no one can collide: a team whose filters come from claims it controls (a policy template) must not be able
// to choose filters that share another team's pools.
func (e *Enforcer) Fingerprint() Fingerprint {
	if e == nil {
		return Fingerprint{}
	}
	return e.fingerprint
}

// Fingerprint is 128 bits of SHA-256 over the sorted labels and filter branches.
type Fingerprint [16]byte

func fingerprint(labels, filters []string) Fingerprint {
	// Each part and each string is written after its length, so no two lists write the same bytes: a label value
	// may hold any byte, a separator too.
	h := sha256.New()
	var n [8]byte
	for _, part := range [][]string{labels, filters} {
		sorted := slices.Sorted(slices.Values(part))
		_, _ = h.Write(binary.LittleEndian.AppendUint64(n[:0], uint64(len(sorted))))
		for _, s := range sorted {
			_, _ = h.Write(binary.LittleEndian.AppendUint64(n[:0], uint64(len(s))))
			_, _ = h.Write([]byte(s))
		}
	}
	var fp Fingerprint
	copy(fp[:], h.Sum(nil))
	fp[0] |= 1 // never the zero one
	return fp
}

// Restricted reports whether the enforcer limits anything.
func (e *Enforcer) Restricted() bool { return e != nil && (len(e.labels) > 0 || len(e.filters) > 0) }

// NumLabels is the number of extra labels the enforcer adds to every series written.
func (e *Enforcer) NumLabels() int {
	if e == nil {
		return 0
	}
	return len(e.labels)
}

// NumBranches is the number of or-branches of the extra filters together: the copies of each selector a query gets.
func (e *Enforcer) NumBranches() int {
	if e == nil {
		return 0
	}
	return len(e.branches)
}

// Labels returns a copy of the enforced labels.
func (e *Enforcer) Labels() []Label {
	if e == nil {
		return nil
	}
	return append([]Label(nil), e.labels...)
}

// Filters returns a copy of the extra filters as they were given to New.
func (e *Enforcer) Filters() []string {
	if e == nil {
		return nil
	}
	return append([]string(nil), e.filters...)
}

// String describes the enforcer for logs and docs, e.g. `labels {team="dev"} filters [{env=~"prod|stage"}]`.
func (e *Enforcer) String() string {
	if !e.Restricted() {
		return "unrestricted"
	}
	var sb strings.Builder
	sb.WriteString("labels {")
	for i, lf := range e.labelFilters {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.Write(lf.AppendString(nil))
	}
	sb.WriteString("} filters [")
	sb.WriteString(strings.Join(e.filters, ", "))
	sb.WriteByte(']')
	return sb.String()
}

// tenantLabels are the labels vmselect/vminsert read as the tenant in the cluster's multitenant APIs.
var tenantLabels = map[string]bool{"vm_account_id": true, "vm_project_id": true}

// CheckLabelName says why name cannot be an extra label: not a Prometheus label name, or __name__.
func CheckLabelName(name string) error {
	if name == "" {
		return fmt.Errorf("the label name is empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return fmt.Errorf("the label name must match [a-zA-Z_][a-zA-Z0-9_]*; character %q at position %d is not allowed", c, i)
	}
	if name == "__name__" {
		// extra_label=__name__=x would rename every written series; use an extra filter to limit metric names.
		return fmt.Errorf("__name__ cannot be an extra label; limit metric names with an extra filter such as {__name__=~\"app_.*\"}")
	}
	if tenantLabels[name] {
		return fmt.Errorf("%s cannot be an extra label: the tenant comes from vm_access.tenant_id", name)
	}
	return nil
}

// parseFilter parses one extra filter; it must be a plain series selector that selects something narrower than all.
func parseFilter(f string) (*metricsql.MetricExpr, error) {
	expr, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("invalid extra filter %q: cannot parse it as a series selector: %s", f, err)
	}
	me, ok := expr.(*metricsql.MetricExpr)
	if !ok {
		return nil, fmt.Errorf("invalid extra filter %q: want a series selector such as {env=\"prod\"} or up{env=\"prod\"}; "+
			"got %s", f, exprKind(expr))
	}
	if me.IsEmpty() {
		return nil, fmt.Errorf("invalid extra filter %q: an empty selector would match every series", f)
	}
	for _, lfs := range me.LabelFilterss {
		if len(lfs) == 0 {
			return nil, fmt.Errorf("invalid extra filter %q: an or-branch without matchers would match every series", f)
		}
		for _, lf := range lfs {
			if tenantLabels[lf.Label] {
				return nil, fmt.Errorf("invalid extra filter %q: %s cannot be filtered on: the tenant comes from vm_access.tenant_id", f, lf.Label)
			}
			if err := checkMatchesEmpty(lf); err != nil {
				return nil, fmt.Errorf("invalid extra filter %q: %w", f, err)
			}
		}
	}
	return me, nil
}

// ErrMatchesEmpty marks an extra filter refused because a regexp matcher in it matches the empty string.
var ErrMatchesEmpty = errors.New("matches the empty string")

// checkMatchesEmpty refuses a `=~` matcher whose regexp matches "": a series without the label has the value "", so
// {team=~".*"}, {team=~"dev|"} or {team=~"(dev)?"} admit every series that lacks the label, which is almost surely
// not what the issuer meant (prom-label-proxy refuses them too). The regexp is anchored as VictoriaMetrics anchors it,
// `^(?:re)$`, by metricsql's own function.
//
// Matchers that match "" in plain sight stay allowed, because they say what they do: `team=""` is documented (see New)
// as the deliberate way to select series without the label, and `team!="ops"` / `team!~"ops|sec"` are deny-lists,
// which select everything else on purpose.
func checkMatchesEmpty(lf metricsql.LabelFilter) error {
	if !lf.IsRegexp || lf.IsNegative {
		return nil
	}
	// The parser has compiled this very regexp, anchored, to validate it: this is a hit in metricsql's cache.
	re, err := metricsql.CompileRegexpAnchored(lf.Value)
	if err != nil {
		return fmt.Errorf("the regexp of %s does not compile: %s", lf.AppendString(nil), err)
	}
	if !re.MatchString("") {
		return nil
	}
	return fmt.Errorf("the regexp of %s %w, so the filter admits every series without the label %s; list the values "+
		"it should match (e.g. %s=~\"dev|ops\"), or select series without the label deliberately with %s=\"\"",
		lf.AppendString(nil), ErrMatchesEmpty, lf.Label, lf.Label, lf.Label)
}

// exprKind names what a non-selector expression is, for error messages.
func exprKind(e metricsql.Expr) string {
	s := string(e.AppendString(nil))
	switch t := e.(type) {
	case *metricsql.RollupExpr:
		return fmt.Sprintf("a range or offset expression %s", s)
	case *metricsql.FuncExpr:
		return fmt.Sprintf("a call of the function %s()", t.Name)
	case *metricsql.AggrFuncExpr:
		return fmt.Sprintf("a call of the aggregate function %s()", t.Name)
	case *metricsql.BinaryOpExpr:
		return fmt.Sprintf("a binary operation %q", t.Op)
	case *metricsql.NumberExpr:
		return fmt.Sprintf("the number %s", s)
	case *metricsql.StringExpr:
		return fmt.Sprintf("the string %s", s)
	}
	return fmt.Sprintf("%T %s", e, s)
}
