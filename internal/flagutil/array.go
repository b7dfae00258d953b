// Package flagutil holds VictoriaMetrics-style command-line flags: arrays given by repetition or commas,
// secrets read from files, and flags taken from environment variables.
package flagutil

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

const arrayHelp = "\n\tSupports an array of values separated by comma or specified via multiple flags." +
	"\n\tEach array item can contain comma inside single-quoted or double-quoted string, {}, [] and () braces."

// Array is a string-list flag: `-f=a -f=b` and `-f=a,b` both give [a b]. A comma inside quotes or braces does not
// split, so `-ratelimit.extraLabels='job="a,b"'` stays one value.
type Array []string

// NewArray registers an Array flag on the command line.
func NewArray(name, usage string) *Array {
	a := &Array{}
	flag.Var(a, name, usage+arrayHelp)
	return a
}

// NewArrayDefault registers an Array flag whose value is def until the command line or the environment sets it.
func NewArrayDefault(name string, def []string, usage string) *Array {
	a := &defaultArray{Array: def, isDefault: true}
	flag.Var(a, name, usage+arrayHelp)
	return &a.Array
}

// defaultArray drops its default at the first Set, so a given value replaces the default instead of adding to it.
type defaultArray struct {
	Array
	isDefault bool
}

func (a *defaultArray) Set(v string) error {
	if a.isDefault {
		a.Array, a.isDefault = nil, false
	}
	return a.Array.Set(v)
}

func (a *Array) String() string { return strings.Join(*a, ",") }

// Set appends the comma-separated items of v.
func (a *Array) Set(v string) error {
	items, err := splitArray(v)
	if err != nil {
		return err
	}
	*a = append(*a, items...)
	return nil
}

// Get returns the i-th value, or the last one when fewer were given, so a single value applies to every listener.
func (a Array) Get(i int) string {
	if len(a) == 0 {
		return ""
	}
	if i < len(a) {
		return a[i]
	}
	return a[len(a)-1]
}

// ArrayBool is an Array of booleans; an empty item is false.
type ArrayBool []bool

// NewArrayBool registers an ArrayBool flag on the command line.
func NewArrayBool(name, usage string) *ArrayBool {
	a := &ArrayBool{}
	flag.Var(a, name, usage+"\n\tSupports array of values separated by comma or specified via multiple flags.\n\tEmpty values are set to false.")
	return a
}

// IsBoolFlag lets `-tls` stand alone on the command line, as with a plain bool flag.
func (a *ArrayBool) IsBoolFlag() bool { return true }

func (a *ArrayBool) String() string {
	s := make([]string, len(*a))
	for i, b := range *a {
		s[i] = strconv.FormatBool(b)
	}
	return strings.Join(s, ",")
}

// Set appends the comma-separated booleans of v.
func (a *ArrayBool) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item == "" {
			*a = append(*a, false)
			continue
		}
		b, err := strconv.ParseBool(item)
		if err != nil {
			return fmt.Errorf("%q is not a boolean (want true or false)", item)
		}
		*a = append(*a, b)
	}
	return nil
}

// Get returns the i-th value, or the last one when fewer were given.
func (a ArrayBool) Get(i int) bool {
	if len(a) == 0 {
		return false
	}
	if i < len(a) {
		return a[i]
	}
	return a[len(a)-1]
}

// splitArray splits on commas outside quotes and brackets, and unquotes fully quoted items.
func splitArray(s string) ([]string, error) {
	var items []string
	var stack []byte
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if n := len(stack); n > 0 && (stack[n-1] == '"' || stack[n-1] == '\'') {
			switch {
			case c == '\\' && stack[n-1] == '"':
				i++
			case c == stack[n-1]:
				stack = stack[:n-1]
			}
			continue
		}
		switch c {
		case '"', '\'', '{', '[', '(':
			stack = append(stack, c)
		case '}', ']', ')':
			open := map[byte]byte{'}': '{', ']': '[', ')': '('}[c]
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return nil, fmt.Errorf("unbalanced %q at position %d in %q", c, i, s)
			}
			stack = stack[:len(stack)-1]
		case ',':
			if len(stack) == 0 {
				items = append(items, unquote(s[start:i]))
				start = i + 1
			}
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("unclosed %q in %q", stack[len(stack)-1], s)
	}
	return append(items, unquote(s[start:])), nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return s[1 : len(s)-1]
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return s
}
