package confsource

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// TopList is the shape of the gateway's YAML configs (the limits, the query limits, the access policies): one
// document, a mapping with one key whose value is a list.
type TopList struct {
	// What names the config in messages: "limits config".
	What string
	// Key is the one top-level key: "limits".
	Key string
	// Items says what the list holds, for messages: "limits", "entries".
	Items string
	// ForNone says what `Key: []` means, for messages: "for no limits".
	ForNone string
}

// Parse reads data, the config at source, as this shape. It returns the list, nil when the config has none or it
// is not a list (p then holds that problem), and the Problems the caller adds those of the items to. A config that
// is empty or not YAML at all is an error at once: an empty file is more often a truncated file or download than
// a wish for nothing.
func (s TopList) Parse(data []byte, source string) (list *yaml.Node, p *Problems, err error) {
	empty := fmt.Errorf("the %s %s is empty: want a `%s:` list (write `%s: []` %s)", s.What, source, s.Key, s.Key, s.ForNone)
	p = NewProblems(s.What, source)
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, empty
		}
		return nil, nil, fmt.Errorf("cannot parse the %s %s: %w", s.What, source, err)
	}
	var second yaml.Node
	if err := dec.Decode(&second); err == nil {
		p.Add(&second, "a second YAML document: the %s is one document", s.What)
	} else if !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("cannot parse the %s %s: %w", s.What, source, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil, empty
	}
	root := Resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		p.Add(root, "want a mapping with a `%s:` list, got %s", s.Key, Describe(root))
		return nil, p, nil
	}
	EachKey(root, p.Add, func(key, val *yaml.Node) {
		if key.Value != s.Key {
			p.Add(key, "unknown key %q: the only top-level key is `%s`", key.Value, s.Key)
			return
		}
		list = val
	})
	switch {
	case list == nil:
		p.Add(root, "no `%s:` key (write `%s: []` %s)", s.Key, s.Key, s.ForNone)
	case list.Kind != yaml.SequenceNode:
		p.Add(list, "%s: want a list of %s, got %s", s.Key, s.Items, Describe(list))
		list = nil
	}
	return list, p, nil
}

// Describe shows a YAML node in a message about a value of the wrong kind: its kind, or its value; a string
// that reads as a number or a boolean says it is quoted.
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!null":
		return "nothing"
	case "!!str":
		if _, err := strconv.ParseFloat(n.Value, 64); err == nil || n.Value == "true" || n.Value == "false" {
			return strconv.Quote(n.Value) + " (a quoted string)"
		}
		return strconv.Quote(n.Value)
	}
	return n.Value
}
