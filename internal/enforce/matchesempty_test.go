package enforce

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// emptyMatchCases are regexps of a `team=~` extra filter and whether they match the empty string, i.e. admit
// series without the label.
var emptyMatchCases = []struct {
	re           string
	matchesEmpty bool
}{
	{`.*`, true}, {`dev|`, true}, {`(dev)?`, true}, {``, true}, {`(?i)DEV|`, true}, {`a*`, true}, {`x?y?`, true},
	{`^$`, true}, {`(?s).*`, true}, {`[a-z]*`, true}, {`|dev`, true},
	{`.+`, false}, {`dev|ops`, false}, {`dev.*`, false}, {`.*dev.*`, false}, {`d?e`, false}, {`(?i)dev`, false},
}

func TestNewRefusesFiltersMatchingEmpty(t *testing.T) {
	for _, tc := range emptyMatchCases {
		f := fmt.Sprintf(`{team=~%q}`, tc.re)
		_, err := New(nil, []string{f})
		if refused := errors.Is(err, ErrMatchesEmpty); refused != tc.matchesEmpty {
			t.Errorf("New(%s): error %v; want refused=%t", f, err, tc.matchesEmpty)
			continue
		}
		if tc.matchesEmpty && !strings.Contains(err.Error(), "so the filter admits every series without the label team") {
			t.Errorf("New(%s): error %q does not say what the filter would admit", f, err)
		}
		if !tc.matchesEmpty && err != nil {
			t.Errorf("New(%s): %v", f, err)
		}
	}
	for _, tc := range []struct {
		filters []string
		refused bool
	}{
		{[]string{`{team=""}`}, false},              // series without the label, said outright
		{[]string{`{team!="ops"}`}, false},          // a deny-list
		{[]string{`{team!~"ops|"}`}, false},         // a deny-list; its regexp matching "" excludes unlabelled series
		{[]string{`up{team=~".*"}`}, true},          // the metric name does not make the matcher mean anything
		{[]string{`{env="prod",team=~".*"}`}, true}, // a no-op matcher beside a real one: the issuer meant something
		{[]string{`{env="prod" or team=~"dev|"}`}, true},
		{[]string{`{env="prod"}`, `{team=~"(dev)?"}`}, true},
		{[]string{`{__name__=~".*"}`}, true},
		{[]string{`{__name__=~"app_.*"}`}, false},
	} {
		_, err := New([]Label{{"tenant_team", "x"}}, tc.filters)
		if refused := errors.Is(err, ErrMatchesEmpty); refused != tc.refused || (!tc.refused && err != nil) {
			t.Errorf("New(%q): error %v; want refused=%t", tc.filters, err, tc.refused)
		}
	}
	if _, err := New(nil, []string{`{team=~"(dev"}`}); err == nil || errors.Is(err, ErrMatchesEmpty) {
		t.Errorf("an invalid regexp: %v; want a parse error", err)
	}
}

// TestVMFiltersMatchingEmpty checks the rule against VictoriaMetrics itself: for every regexp, the real database
// returns the series without the label exactly when the rule says the regexp matches "".
func TestVMFiltersMatchingEmpty(t *testing.T) {
	vm := vmtest.Start(t)
	post(t, vm.URL+"/api/v1/import/prometheus", "text/plain",
		fmt.Sprintf("empty_probe{team=\"dev\"} 1 %[1]d\nempty_probe{team=\"ops\"} 1 %[1]d\nempty_probe{other=\"x\"} 1 %[1]d\n", time.Now().UnixMilli()))
	vm.Flush(t)
	vmtest.Eventually(t, func() (bool, string) {
		n := len(seriesOf(t, vm.URL, `empty_probe`))
		return n == 3, fmt.Sprintf("%d series visible; want 3", n)
	})
	for _, tc := range emptyMatchCases {
		unlabelled := false
		for _, s := range seriesOf(t, vm.URL, fmt.Sprintf(`empty_probe{team=~%q}`, tc.re)) {
			if s["team"] == "" {
				unlabelled = true
			}
		}
		if unlabelled != tc.matchesEmpty {
			t.Errorf("VictoriaMetrics: team=~%q selects the series without team: %t; the rule says %t", tc.re, unlabelled, tc.matchesEmpty)
		}
	}
}
