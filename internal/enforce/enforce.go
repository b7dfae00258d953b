// Package enforce limits a request to a token's series: it rewrites MetricsQL and series selectors and sets the
// extra_label / extra_filters args that VictoriaMetrics enforces again.
package enforce

import (
	"net/http"

	"github.com/vmgateway/vmgateway/internal/route"
)

// Label is one enforced label: name="value".
type Label struct{ Name, Value string }

// Enforcer holds one token's extra labels and filters. A nil Enforcer is unrestricted.
type Enforcer struct {
	labels  []Label
	filters []string
}

// CONTRACT PLACEHOLDER: the enforce helper replaces everything below with the real implementation.

// New validates labels and filters (series selectors) and parses them once.
func New(labels []Label, filters []string) (*Enforcer, error) {
	panic("enforce.New: not yet implemented")
}

// Restricted reports whether the enforcer limits anything.
func (e *Enforcer) Restricted() bool { return e != nil && (len(e.labels) > 0 || len(e.filters) > 0) }

// Request rewrites a read request's selectors or a write request's extra_label args in place.
func (e *Enforcer) Request(r *http.Request, rt route.Route, cluster bool) error {
	panic("enforce.Request: not yet implemented")
}
