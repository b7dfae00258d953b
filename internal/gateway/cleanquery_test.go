package gateway

import (
	"net/url"
	"strings"
	"testing"
)

var cleanQuerySeeds = []string{
	"a=1", "a=1;b=2", ";", "%", "a=%", "a=%4", "a=%41", "a=%4g", "%41=%42&%zz", "a=1&b=%2", "%%41", "%4%41", "a=%41%", "a=%41%4",
	"a=%41%42%43&b=c", "&&", "a=%E2%82%AC", "a+b=c+d", "x=%a1;", "extra_label=team%3Ddev&query=up%7Bteam%3D%22dev%22%7D",
}

// checkCleanQuery: cleanQuery forwards a query as it is exactly when url.ParseQuery, which VictoriaMetrics parses
// with, reads all of it, and otherwise forwards what url.ParseQuery read, encoded.
func checkCleanQuery(t *testing.T, s string) {
	u := &upstream{kind: "read"}
	got, err := u.cleanQuery(s)
	if err != nil {
		if strings.Count(s, "&") < maxArgs {
			t.Fatalf("cleanQuery(%q): %v", s, err)
		}
		return
	}
	v, perr := url.ParseQuery(s)
	want := s
	if perr != nil {
		want = v.Encode()
	}
	if got != want {
		t.Fatalf("cleanQuery(%q) = %q; want %q (url.ParseQuery: %v)", s, got, want, perr)
	}
}

func TestCleanQuery(t *testing.T) {
	for _, s := range cleanQuerySeeds {
		checkCleanQuery(t, s)
	}
	if _, err := (&upstream{kind: "read", backendArgs: 1}).cleanQuery(strings.Repeat("a&", maxArgs-1) + "a"); err == nil {
		t.Error("a query at the bound with a backend arg was not refused")
	}
}

func FuzzCleanQuery(f *testing.F) {
	for _, s := range cleanQuerySeeds {
		f.Add(s)
	}
	f.Fuzz(checkCleanQuery)
}
