package enforce

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// doublingWith returns a WITH query that expands to 2^n selectors.
func doublingWith(n int) string {
	var sb strings.Builder
	sb.WriteString("with (t0 = up")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, ", t%d = t%d + t%d", i, i-1, i-1)
	}
	fmt.Fprintf(&sb, ") t%d", n)
	return sb.String()
}

func TestQueryTooManySelectors(t *testing.T) {
	e := devOnly(t)
	if _, err := e.Query(doublingWith(12)); err != nil {
		t.Fatalf("4096 selectors: %s", err)
	}
	_, err := e.Query(doublingWith(14))
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "more than 10000 series selectors") {
		t.Fatalf("16384 selectors: %v; want a 400 error about the selector count", err)
	}
}
