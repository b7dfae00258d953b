package httpsyntax

import "testing"

func TestEqualFold(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"chunked", "chunked", true},
		{"CHUNKED", "chunked", true},
		{"ChUnKeD", "cHuNkEd", true},
		{"chun\u212Aed", "chunked", false}, // Kelvin sign: Unicode folds it to k, HTTP does not
		{"\u017Fecure", "secure", false},   // long s
		{"chunked ", "chunked", false},
		{"", "", true},
		{"a", "", false},
		{"@", "`", false}, // one apart from a letter's case bit, but no letters
		{"[", "{", false},
	} {
		if got := EqualFold(c.a, c.b); got != c.want {
			t.Errorf("EqualFold(%q, %q) = %v; want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestCutLine(t *testing.T) {
	for _, c := range []struct{ in, line, rest string }{
		{"GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1", "Host: a\r\n"},
		{"a\nb", "a", "b"},
		{"\r\n", "", ""},
		{"no end", "no end", ""},
		{"bare\r", "bare\r", ""},
		{"x\r\r\n", "x\r", ""},
	} {
		line, rest := CutLine(c.in)
		if line != c.line || rest != c.rest {
			t.Errorf("CutLine(%q) = %q, %q; want %q, %q", c.in, line, rest, c.line, c.rest)
		}
	}
}

func TestCanonicalKey(t *testing.T) {
	common := map[string]string{"Content-Type": "Content-Type"}
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"Content-Type", "Content-Type", true},
		{"content-type", "Content-Type", true},
		{"X-FORWARDED-FOR", "X-Forwarded-For", true},
		{"x-a-b-", "X-A-B-", true},
		{"", "", false},
		{"Bad Key", "", false},
		{"ke:y", "", false},
		{"k\xe9y", "", false},
	} {
		got, _, ok := CanonicalKey(c.in, nil, common)
		if got != c.want || ok != c.ok {
			t.Errorf("CanonicalKey(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	// A key common holds comes back as common's own string, without an allocation.
	buf := make([]byte, 0, 32)
	if a := testing.AllocsPerRun(10, func() { _, buf, _ = CanonicalKey("content-type", buf, common) }); a != 0 {
		t.Errorf("canonicalising a key common holds allocates %.0f times; want it interned", a)
	}
	if got := NewlinesToSpaces("a\r\nb\nc"); got != "a  b c" {
		t.Errorf("NewlinesToSpaces = %q", got)
	}
}
