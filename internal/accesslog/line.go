package accesslog

import (
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// appendLine appends e's JSON line. Written by hand: encoding/json would allocate for every field on a path
// every request takes. Every field is always present, so a line's shape never depends on its outcome.
func appendLine(b []byte, e *Entry, status int, queries bool) []byte {
	b = append(b, `{"ts":"`...)
	b = appendTime(b, e.start)
	b = appendField(b, "request_id", e.ids[0])
	b = appendField(b, "remote_addr", e.remoteAddr)
	b = appendField(b, "method", e.method)
	b = appendField(b, "path", e.path)
	b = appendField(b, "api", e.api)
	b = append(b, `,"tenant":"`...)
	if e.hasTenant {
		b = strconv.AppendUint(b, uint64(e.tenant.AccountID), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(e.tenant.ProjectID), 10)
	}
	b = append(b, '"')
	b = appendField(b, "subject", e.subject)
	b = appendField(b, "mode", e.mode)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(time.Since(e.start))/float64(time.Millisecond), 'f', 3, 64)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.body.n.Load(), 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.bytesOut, 10)
	b = appendField(b, "upstream", e.upstream)
	b = appendField(b, "reason", e.reason)
	if queries {
		b = appendField(b, "query", e.query)
	}
	return append(b, "}\n"...)
}

// secondStamp is the formatted second of the last line: lines come many per second, and time.AppendFormat is a
// fifth of a line's cost.
type secondStamp struct {
	unix int64
	text string
}

var lastSecond atomic.Pointer[secondStamp]

// appendTime appends t as RFC 3339 UTC with milliseconds, "2006-01-02T15:04:05.000Z", and the closing quote.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec := t.Unix()
	st := lastSecond.Load()
	if st == nil || st.unix != sec {
		st = &secondStamp{unix: sec, text: t.Format("2006-01-02T15:04:05")}
		lastSecond.Store(st)
	}
	b = append(b, st.text...)
	ms := t.Nanosecond() / int(time.Millisecond)
	return append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z', '"')
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// plain marks the bytes a JSON string holds as they are: ASCII but control characters, DEL, '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string. <, > and & stay as they are (the line is no HTML); invalid UTF-8
// becomes U+FFFD, as encoding/json does, so every line parses. Beyond what JSON requires, DEL, the C1 controls
// (U+0080-U+009F: NEL, CSI) and U+2028/U+2029 are escaped too: a client's path or query holding them would otherwise
// break the line for tools that split on Unicode line ends (Python's splitlines) or steer a terminal that reads C1.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plain[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
			case r <= 0x9f || r == '\u2028' || r == '\u2029':
				b = append(b, s[start:i]...)
				b = append(b, '\\', 'u', hex[r>>12], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			default:
				i += size
				continue
			}
			i += size
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
