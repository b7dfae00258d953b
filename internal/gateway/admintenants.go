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
		if !json.Valid(body) {
			var v json.RawMessage
			return nil, fmt.Errorf("it is not the JSON VictoriaMetrics sends: %w", json.Unmarshal(body, &v))
		}
		i := skipSpace(body, 0)
		if body[i] != '{' {
			return nil, fmt.Errorf("it is not the JSON object VictoriaMetrics sends: it starts with %q", body[i])
		}
		out := make([]byte, 0, len(body))
		last := 0
		var err error
		eachMember(body, i, func(key, value []byte, at int) {
			if err != nil || !keyIs(key, "data") {
				return
			}
			if value[0] != '[' {
				err = errors.New("its data is not the list of tenants VictoriaMetrics sends")
				return
			}
			out = append(out, body[last:at]...)
			last = at + len(value)
			out = append(out, '[')
			eachElement(value, func(elem []byte, _ int) {
				var s string
				if err != nil {
					return
				}
				if elem[0] != '"' || json.Unmarshal(elem, &s) != nil {
					err = fmt.Errorf("its data holds %.40s, not a tenant", elem)
					return
				}
				if s == own && len(out) > 0 && out[len(out)-1] == '[' {
					out = append(out, elem...)
				}
			})
			out = append(out, ']')
		})
		if err != nil {
			return nil, err
		}
		return append(out, body[last:]...), nil
	}
}
