package flagutil

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The flag package's own messages, which Explain turns into one line an operator can act on. Their wording is
// stable since Go 1.0.
var (
	invalidValue = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): `)
	notDefined   = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	needsArg     = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
)

// Explain rewrites an error of fs.Parse into one line naming the flag and what it wants, e.g.
// `-read.timeout="10": want a duration such as 10s`; errors it does not know pass unchanged.
func Explain(fs *flag.FlagSet, err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		v, uerr := strconv.Unquote(m[1])
		if uerr != nil {
			v = m[1]
		}
		if f := fs.Lookup(m[2]); f != nil {
			return errors.New(invalid(f, v, "", errors.New(strings.TrimPrefix(msg, m[0]))))
		}
	}
	if m := notDefined.FindStringSubmatch(msg); m != nil {
		name, _, _ := strings.Cut(m[1], "=")
		if near := nearest(fs, name); near != "" {
			return fmt.Errorf("-%s is not a flag of vmgateway; did you mean -%s?", name, near)
		}
		return fmt.Errorf("-%s is not a flag of vmgateway", name)
	}
	if m := needsArg.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("-%s needs a value: -%s=<value>", m[1], m[1])
	}
	return err
}

// invalid is the line for value v of f that Set refused with err; from names where v came from, if not the
// command line.
func invalid(f *flag.Flag, v, from string, err error) string {
	where := ""
	if from != "" {
		where = " (from " + from + ")"
	}
	return fmt.Sprintf("-%s=%q%s: %s", f.Name, v, where, want(f, err))
}

// want says what a flag takes: from its type for the standard kinds, else the reason its Set gave.
func want(f *flag.Flag, err error) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return err.Error()
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration such as 10s, 1m30s or 2h"
	case bool:
		return "want true or false"
	case int, int64:
		return "want an integer such as 100"
	case uint, uint64:
		return "want a non-negative integer such as 100"
	case float64:
		return "want a number such as 0.5"
	}
	return err.Error()
}

// nearest is the defined flag closest to name, when one is close enough to be a typo of it.
func nearest(fs *flag.FlagSet, name string) string {
	best, bestDist := "", len(name)/3+1
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		if d := editDistance(strings.ToLower(name), strings.ToLower(n)); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
