package auth

import (
	"encoding/json"
	"strings"
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
		{Mode(0), "invalid", false, false, false},
		{Mode(4), "invalid", false, false, false},
	} {
		got := [3]bool{tc.mode.Allows(route.Read), tc.mode.Allows(route.Write), tc.mode.Allows(route.Admin)}
		if got != [3]bool{tc.read, tc.write, tc.admin} || tc.mode.String() != tc.name {
			t.Fatalf("mode %d (%s): read/write/admin = %v, want %v %v %v (%s)", tc.mode, tc.mode, got, tc.read, tc.write, tc.admin, tc.name)
		}
	}
}

// TestModeZeroValueGrantsNothing: an Access or VMAccess whose Mode was forgotten allows no API at all and cannot be
// turned into a claim, while the wire format keeps 0 = full.
func TestModeZeroValueGrantsNothing(t *testing.T) {
	var a Access
	for _, k := range []route.Kind{route.Read, route.Write, route.Admin} {
		if a.Mode.Allows(k) {
			t.Fatalf("the zero Access allows %s APIs", k)
		}
	}
	if _, err := json.Marshal(VMAccess{}); err == nil || !strings.Contains(err.Error(), "the mode 0 is not ModeFull, ModeRead or ModeWrite") {
		t.Fatalf("Marshal(VMAccess{}) error = %v; want a refusal of the missing mode", err)
	}
	for wire, want := range map[uint32]Mode{0: ModeFull, 1: ModeRead, 2: ModeWrite} {
		m, ok := modeFromWire(wire)
		if !ok || m != want {
			t.Fatalf("modeFromWire(%d) = %s, %t; want %s", wire, m, ok, want)
		}
		if back, ok := m.Wire(); !ok || back != wire {
			t.Fatalf("%s.Wire() = %d, %t; want %d", m, back, ok, wire)
		}
	}
	if _, ok := modeFromWire(3); ok {
		t.Fatal("modeFromWire(3) is valid")
	}
	if _, ok := Mode(0).Wire(); ok {
		t.Fatal("the zero Mode has a wire number")
	}
}
