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
// so one team sending distinct regexps of that shape took the gateway from 14 MiB to 3 GiB in 15 seconds. Every
// string of a query that has a regexp filter is weighed in memory too, before the query is parsed, as the parser
// compiles it (`^(?:re)$`, in which `)\pL{100}(?:` is a regexp):
//   - a light regexp, at most lightBytesPerChar bytes for each character of it as metricsql keeps it (with its
//     anchors), passes: however many the cache holds, they stay under a million times that;
//   - a dense one passes while the gateway's ledger of the dense regexps it has let through has room: denseBytes in
//     all, a quarter of it for one isolation unit (Parsed's partition), which keeps one team from taking the room
//     of every other. The ledger never forgets, since the cache may keep a regexp for as long as the process runs,
//     and a regexp a unit sent before passes again free for it: a dashboard's `\pL+` is paid once. What another unit
//     sent is charged again, and weighed again: whether a regexp passes, and what the ledger's gauge shows, must
//     not tell a team which regexps (label values in them) other teams asked for;
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

// metricsql's regexp cache is shared by every team, and it exports its requests, misses, entries and characters on
// the default metrics set, which the gateway serves on /metrics: a team reading them around a query of its own would
// learn whether its regexp had been compiled before, that is, whether another team sent that exact regexp (and the
// label values in it). They are not served; vmgateway_dense_regexps_bytes shows what the regexps take.
func init() {
	for _, name := range []string{"requests_total", "misses_total", "entries", "chars_current", "chars_max"} {
		metrics.UnregisterMetric(`vm_cache_` + name + `{type="promql/regexp"}`)
	}
}

// anchoredText is re as metricsql compiles a regexp filter, and anchoredLen its length, which metricsql's cache counts.
func anchoredText(re string) string { return "^(?:" + re + ")$" }

func anchoredLen(re string) int { return len(re) + len("^(?:)$") }

// lightLimit is the most a light regexp of its text may take.
func lightLimit(re string) int { return lightBytesPerChar * anchoredLen(re) }

// ledger records the dense regexps let through: the distinct ones and what they take (total, the memory the
// cache may hold of them, which the gateway's limit bounds), and per partition what it was charged (its share). A
// regexp is charged to every partition that sends it, and the limit is checked for it as for one nobody sent, so
// that neither answer depends on what other partitions sent. The zero value is ready.
type ledger struct {
	mu    sync.Mutex
	total int
	held  map[string]struct{}
	parts map[uint64]*ledgerShare
}

type ledgerShare struct {
	bytes int
	seen  map[string]struct{}
}

var (
	dense ledger

	_ = metrics.NewGauge(`vmgateway_dense_regexps_bytes`, func() float64 {
		dense.mu.Lock()
		defer dense.mu.Unlock()
		return float64(dense.charged())
	})
	denseRefused = metrics.NewCounter(`vmgateway_dense_regexps_refused_total`)
)

// admit charges a dense regexp of n bytes to partition part, unless part was charged for it before.
func (l *ledger) admit(re string, n int, part uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	sh := l.parts[part]
	if sh != nil {
		if _, ok := sh.seen[re]; ok {
			return nil
		}
	}
	if l.total+n > denseBytes {
		denseRefused.Inc()
		return fmt.Errorf("the regexp %s compiles to about %d KiB, and the gateway already holds its limit of %d MiB of such "+
			"dense regexps compiled (over %d bytes per character); write it with fewer counted repeats or large "+
			"classes such as \\pL", quoteShort(re), n>>10, denseBytes>>20, lightBytesPerChar)
	}
	if sh == nil {
		sh = &ledgerShare{seen: map[string]struct{}{}}
	}
	if sh.bytes+n > denseBytes/denseUnitShare {
		denseRefused.Inc()
		return fmt.Errorf("the regexp %s compiles to about %d KiB, and the token's team already has %d KiB of such dense "+
			"regexps compiled in the gateway, its share of %d MiB (over %d bytes per character); reuse the "+
			"regexps it has sent, or write this one with fewer counted repeats or large classes such as \\pL",
			quoteShort(re), n>>10, sh.bytes>>10, denseBytes/denseUnitShare>>20, lightBytesPerChar)
	}
	if l.parts == nil {
		l.parts, l.held = map[uint64]*ledgerShare{}, map[string]struct{}{}
	}
	l.parts[part] = sh
	sh.seen[re] = struct{}{}
	sh.bytes += n
	if _, ok := l.held[re]; !ok {
		l.held[re] = struct{}{}
		l.total += n
	}
	return nil
}

// charged is the sum of the shares, a regexp counted once for each partition that sent it, no less than total: what
// the gauge shows, since total does not grow for a regexp another partition sent. The caller holds l.mu.
func (l *ledger) charged() int {
	n := 0
	for _, sh := range l.parts {
		n += sh.bytes
	}
	return n
}

