package enforce

import (
	"fmt"
	"reflect"
	"regexp"
	"regexp/syntax"
	"sync"
	"unsafe"

	"github.com/VictoriaMetrics/metrics"
)

// metricsql keeps every regexp filter it compiles in a cache bounded by characters (a million of them), on the
// assumption that a regexp's memory follows its length. It does not: a 54-byte `(?:a{16}){900}` compiles to 570 KiB,
// so one team sending distinct regexps of that shape took the gateway from 14 MiB to 3 GiB in 15 seconds. The
// regexps of a query are weighed in memory too, before it is parsed:
//   - a light regexp, at most lightBytesPerChar bytes for each character of it as metricsql keeps it (with its
//     anchors), passes: however many the cache holds, they stay under a million times that;
//   - a dense one passes while the gateway's ledger of the dense regexps it has let through has room: denseBytes in
//     all, a quarter of it for one isolation unit (Parsed's partition), which keeps one team from taking the room
//     of every other. The ledger never forgets, since the cache may keep a regexp for as long as the process runs,
//     and a regexp already in it passes again free: a dashboard's `\pL+` is paid once;
//   - one over denseMaxBytes is refused at once.
//
// Measured on amd64 (TestRegexpMemoryEstimate): a short literal regexp takes about 1 KiB, 120-150 bytes per
// character; `[a-zA-Z0-9_-]{1,63}` 240, `[0-9a-f]{32}` 370, `.{0,100}` 840, `\pL+` 2,600.
const (
	lightBytesPerChar = 192
	denseBytes        = 64 << 20
	denseUnitShare    = 4
	denseMaxBytes     = 1 << 20
)

// anchoredLen is the length metricsql's cache counts for a regexp filter: it compiles `^(?:re)$`.
func anchoredLen(re string) int { return len(re) + len("^(?:)$") }

// lightLimit is the most a light regexp of its text may take.
func lightLimit(re string) int { return lightBytesPerChar * anchoredLen(re) }

// dense is the ledger of the dense regexps let through. The zero value is ready.
type ledger struct {
	mu     sync.Mutex
	seen   map[string]int
	total  int
	byPart map[uint64]int
}

var (
	dense ledger

	_ = metrics.NewGauge(`vmgateway_dense_regexps_bytes`, func() float64 {
		dense.mu.Lock()
		defer dense.mu.Unlock()
		return float64(dense.total)
	})
	denseRefused = metrics.NewCounter(`vmgateway_dense_regexps_refused_total`)
)

// admit charges a dense regexp of n bytes to partition part, unless the ledger already holds it.
func (l *ledger) admit(re string, n int, part uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[re]; ok {
		return nil
	}
	if l.total+n > denseBytes {
		denseRefused.Inc()
		return fmt.Errorf("the regexp %s compiles to about %d KiB, and the gateway already holds its limit of %d MiB of such "+
			"dense regexps compiled (over %d bytes per character); write it with fewer counted repeats or large "+
			"classes such as \\pL", quoteShort(re), n>>10, denseBytes>>20, lightBytesPerChar)
	}
	if l.byPart[part]+n > denseBytes/denseUnitShare {
		denseRefused.Inc()
		return fmt.Errorf("the regexp %s compiles to about %d KiB, and the token's team already has %d KiB of such dense "+
			"regexps compiled in the gateway, its share of %d MiB (over %d bytes per character); reuse the "+
			"regexps it has sent, or write this one with fewer counted repeats or large classes such as \\pL",
			quoteShort(re), n>>10, l.byPart[part]>>10, denseBytes/denseUnitShare>>20, lightBytesPerChar)
	}
	if l.seen == nil {
		l.seen, l.byPart = map[string]int{}, map[uint64]int{}
	}
	l.seen[re] = n
	l.total += n
	l.byPart[part] += n
	return nil
}

func quoteShort(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q...", s[:64])
	}
	return fmt.Sprintf("%q", s)
}

