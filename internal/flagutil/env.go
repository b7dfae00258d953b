package flagutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func init() {
	flag.Bool("envflag.enable", false, "Whether to enable reading flags from environment variables in addition to the command line. "+
		"Command line flag values have priority over values from environment vars. Flags are read only from the command line if this flag isn't set")
	flag.String("envflag.prefix", "", "Prefix for environment variables if -envflag.enable is set")
}

// Parse parses the command line and then, with -envflag.enable, sets every flag that the command line left unset
// from the environment variable named prefix + flag name with dots turned into underscores. Command-line values win.
// A bad value names the flag, where it came from, and what is wrong.
func Parse(fs *flag.FlagSet, args []string, environ func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return Explain(fs, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected command-line arguments %q: every setting is a -flag=value", fs.Args())
	}
	if !getBool(fs, "envflag.enable") {
		return nil
	}
	prefix := fs.Lookup("envflag.prefix").Value.String()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		key := prefix + strings.ReplaceAll(f.Name, ".", "_")
		v, ok := environ(key)
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = errors.New(invalid(f, v, "environment variable "+key, e))
		}
	})
	return err
}

// ParseCommandLine is Parse for the process's own flags and environment. A bad flag is returned, not printed with
// the whole usage: the caller prints the one line that names it. -help returns flag.ErrHelp.
func ParseCommandLine() error {
	flag.CommandLine.Init(os.Args[0], flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard)
	defer flag.CommandLine.SetOutput(nil)
	return Parse(flag.CommandLine, os.Args[1:], os.LookupEnv)
}

func getBool(fs *flag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Value.String() == "true"
}
