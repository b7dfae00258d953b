package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// usage prints every flag with its default and description, grouped by the part of its name before the first dot,
// so related settings (auth.*, ratelimit.*, datasource.*) read together.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, "vmgateway %s: a gateway for VictoriaMetrics with JWT access control, label enforcement and per-tenant rate limits.\n\n", version)
	fmt.Fprintf(out, "Usage: %s [flags]\n\nThe token tool, a mode of the same binary:\n%s", os.Args[0], strings.TrimPrefix(tokenUsage, "Usage:\n"))
	groups := map[string][]*flag.Flag{}
	flag.VisitAll(func(f *flag.Flag) {
		g := "general"
		if i := strings.IndexByte(f.Name, '.'); i > 0 {
			g = f.Name[:i]
		}
		groups[g] = append(groups[g], f)
	})
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		fmt.Fprintf(out, "\n%s flags:\n", g)
		for _, f := range groups[g] {
			typ, desc := flag.UnquoteUsage(f)
			fmt.Fprintf(out, "  -%s", f.Name)
			if typ != "" {
				fmt.Fprintf(out, " %s", typ)
			}
			fmt.Fprintf(out, "\n    \t%s", strings.ReplaceAll(desc, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(out)
		}
	}
}
