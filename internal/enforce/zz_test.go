package enforce

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"runtime"
	"testing"
)

func TestZZWeights(t *testing.T) {
	for _, shape := range []string{`a%d`, `foo.*bar%d`, `(?:aaaaaaaaaaaaaaaa){900}%d`, `[a-zA-Z0-9_-]{1,63}%d`, `\pL+%d`, `\pL{8}%d`, `.{0,100}%d`, `(?i)error|warn|fatal%d`, `[0-9a-f]{32}%d`, `host-(a|b|c|d|e|f|g|h)%d`, `\w+%d`, `(?i)[a-z]+%d`, `[\x{100}-\x{10000}]{20}%d`, `\b{100}%d`, `(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v|w|x|y|z){10}%d`, `\pL\pN\pL\pN%d`, `[^a]+%d`, `\PL{5}%d`, `\pL\pL%d`, `\pL+\pN+%d`} {
		var keep []*regexp.Regexp
		runtime.GC()
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		n := 200
		for i := 0; i < n; i++ {
			keep = append(keep, regexp.MustCompile("^(?:"+fmt.Sprintf(shape, i)+")$"))
		}
		runtime.GC()
		runtime.ReadMemStats(&b)
		per := float64(b.HeapAlloc-a.HeapAlloc) / float64(n)
		lit := "^(?:" + fmt.Sprintf(shape, 7) + ")$"
		re, _ := syntax.Parse(lit, syntax.Perl)
		prog, _ := syntax.Compile(re.Simplify())
		runes := 0
		for _, in := range prog.Inst {
			runes += len(in.Rune)
		}
		onepass := regexp.MustCompile(lit).String() != "" && fmt.Sprintf("%v", prog.StartCond()) != ""
		_ = onepass
		est := 1024 + 48*len(prog.Inst) + 4*runes
		t.Logf("%-36s %8.0f B, insts %6d runes %6d est %8d ratio %.2f", shape, per, len(prog.Inst), runes, est, per/float64(est))
		runtime.KeepAlive(keep)
	}
}
