// Package tenant names a VictoriaMetrics cluster tenant.
package tenant

import (
	"fmt"
	"strconv"
	"strings"
)

// ID is a cluster tenant: accountID and projectID, each a uint32. The zero ID is tenant 0:0.
type ID struct {
	AccountID uint32
	ProjectID uint32
}

// String formats the tenant the way cluster URLs carry it: "accountID:projectID".
func (id ID) String() string {
	return strconv.FormatUint(uint64(id.AccountID), 10) + ":" + strconv.FormatUint(uint64(id.ProjectID), 10)
}

// Parse reads a tenant as cluster URLs carry it: "accountID" or "accountID:projectID".
// The "multitenant" pseudo-tenant and anything outside the uint32 range are errors.
func Parse(s string) (ID, error) {
	acc, proj, hasProj := strings.Cut(s, ":")
	a, err := parseUint32(acc)
	if err != nil {
		return ID{}, fmt.Errorf("cannot parse tenant %q: accountID: %w", s, err)
	}
	var p uint32
	if hasProj {
		if p, err = parseUint32(proj); err != nil {
			return ID{}, fmt.Errorf("cannot parse tenant %q: projectID: %w", s, err)
		}
	}
	return ID{AccountID: a, ProjectID: p}, nil
}

func parseUint32(s string) (uint32, error) {
	// strconv accepts a leading '+', which cluster URLs never carry; insist on digits only.
	if s == "" || len(s) > 10 {
		return 0, fmt.Errorf("want a decimal number in [0..4294967295], got %q", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("want a decimal number in [0..4294967295], got %q", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("want a decimal number in [0..4294967295], got %q", s)
	}
	return uint32(n), nil
}
