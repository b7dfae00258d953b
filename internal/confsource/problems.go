package confsource

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problems collects every problem of one YAML config, each with its line, so that an operator fixes them all in
// one edit instead of one per reload. The limits config, the query limits config and the policy file share it.
type Problems struct {
	what, source string
	// List is the problems found so far; Err sorts it by line.
	List []Problem
}

// Problem is one error of a config at one line.
type Problem struct {
	Line int
	Msg  string
}

// NewProblems starts the list of a config named what (e.g. "limits config") read from source (a path or URL).
func NewProblems(what, source string) *Problems { return &Problems{what: what, source: source} }

// Add records a problem at n's line.
func (p *Problems) Add(n *yaml.Node, format string, args ...any) {
	p.List = append(p.List, Problem{Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

// Err is nil without problems, else the problems sorted by line.
func (p *Problems) Err() error {
	if len(p.List) == 0 {
		return nil
	}
	sort.SliceStable(p.List, func(i, j int) bool { return p.List[i].Line < p.List[j].Line })
	return p
}

func (p *Problems) Error() string {
	var b strings.Builder
	if len(p.List) > 1 {
		fmt.Fprintf(&b, "%d errors in the %s %s:", len(p.List), p.what, p.source)
		for _, q := range p.List {
			fmt.Fprintf(&b, "\n  %s:%d: %s", p.source, q.Line, q.Msg)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "%s:%d: %s", p.source, p.List[0].Line, p.List[0].Msg)
	return b.String()
}

// EachKey walks a mapping, reporting duplicate keys and keys that are not plain scalars to add.
func EachKey(m *yaml.Node, add func(n *yaml.Node, format string, args ...any), f func(key, val *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := Resolve(m.Content[i]), Resolve(m.Content[i+1])
		if key.Kind != yaml.ScalarNode {
			kind := "a list"
			if key.Kind == yaml.MappingNode {
				kind = "a mapping"
			}
			add(key, "want a plain key, got %s", kind)
			continue
		}
		if line, ok := seen[key.Value]; ok {
			add(key, "duplicate key %q (first at line %d)", key.Value, line)
			continue
		}
		seen[key.Value] = key.Line
		f(key, val)
	}
}

// Resolve follows YAML aliases to the node they name.
func Resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
