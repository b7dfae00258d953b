package limitfile

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/vmgateway/vmgateway/internal/auth"
)

// Key partitions a limit by the caller's identity: within a tenant, each value of the key is counted and limited
// on its own. At most one of Claim and Label is set; the zero Key partitions nothing.
type Key struct {
	// Claim names a top-level claim of the token, such as sub.
	Claim string
	// Label names one of the token's extra labels, such as team.
	Label string
}

// IsZero reports whether the key partitions nothing.
func (k Key) IsZero() bool { return k == Key{} }

// String is the key as the limits config writes it: claim:<name> or label:<name>.
func (k Key) String() string {
	switch {
	case k.Claim != "":
		return "claim:" + k.Claim
	case k.Label != "":
		return "label:" + k.Label
	}
	return ""
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// maxClaimName keeps a mistyped key (a whole token pasted in) out of counters, Redis keys and headers.
const maxClaimName = 256

// ParseKey reads a key as the limits config writes it: claim:<name> for a top-level claim of the token (the name
// is taken whole, so claim:https://example.com/team works), or label:<name> for one of its extra labels.
func ParseKey(s string) (Key, error) {
	src, name, ok := strings.Cut(s, ":")
	if !ok {
		return Key{}, fmt.Errorf("want claim:<name> (a token claim such as claim:sub) or label:<name> (an extra label such as label:team), got %q", s)
	}
	switch src {
	case "claim":
		if name == "" || strings.TrimSpace(name) != name || len(name) > maxClaimName {
			return Key{}, fmt.Errorf("want a claim name after claim: without surrounding spaces, at most %d bytes, e.g. claim:sub; got %q", maxClaimName, s)
		}
		if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return Key{}, fmt.Errorf("the claim name in %q has a control character", s)
		}
		return Key{Claim: name}, nil
	case "label":
		if !labelName.MatchString(name) {
			return Key{}, fmt.Errorf("want a label name ([a-zA-Z_][a-zA-Z0-9_]*) after label:, e.g. label:team; got %q", s)
		}
		return Key{Label: name}, nil
	}
	return Key{}, fmt.Errorf("unknown key source %q in %q: want claim:<name> or label:<name>", src, s)
}

// Value is the caller's value of the key. A caller without it (no such claim, a claim that is an object, a list or
// null, no such extra label, or no token at all) gets "": all such callers of a tenant share one count, so a
// missing claim never escapes the limit.
func (k Key) Value(a *auth.Access) string {
	if a == nil {
		return ""
	}
	if k.Claim != "" {
		switch v := a.Claims[k.Claim].(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		case bool:
			if v {
				return "true"
			}
			return "false"
		case float64:
			return fmt.Sprint(v)
		}
		return ""
	}
	if k.Label != "" && a.Enforcer != nil {
		for _, l := range a.Enforcer.Labels() {
			if l.Name == k.Label {
				return l.Value
			}
		}
	}
	return ""
}
