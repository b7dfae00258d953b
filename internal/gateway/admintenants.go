package gateway

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// vmselect's /admin/tenants names every tenant that holds data, outside any tenant. Every token is one tenant's,
// full ones too, so through the gateway the list holds the token's own tenant at most: a tenant's admin learns
// neither how many others there are nor their IDs. Only a gateway without auth, which serves the operator, passes
// the whole list.

// keepTenant returns the filter that keeps only t in the answer's data, a list of "accountID:projectID" strings.
// Everything else in the answer stays byte for byte; an answer whose data is not such a list is refused.
func keepTenant(t tenant.ID) answerFilter {
	own := t.String()
	return func(body []byte) ([]byte, error) {
		out, err := rewriteData(body, func(out, data []byte) ([]byte, error) {
			if data[0] != '[' {
				return nil, errors.New("its data is not the list of tenants VictoriaMetrics sends")
			}
			out = append(out, '[')
			kept := false
			var err error
			eachElement(data, func(elem []byte, _ int) {
				var s string
				switch {
				case err != nil:
				case elem[0] != '"' || json.Unmarshal(elem, &s) != nil:
					err = fmt.Errorf("its data holds %.40s, not a tenant", elem)
				case s == own && !kept:
					out, kept = append(out, elem...), true
				}
			})
			return append(out, ']'), err
		})
		if err != nil {
			return nil, err
		}
		// The gateway removes the trace arg; a trace that comes anyway counts the tenants.
		eachMember(out, skipSpace(out, 0), func(key, _ []byte, _ int) {
			if keyIs(key, "trace") {
				err = errors.New("it carries a query trace, which counts every tenant")
			}
		})
		return out, err
	}
}
