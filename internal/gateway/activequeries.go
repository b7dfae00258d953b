package gateway

import (
	"bytes"
	"errors"
)

// VictoriaMetrics numbers every query it runs from one counter, whatever its tenant, and /api/v1/status/active_queries
// shows each running query's number as its id: a cluster tenant that sees two of its own ids learns how many queries
// every other tenant ran in between (found by an attacker's review). The ids are dropped; nothing in VictoriaMetrics'
// API takes them back.

// dropQueryIDs removes the id member of every entry in the answer's data, a list of running queries. Everything else
// stays byte for byte; an answer whose data is not such a list is refused.
func dropQueryIDs(body []byte) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		// VictoriaMetrics 1.79.5 answers an empty body when no query runs: no ids in it (a review found the 502).
		return body, nil
	}
	return rewriteData(body, func(out, data []byte) ([]byte, error) {
		if data[0] != '[' {
			return nil, errors.New("its data is not the list of queries VictoriaMetrics sends")
		}
		out = append(out, '[')
		var err error
		n := 0
		eachElement(data, func(elem []byte, _ int) {
			if err != nil {
				return
			}
			if elem[0] != '{' {
				err = errors.New("its data holds an entry that is not a query")
				return
			}
			if n++; n > 1 {
				out = append(out, ',')
			}
			out = append(out, '{')
			m := 0
			eachMember(elem, 0, func(key, value []byte, _ int) {
				if keyIs(key, "id") {
					return
				}
				if m++; m > 1 {
					out = append(out, ',')
				}
				out = append(out, key...)
				out = append(out, ':')
				out = append(out, value...)
			})
			out = append(out, '}')
		})
		return append(out, ']'), err
	})
}
