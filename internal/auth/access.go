package auth

import (
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Mode is the vm_access mode: which kinds of API a token may call.
type Mode uint8

const (
	// ModeFull may read, write and call admin APIs.
	ModeFull Mode = 0
	// ModeRead may call read APIs only.
	ModeRead Mode = 1
	// ModeWrite may call write APIs only.
	ModeWrite Mode = 2
)

func (m Mode) String() string {
	switch m {
	case ModeFull:
		return "full"
	case ModeRead:
		return "read"
	case ModeWrite:
		return "write"
	}
	return "invalid"
}

// Allows reports whether a token of this mode may call an API of kind k.
func (m Mode) Allows(k route.Kind) bool {
	switch m {
	case ModeFull:
		return true
	case ModeRead:
		return k == route.Read
	case ModeWrite:
		return k == route.Write
	}
	return false
}

// Access is what a verified token grants. It is immutable and shared between requests through the cache.
type Access struct {
	Tenant tenant.ID
	Mode   Mode
	// Enforcer holds the token's extra_labels and extra_filters, parsed once when the token is verified.
	Enforcer *enforce.Enforcer
	// Subject is the token's `sub` claim, for logs and per-identity limits.
	Subject   string
	ExpiresAt time.Time
	// Claims are the token's top-level claims, for per-identity rate-limit keys.
	Claims map[string]any
	// Policy names the access policy (-auth.policyFile) that gave this access; empty when the token's own
	// vm_access claim did.
	Policy string

	// policy and policies are that policy and the set it was judged by: a cached Access stands only while that
	// set is in force.
	policy   *policy
	policies *policySet
}
