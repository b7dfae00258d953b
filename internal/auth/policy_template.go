package auth

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// A template takes a label value or part of one from a claim: {{claim "path"}} (the path may also be written in
// backquotes, {{claim `"https://acme.example/team"`}}, to spare the escapes). It may stand in an extra label's value
// and inside the quoted value of a matcher in an extra filter, nowhere else.

// maxTemplates bounds the templates of one string.
const maxTemplates = 16

// maxClaimValue bounds a value taken from a claim; label values are short names, not documents.
const maxClaimValue = 1024

// templated is a label value or filter split into literal text and claims.
type templated struct {
	text  string // as written, for messages
	parts []tmplPart
}

type tmplPart struct {
	lit   string
	claim claimPath // nil for literal text
}

func (t *templated) hasClaims() bool {
	return len(t.parts) > 1 || len(t.parts) == 1 && t.parts[0].claim != nil
}

// parseTemplated splits s into literal text and {{claim "path"}} templates. Any other use of "{{" is an error:
// there is no way to write it literally, and a typo must not become a fixed label value.
func parseTemplated(s string) (*templated, error) {
	t := &templated{text: s}
	n := 0
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			if s != "" {
				t.parts = append(t.parts, tmplPart{lit: s})
			}
			return t, nil
		}
		if i > 0 {
			t.parts = append(t.parts, tmplPart{lit: s[:i]})
		}
		if n++; n > maxTemplates {
			return nil, fmt.Errorf("more than %d templates in one value", maxTemplates)
		}
		path, rest, err := parseClaimTemplate(s[i:])
		if err != nil {
			return nil, err
		}
		t.parts = append(t.parts, tmplPart{claim: path})
		s = rest
	}
}

// parseClaimTemplate reads one {{claim "path"}} at the start of s and returns the rest of s after it.
func parseClaimTemplate(s string) (claimPath, string, error) {
	const usage = `want {{claim "path"}}, e.g. {{claim "team"}} or {{claim "\"https://acme.example/team\""}}`
	end := strings.Index(s, "}}")
	shown := s
	if end >= 0 {
		shown = s[:end+2]
	}
	if len(shown) > 2*maxPathLen {
		shown = shown[:2*maxPathLen] + "..."
	}
	body := strings.TrimLeft(s[2:], " ")
	name, ok := strings.CutPrefix(body, "claim")
	if !ok || name == "" || name[0] != ' ' {
		return nil, "", fmt.Errorf("unknown template %s: %s", strconv.Quote(shown), usage)
	}
	name = strings.TrimLeft(name, " ")
	var lit string
	switch {
	case strings.HasPrefix(name, "`"):
		j := strings.IndexByte(name[1:], '`')
		if j < 0 {
			return nil, "", fmt.Errorf("template %s: unterminated `quoted` claim path: %s", strconv.Quote(shown), usage)
		}
		lit, name = name[1:1+j], name[2+j:]
	case strings.HasPrefix(name, `"`):
		j := 1
		for j < len(name) && name[j] != '"' {
			if name[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(name) {
			return nil, "", fmt.Errorf("template %s: unterminated \"quoted\" claim path: %s", strconv.Quote(shown), usage)
		}
		var err error
		if lit, err = strconv.Unquote(name[:j+1]); err != nil {
			return nil, "", fmt.Errorf("template %s: the claim path is not a valid quoted string: %s", strconv.Quote(shown), usage)
		}
		name = name[j+1:]
	default:
		return nil, "", fmt.Errorf("template %s: the claim path must be quoted: %s", strconv.Quote(shown), usage)
	}
	rest, ok := strings.CutPrefix(strings.TrimLeft(name, " "), "}}")
	if !ok {
		return nil, "", fmt.Errorf("template %s: want }} after the claim path: %s", strconv.Quote(shown), usage)
	}
	path, err := parseClaimPath(lit)
	if err != nil {
		return nil, "", fmt.Errorf("template %s: %w", strconv.Quote(shown), err)
	}
	return path, rest, nil
}

// claimValues are the values a token gives a policy's templates, keyed by path text.
type claimValues map[string]string

// resolve takes the claim each template names from claims and checks that it is usable as a label value.
func (cv claimValues) resolve(t *templated, claims map[string]any) error {
	for _, p := range t.parts {
		if p.claim == nil {
			continue
		}
		key := p.claim.String()
		if _, done := cv[key]; done {
			continue
		}
		v, err := labelValueOf(p.claim, claims)
		if err != nil {
			return err
		}
		cv[key] = v
	}
	return nil
}

// errTemplateClaim is a claim a template cannot use. Its text names the claim, never its value.
type errTemplateClaim struct{ msg string }

func (e *errTemplateClaim) Error() string { return e.msg }

// labelValueOf is the claim at p if it can be a label value: a non-empty string of printable characters without
// quotes, braces or backslashes. Anything else makes the policy fail for the token: an empty value (team="" selects
// the series WITHOUT the label), a list or an object (no one value), a number (a policy that templates a number
// almost surely meant another claim), or text that could be read as selector syntax.
func labelValueOf(p claimPath, claims map[string]any) (string, error) {
	v, missing := p.lookup(claims)
	fail := func(format string, args ...any) error {
		return &errTemplateClaim{msg: fmt.Sprintf("{{claim %s}}: ", strconv.Quote(p.String())) + fmt.Sprintf(format, args...)}
	}
	if missing != "" {
		return "", fail("the claim %s", missing)
	}
	s, ok := v.(string)
	if !ok {
		return "", fail("the claim is %s, not a string", kindOf(v))
	}
	if err := checkClaimValue(s); err != nil {
		return "", fail("the claim's value %s", err)
	}
	return s, nil
}

func checkClaimValue(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > maxClaimValue:
		return fmt.Errorf("is longer than %d bytes", maxClaimValue)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return errors.New("has a control character")
		case strings.ContainsRune("\"'`{}\\", r):
			return errors.New("has a quote, a brace or a backslash")
		case isPlaceholder(r):
			return errors.New("has a private-use character")
		}
	}
	return nil
}

