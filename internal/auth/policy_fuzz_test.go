package auth

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

// FuzzPolicyClaimPath: a path that parses prints back to itself, and looking it up never panics.
func FuzzPolicyClaimPath(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzPolicyClaimPath.
	claims := map[string]any{"a": map[string]any{"b.c": []any{"x"}, "d": "y"}, "kubernetes.io": map[string]any{"namespace": "n"}}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseClaimPath(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if len(p) == 0 || len(p) > maxPathSegments {
			t.Fatalf("%q: %d segments", s, len(p))
		}
		again, err := parseClaimPath(p.String())
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("%q parses to %q, printed %q, which parses to %q (%v)", s, p, p.String(), again, err)
		}
		if v, missing := p.lookup(claims); (v == nil) == (missing == "") {
			t.Fatalf("%q: lookup gave %v and missing %q", s, v, missing)
		}
	})
}

// FuzzPolicyTemplate: whatever a filter template and a claim value, the expanded filter is either refused or a
// valid filter with exactly the template's matchers, the value standing literally where the template stood: no
// value can add, drop or change a matcher.
func FuzzPolicyTemplate(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzPolicyTemplate.
	f.Fuzz(func(t *testing.T, filter, value string) {
		ft, err := parseFilterTemplate(filter)
		if err != nil {
			return
		}
		if ft.expr == nil {
			// Checked as a whole policy is, by enforce, when the file is loaded.
			if out := ft.expand(nil); out != filter {
				t.Fatalf("a filter without templates changed: %q -> %q", filter, out)
			}
			return
		}
		var paths []claimPath
		for _, p := range ft.t.parts {
			if p.claim != nil {
				paths = append(paths, p.claim)
			}
		}
		if nestedPaths(paths) {
			// {{claim "y"}} with {{claim "y.0"}}: no token holds a string at both; the refusal is right.
			return
		}
		claims := map[string]any{}
		for _, p := range paths {
			setClaim(claims, p, value)
		}
		cv := claimValues{}
		if err := cv.resolve(ft.t, claims); err != nil {
			if checkClaimValue(value) == nil {
				t.Fatalf("a valid value %q refused: %s", value, err)
			}
			return
		}
		if checkClaimValue(value) != nil {
			t.Fatalf("an invalid value %q accepted", value)
		}
		out := ft.expand(cv)
		if _, err := enforce.New(nil, []string{out}); err != nil {
			t.Fatalf("%q with %q expands to %q, which enforce refuses: %s", filter, value, out, err)
		}
		got, err := metricsql.Parse(out)
		if err != nil {
			t.Fatalf("%q with %q expands to %q: %s", filter, value, out, err)
		}
		me := got.(*metricsql.MetricExpr)
		if len(me.LabelFilterss) != len(ft.expr.LabelFilterss) {
			t.Fatalf("%q with %q: %d or-branches, want %d", filter, value, len(me.LabelFilterss), len(ft.expr.LabelFilterss))
		}
		for i, lfs := range ft.expr.LabelFilterss {
			if len(me.LabelFilterss[i]) != len(lfs) {
				t.Fatalf("%q with %q: branch %d has %d matchers, want %d", filter, value, i, len(me.LabelFilterss[i]), len(lfs))
			}
			for j, lf := range lfs {
				g := me.LabelFilterss[i][j]
				if g.Label != lf.Label || g.IsRegexp != lf.IsRegexp || g.IsNegative != lf.IsNegative {
					t.Fatalf("%q with %q: matcher %v became %v", filter, value, lf, g)
				}
				sub := value
				if lf.IsRegexp {
					sub = regexp.QuoteMeta(value)
				}
				want := strings.Map(func(r rune) rune {
					if isPlaceholder(r) {
						return placeholderBase
					}
					return r
				}, lf.Value)
				want = strings.ReplaceAll(want, string(placeholderBase), sub)
				if g.Value != want {
					t.Fatalf("%q with %q: matcher value %q, want %q", filter, value, g.Value, want)
				}
				// In a regexp matcher that is only a template, the value matches itself and nothing else.
				if lf.IsRegexp && len([]rune(lf.Value)) == 1 {
					re := regexp.MustCompile("^(?:" + g.Value + ")$")
					if !re.MatchString(value) || (value != "x" && re.MatchString("x")) {
						t.Fatalf("%q with %q: the regexp %q does not match the value alone", filter, value, g.Value)
					}
				}
			}
		}
	})
}

// nestedPaths tells whether one of paths lies inside another: a claim cannot be a string and an object at once.
func nestedPaths(paths []claimPath) bool {
	for _, a := range paths {
		for _, b := range paths {
			if len(a) < len(b) && slices.Equal(a, b[:len(a)]) {
				return true
			}
		}
	}
	return false
}

func setClaim(claims map[string]any, p claimPath, value string) {
	m := claims
	for _, seg := range p[:len(p)-1] {
		next, ok := m[seg].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[seg] = next
		}
		m = next
	}
	m[p[len(p)-1]] = value
}
