package auth

import (
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Mode is what kinds of API a token may call. Its zero value is invalid and allows nothing, so an Access built with
// a forgotten Mode can never grant full access; the wire numbers of vm_access.mode (0 full, 1 read, 2 write) are
// mapped by modeFromWire and Mode.Wire.
type Mode uint8

const (
	// ModeFull may read, write and call admin APIs.
	ModeFull Mode = iota + 1
	// ModeRead may call read APIs only.
	ModeRead
	// ModeWrite may call write APIs only.
	ModeWrite
)

// modeFromWire maps vm_access.mode, where 0 is full, to a Mode.
func modeFromWire(n uint32) (Mode, bool) {
	switch n {
	case 0:
		return ModeFull, true
	case 1:
		return ModeRead, true
	case 2:
		return ModeWrite, true
	}
	return 0, false
}

// Wire is the vm_access.mode number of m; false for an invalid Mode.
func (m Mode) Wire() (uint32, bool) {
	switch m {
	case ModeFull:
		return 0, true
	case ModeRead:
		return 1, true
	case ModeWrite:
		return 2, true
	}
	return 0, false
}

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
