package labelguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/golang/snappy"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// remoteWrite reads a Prometheus remote-write body whole, a snappy block holding a protobuf WriteRequest, and
// returns it without the series that have too many labels: the client's bytes when none is dropped, else the
// request encoded again. The protobuf is walked by hand: a TimeSeries only needs its labels counted and the
// others copied as they came, which no protobuf library does without decoding and encoding them all.
func (c Check) remoteWrite(h http.Header, body io.Reader) (io.Reader, int64, error) {
	switch ce := h.Values("Content-Encoding"); {
	case len(ce) == 0:
	case len(ce) == 1 && strings.EqualFold(strings.TrimSpace(ce[0]), "snappy"):
	default:
		return nil, 0, unsupportedEncoding(ce, "snappy")
	}
	compressed, err := io.ReadAll(io.LimitReader(body, MaxRemoteWrite+1))
	if err != nil {
		return nil, 0, err
	}
	if len(compressed) > MaxRemoteWrite {
		return nil, 0, httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the remote-write body is over %d bytes, the most the "+
			"gateway reads whole to count its labels (the write backend truncates series over its label limit)", MaxRemoteWrite))
	}
	n, err := snappy.DecodedLen(compressed)
	if err == nil && n > MaxRemoteWrite {
		return nil, 0, httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the remote-write body decompresses to %d bytes, "+
			"over the %d the gateway reads to count its labels", n, MaxRemoteWrite))
	}
	var raw []byte
	if err == nil {
		raw, err = snappy.Decode(nil, compressed)
	}
	if err != nil {
		return nil, 0, badRemoteWrite(fmt.Errorf("snappy: %w", err))
	}
	kept, dropped, err := c.filterWriteRequest(raw)
	if err != nil {
		return nil, 0, badRemoteWrite(err)
	}
	if dropped {
		compressed = snappy.Encode(nil, kept)
	}
	return bytes.NewReader(compressed), int64(len(compressed)), nil
}

func badRemoteWrite(err error) error {
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot parse the remote-write body (a snappy-compressed protobuf "+
		"WriteRequest): %s", err))
}

// filterWriteRequest copies the WriteRequest in raw without its timeseries (field 1) that have more labels than the
// check allows; kept is raw itself when none is dropped.
func (c Check) filterWriteRequest(raw []byte) (kept []byte, dropped bool, err error) {
	room := c.Max - c.Extra
	s := raw
	for len(s) > 0 {
		field, wire, body, next, err := protoField(s)
		if err != nil {
			return nil, false, err
		}
		if field == 1 && wire == 2 {
			n, err := seriesLabels(body)
			if err != nil {
				return nil, false, fmt.Errorf("timeseries: %w", err)
			}
			if n > room {
				if !dropped {
					kept = append(make([]byte, 0, len(raw)), raw[:len(raw)-len(s)]...)
					dropped = true
				}
				if c.Drop != nil {
					c.Drop("too_many_labels", renderSeries(body))
				}
				s = next
				continue
			}
		}
		if dropped {
			kept = append(kept, s[:len(s)-len(next)]...)
		}
		s = next
	}
	if !dropped {
		return raw, false, nil
	}
	return kept, true, nil
}

// seriesLabels counts a TimeSeries' labels (field 1) with a value, as VictoriaMetrics skips one without.
func seriesLabels(ts []byte) (int, error) {
	n := 0
	for len(ts) > 0 {
		field, wire, body, next, err := protoField(ts)
		if err != nil {
			return 0, err
		}
		if field == 1 && wire == 2 {
			hasValue, err := labelHasValue(body)
			if err != nil {
				return 0, fmt.Errorf("label: %w", err)
			}
			if hasValue {
				n++
			}
		}
		ts = next
	}
	return n, nil
}

// labelHasValue says whether a Label's value (field 2; the last one, as protobuf reads repeated scalars) is not
// empty.
func labelHasValue(l []byte) (bool, error) {
	has := false
	for len(l) > 0 {
		field, wire, body, next, err := protoField(l)
		if err != nil {
			return false, err
		}
		if field == 2 && wire == 2 {
			has = len(body) > 0
		}
		l = next
	}
	return has, nil
}

// renderSeries writes a TimeSeries' labels as {name="value", ...} for the log of dropped series.
func renderSeries(ts []byte) []byte {
	b := []byte{'{'}
	for len(ts) > 0 {
		field, wire, body, next, _ := protoField(ts)
		if field == 1 && wire == 2 {
			var name, value []byte
			for l := body; len(l) > 0; {
				f, w, v, rest, _ := protoField(l)
				switch {
				case f == 1 && w == 2:
					name = v
				case f == 2 && w == 2:
					value = v
				}
				l = rest
			}
			if len(b) > 1 {
				b = append(b, ", "...)
			}
			b = append(b, name...)
			b = append(b, '=')
			b = strconv.AppendQuote(b, string(value))
		}
		ts = next
	}
	return append(b, '}')
}

var errTruncated = errors.New("truncated field")

// protoField splits the first field off s: its number, wire type, the bytes of a length-delimited one, and the rest.
func protoField(s []byte) (field uint64, wire byte, body, next []byte, err error) {
	key, n := binary.Uvarint(s)
	if n <= 0 {
		return 0, 0, nil, nil, errTruncated
	}
	s = s[n:]
	field, wire = key>>3, byte(key&7)
	if field == 0 {
		return 0, 0, nil, nil, errors.New("field number 0")
	}
	switch wire {
	case 0:
		_, n = binary.Uvarint(s)
		if n <= 0 {
			return 0, 0, nil, nil, errTruncated
		}
		return field, wire, nil, s[n:], nil
	case 1:
		if len(s) < 8 {
			return 0, 0, nil, nil, errTruncated
		}
		return field, wire, nil, s[8:], nil
	case 2:
		l, n := binary.Uvarint(s)
		if n <= 0 || l > uint64(len(s)-n) {
			return 0, 0, nil, nil, errTruncated
		}
		return field, wire, s[n : n+int(l)], s[n+int(l):], nil
	case 5:
		if len(s) < 4 {
			return 0, 0, nil, nil, errTruncated
		}
		return field, wire, nil, s[4:], nil
	}
	return 0, 0, nil, nil, fmt.Errorf("wire type %d", wire)
}
