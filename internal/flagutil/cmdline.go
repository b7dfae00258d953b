package flagutil

import (
	"flag"
	"slices"
	"strings"

	"github.com/vmgateway/vmgateway/internal/redact"
)

// RedactedArgs is args (os.Args) as /debug/pprof/cmdline shows it: the value of every Secret flag of fs given inline
// shows as "secret" (a file:// path as it is), and every value that is a URL loses its userinfo and query
// (redact.String), so that the pprof key does not also give away the reload, metrics and status keys, the
// datasource's and Redis' passwords or an upstream URL's credentials. What follows a "--" or the first argument
// that is not a flag is shown as it is: the flag package does not read it.
func RedactedArgs(fs *flag.FlagSet, args []string) []string {
	out := slices.Clone(args)
	for i := 1; i < len(out); i++ {
		a := out[i]
		if len(a) < 2 || a[0] != '-' || a == "--" {
			break
		}
		name, value, inline := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() && !inline {
			continue
		}
		at := i
		if !inline {
			// -name value: the value is the next argument.
			if at = i + 1; at >= len(out) {
				break
			}
			value = out[at]
			i++
		}
		shown := value
		if _, ok := f.Value.(*Secret); ok {
			shown = shownSecret(value)
		} else if strings.Contains(value, "://") {
			shown = redactURLs(value)
		}
		if shown == value {
			continue
		}
		if inline {
			out[at] = a[:len(a)-len(value)] + shown
		} else {
			out[at] = shown
		}
	}
	return out
}

// redactURLs redacts each comma-separated URL of a flag's value (array flags take several).
func redactURLs(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if strings.Contains(p, "://") {
			parts[i] = redact.String(p)
		}
	}
	return strings.Join(parts, ",")
}
