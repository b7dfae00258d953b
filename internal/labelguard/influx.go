package labelguard

import "bytes"

// influxLabels counts the tags of an Influx line-protocol line that VictoriaMetrics keeps (it skips a tag with an
// empty key or value), after lib/protoparser/influx. The measurement and field names make the metric name, which
// VictoriaMetrics adds after the label limit is applied, so they are not counted; the database label is counted by
// the caller. A line whose tags do not parse is not ok; comments and empty lines are ok with no labels.
func influxLabels(s []byte) (int, bool) {
	s = bytes.TrimSuffix(s, []byte{'\r'})
	if len(s) == 0 || s[0] == '#' {
		return 0, true
	}
	n := nextUnescaped(s, ' ')
	if n < 0 {
		return 0, false
	}
	s = s[:n]
	n = nextUnescaped(s, ',')
	if n < 0 {
		return 0, true
	}
	s = s[n+1:]
	labels := 0
	for {
		tag := s
		n := nextUnescaped(s, ',')
		if n >= 0 {
			tag, s = s[:n], s[n+1:]
		}
		eq := nextUnescaped(tag, '=')
		if eq < 0 {
			return 0, false
		}
		if eq > 0 && eq < len(tag)-1 {
			labels++
		}
		if n < 0 {
			return labels, true
		}
	}
}

// nextUnescaped is the index of the first c in s not escaped by an odd run of backslashes, or -1.
func nextUnescaped(s []byte, c byte) int {
	off := 0
	for {
		n := bytes.IndexByte(s[off:], c)
		if n < 0 {
			return -1
		}
		n += off
		slashes := 0
		for i := n - 1; i >= 0 && s[i] == '\\'; i-- {
			slashes++
		}
		if slashes%2 == 0 {
			return n
		}
		off = n + 1
	}
}
