package labelguard

import "bytes"

// prometheusLabels counts the labels VictoriaMetrics stores for a line of the Prometheus text format: the name and
// each label with a name and a value (it skips a label with an empty value). It follows lib/protoparser/prometheus:
// a line it would refuse is not ok here either, and comments and empty lines are ok with no labels. The value and
// timestamp are left to the backend, which skips a line they do not parse.
func prometheusLabels(s []byte) (int, bool) {
	s = bytes.TrimSuffix(s, []byte{'\r'})
	s = trimLeadingSpace(s)
	if len(s) == 0 || s[0] == '#' {
		return 0, true
	}
	n := bytes.IndexByte(s, '{')
	if n < 0 {
		// No labels: the name ends at whitespace, before the value.
		if nextSpace(s) <= 0 {
			return 0, false
		}
		return 1, true
	}
	if len(trimTrailingSpace(s[:n])) == 0 {
		return 0, false
	}
	labels := 1
	s = s[n+1:]
	for {
		s = trimLeadingSpace(s)
		if len(s) > 0 && s[0] == '}' {
			return labels, true
		}
		n := bytes.IndexByte(s, '=')
		if n < 0 {
			return 0, false
		}
		key := trimTrailingSpace(s[:n])
		s = trimLeadingSpace(s[n+1:])
		q := closingQuote(s)
		if q < 0 {
			return 0, false
		}
		if len(key) > 0 && q > 1 {
			labels++
		}
		s = trimLeadingSpace(s[q+1:])
		if len(s) > 0 && s[0] == '}' {
			return labels, true
		}
		if len(s) == 0 || s[0] != ',' {
			return 0, false
		}
		s = s[1:]
	}
}

// closingQuote is the index of the quote that ends the quoted value s starts with, past backslash escapes; -1
// when s does not start with a quote or the value does not end.
func closingQuote(s []byte) int {
	if len(s) == 0 || s[0] != '"' {
		return -1
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// Prometheus' text format takes space and tab as whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func trimLeadingSpace(s []byte) []byte {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

func trimTrailingSpace(s []byte) []byte {
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func nextSpace(s []byte) int {
	for i, c := range s {
		if isSpace(c) {
			return i
		}
	}
	return -1
}
