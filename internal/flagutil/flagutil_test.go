package flagutil

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArraySet(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		err  string
	}{
		{in: []string{"a"}, want: []string{"a"}},
		{in: []string{"a,b", "c"}, want: []string{"a", "b", "c"}},
		{in: []string{`job="a,b",x`}, want: []string{`job="a,b"`, "x"}},
		{in: []string{`{a="1",b="2"},{c="3"}`}, want: []string{`{a="1",b="2"}`, `{c="3"}`}},
		{in: []string{`'single,quoted',"double,quoted"`}, want: []string{"single,quoted", "double,quoted"}},
		{in: []string{`f(a,b),[x,y]`}, want: []string{"f(a,b)", "[x,y]"}},
		{in: []string{`"esc\",aped"`}, want: []string{`esc",aped`}},
		{in: []string{""}, want: []string{""}},
		{in: []string{`{a="1"`}, err: `unclosed '{'`},
		{in: []string{`a}`}, err: `unbalanced '}'`},
		{in: []string{`"open`}, err: `unclosed '"'`},
	} {
		var a Array
		var err error
		for _, v := range tc.in {
			if err = a.Set(v); err != nil {
				break
			}
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Set(%q): got err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual([]string(a), tc.want) {
			t.Errorf("Set(%q) = %q, %v; want %q", tc.in, a, err, tc.want)
		}
	}
}

func TestArrayGet(t *testing.T) {
	a := Array{"x", "y"}
	if a.Get(0) != "x" || a.Get(1) != "y" || a.Get(5) != "y" || (Array{}).Get(0) != "" {
		t.Fatalf("Get fallback broken: %q", a)
	}
	var b ArrayBool
	if err := b.Set("true,,false"); err != nil {
		t.Fatal(err)
	}
	if !b.Get(0) || b.Get(1) || b.Get(2) || b.Get(9) {
		t.Fatalf("ArrayBool = %v", b)
	}
	if err := b.Set("yes"); err == nil || !strings.Contains(err.Error(), `"yes" is not a boolean`) {
		t.Fatalf("ArrayBool accepted yes: %v", err)
	}
}

