package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/docstest"
	"github.com/vmgateway/vmgateway/internal/flagutil"
)

// configurationDoc is generated from the flag definitions by TestConfigurationReference.
const configurationDoc = "../../docs/configuration.md"

const regenerateCommand = "UPDATE_DOCS=1 go test -run TestConfigurationReference ./cmd/vmgateway/"

// TestConfigurationReference renders every flag of the gateway into docs/configuration.md and fails when the file
// differs, so the reference cannot drift from the flags. With UPDATE_DOCS=1 it rewrites the file instead.
func TestConfigurationReference(t *testing.T) {
	want := renderConfigurationReference(t)
	got, err := os.ReadFile(configurationDoc)
	if os.Getenv("UPDATE_DOCS") != "" {
		if err := os.WriteFile(configurationDoc, want, 0o644); err != nil {
			t.Fatalf("cannot write %s: %s", configurationDoc, err)
		}
		t.Logf("wrote %s", configurationDoc)
		return
	}
	if err != nil {
		t.Fatalf("cannot read %s: %s; generate it with:\n\t%s", configurationDoc, err, regenerateCommand)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/configuration.md is out of date with the flag definitions (first difference: %s); regenerate it with:\n\t%s",
			firstDifference(string(got), string(want)), regenerateCommand)
	}
}

// gatewayFlags are the flags of the gateway binary: flag.CommandLine without the ones the testing package adds.
func gatewayFlags() []*flag.Flag {
	var fs []*flag.Flag
	flag.CommandLine.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "test.") {
			fs = append(fs, f)
		}
	})
	return fs
}

// flagGroup is the group -help lists a flag in (usage.go): the part of its name before the first dot.
func flagGroup(name string) string {
	if i := strings.IndexByte(name, '.'); i > 0 {
		return name[:i]
	}
	return "general"
}

func renderConfigurationReference(t *testing.T) []byte {
	t.Helper()
	groups := map[string][]*flag.Flag{}
	for _, f := range gatewayFlags() {
		g := flagGroup(f.Name)
		groups[g] = append(groups[g], f)
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)

	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("<!-- Generated from the flag definitions by TestConfigurationReference (cmd/vmgateway/docs_test.go): do not edit.\n")
	b.WriteString("     Regenerate with: " + regenerateCommand + " -->\n\n")
	b.WriteString("Every flag of `vmgateway`, grouped as `vmgateway -help` prints them: by the part of the name before the first dot.\n")
	b.WriteString("Flags are given as `-name=value` (`-name` alone for a boolean).\n\n")
	b.WriteString("- **array** flags take several values: repeat the flag or separate the values by commas. A comma inside quotes\n")
	b.WriteString("  or inside `{}`, `[]` or `()` does not split, so `-ratelimit.extraLabels='job=~\"a|b\",env=\"prod\"'` is one value.\n")
	b.WriteString("- **secret** flags are strings that may be read from a file instead: `-name=file:///abs/path` or\n")
	b.WriteString("  `-name=file://./relative/path`, so that passwords stay out of the process list. `-help` never prints them.\n")
	b.WriteString("- **Environment variables**: with `-envflag.enable`, every flag not given on the command line is read from the\n")
	b.WriteString("  variable named like the flag with dots turned into underscores, after `-envflag.prefix`:\n")
	b.WriteString("  `-auth.publicKeyFiles` is `auth_publicKeyFiles` (or `VMGW_auth_publicKeyFiles` with `-envflag.prefix=VMGW_`).\n")
	b.WriteString("  The command line wins.\n\n")
	b.WriteString("Groups:")
	for i, g := range names {
		if i > 0 {
			b.WriteString(" ·")
		}
		fmt.Fprintf(&b, " [%s](#%s-flags)", g, strings.ToLower(g))
	}
	b.WriteString(" · [token mint](#vmgateway-token-mint)\n")
	for _, g := range names {
		fmt.Fprintf(&b, "\n## %s flags\n\n", g)
		b.WriteString("| Flag | Type | Default | Description |\n| --- | --- | --- | --- |\n")
		for _, f := range groups[g] {
			typ, desc := describeFlag(f)
			if strings.TrimSpace(desc) == "" {
				t.Errorf("flag -%s has no description: -help and docs/configuration.md would show nothing for it", f.Name)
			}
			def := ""
			if f.DefValue != "" {
				def = "`" + f.DefValue + "`"
			}
			fmt.Fprintf(&b, "| `-%s` | %s | %s | %s |\n", f.Name, typ, def, docstest.Escape(desc))
		}
	}
	b.WriteString("\n## vmgateway token mint\n\n")
	b.WriteString("`vmgateway token mint` signs tokens (see [access control](access-control.md#the-token-tool)); its own flags,\n")
	b.WriteString("as `vmgateway token mint -help` prints them. `vmgateway token explain` takes the gateway's flags above.\n\n")
	b.WriteString("```text\n")
	var help bytes.Buffer
	if code := runToken([]string{"mint", "-help"}, io.Discard, &help); code != 0 {
		t.Fatalf("vmgateway token mint -help exited with %d: %s", code, help.String())
	}
	b.WriteString(strings.TrimRight(help.String(), "\n") + "\n```\n")
	return []byte(b.String())
}

// describeFlag returns a flag's type as the reference names it and its one-line description. The boilerplate that
// flagutil appends to array and secret flags is explained once at the top of the reference instead.
func describeFlag(f *flag.Flag) (typ, desc string) {
	typ, desc = flag.UnquoteUsage(f)
	trim := func(marker string) {
		if i := strings.Index(desc, marker); i >= 0 {
			desc = desc[:i]
		}
	}
	switch f.Value.(type) {
	case *flagutil.Array:
		typ = "array"
		trim("\n\tSupports an array")
	case *flagutil.ArrayBool:
		typ = "array of bool"
		trim("\n\tSupports array")
	case *flagutil.Secret:
		typ = "secret"
		trim("\n\tFlag value can be read")
	default:
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			typ = "bool"
		}
	}
	desc = strings.Join(strings.Fields(desc), " ")
	return typ, desc
}

// firstDifference describes where two texts first differ, by line.
func firstDifference(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d is\n\t%q\nbut the flags give\n\t%q", i+1, gl, wl)
		}
	}
	return "none"
}

// docFiles are the Markdown files whose examples and names are checked: README.md and docs/*.md.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"../../README.md"}, files...)
}
