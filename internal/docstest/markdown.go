// Package docstest is the machinery of the documentation tests: it reads Markdown (fenced blocks, tables, code
// spans, headings, command lines), runs the transcripts of `console` blocks in a shell session and matches what
// they print, and tells whether a message in the docs is one the code can produce. What the blocks mean for the
// gateway (which processes to start, which addresses to replace) stays with the tests in cmd/vmgateway.
package docstest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// Block is one fenced code block of a Markdown file.
type Block struct {
	File string
	Line int      // of the opening fence
	Info []string // the words of the info string: language, then markers
	Text string
}

func (b Block) String() string { return fmt.Sprintf("%s:%d", filepath.Base(b.File), b.Line) }

// Has reports whether the info string holds word (`tested`, `gateway`).
func (b Block) Has(word string) bool {
	for _, w := range b.Info {
		if w == word {
			return true
		}
	}
	return false
}

// Param is the value of a name=value word of the info string (`file=limits.yaml`), or "".
func (b Block) Param(name string) string {
	for _, w := range b.Info {
		if v, ok := strings.CutPrefix(w, name+"="); ok {
			return v
		}
	}
	return ""
}

// Parse returns the fenced blocks of a Markdown file and its text outside them.
func Parse(t testing.TB, file string) (blocks []Block, prose string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks, prose, err = parse(file, string(data))
	if err != nil {
		t.Fatal(err)
	}
	return blocks, prose
}

func parse(file, data string) (blocks []Block, prose string, err error) {
	var out strings.Builder
	var cur *Block
	var indent, fence string
	var body []string
	for i, line := range strings.Split(data, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if cur == nil {
			if strings.HasPrefix(trimmed, "```") {
				indent = line[:len(line)-len(trimmed)]
				fence = trimmed[:len(trimmed)-len(strings.TrimLeft(trimmed, "`"))]
				cur = &Block{File: file, Line: i + 1, Info: strings.Fields(trimmed[len(fence):])}
				body = nil
				continue
			}
			out.WriteString(line + "\n")
			continue
		}
		if strings.TrimSpace(line) == fence {
			cur.Text = strings.Join(body, "\n")
			blocks = append(blocks, *cur)
			cur = nil
			out.WriteString("\n")
			continue
		}
		body = append(body, strings.TrimPrefix(line, indent))
	}
	if cur != nil {
		return nil, "", fmt.Errorf("%s: the code block opened at line %d is never closed", file, cur.Line)
	}
	return blocks, out.String(), nil
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// CodeSpans returns the contents of the `code spans` of s.
func CodeSpans(s string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// SplitRow splits a Markdown table row on the pipes that are not escaped, and unescapes them.
func SplitRow(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimPrefix(strings.TrimSuffix(row, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// Escape keeps a text literal inside a Markdown table cell.
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '|', '*', '`', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '_':
			// Only an underscore at a word edge can start or end emphasis.
			if i == 0 || i == len(s)-1 || !isWordByte(s[i-1]) || !isWordByte(s[i+1]) {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isWordByte(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// Anchor is the anchor GitHub gives a heading: lower case, punctuation dropped, spaces turned into dashes.
func Anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// CommandLines returns the command lines of a code block, continuation lines joined and prompts removed.
func CommandLines(text string) []string {
	var out []string
	var cur string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimPrefix(strings.TrimSpace(l), "$ ")
		if cont, ok := strings.CutSuffix(l, "\\"); ok {
			cur += cont + " "
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return append(out, cur)
}
