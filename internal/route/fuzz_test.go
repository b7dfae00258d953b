package route

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// FuzzLookup checks the router's invariants on any path. Seeds are in testdata/fuzz/FuzzLookup.
func FuzzLookup(f *testing.F) {
	upstreamTenants := []tenant.ID{{}, {AccountID: 15}, {AccountID: 4294967295, ProjectID: 4294967295}}
	f.Fuzz(func(t *testing.T, path string) {
		r, err := Lookup(path)
		if err != nil {
			var se interface{ HTTPStatus() int }
			if !errors.As(err, &se) {
				t.Fatalf("Lookup(%q): error without HTTPStatus: %v", path, err)
			}
			switch se.HTTPStatus() {
			case 400, 403, 404, 414:
			default:
				t.Fatalf("Lookup(%q): unexpected status %d", path, se.HTTPStatus())
			}
			return
		}
		p, err := canonical(path)
		if err != nil {
			t.Fatalf("Lookup(%q) accepted a path canonical refuses: %v", path, err)
		}
		checkSegments(t, path, "canonical path", p[1:])
		checkSegments(t, path, "Suffix", r.Suffix)
		if r.API == "" || r.Kind < Read || r.Kind > Admin || r.Args > Unenforceable {
			t.Fatalf("Lookup(%q): incomplete route %+v", path, r)
		}

		base := r
		base.PathTenant, base.HasPathTenant = tenant.ID{}, false
		checkRoundTrip(t, path, base, false, tenant.ID{}, base)
		for _, id := range upstreamTenants {
			want := base
			if r.API != adminTenants.API {
				want.PathTenant, want.HasPathTenant = id, true
			}
			checkRoundTrip(t, path, base, true, id, want)
		}
	})
}

// checkSegments fails on segments that are empty (but a trailing slash), "." or "..", or name multitenant.
func checkSegments(t *testing.T, path, what, s string) {
	t.Helper()
	segs := strings.Split(s, "/")
	for i, seg := range segs {
		if (seg == "" && i != len(segs)-1) || seg == "." || seg == ".." || strings.EqualFold(seg, "multitenant") {
			t.Fatalf("Lookup(%q): %s %q has segment %q", path, what, s, seg)
		}
	}
}

// checkRoundTrip builds the upstream path of r, checks it is a clean single path as it goes on the wire, and
// that the router reads it back as want: the upstream can serve exactly the route the gateway classified.
func checkRoundTrip(t *testing.T, path string, r Route, cluster bool, id tenant.ID, want Route) {
	t.Helper()
	up := r.Upstream(cluster, id)
	decoded, rawPath := r.UpstreamPath(cluster, id)
	u, err := url.Parse("http://upstream" + up)
	if err != nil {
		t.Fatalf("Lookup(%q): upstream %q does not parse: %v", path, up, err)
	}
	if u.Path != decoded || u.RawQuery != "" || u.Fragment != "" || (rawPath != "" && rawPath != up) {
		t.Fatalf("Lookup(%q): upstream %q reads back as path %q query %q fragment %q, want path %q",
			path, up, u.Path, u.RawQuery, u.Fragment, decoded)
	}
	back, err := Lookup(up)
	if err != nil {
		t.Fatalf("Lookup(%q): upstream %q (cluster=%v) is refused: %v", path, up, cluster, err)
	}
	if back != want {
		t.Fatalf("Lookup(%q): upstream %q (cluster=%v) reads back as\n %+v\nwant %+v", path, up, cluster, back, want)
	}
}
