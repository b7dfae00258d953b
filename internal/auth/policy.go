package auth

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"
	"go.yaml.in/yaml/v3"

	"github.com/vmgateway/vmgateway/internal/confsource"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// Access policies (-auth.policyFile) give access to tokens that carry no vm_access claim, by the claims their
// identity provider already issues: the first policy in file order whose match holds gives its vm_access.

// policy is one entry of the policy file. It is immutable once parsed.
type policy struct {
	name  string
	line  int
	match []matcher
	// va is the policy's vm_access as written: its labels and filters may hold templates.
	va      VMAccess
	labels  []labelTemplate // sorted by name
	filters []*filterTemplate
	// static is the enforcer of a policy without templates, built once.
	static   *enforce.Enforcer
	hasClaim bool
	matches  *metrics.Counter
}

type labelTemplate struct {
	name  string
	value *templated
}

// matcher is one entry of a policy's match: the claim at path equals value, or matches re whole.
type matcher struct {
	path  claimPath
	value string // as written, =~ included
	exact string
	re    *regexp.Regexp
}

// policySet is a parsed policy file, immutable once built: a reload publishes a new one.
type policySet struct {
	policies []*policy
}

const (
	maxPolicies     = 10000
	maxMatchEntries = 64
	maxPolicyName   = 128
)

var policyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)

// holds reports whether the entry holds for the claims.
func (m *matcher) holds(claims map[string]any) bool {
	v, n := m.path.find(claims)
	if n < len(m.path) {
		return false
	}
	if list, isList := v.([]any); isList {
		for _, e := range list {
			if s, ok := scalarText(e); ok && m.test(s) {
				return true
			}
		}
		return false
	}
	s, ok := scalarText(v)
	return ok && m.test(s)
}

// why says why the entry does not hold for the claims, without the claim's value; for `token explain`.
func (m *matcher) why(claims map[string]any) string {
	v, missing := m.path.lookup(claims)
	switch _, isList := v.([]any); {
	case missing != "":
		return "the claim " + missing
	case isList:
		return fmt.Sprintf("no element of the list %s", m.want())
	}
	if _, ok := scalarText(v); !ok {
		return fmt.Sprintf("the claim is %s; want a string, number, boolean or list", kindOf(v))
	}
	if m.re != nil {
		return "the claim's value does not match " + strconv.Quote(m.value)
	}
	return "the claim's value is not " + strconv.Quote(m.exact)
}

func (m *matcher) test(s string) bool {
	if m.re != nil {
		return m.re.MatchString(s)
	}
	return s == m.exact
}

func (m *matcher) want() string {
	if m.re != nil {
		return "matches " + strconv.Quote(m.value)
	}
	return "is " + strconv.Quote(m.exact)
}

// failed is the first match entry of p that does not hold for claims; nil when all hold.
func (p *policy) failed(claims map[string]any) *matcher {
	for i := range p.match {
		if !p.match[i].holds(claims) {
			return &p.match[i]
		}
	}
	return nil
}

// enforcer builds the token's enforcer from the policy, with the token's claims in its templates.
func (p *policy) enforcer(claims map[string]any) (*enforce.Enforcer, error) {
	if !p.hasClaim {
		return p.static, nil
	}
	cv := claimValues{}
	for _, l := range p.labels {
		if err := cv.resolve(l.value, claims); err != nil {
			return nil, err
		}
	}
	for _, f := range p.filters {
		if err := cv.resolve(f.t, claims); err != nil {
			return nil, err
		}
	}
	return p.expand(cv).enforcer()
}

// expand is the policy's vm_access with cv's values in its templates.
func (p *policy) expand(cv claimValues) VMAccess {
	va := VMAccess{Tenant: p.va.Tenant, Mode: p.va.Mode}
	if len(p.labels) > 0 {
		va.ExtraLabels = make(map[string]string, len(p.labels))
		for _, l := range p.labels {
			va.ExtraLabels[l.name] = l.value.expand(cv)
		}
	}
	for _, f := range p.filters {
		va.ExtraFilters = append(va.ExtraFilters, f.expand(cv))
	}
	return va
}

type policyAddFunc func(n *yaml.Node, format string, args ...any)

