package docstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A `console` block is a terminal transcript: `$ command` lines, each followed by the output it must print. A line
// `...` matches any number of lines, and `...` inside a line matches any text. Every command must exit 0. A command
// line ending in `\` continues on the next line.

// step is one command of a transcript and the output it must print.
type step struct {
	Line int // in the Markdown file
	Cmd  string
	Want []string
}

// parseTranscript splits a console block into its commands.
func parseTranscript(b Block) ([]step, error) {
	var steps []step
	lines := strings.Split(b.Text, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if c, ok := strings.CutPrefix(l, "$ "); ok {
			s := step{Line: b.Line + 1 + i, Cmd: c}
			for strings.HasSuffix(s.Cmd, "\\") && i+1 < len(lines) {
				i++
				s.Cmd += "\n" + lines[i]
			}
			steps = append(steps, s)
			continue
		}
		if len(steps) == 0 {
			if strings.TrimSpace(l) == "" {
				continue
			}
			return nil, fmt.Errorf("line %d: a transcript starts with a `$ command` line, got %q", b.Line+1+i, l)
		}
		steps[len(steps)-1].Want = append(steps[len(steps)-1].Want, l)
	}
	for i := range steps {
		steps[i].Want = trimLines(steps[i].Want)
	}
	return steps, nil
}

// Session is one shell session over the blocks of a doc: a working directory, and the variables one command
// assigns (TOKEN=$(...)) are there in the next ones.
type Session struct {
	Bash string
	Dir  string
	Env  []string
}

// saveState writes the exported variables (every assignment, under set -a) for the next command.
const saveState = `__rc=$?; for __v in $(compgen -e); do case $__v in BASH*|SHELLOPTS|SHLVL|PWD|OLDPWD|_|__*) continue;; esac; ` +
	`printf 'export %s=%q\n' "$__v" "${!__v}"; done > "$DOCS_STATE"; exit $__rc`

// NewSession starts a session in dir with pathDir first on the PATH (where the binary under test is).
func NewSession(t testing.TB, bash, dir, pathDir string) *Session {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state.sh")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+pathDir+string(os.PathListSeparator)+os.Getenv("PATH"), "DOCS_STATE="+state)
	return &Session{Bash: bash, Dir: dir, Env: env}
}

// Run runs script in the session: with the variables of the commands before, keeping those it assigns.
func (s *Session) Run(script string) ([]byte, error) {
	cmd := exec.Command(s.Bash, "-c", "set -a\n. \"$DOCS_STATE\"\n"+script+"\n"+saveState)
	cmd.Dir, cmd.Env = s.Dir, s.Env
	return cmd.CombinedOutput()
}

// Split splits args as the session's shell would (quotes, variables), without running anything.
func (s *Session) Split(args string) ([]string, error) {
	cmd := exec.Command(s.Bash, "-c", `set -a; . "$DOCS_STATE"; eval "set -- $DOCS_ARGS"; printf '%s\0' "$@"`)
	cmd.Dir, cmd.Env = s.Dir, append(s.Env, "DOCS_ARGS="+args)
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"), nil
}

// Transcript runs the commands of a console block and fails the test at the first one that does not exit 0 or does
// not print what the block says. subst rewrites commands and expected output (the doc's addresses into the test's);
// a command for which retry is positive is run again until it prints what the doc says or that long has passed.
func (s *Session) Transcript(t testing.TB, b Block, subst func(string) string, retry func(cmd string) time.Duration) {
	t.Helper()
	steps, err := parseTranscript(b)
	if err != nil {
		t.Fatalf("%s: %s", b, err)
	}
	for _, st := range steps {
		script := subst(st.Cmd)
		want := make([]string, len(st.Want))
		for i, w := range st.Want {
			want[i] = subst(w)
		}
		deadline := time.Now().Add(retry(st.Cmd))
		for {
			out, err := s.Run(script)
			got := trimLines(strings.Split(string(out), "\n"))
			if err == nil && matchLines(want, got) {
				break
			}
			if time.Now().After(deadline) {
				status := "exit 0"
				if err != nil {
					status = err.Error()
				}
				t.Fatalf("%s:%d: the documented command\n\t%s\nprinted (%s):\n%s\nbut the doc says:\n%s",
					filepath.Base(b.File), st.Line, st.Cmd, status, indentLines(got), indentLines(want))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// trimLines drops trailing white space of every line and the empty lines at the end.
func trimLines(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = strings.TrimRight(l, " \t\r")
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// indentLines shows lines in a failure message.
func indentLines(ls []string) string {
	if len(ls) == 0 {
		return "\t(nothing)"
	}
	return "\t" + strings.Join(ls, "\n\t")
}

// matchLines matches output against expected lines: a line "..." stands for any number of lines, and "..." inside
// a line for any text.
func matchLines(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "..." {
		for k := 0; k <= len(got); k++ {
			if matchLines(want[1:], got[k:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && matchLine(want[0], got[0]) && matchLines(want[1:], got[1:])
}

func matchLine(want, got string) bool {
	parts := strings.Split(want, "...")
	if len(parts) == 1 {
		return want == got
	}
	if !strings.HasPrefix(got, parts[0]) {
		return false
	}
	got = got[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(got, p)
		if i < 0 {
			return false
		}
		got = got[i+len(p):]
	}
	return strings.HasSuffix(got, last)
}
