package enforce

import (
	"bytes"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

// TestRegexpMemoryEstimate: what compiledBytes reads of a compiled regexp is what the heap holds for it, and the
// estimate from the tree (memoryUpper) is never below it, for the shapes of dashboards and of attacks.
func TestRegexpMemoryEstimate(t *testing.T) {
	for _, shape := range []string{`a%d`, `foo.*bar%d`, `(?:aaaaaaaaaaaaaaaa){900}%d`, `[a-zA-Z0-9_-]{1,63}%d`, `\pL+%d`,
		`\pL{8}%d`, `.{0,100}%d`, `(?i)error|warn|fatal%d`, `[0-9a-f]{32}%d`, `host-(a|b|c|d|e|f|g|h)%d`, `\w+%d`,
		`(?i)[a-z]+%d`, `[\x{100}-\x{10000}]{20}%d`, `\b{100}%d`, `(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v|w|x|y|z){10}%d`,
		`\pL\pN\pL\pN%d`, `[^a]+%d`, `\PL{5}%d`, `(?s).*%d`, `(?i)\pL+%d`, `(?:(?:(?:a{2}){2}){2}){2}%d`,
		// From an attacker's review: a one-pass alternation, whose every step holds the first runes of the branches
		// after it, and texts that are regexps only inside the parser's ^(?:...)$.
		alternationOf(320) + `|%d`, `)\pL{100}x%d(?:`, `x%d)|(?:\pL{30}`, `(?:\p{Lu}a|\p{Ll}b|\p{Lt}c|\p{Lm}d|\p{Lo}e)+%d`} {
		// Enough copies for a MiB or so, so that what else the heap does is noise beside them; two collections
		// first, since what sync.Pools dropped at one is freed at the next.
		one, _ := compiledBytes(regexp.MustCompile(anchoredText(fmt.Sprintf(shape, 0))))
		n := min(max(1<<20/max(one, 1), 100), 2000)
		keep := make([]*regexp.Regexp, 0, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			keep = append(keep, regexp.MustCompile(anchoredText(fmt.Sprintf(shape, i))))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := int(after.HeapAlloc-before.HeapAlloc) / n
		lit := fmt.Sprintf(shape, 7)
		read, ok := compiledBytes(keep[7])
		name := shape[:min(len(shape), 36)]
		if !ok {
			t.Fatalf("cannot read the size of a compiled regexp: regexp's unexported fields changed in %s", runtime.Version())
		}
		re, err := parseAnchored(lit)
		if err != nil {
			t.Fatal(err)
		}
		upper := memoryUpper(re)
		t.Logf("%-36s heap %7d B, read %7d B, estimate %8d B", name, heap, read, upper)
		if float64(read) < 0.6*float64(heap) || float64(read) > 1.6*float64(heap) {
			t.Errorf("%s: read %d bytes of a compiled regexp the heap holds %d of", name, read, heap)
		}
		if upper < max(heap, read) {
			t.Errorf("%s: the tree's estimate %d is below the %d bytes it takes", name, upper, max(heap, read))
		}
		runtime.KeepAlive(keep)
	}
}

// TestRegexpMemoryOfAlternations: a Grafana variable of 1,000 hosts, a regexp of 22 KB, is light from its tree alone,
// so its parse is not slowed by a compile to weigh it.
func TestRegexpMemoryOfAlternations(t *testing.T) {
	hosts := make([]string, 1000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%04d.example.com", i)
	}
	lit := strings.Join(hosts, "|")
	re, err := parseAnchored(lit)
	if err != nil {
		t.Fatal(err)
	}
	read, _ := compiledBytes(regexp.MustCompile(anchoredText(lit)))
	if upper := memoryUpper(re); upper > lightLimit(lit) || upper < read {
		t.Errorf("1,000 hosts: estimate %d, compiled %d, light up to %d; want compiled <= estimate <= light", upper, read, lightLimit(lit))
	}
}

// alternationOf is n two-letter branches that share no prefix: `az|cz|ez|...`.
func alternationOf(n int) string {
	bs := make([]string, n)
	for i := range bs {
		bs[i] = string(rune('a'+2*i)) + "z"
	}
	return strings.Join(bs, "|")
}

// freshLedger gives the test a ledger of its own, the process's back after it.
func freshLedger(t *testing.T) {
	saved := dense.total
	savedHeld, savedParts := dense.held, dense.parts
	dense.total, dense.held, dense.parts = 0, nil, nil
	t.Cleanup(func() {
		dense.total, dense.held, dense.parts = saved, savedHeld, savedParts
	})
}

// TestRegexpMemory: light regexps pass, dense ones pass while their team's share of the ledger has room and are
// free when seen again, another team keeps its share, and none passes past a MiB.
func TestRegexpMemory(t *testing.T) {
	freshLedger(t)
	parse := func(q string, part uint64) error {
		_, err := parseMetricsQL(q, part)
		return err
	}
	const dev, ops = 1, 2
	for _, q := range []string{
		`up{job=~"api|web", instance=~"[a-z0-9-]+\\.example\\.com:[0-9]{2,5}", code!~"5.."}`,
		`up{pod=~"[a-zA-Z0-9_-]{1,63}", trace=~"[0-9a-f]{32}", path=~".{0,100}"}`,
		`up{name=~"\\pL+", x=~"(?i)\\pL+"}`,
	} {
		if err := parse(q, dev); err != nil {
			t.Errorf("%s: %s", q, err)
		}
	}
	// Repeated classes share one rune array: counted once, these pass, charged what they take (tens of KiB).
	for _, re := range []string{`\\pL{1,200}.*`, `.*\\pL{250}`, `(?:\\pL?){200}`, `(?:[\\pL\\pN_-]?){100}`, `.*(?:\\pL|\\d){1,255}`} {
		before := dense.total
		if err := parse(`up{a=~"`+re+`"}`, dev); err != nil || dense.total-before > 64<<10 {
			t.Errorf("%s: %v, charged %d bytes; want it passed for tens of KiB", re, err, dense.total-before)
		}
	}
	light := dense.total
	// Wherever the parser reads a regexp filter, the weighing reads it too: after a form feed, which the parser
	// skips as a space, and in a text that is a regexp only inside the parser's ^(?:...)$.
	for _, q := range []string{"up{a=~\f`\\pL{300}`}", "up{a=~`)\\pL{300}(?:`}"} {
		if err := parse(q, ops); err == nil {
			t.Errorf("%q: passed; want a regexp of 2 MiB refused", q)
		}
	}
	// Dense regexps of 570 KiB each: dev's share, 16 MiB, takes 28 of them.
	denseQuery := func(i int) string { return fmt.Sprintf(`up{a=~"(?:aaaaaaaaaaaaaaaa){900}%d"}`, i) }
	admitted := 0
	var refusal error
	for i := range 40 {
		if refusal = parse(denseQuery(i), dev); refusal != nil {
			break
		}
		admitted++
	}
	if admitted < 20 || admitted > 30 || refusal == nil || !strings.Contains(refusal.Error(), "its share of 16 MiB") {
		t.Fatalf("dev's dense regexps: %d admitted, then %v; want about 28, then a refusal naming the team's share", admitted, refusal)
	}
	if err := parse(denseQuery(0), dev); err != nil {
		t.Errorf("a dense regexp dev sent before: %s; want it free", err)
	}
	if err := parse(denseQuery(1000), ops); err != nil {
		t.Errorf("ops' first dense regexp after dev's share ran out: %s", err)
	}
	// Whether a regexp passes, and what the ledger shows, tell dev nothing of what ops sent: ops' regexp is refused
	// to dev's full share as one nobody sent, and a third team that sends it is charged for it.
	if err := parse(denseQuery(1000), dev); err == nil || !strings.Contains(err.Error(), "its share of 16 MiB") {
		t.Errorf("ops' dense regexp sent by dev, whose share is full: %v; want the refusal of a regexp nobody sent", err)
	}
	if err := parse(denseQuery(1001), dev); err == nil || !strings.Contains(err.Error(), "its share of 16 MiB") {
		t.Errorf("a dense regexp nobody sent, by dev, whose share is full: %v; want a refusal naming the team's share", err)
	}
	before, charged := dense.total, dense.charged()
	if err := parse(denseQuery(1000), 3); err != nil || dense.charged()-charged < 256<<10 || dense.total != before {
		t.Errorf("ops' dense regexp sent by a third team: %v, charged %d bytes, the memory held grew by %d; want it charged "+
			"again (about 570 KiB) and the memory held the same", err, dense.charged()-charged, dense.total-before)
	}
	if err := parse(`up{a=~"\\pL{200}"}`, ops); err == nil || !strings.Contains(err.Error(), "over the 1024 KiB one may") {
		t.Errorf("a regexp of more than a MiB: %v; want it refused", err)
	}
	t.Logf("the dashboard regexps charged %d bytes; dev admitted %d dense ones: %s", light, admitted, refusal)
	// The whole ledger: four teams' shares fill it, and a fifth team is refused.
	for part := uint64(10); part < 14; part++ {
		for i := range 40 {
			if parse(denseQuery(int(part)*100+i), part) != nil {
				break
			}
		}
	}
	if err := parse(denseQuery(9999), 20); err == nil || !strings.Contains(err.Error(), "already holds its limit of 64 MiB") {
		t.Errorf("a dense regexp once the ledger is full: %v; want a refusal naming the gateway's limit", err)
	}
}

// TestRegexpMemoryOfPieces: under WITH templates a regexp filter is built from pieces the scan cannot see whole;
// counts in separate pieces multiply (up to the 1000 Go allows), so a piece is weighed at the counts of the query.
func TestRegexpMemoryOfPieces(t *testing.T) {
	freshLedger(t)
	nested := `WITH (o = "(?:", c = "){2}") x{a=~` + strings.Repeat("o+", 9) + `"` + strings.Repeat("a", 200) + `"` + strings.Repeat("+c", 9) + `}`
	for i := range 64 {
		if _, err := parseMetricsQL(strings.Replace(nested, `"a`, fmt.Sprintf(`"%d`, i), 1), 5); err != nil {
			if !strings.Contains(err.Error(), "dense regexps") && !strings.Contains(err.Error(), "once compiled") {
				t.Fatalf("refused with %s; want a refusal for the regexps' memory", err)
			}
			if _, err := parseMetricsQL(`WITH (p = "api|web") up{job=~p + "|db"}`, 5); err != nil {
				t.Errorf("a template of a plain regexp: %s", err)
			}
			return
		}
	}
	t.Errorf("64 distinct regexps of 512 copies of 200 bytes (5 MiB each) built from pieces all passed")
}

// TestRegexpCacheMetricsNotServed: metricsql's regexp cache, shared by every team, would tell a team reading
// /metrics whether its regexp was compiled before (another team sent it); its metrics are not in the default set.
func TestRegexpCacheMetricsNotServed(t *testing.T) {
	if _, err := parseMetricsQL(`up{instance=~"secret-[0-9]+"}`, 1); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	if strings.Contains(b.String(), "promql/regexp") {
		t.Errorf("/metrics serves metricsql's regexp cache:\n%s", grepLines(b.String(), "promql/regexp"))
	}
	if !strings.Contains(b.String(), "vmgateway_dense_regexps_bytes") {
		t.Errorf("/metrics lost vmgateway_dense_regexps_bytes")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
