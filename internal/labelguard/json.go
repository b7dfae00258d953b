package labelguard

import (
	"bytes"

	"github.com/valyala/fastjson"
)

// jsonCounter counts the labels of /api/v1/import's JSON lines with the parser VictoriaMetrics reads them with,
// so that both see the same object: the first "metric" key, every key of it, duplicates included.
type jsonCounter struct {
	p fastjson.Parser
}

// labels counts the keys of the line's metric object that have a value (VictoriaMetrics skips an empty one, and
// refuses a value that is not a string).
func (c *jsonCounter) labels(line []byte) (int, bool) {
	if len(bytes.TrimSpace(line)) == 0 {
		return 0, true
	}
	v, err := c.p.ParseBytes(line)
	if err != nil {
		return 0, false
	}
	m := v.Get("metric")
	if m == nil {
		return 0, false
	}
	o, err := m.Object()
	if err != nil {
		return 0, false
	}
	n, ok := 0, true
	o.Visit(func(_ []byte, v *fastjson.Value) {
		s, err := v.StringBytes()
		switch {
		case err != nil:
			ok = false
		case len(s) > 0:
			n++
		}
	})
	return n, ok
}