func newFlagSet() (*flag.FlagSet, *string, *Array, *time.Duration, *bool) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Bool("envflag.enable", false, "")
	fs.String("envflag.prefix", "", "")
	s := fs.String("read.url", "", "")
	a := &Array{}
	fs.Var(a, "auth.publicKeyFiles", "")
	d := fs.Duration("http.shutdownDelay", 0, "")
	b := fs.Bool("clusterMode", false, "")
	return fs, s, a, d, b
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseEnv(t *testing.T) {
	fs, s, a, d, b := newFlagSet()
	err := Parse(fs, []string{"-envflag.enable", "-envflag.prefix=VMG_", "-read.url=http://cmdline"}, env(map[string]string{
		"VMG_read_url":            "http://fromenv",
		"VMG_auth_publicKeyFiles": "a.pem,b.pem",
		"VMG_http_shutdownDelay":  "3s",
		"VMG_clusterMode":         "true",
		"read_url":                "http://noprefix",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if *s != "http://cmdline" {
		t.Errorf("command line must win over env: read.url=%q", *s)
	}
	if !reflect.DeepEqual([]string(*a), []string{"a.pem", "b.pem"}) || *d != 3*time.Second || !*b {
		t.Errorf("env values not applied: %q %v %v", *a, *d, *b)
	}
}

func TestParseEnvDisabled(t *testing.T) {
	fs, s, _, _, _ := newFlagSet()
	if err := Parse(fs, nil, env(map[string]string{"read_url": "http://fromenv"})); err != nil {
		t.Fatal(err)
	}
	if *s != "" {
		t.Fatalf("env read without -envflag.enable: %q", *s)
	}
}

func TestParseErrorsNameTheFlag(t *testing.T) {
	fs, _, _, _, _ := newFlagSet()
	err := Parse(fs, []string{"-envflag.enable"}, env(map[string]string{"http_shutdownDelay": "soon"}))
	if err == nil || !strings.Contains(err.Error(), "-http.shutdownDelay") || !strings.Contains(err.Error(), "http_shutdownDelay") {
		t.Fatalf("want an error naming the flag and the variable, got %v", err)
	}
	fs, _, _, _, _ = newFlagSet()
	if err := Parse(fs, []string{"-http.shutdownDelay=soon"}, env(nil)); err == nil || !strings.Contains(err.Error(), "-http.shutdownDelay") {
		t.Fatalf("want an error naming the flag, got %v", err)
	}
	fs, _, _, _, _ = newFlagSet()
	if err := Parse(fs, []string{"stray"}, env(nil)); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Fatalf("stray argument accepted: %v", err)
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/pw"
	if err := os.WriteFile(path, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var s Secret
	if err := s.Set("file://" + path); err != nil {
		t.Fatal(err)
	}
	if s.Get() != "hunter2" || strings.Contains(s.String(), "hunter2") {
		t.Fatalf("Secret from file: get=%q string=%q", s.Get(), s.String())
	}
	if err := s.Set("inline"); err != nil || s.Get() != "inline" || s.String() == "inline" {
		t.Fatalf("inline secret leaked or lost: %q %q", s.Get(), s.String())
	}
	if err := s.Set("file://" + dir + "/missing"); err == nil {
		t.Fatal("missing secret file accepted")
	}
}

func TestArrayDefault(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	a := &defaultArray{Array: Array{":8431"}, isDefault: true}
	fs.Var(a, "httpListenAddr", "")
	if fs.Lookup("httpListenAddr").DefValue != ":8431" || a.Get(0) != ":8431" {
		t.Fatalf("default not shown or not used: %q %q", fs.Lookup("httpListenAddr").DefValue, a.Array)
	}
	if err := fs.Parse([]string{"-httpListenAddr=:1", "-httpListenAddr=:2"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]string(a.Array), []string{":1", ":2"}) {
		t.Fatalf("a given value must replace the default, not add to it: %q", a.Array)
	}
}

// TestExplain: a bad flag is one line that names the flag, the value and what the flag wants.
func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-http.shutdownDelay=10"}, `-http.shutdownDelay="10": want a duration such as 10s, 1m30s or 2h`},
		{[]string{"-clusterMode=maybe"}, `-clusterMode="maybe": want true or false`},
		{[]string{"-http.shutdownDelay"}, `-http.shutdownDelay needs a value: -http.shutdownDelay=<value>`},
		{[]string{"-http.shutdownDelai=1s"}, `-http.shutdownDelai is not a flag of vmgateway; did you mean -http.shutdownDelay?`},
		{[]string{"-nothing.like.it"}, `-nothing.like.it is not a flag of vmgateway`},
		{[]string{`-auth.publicKeyFiles={a`}, `-auth.publicKeyFiles="{a": unclosed '{' in "{a"`},
	} {
		fs, _, _, _, _ := newFlagSet()
		err := Parse(fs, tc.args, env(nil))
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q): got %v, want %s", tc.args, err, tc.want)
		}
	}
	fs, _, _, _, _ := newFlagSet()
	err := Parse(fs, []string{"-envflag.enable"}, env(map[string]string{"http_shutdownDelay": "soon"}))
	if want := `-http.shutdownDelay="soon" (from environment variable http_shutdownDelay): want a duration such as 10s, 1m30s or 2h`; err == nil || err.Error() != want {
		t.Errorf("env: got %v, want %s", err, want)
	}
}

// TestRedactedArgs: /debug/pprof/cmdline shows no secret given inline and no URL's credentials, in every way the flag
// package reads a flag, and leaves alone what it does not read.
func TestRedactedArgs(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	key := &Secret{}
	fs.Var(key, "key", "")
	fs.Bool("on", false, "")
	fs.String("url", "", "")
	fs.String("plain", "", "")
	keyFile := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(keyFile, []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(args ...string) []string {
		if err := fs.Parse(args[1:]); err != nil {
			t.Fatal(err)
		}
		return args
	}
	for _, tc := range []struct{ in, want []string }{
		{must("gw", "-key=k1", "--key=k2", "-key", "k3", "--key", "k4"), []string{"gw", "-key=secret", "--key=secret", "-key", "secret", "--key", "secret"}},
		{must("gw", "-key=file://"+keyFile), []string{"gw", "-key=file://" + keyFile}},
		{must("gw", "-on", "-key", "k", "-on=true"), []string{"gw", "-on", "-key", "secret", "-on=true"}},
		{must("gw", "-url=http://u:p@vm:8428/x?authKey=a", "-url", "http://vm:8428,https://u:p@vm2"), []string{"gw", "-url=http://vm:8428/x", "-url", "http://vm:8428,https://vm2"}},
		{must("gw", "-plain=a=b", "-plain", "c"), []string{"gw", "-plain=a=b", "-plain", "c"}},
		{must("gw", "-plain", "x", "--", "-key=k"), []string{"gw", "-plain", "x", "--", "-key=k"}},
		{must("gw", "-plain", "x", "arg", "-key=k"), []string{"gw", "-plain", "x", "arg", "-key=k"}},
		{must("gw", "-key"+"=", "-plain=1"), []string{"gw", "-key=", "-plain=1"}},
	} {
		if got := RedactedArgs(fs, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := RedactedArgs(fs, []string{"gw", "-key"}); !slices.Equal(got, []string{"gw", "-key"}) {
		t.Errorf("a flag without its value: %q", got)
	}
}
