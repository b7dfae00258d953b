package route

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Upstream returns the escaped upstream path of a Route made by Lookup, built from the Route and the tenant alone,
// never from the client path. Single-node: "/" + Suffix ("/prometheus/api/v1/query", "/influx/write", "/vmui/");
// cluster: "/select/<a>:<p>/", "/insert/<a>:<p>/" or "/delete/<a>:<p>/" + Suffix, and "/admin/tenants".
func (r Route) Upstream(cluster bool, t tenant.ID) string {
	path, rawPath := r.UpstreamPath(cluster, t)
	if rawPath != "" {
		return rawPath
	}
	return path
}

// UpstreamPath returns the upstream path decoded, for URL.Path, and escaped, for URL.RawPath. rawPath is empty
// when both are the same, as net/url expects.
func (r Route) UpstreamPath(cluster bool, t tenant.ID) (path, rawPath string) {
	suffix := r.Suffix
	if !cluster && suffix == "opentsdb/api/put" {
		// Single-node's -opentsdbHTTPListenAddr serves this one path only.
		suffix = "api/put"
	}
	// Built in one buffer, the tenant's numbers included: each path is one allocation.
	var buf [128]byte
	prefix := r.appendUpstreamPrefix(buf[:0], cluster, t)
	path = string(append(prefix, suffix...))
	if escaped := escapeSegments(suffix); escaped != suffix {
		rawPath = string(append(prefix, escaped...))
	}
	return path, rawPath
}

// Insert reports whether the ingestion side serves the API: vminsert, or single-node behind -write.url (which may
// be a vmagent). Every other API goes to the query side, -read.url. Graphite tag registration is a write that only
// the query side serves: vmselect, and single-node's Graphite API.
func (r Route) Insert() bool {
	return r.Kind == Write && !strings.HasPrefix(r.Suffix, "graphite/")
}

func (r Route) appendUpstreamPrefix(dst []byte, cluster bool, t tenant.ID) []byte {
	var root string
	switch {
	case !cluster || r.Suffix == adminTenants.Suffix:
		return append(dst, '/')
	case r.Insert():
		root = "/insert/"
	case strings.HasPrefix(r.Suffix, "prometheus/api/v1/admin/"):
		root = "/delete/"
	default:
		root = "/select/"
	}
	dst = append(dst, root...)
	dst = strconv.AppendUint(dst, uint64(t.AccountID), 10)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, uint64(t.ProjectID), 10)
	return append(dst, '/')
}

// escapeSegments escapes each segment of a decoded suffix, so a label, tag or file name can never add a segment,
// a query or a fragment to the upstream path.
func escapeSegments(s string) string {
	for i := 0; i < len(s); i++ {
		if !httpsyntax.IsUnreserved(s[i]) && s[i] != '/' {
			segs := strings.Split(s, "/")
			for j, seg := range segs {
				segs[j] = url.PathEscape(seg)
			}
			return strings.Join(segs, "/")
		}
	}
	return s
}
