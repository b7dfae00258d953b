package docstest

import (
	"strings"
	"testing"
)

func TestMatchLines(t *testing.T) {
	for _, tc := range []struct {
		want, got string
		ok        bool
	}{
		{"a\nb", "a\nb", true},
		{"a\nb", "a\nc", false},
		{"a", "a\nb", false},
		{"...\nb", "a\nx\nb", true},
		{"...", "", true},
		{"a\n...", "a", true},
		{"x...z", "xyyz", true},
		{"x...z", "xyy", false},
		{"x...y...z", "x1y2z", true},
		{"x...y...z", "x1z2y", false},
		{"exp...ago)", "expires: 2026 (1h ago)", true},
	} {
		if got := matchLines(strings.Split(tc.want, "\n"), trimLines(strings.Split(tc.got, "\n"))); got != tc.ok {
			t.Errorf("matchLines(%q, %q) = %v, want %v", tc.want, tc.got, got, tc.ok)
		}
	}
}

func TestGlobsIntersect(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		ok   bool
	}{
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"a\x00c", "abbbc", true},
		{"a\x00c", "a\x00", false},
		{"a\x00c", "a\x00c", true},
		{"the token expired at \x00", "the token expired \x00", false},
		{"the token expired at \x00", "the token expired at \x00", true},
		{"missing \x00 header with a Bearer token", "missing Authorization header with a Bearer token", true},
		{"missing \x00 header", "missing Authorization headers", false},
		{"\x00: must be \x00", "vm_access.mode: must be 0 (full)", true},
	} {
		if got := globsIntersect(tc.a, tc.b, "\x01"); got != tc.ok {
			t.Errorf("globsIntersect(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.ok)
		}
	}
}

func TestAnyLiteralFits(t *testing.T) {
	literals := []string{"%s: %w", "vm_access.%s: %w", "must be 0 (full), 1 (read) or 2 (write), got %d", "missing %s header with a Bearer token"}
	for _, tc := range []struct {
		msg string
		ok  bool
	}{
		{"vm_access.mode: must be 0 (full), 1 (read) or 2 (write), got 3", true},
		{"missing Authorization header with a Bearer token", true},
		{"missing … header with a Bearer token", true},
		{"missing Authorization header without a token", false},
		{"vm_access.mode: something the code never says", false},
		{"missing … header …", false},
	} {
		if got := LiteralFits(literals, tc.msg); got != tc.ok {
			t.Errorf("LiteralFits(%q) = %v, want %v", tc.msg, got, tc.ok)
		}
	}
}

func TestParse(t *testing.T) {
	blocks, prose, err := parse("x.md", "# Title\n\n```console tested\n$ echo hi\nhi\n```\n\n  ```yaml tested file=a.yaml\n  a: 1\n  ```\ntext\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[0].Line != 3 || blocks[0].Text != "$ echo hi\nhi" || !blocks[0].Has("tested") || blocks[0].Has("gateway") ||
		blocks[1].Param("file") != "a.yaml" || blocks[1].Text != "a: 1" || blocks[1].String() != "x.md:8" {
		t.Fatalf("blocks %+v", blocks)
	}
	if !strings.Contains(prose, "# Title") || !strings.Contains(prose, "text") || strings.Contains(prose, "echo") {
		t.Fatalf("prose %q", prose)
	}
	if _, _, err := parse("x.md", "```sh\nopen\n"); err == nil || !strings.Contains(err.Error(), "line 1 is never closed") {
		t.Fatalf("an unclosed block: %v", err)
	}
	steps, err := parseTranscript(blocks[0])
	if err != nil || len(steps) != 1 || steps[0].Cmd != "echo hi" || steps[0].Line != 4 || strings.Join(steps[0].Want, "|") != "hi" {
		t.Fatalf("parseTranscript = %+v, %v", steps, err)
	}
}

func TestMarkdownHelpers(t *testing.T) {
	if got := SplitRow("| `a\\|b` | c |"); len(got) != 2 || got[0] != "`a|b`" || got[1] != "c" {
		t.Errorf("SplitRow = %q", got)
	}
	if got := Anchor("The token tool (mint, explain)"); got != "the-token-tool-mint-explain" {
		t.Errorf("Anchor = %q", got)
	}
	if got := Escape("a|b_c _d <x>"); got != "a\\|b_c \\_d &lt;x&gt;" {
		t.Errorf("Escape = %q", got)
	}
	if got := CodeSpans("use `-a=1` and `b`"); strings.Join(got, ",") != "-a=1,b" {
		t.Errorf("CodeSpans = %q", got)
	}
	if got := CommandLines("$ vmgateway \\\n  -x=1\nls"); len(got) != 3 || got[0] != "vmgateway  -x=1" || got[1] != "ls" {
		t.Errorf("CommandLines = %q", got)
	}
}