// holds says whether partition part was charged for re before: it passes again free, without a compile to weigh
// it (what it was let through at is no less than what it compiles to, and no more than denseMaxBytes).
func (l *ledger) holds(re string, part uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	sh := l.parts[part]
	if sh == nil {
		return false
	}
	_, ok := sh.seen[re]
	return ok
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
	if err := tooLarge.get(re); err != nil {
		return err
	}
	if dense.holds(re, part) {
		return nil
	}
	n := upper
	if exact {
		if r, err := regexp.Compile(anchoredText(re)); err == nil {
			if size, ok := compiledBytes(r); ok {
				n = size
			}
		}
	}
	switch {
	case n <= lightLimit(re):
		return nil
	case n > denseMaxBytes:
		denseRefused.Inc()
		err := fmt.Errorf("the regexp %s would take about %d KiB of memory once compiled, over the %d KiB one may; "+
			"write it with fewer counted repeats or large classes such as \\pL", quoteShort(re), n>>10, denseMaxBytes>>10)
		tooLarge.put(re, err)
		return err
	}
	return dense.admit(re, n, part)
}

// refusals remembers the regexps found too large, so that sending one again costs no compile to weigh it: at most
// refusalsMax of them, forgotten all at once past that.
type refusals struct {
	mu sync.Mutex
	m  map[string]error
}

const refusalsMax = 1024

var tooLarge refusals

func (r *refusals) get(re string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[re]
}

func (r *refusals) put(re string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= refusalsMax {
		r.m = map[string]error{}
	}
	if len(re) <= 4<<10 {
		r.m[re] = err
	}
}

// memoryUpper is an estimate no lower than the memory re compiles to, from its tree: its instructions (a literal
// rune each, other nodes two, two more for each branch of an alternation, counted repeats written out), the runes
// of its classes, each with what Go's one-pass program may copy of it, and for an alternation of k branches the k²
// of a one-pass program, whose every step holds the first runes of all the branches after it
// (TestRegexpMemoryEstimate checks it stays above). A Grafana variable's long alternation of names, which the parser
// factors into short ones by their prefixes, stays well under lightLimit without being compiled here.
func memoryUpper(re *syntax.Regexp) int { return addW(2048, treeBytes(re)) }

// treeBytes is memoryUpper's estimate of re without the regexp's own overhead.
func treeBytes(re *syntax.Regexp) int {
	var n int
	switch re.Op {
	case syntax.OpLiteral:
		n = 64 * len(re.Rune)
	case syntax.OpCharClass:
		n = addW(320, mulW(24, len(re.Rune)))
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		n = 320 + 24*4
	default:
		n = 160
	}
	for _, sub := range re.Sub {
		n = addW(n, addW(treeBytes(sub), 160))
	}
	if k := len(re.Sub); re.Op == syntax.OpAlternate {
		// A one-pass step holds the first runes of every branch after it: about k² entries and k times their runes.
		n = addW(n, addW(mulW(16, mulW(k, k)), mulW(mulW(8, k), firstRunes(re))))
	}
	if re.Op == syntax.OpRepeat {
		n = mulW(n, max(re.Min, re.Max, 1))
	}
	return n
}

// firstRunes is about how many runes may start a match of re: what a one-pass step copies of it.
func firstRunes(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpLiteral:
		return 2
	case syntax.OpCharClass:
		return len(re.Rune)
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return 4
	case syntax.OpAlternate:
		n := 0
		for _, sub := range re.Sub {
			n = addW(n, firstRunes(sub))
		}
		return n
	case syntax.OpConcat:
		// Empty-width and optional pieces let the next ones start a match too.
		n := 0
		for _, sub := range re.Sub {
			n = addW(n, firstRunes(sub))
			switch sub.Op {
			case syntax.OpLiteral, syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL, syntax.OpPlus:
				return n
			}
		}
		return n
	}
	n := 2
	for _, sub := range re.Sub {
		n = addW(n, firstRunes(sub))
	}
	return n
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
	n = regexpOverhead + len(r.String())
	insts := prog.Elem().FieldByName("Inst")
	if insts.Kind() != reflect.Slice {
		return 0, false
	}
	n += insts.Cap() * int(unsafe.Sizeof(syntax.Inst{}))
	// The instructions of a literal hold pieces of its runes, and the copies of a repeated class one array: each
	// counts its length, and a slice seen before nothing.
	seen := map[uintptr]bool{}
	runes := func(s reflect.Value) int {
		if s.Kind() != reflect.Slice || s.Len() == 0 || seen[s.Pointer()] {
			return 0
		}
		seen[s.Pointer()] = true
		return s.Len() * 4
	}
	for i := range insts.Len() {
		n += runes(insts.Index(i).FieldByName("Rune"))
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
		n += runes(in.FieldByName("Rune")) + sliceBytes(in.FieldByName("Next"), 4)
	}
	return n, true
}

// regexpOverhead is what a compiled regexp holds besides its text, its instructions and their runes: its own struct,
// its program's, its capture names and the allocator's rounding of each. Measured as the rest of the heap a trivial
// regexp holds (TestRegexpMemoryEstimate, 2,000 copies of each shape): about 400 bytes beyond the 200 of the structs.
const regexpOverhead = 640

// sliceBytes is what the slice s of elements of size elem holds, with the allocator's rounding.
func sliceBytes(s reflect.Value, elem int) int {
	if s.Kind() != reflect.Slice || s.Cap() == 0 {
		return 0
	}
	return (s.Cap()*elem + 15) &^ 15
}