// expand writes t with the claims' values.
func (t *templated) expand(cv claimValues) string {
	if !t.hasClaims() {
		return t.text
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.claim == nil {
			b.WriteString(p.lit)
		} else {
			b.WriteString(cv[p.claim.String()])
		}
	}
	return b.String()
}

// Placeholders stand for a filter's templates while it is parsed: private-use characters, one per template, which
// are no part of MetricsQL syntax and so can only end up inside a quoted string.
const placeholderBase = '\ue000'

func isPlaceholder(r rune) bool { return r >= placeholderBase && r < placeholderBase+maxTemplates }

// filterTemplate is an extra filter with templates in the values of its matchers. The claim values are put in the
// parsed selector's values, never spliced into text: printing the selector quotes them as MetricsQL strings, and
// in a regexp matcher (=~, !~) they are escaped to match literally, so no value can change what the selector means.
type filterTemplate struct {
	t    *templated
	expr *metricsql.MetricExpr // with placeholders in label values; nil without templates
}

func parseFilterTemplate(s string) (*filterTemplate, error) {
	t, err := parseTemplated(s)
	if err != nil {
		return nil, err
	}
	ft := &filterTemplate{t: t}
	if !t.hasClaims() {
		return ft, nil
	}
	var b strings.Builder
	n := 0
	for _, p := range t.parts {
		if p.claim == nil {
			if strings.ContainsFunc(p.lit, isPlaceholder) {
				return nil, fmt.Errorf("the filter %s has a private-use character (U+E000..U+E00F)", strconv.Quote(s))
			}
			b.WriteString(p.lit)
			continue
		}
		b.WriteRune(placeholderBase + rune(n))
		n++
	}
	withPlaceholders := b.String()
	// Checked here, before metricsql.Parse, with the bounded checks enforce applies to every filter.
	if _, err := enforce.New(nil, []string{withPlaceholders}); err != nil {
		return nil, fmt.Errorf("the filter %s: a template must stand inside the quoted value of a matcher, as in "+
			`{team="{{claim \"team\"}}"} or {ns=~"{{claim \"ns\"}}-.*"}: %s`, strconv.Quote(s), placeholdersShown(err.Error()))
	}
	expr, err := metricsql.Parse(withPlaceholders)
	if err != nil {
		return nil, fmt.Errorf("the filter %s cannot be parsed: %s", strconv.Quote(s), err)
	}
	me, ok := expr.(*metricsql.MetricExpr)
	if !ok {
		return nil, fmt.Errorf("the filter %s is not a series selector", strconv.Quote(s))
	}
	found := 0
	for _, lfs := range me.LabelFilterss {
		for _, lf := range lfs {
			if strings.ContainsFunc(lf.Label, isPlaceholder) {
				return nil, fmt.Errorf("the filter %s has a template in a label name; templates may stand in label values only", strconv.Quote(s))
			}
			for _, r := range lf.Value {
				if isPlaceholder(r) {
					found++
				}
			}
		}
	}
	if found != n {
		return nil, fmt.Errorf("the filter %s: %d of its %d templates are not inside the quoted value of a matcher", strconv.Quote(s), n-found, n)
	}
	ft.expr = me
	return ft, nil
}

