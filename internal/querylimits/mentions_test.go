package querylimits

import (
	"math/rand"
	"strings"
	"testing"
)

// BenchmarkMentions: the two scans every read's query goes through, over a Grafana latency panel's query.
func BenchmarkMentions(b *testing.B) {
	q := `histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{job="api",handler=~"/api/v1/.*",team="dev"}[5m])) by (le, handler))`
	b.ReportAllocs()
	for b.Loop() {
		if MentionsCountValues(q) || MentionsFanOut(q) {
			b.Fatal("a name the query does not have")
		}
	}
}

// TestMentionsScan: the underscore-to-underscore scan agrees with a byte-by-byte one on random queries made of the
// names' pieces, underscores, other bytes than ASCII and backslashes.
func TestMentionsScan(t *testing.T) {
	byByte := func(q string, escapes bool, names ...string) bool {
		for i := 0; i < len(q); i++ {
			if q[i] >= 0x80 || escapes && q[i] == '\\' {
				return true
			}
			for _, name := range names {
				if i+len(name) <= len(q) && strings.EqualFold(q[i:i+len(name)], name) {
					return true
				}
			}
		}
		return false
	}
	// A word without an underscore, byte by byte: no byte a name may hold beside it.
	word := func(q, w string) bool {
		name := func(b byte) bool {
			return strings.IndexByte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:.", b) >= 0
		}
		for i := 0; i+len(w) <= len(q); i++ {
			if strings.EqualFold(q[i:i+len(w)], w) && (i == 0 || !name(q[i-1])) && (i+len(w) == len(q) || !name(q[i+len(w)])) {
				return true
			}
		}
		return false
	}
	pieces := []string{"count", "COUNT", "_", "values", "Values", "histogram", "HISTOGRAM", "quantiles", "over", "time", "_over_time", "x", "(", "é", `\`, " ", "__", ":", "."}
	r := rand.New(rand.NewSource(1))
	for range 20000 {
		var b strings.Builder
		for range r.Intn(12) {
			b.WriteString(pieces[r.Intn(len(pieces))])
		}
		q := b.String()
		if got, want := MentionsCountValues(q), byByte(q, false, "count_values"); got != want {
			t.Errorf("MentionsCountValues(%q) = %v; byte by byte %v", q, got, want)
		}
		if got, want := MentionsFanOut(q), byByte(q, true, "histogram_over_time", "quantiles_over_time", "count_values") || word(q, "histogram"); got != want {
			t.Errorf("MentionsFanOut(%q) = %v; byte by byte %v", q, got, want)
		}
	}
}
