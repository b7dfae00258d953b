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
func (c Check) remoteWrite(h http.Header, body io.Reader, n int64) (io.ReadCloser, int64, error) {
	switch ce := h.Values("Content-Encoding"); {
	case len(ce) == 0:
	case len(ce) == 1 && strings.EqualFold(strings.TrimSpace(ce[0]), "snappy"):
	default:
		return nil, 0, unsupportedEncoding(ce, "snappy")
	}
	held := c.Budget.Hold(c.Unit)
	hd := &held
	compressed, err := readWhole(body, n, hd)
	if err != nil {
		hd.Release()
		return nil, 0, err
	}
	out, err := c.filterCompressed(compressed, hd)
	if err != nil {
		hd.Release()
		return nil, 0, err
	}
	return &heldReader{Reader: bytes.NewReader(out), hold: hd}, int64(len(out)), nil
}

// filterCompressed decodes a snappy block, drops its series over the limit and encodes it again if it dropped one.
func (c Check) filterCompressed(compressed []byte, hd *hold) ([]byte, error) {
	n, err := snappy.DecodedLen(compressed)
	if err != nil {
		return nil, badRemoteWrite(fmt.Errorf("snappy: %w", err))
	}
	if n > maxRemoteWrite {
		return nil, httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the remote-write body decompresses to %d bytes, "+
			"over the %d the gateway reads to count its labels", n, maxRemoteWrite))
	}
	if err := hd.Grow(int64(n)); err != nil {
		return nil, err
	}
	raw, err := snappy.Decode(nil, compressed)
	if err != nil {
		return nil, badRemoteWrite(fmt.Errorf("snappy: %w", err))
	}
	kept, dropped, err := c.filterWriteRequest(raw)
	if err != nil {
		return nil, badRemoteWrite(err)
	}
	if !dropped {
		return compressed, nil
	}
	// The client's bytes are not sent: their share pays for the new encoding, so that a request within the bounds
	// never needs more than one unit's share.
	hd.Shrink(int64(cap(compressed)))
	if err := hd.Grow(int64(snappy.MaxEncodedLen(len(kept)))); err != nil {
		return nil, err
	}
	return snappy.Encode(nil, kept), nil
}

// readWhole reads a body of at most maxRemoteWrite bytes, its length n when known, holding what it reads.
func readWhole(r io.Reader, n int64, hd *hold) ([]byte, error) {
	tooLarge := httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the remote-write body is over %d bytes, the most the "+
		"gateway reads whole to count its labels (the write backend truncates series over its label limit)", maxRemoteWrite))
	if n > maxRemoteWrite {
		return nil, tooLarge
	}
	size := int64(64 << 10)
	if n >= 0 {
		size = n + 1 // room to see the end
	}
	if err := hd.Grow(size); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if len(buf) > maxRemoteWrite {
				return nil, tooLarge
			}
			grown := min(2*int64(cap(buf)), maxRemoteWrite+1)
			if err := hd.Grow(grown - int64(cap(buf))); err != nil {
				return nil, err
			}
			buf = append(make([]byte, 0, grown), buf...)
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(buf) > maxRemoteWrite {
		return nil, tooLarge
	}
	return buf, nil
}

// heldReader gives back its memory once it is read to the end or closed.
type heldReader struct {
	*bytes.Reader
	hold *hold
}

func (r *heldReader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if err != nil {
		r.hold.Release()
	}
	return n, err
}

func (r *heldReader) Close() error {
	r.hold.Release()
	return nil
}

func badRemoteWrite(err error) error {
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot parse the remote-write body (a snappy-compressed protobuf "+
		"WriteRequest): %s", err))
}

// filterWriteRequest drops from the WriteRequest in raw its timeseries (field 1) that have more labels than the
// check allows, in place: kept is raw itself, shorter when a series was dropped.
func (c Check) filterWriteRequest(raw []byte) (kept []byte, dropped bool, err error) {
	room := c.Max - c.extra
	w, s := 0, raw
	for len(s) > 0 {
		field, wire, body, next, err := protoField(s)
		if err != nil {
			return nil, false, err
		}
		whole := s[:len(s)-len(next)]
		if field == 1 && wire == 2 {
			n, err := seriesLabels(body)
			if err != nil {
				return nil, false, fmt.Errorf("timeseries: %w", err)
			}
			if n > room {
				if c.Drop != nil {
					c.Drop("too_many_labels", renderSeries(body))
				}
				dropped = true
				s = next
				continue
			}
		}
		// Fields kept move to the front over those dropped; none is written before it is read.
		w += copy(raw[w:], whole)
		s = next
	}
	return raw[:w], dropped, nil
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
	// Protobuf's field numbers end at 2^29-1. VictoriaMetrics before v1.9x (gogo-protobuf) reads a larger one cut
	// to 32 bits: 2^32+1 would be field 1 there, a series this walk would pass uncounted.
	if field == 0 || field > 1<<29-1 {
		return 0, 0, nil, nil, fmt.Errorf("field number %d", field)
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
