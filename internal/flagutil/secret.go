package flagutil

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Secret is a flag whose value may be given inline or read from a file with `file:///abs/path` or
// `file://./relative/path`, so that passwords and keys stay out of the process list. The file is read when
// the flag is set, so a missing file stops the start with the flag's name.
type Secret struct {
	value string
	src   string
}

// NewSecret registers a Secret flag on the command line.
func NewSecret(name, usage string) *Secret {
	s := &Secret{}
	flag.Var(s, name, usage+"\n\tFlag value can be read from the given file when using -"+name+"=file:///abs/path/to/file or -"+name+"=file://./relative/path/to/file")
	return s
}

// String hides the value: flag listings and logs must never print a secret.
func (s *Secret) String() string {
	if s == nil {
		return ""
	}
	return shownSecret(s.src)
}

// shownSecret is how a Secret flag given as v is shown: its file, or "secret" for a value given inline.
func shownSecret(v string) string {
	if v == "" || strings.HasPrefix(v, "file://") {
		return v
	}
	return "secret"
}

// Set reads the value, from a file when v starts with file://.
func (s *Secret) Set(v string) error {
	s.src = v
	path, ok := strings.CutPrefix(v, "file://")
	if !ok {
		s.value = v
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read secret file: %w", err)
	}
	s.value = strings.TrimRight(string(b), "\r\n")
	return nil
}

// Get returns the secret.
func (s *Secret) Get() string { return s.value }
