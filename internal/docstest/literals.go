package docstest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// StringLiterals returns the string constants of the Go code under roots, tests excluded, with literals joined by +
// folded into one: the messages the code can produce.
func StringLiterals(t testing.TB, roots ...string) []string {
	t.Helper()
	var out []string
	fset := token.NewFileSet()
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if s, ok := constString(n); ok {
					out = append(out, s)
					return false // the parts of a folded concatenation are not messages of their own
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func constString(n ast.Node) (string, bool) {
	switch x := n.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(x.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return "", false
		}
		l, ok1 := constString(x.X)
		r, ok2 := constString(x.Y)
		if ok1 && ok2 {
			return l + r, true
		}
		// "literal " + variable + " literal": a verb in the middle.
		if ok1 || ok2 {
			return l + "%v" + r, true
		}
	case *ast.ParenExpr:
		return constString(x.X)
	}
	return "", false
}

var formatVerb = regexp.MustCompile(`%[-+# 0]*[0-9]*(?:\.[0-9]+)?[vTtbcdoOqxXUeEfFgGspw]`)

// LiteralFits reports whether some literal can produce msg, alone or wrapped in other text (an error wrapped
// by its caller, "vm_access.mode: " + "must be ..."). The literal must then make up at least half of the message's
// fixed text, so that generic literals such as "%s: %w" do not fit everything.
func LiteralFits(literals []string, msg string) bool {
	var words []string
	for _, w := range strings.FieldsFunc(msg, func(r rune) bool { return r == ' ' || r == '…' }) {
		if len(w) >= 5 {
			words = append(words, w)
		}
	}
	msgFixed := len(strings.ReplaceAll(msg, "…", ""))
	for _, l := range literals {
		if !containsAny(l, words) {
			continue
		}
		pattern := formatVerb.ReplaceAllString(strings.ReplaceAll(l, "%%", "\x01"), "\x00")
		fixed := len(strings.ReplaceAll(pattern, "\x00", ""))
		if fixed < 10 || 2*fixed < msgFixed {
			continue
		}
		if globsIntersect("\x00"+pattern+"\x00", strings.ReplaceAll(msg, "…", "\x00"), "\x01") {
			return true
		}
	}
	return false
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return len(words) == 0
}

// globsIntersect reports whether the literal pattern a and the doc pattern b can produce the same text, where
// \x00 stands for any text (pct is the escaped % of a format string, which matches a literal %). A wildcard of the
// literal (a format verb) may produce anything, but a wildcard of the doc ("…") stands for varying values only: it
// may not swallow the literal's fixed text, or a doc could abbreviate a message into one the code never says.
func globsIntersect(a, b, pct string) bool {
	a = strings.ReplaceAll(a, pct, "%")
	ra, rb := []rune(a), []rune(b)
	// reach[i][j]: the prefixes a[:i] and b[:j] can produce the same text.
	reach := make([][]bool, len(ra)+1)
	for i := range reach {
		reach[i] = make([]bool, len(rb)+1)
	}
	reach[0][0] = true
	for i := 0; i <= len(ra); i++ {
		for j := 0; j <= len(rb); j++ {
			if !reach[i][j] {
				continue
			}
			if i < len(ra) && ra[i] == 0 {
				reach[i+1][j] = true // a's wildcard ends
				if j < len(rb) {
					reach[i][j+1] = true // a's wildcard produces b's next character, or b's wildcard
				}
			}
			if j < len(rb) && rb[j] == 0 {
				reach[i][j+1] = true // b's wildcard ends
			}
			if i < len(ra) && j < len(rb) && ra[i] != 0 && ra[i] == rb[j] {
				reach[i+1][j+1] = true
			}
		}
	}
	return reach[len(ra)][len(rb)]
}