// checkRegexpMemory weighs the regexp filter re in memory (see above) for partition part. upper is an estimate no
// lower than what it compiles to; a regexp it clears is not compiled here. Otherwise, with exact, re is compiled
// here to weigh what it takes; a piece of a longer regexp is not, and counts as upper.
func checkRegexpMemory(re string, upper int, part uint64, exact bool) error {
	if upper <= lightLimit(re) {
		return nil
	}
	n := upper
	if r, err := regexp.Compile("^(?:" + re + ")$"); exact && err == nil {
		if size, ok := compiledBytes(r); ok {
			n = size
		}
	}
	switch {
	case n <= lightLimit(re):
		return nil
	case n > denseMaxBytes:
		denseRefused.Inc()
		return fmt.Errorf("the regexp %s would take about %d KiB of memory once compiled, over the %d KiB one may; "+
			"write it with fewer counted repeats or large classes such as \\pL", quoteShort(re), n>>10, denseMaxBytes>>10)
	}
	return dense.admit(re, n, part)
}

// memoryUpper is an estimate no lower than the memory re compiles to, from its tree: its instructions (a literal
// rune each, other nodes two, two more for each branch of an alternation, counted repeats written out) and the runes
// of its classes, each with what Go's one-pass program may copy of it (TestRegexpMemoryEstimate checks it stays
// above). A Grafana variable's long alternation of names stays well under lightLimit without being compiled here.
func memoryUpper(re *syntax.Regexp) int {
	literal, other, runes := treeSize(re)
	return addW(addW(2048, mulW(literal, 64)), addW(mulW(other, 160), mulW(runes, 24)))
}

func treeSize(re *syntax.Regexp) (literal, other, runes int) {
	switch re.Op {
	case syntax.OpLiteral:
		literal = len(re.Rune)
	case syntax.OpCharClass:
		other, runes = 2, len(re.Rune)
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		other, runes = 2, 4
	default:
		other = 2
	}
	for _, sub := range re.Sub {
		l, o, r := treeSize(sub)
		literal, other, runes = addW(literal, l), addW(other, addW(o, 2)), addW(runes, r)
	}
	if re.Op == syntax.OpRepeat {
		copies := max(re.Min, re.Max, 1)
		literal, other, runes = mulW(literal, copies), mulW(other, copies), mulW(runes, copies)
	}
	return literal, other, runes
}

// compiledBytes is the memory r holds: its program and, when Go built one, its one-pass program. It reads regexp's
// unexported fields (prog, onepass), which no exported method sizes; ok is false when a Go release has changed them,
// and TestRegexpMemoryEstimate fails then.
func compiledBytes(r *regexp.Regexp) (n int, ok bool) {
	v := reflect.ValueOf(r).Elem()
	prog, onepass := v.FieldByName("prog"), v.FieldByName("onepass")
	if prog.Kind() != reflect.Pointer || prog.IsNil() || onepass.Kind() != reflect.Pointer {
		return 0, false
	}
	n = int(unsafe.Sizeof(*r)) + len(r.String()) + int(unsafe.Sizeof(syntax.Prog{}))
	insts := prog.Elem().FieldByName("Inst")
	if insts.Kind() != reflect.Slice {
		return 0, false
	}
	n += insts.Cap() * int(unsafe.Sizeof(syntax.Inst{}))
	for i := range insts.Len() {
		// A literal's instructions share its runes: each counts its own.
		n += insts.Index(i).FieldByName("Rune").Len() * 4
	}
	if onepass.IsNil() {
		return n, true
	}
	ops := onepass.Elem().FieldByName("Inst")
	if ops.Kind() != reflect.Slice {
		return 0, false
	}
	n += ops.Cap() * (int(unsafe.Sizeof(syntax.Inst{})) + int(unsafe.Sizeof([]uint32{})))
	for i := range ops.Len() {
		in := ops.Index(i)
		n += sliceBytes(in.FieldByName("Rune"), 4) + sliceBytes(in.FieldByName("Next"), 4)
	}
	return n, true
}

// sliceBytes is what the slice s of elements of size elem holds, with the allocator's rounding.
func sliceBytes(s reflect.Value, elem int) int {
	if s.Kind() != reflect.Slice || s.Cap() == 0 {
		return 0
	}
	return (s.Cap()*elem + 15) &^ 15
}
