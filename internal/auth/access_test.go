package auth

import (
	"testing"

	"github.com/vmgateway/vmgateway/internal/route"
)

func TestModeAllows(t *testing.T) {
	for _, tc := range []struct {
		mode               Mode
		name               string
		read, write, admin bool
	}{
		{ModeFull, "full", true, true, true},
		{ModeRead, "read", true, false, false},
		{ModeWrite, "write", false, true, false},
		{Mode(3), "invalid", false, false, false},
	} {
		got := [3]bool{tc.mode.Allows(route.Read), tc.mode.Allows(route.Write), tc.mode.Allows(route.Admin)}
		if got != [3]bool{tc.read, tc.write, tc.admin} || tc.mode.String() != tc.name {
			t.Fatalf("mode %d (%s): read/write/admin = %v, want %v %v %v (%s)", tc.mode, tc.mode, got, tc.read, tc.write, tc.admin, tc.name)
		}
	}
}