// parsePolicies reads a policy file; source names it in errors (the path, or the URL without credentials).
func parsePolicies(data []byte, source string) (*policySet, error) {
	list, pp, err := confsource.TopList{What: "policy file", Key: "policies", Items: "policies", ForNone: "for none"}.Parse(data, source)
	if err != nil {
		return nil, err
	}
	addf := pp.Add
	set := &policySet{}
	if list != nil {
		if len(list.Content) > maxPolicies {
			addf(list, "policies: %d policies; at most %d are accepted", len(list.Content), maxPolicies)
		} else {
			names := map[string]int{}
			for _, item := range list.Content {
				p := parsePolicy(confsource.Resolve(item), addf)
				if p == nil {
					continue
				}
				if line, dup := names[p.name]; dup {
					addf(item, "duplicate policy name %q (first at line %d): names must be unique", p.name, line)
					continue
				}
				names[p.name] = p.line
				set.policies = append(set.policies, p)
			}
		}
	}
	if err := pp.Err(); err != nil {
		return nil, err
	}
	for _, p := range set.policies {
		p.matches = metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_auth_policy_matches_total{policy=%q}`, p.name))
	}
	return set, nil
}

// emptyPolicyFile refuses an empty file: more often a truncated file or download than a wish for no policies.

// parsePolicy reads one policy; it reports its problems through addf and returns nil when there are any.
func parsePolicy(item *yaml.Node, addf policyAddFunc) *policy {
	if item.Kind != yaml.MappingNode {
		addf(item, "want a policy (a mapping with name, match and vm_access), got %s", confsource.Describe(item))
		return nil
	}
	bad := 0
	addf2 := func(n *yaml.Node, format string, args ...any) { bad++; addf(n, format, args...) }
	var nameNode, matchNode, vaNode *yaml.Node
	confsource.EachKey(item, addf2, func(key, val *yaml.Node) {
		switch key.Value {
		case "name":
			nameNode = val
		case "match":
			matchNode = val
		case "vm_access":
			vaNode = val
		default:
			addf2(key, "unknown key %q: a policy has name, match and vm_access", key.Value)
		}
	})
	p := &policy{line: item.Line}
	switch {
	case nameNode == nil:
		addf2(item, "the policy has no name: a unique name is required; logs, metrics and `token explain` show it")
	case nameNode.Kind != yaml.ScalarNode || nameNode.ShortTag() != "!!str" || !policyNameRE.MatchString(nameNode.Value) || len(nameNode.Value) > maxPolicyName:
		addf2(nameNode, "name: want letters, digits and _ . : - (starting with a letter or digit, at most %d bytes), got %s", maxPolicyName, confsource.Describe(nameNode))
	default:
		p.name = nameNode.Value
	}
	prefix := ""
	if p.name != "" {
		prefix = fmt.Sprintf("policy %q: ", p.name)
	}
	if matchNode == nil {
		addf2(item, "%sno match: want a mapping of claim paths to values, at least one entry", prefix)
	} else {
		p.match = parseMatch(matchNode, prefix, addf2)
	}
	if vaNode == nil {
		addf2(item, "%sno vm_access: want the access the policy gives, as a token's vm_access claim would", prefix)
	} else {
		parsePolicyAccess(p, vaNode, prefix, addf2)
	}
	if bad > 0 {
		return nil
	}
	return p
}

func parseMatch(n *yaml.Node, prefix string, addf policyAddFunc) []matcher {
	if n.Kind != yaml.MappingNode {
		addf(n, "%smatch: want a mapping of claim paths to values, got %s", prefix, confsource.Describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		addf(n, "%smatch: no entries; a policy that matched every token would give its access to every token the keys verify", prefix)
		return nil
	}
	if len(n.Content)/2 > maxMatchEntries {
		addf(n, "%smatch: %d entries; at most %d are accepted", prefix, len(n.Content)/2, maxMatchEntries)
		return nil
	}
	var out []matcher
	seen := map[string]int{}
	confsource.EachKey(n, addf, func(key, val *yaml.Node) {
		path, err := parseClaimPath(key.Value)
		if err != nil {
			addf(key, "%smatch: %s", prefix, err)
			return
		}
		if line, dup := seen[path.String()]; dup {
			addf(key, "%smatch: the claim %s is matched twice (first at line %d)", prefix, path, line)
			return
		}
		seen[path.String()] = key.Line
		text, ok := matchValueText(val)
		if !ok {
			addf(val, "%smatch %s: want a string (exact), or =~ and a regexp, got %s", prefix, path, confsource.Describe(val))
			return
		}
		m := matcher{path: path, value: text}
		if re, isRE := strings.CutPrefix(text, "=~"); isRE {
			if re == "" {
				addf(val, "%smatch %s: =~ without a regexp", prefix, path)
				return
			}
			// Anchored: a regexp must match the whole value, so `metrics-qa` never matches "not-metrics-qa".
			compiled, err := regexp.Compile("^(?:" + re + ")$")
			if err != nil {
				addf(val, "%smatch %s: invalid regexp %q: %s", prefix, path, re, err)
				return
			}
			m.re = compiled
		} else if text == "" {
			addf(val, "%smatch %s: an empty value; want the value the claim must have", prefix, path)
			return
		} else {
			m.exact = text
		}
		out = append(out, m)
	})
	return out
}

// matchValueText is a match value as text. Unquoted YAML numbers and booleans are accepted in their JSON spelling
// (15, 1.5, true), since claims are compared by their JSON text; other spellings (0x0f, 1_000, True, .inf) would
// never match and are refused.
func matchValueText(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		return "", false
	}
	switch n.ShortTag() {
	case "!!str":
		return n.Value, true
	case "!!bool":
		return n.Value, n.Value == "true" || n.Value == "false"
	case "!!int", "!!float":
		var num json.Number
		return n.Value, json.Unmarshal([]byte(n.Value), &num) == nil && num.String() == n.Value
	}
	return "", false
}

// parsePolicyAccess reads the policy's vm_access exactly as a token's is read, then its templates, then checks
// that it yields a valid access: with every template given a plain value, it must pass what a token's must.
func parsePolicyAccess(p *policy, n *yaml.Node, prefix string, addf policyAddFunc) {
	if n.Kind != yaml.MappingNode {
		addf(n, "%svm_access: want a mapping, got %s", prefix, confsource.Describe(n))
		return
	}
	var raw any
	if err := n.Decode(&raw); err != nil {
		addf(n, "%svm_access: %s", prefix, err)
		return
	}
	v, err := jsonLike(raw)
	if err != nil {
		addf(n, "%svm_access: %s", prefix, err)
		return
	}
	if v.(map[string]any)["mode"] == nil {
		addf(n, "%svm_access: no mode; a policy must say it: 0 (full: read, write and admin), 1 (read) or 2 (write)", prefix)
		return
	}
	va, verr := vmAccessFrom(v)
	if verr != nil {
		addf(fieldNode(n, verr.Error()), "%s%s", prefix, verr)
		return
	}
	p.va = va
	bad := false
	for _, name := range slices.Sorted(maps.Keys(va.ExtraLabels)) {
		if strings.Contains(name, "{{") {
			addf(fieldNode(n, "vm_access.extra_labels"), "%svm_access: the label name %q has a template; templates may stand in label values and filters only", prefix, name)
			bad = true
			continue
		}
		t, err := parseTemplated(va.ExtraLabels[name])
		if err != nil {
			addf(fieldNode(n, "vm_access.extra_labels"), "%svm_access: the label %s: %s", prefix, name, err)
			bad = true
			continue
		}
		p.labels = append(p.labels, labelTemplate{name: name, value: t})
		p.hasClaim = p.hasClaim || t.hasClaims()
	}
	for i, f := range va.ExtraFilters {
		ft, err := parseFilterTemplate(f)
		if err != nil {
			addf(fieldNode(n, "vm_access.extra_filters"), "%svm_access: extra filter #%d: %s", prefix, i+1, err)
			bad = true
			continue
		}
		p.filters = append(p.filters, ft)
		p.hasClaim = p.hasClaim || ft.t.hasClaims()
	}
	if bad {
		return
	}
	// A valid claim value cannot break a valid template, so one probe value shows whether the policy can yield
	// a valid access at all.
	probe := claimValues{}
	for _, l := range p.labels {
		probeValues(probe, l.value)
	}
	for _, f := range p.filters {
		probeValues(probe, f.t)
	}
	enf, err := p.expand(probe).enforcer()
	if err != nil {
		msg := err.Error()
		if p.hasClaim {
			msg += fmt.Sprintf(" (checked with every {{claim}} taken as %q)", probeValue)
		}
		addf(n, "%svm_access: %s", prefix, msg)
		return
	}
	if !p.hasClaim {
		p.static = enf
	}
}

const probeValue = "x"

func probeValues(cv claimValues, t *templated) {
	for _, part := range t.parts {
		if part.claim != nil {
			cv[part.claim.String()] = probeValue
		}
	}
}

// fieldNode finds the key node of the vm_access field an error message names ("vm_access.extra_labels: ..."), for
// its line; n itself when the message names none.
func fieldNode(n *yaml.Node, msg string) *yaml.Node {
	rest, ok := strings.CutPrefix(msg, "vm_access.")
	if !ok {
		return n
	}
	name := rest
	if i := strings.IndexAny(rest, ":. "); i >= 0 {
		name = rest[:i]
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i]
		}
	}
	return n
}

// jsonLike turns YAML-decoded values into what decodeJSON yields for a token: json.Number numbers,
// map[string]any objects.
func jsonLike(v any) (any, error) {
	switch v := v.(type) {
	case nil, string, bool:
		return v, nil
	case int:
		return json.Number(strconv.Itoa(v)), nil
	case int64:
		return json.Number(strconv.FormatInt(v, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(v, 10)), nil
	case float64:
		return json.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			var err error
			if out[i], err = jsonLike(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			var err error
			if out[k], err = jsonLike(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported YAML value %T; want strings, numbers, lists and mappings with string keys", v)
}