// expand prints the filter with the claims' values in place of its templates.
func (f *filterTemplate) expand(cv claimValues) string {
	if f.expr == nil {
		return f.t.text
	}
	var values []string
	for _, p := range f.t.parts {
		if p.claim != nil {
			values = append(values, cv[p.claim.String()])
		}
	}
	me := &metricsql.MetricExpr{LabelFilterss: make([][]metricsql.LabelFilter, len(f.expr.LabelFilterss))}
	for i, lfs := range f.expr.LabelFilterss {
		out := make([]metricsql.LabelFilter, len(lfs))
		for j, lf := range lfs {
			if strings.ContainsFunc(lf.Value, isPlaceholder) {
				lf.Value = substitute(lf.Value, values, lf.IsRegexp)
			}
			out[j] = lf
		}
		me.LabelFilterss[i] = out
	}
	if lfs := me.LabelFilterss; len(lfs) > 0 && len(lfs[0]) > 0 && lfs[0][0].Label == "__name__" && !plainIdent(lfs[0][0].Value) {
		// metricsql prints a metric name as an identifier, escaping what an identifier cannot hold; its escape of a
		// non-printable rune above U+00FF is malformed (metricsql v0.87.4: "\u0380" comes out as invalid UTF-8). A
		// name from a claim that is not a plain identifier is printed as the matcher it is, its value quoted.
		return string(appendQuotedSelector(nil, me.LabelFilterss))
	}
	return string(me.AppendString(nil))
}

// plainIdent reports whether s prints as a MetricsQL identifier without escapes (ASCII letters, digits, _ : .).
func plainIdent(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == ':' || i > 0 && ('0' <= c && c <= '9' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// appendQuotedSelector prints a selector with every matcher, __name__ included, as label="quoted value".
func appendQuotedSelector(dst []byte, lfss [][]metricsql.LabelFilter) []byte {
	dst = append(dst, '{')
	for i, lfs := range lfss {
		if i > 0 {
			dst = append(dst, " or "...)
		}
		for j := range lfs {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = lfs[j].AppendString(dst)
		}
	}
	return append(dst, '}')
}

// substitute replaces each placeholder in s with its value, escaped for a regexp when re is set.
func substitute(s string, values []string, re bool) string {
	var b strings.Builder
	for _, r := range s {
		if !isPlaceholder(r) {
			b.WriteRune(r)
			continue
		}
		v := values[r-placeholderBase]
		if re {
			v = regexp.QuoteMeta(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

// placeholdersShown writes the placeholders of a message about a filter, quoted as \ue000 or raw, as {{claim}}.
func placeholdersShown(msg string) string {
	for i := range maxTemplates {
		r := placeholderBase + rune(i)
		msg = strings.ReplaceAll(msg, string(r), "{{claim}}")
		msg = strings.ReplaceAll(msg, fmt.Sprintf(`\u%04x`, r), "{{claim}}")
	}
	return msg
}
