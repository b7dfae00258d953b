package gateway

import "fmt"

// Some answers tell more than the token's series. VictoriaMetrics v1.150+ adds requestsCount and
// lastRequestTimestamp to the metric-name entries of /api/v1/status/tsdb, counted over the whole tenant: a team
// whose selection shares a metric name with another team would watch the other team's queries. For a restricted
// token the gateway filters such answers before the client sees a byte of them.

// keepSeriesCounts keeps only name and value in every object entry of every array in the answer's data: series
// counts of the token's own selection. Whatever else an entry carries (requestsCount, lastRequestTimestamp, and
// whatever a later version adds) is dropped. Everything else stays byte for byte; an answer without data (an
// error) passes unchanged.
func keepSeriesCounts(body []byte) ([]byte, error) {
	return rewriteData(body, func(out, data []byte) ([]byte, error) {
		if data[0] == 'n' {
			return append(out, data...), nil
		}
		if data[0] != '{' {
			return nil, fmt.Errorf("its data is not the JSON object VictoriaMetrics sends: it starts with %q", data[0])
		}
		return filterData(out, data), nil
	})
}

// filterData appends the data object with every array's object entries cut down to name and value.
func filterData(out, data []byte) []byte {
	last := 0
	eachMember(data, 0, func(_, value []byte, at int) {
		if value[0] != '[' {
			return
		}
		out = append(out, data[last:at]...)
		last = at + len(value)
		elemLast := 0
		eachElement(value, func(elem []byte, at int) {
			if elem[0] != '{' {
				return
			}
			out = append(out, value[elemLast:at]...)
			elemLast = at + len(elem)
			out = append(out, '{')
			n := 0
			eachMember(elem, 0, func(key, v []byte, vat int) {
				if !keyIs(key, "name") && !keyIs(key, "value") {
					return
				}
				if n > 0 {
					out = append(out, ',')
				}
				n++
				out = append(out, key...)
				out = append(out, ':')
				out = append(out, v...)
			})
			out = append(out, '}')
		})
		out = append(out, value[elemLast:]...)
	})
	return append(out, data[last:]...)
}
