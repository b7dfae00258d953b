package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// Some answers tell more than the token's series. VictoriaMetrics v1.150+ adds requestsCount and
// lastRequestTimestamp to the metric-name entries of /api/v1/status/tsdb, counted over the whole tenant: a team
// whose selection shares a metric name with another team would watch the other team's queries. For a restricted
// token the gateway filters such answers before the client sees a byte of them.

// maxFilteredAnswer bounds the answer a filter reads, decoded. status/tsdb answers are a few KiB at the default
// topN=10 and about 1 MiB at topN=1000; a larger one is refused (502) rather than passed on unfiltered.
const maxFilteredAnswer = 8 << 20

// answerFilter rewrites a whole answer body, or says why it cannot.
type answerFilter func(body []byte) ([]byte, error)

// answerFilters are the APIs whose answers restricted tokens get filtered, by route API name.
var answerFilters = map[string]answerFilter{
	"status_tsdb": keepSeriesCounts,
}

type answerFilterKey struct{}

// markedFilter is what withAnswerFilter leaves in a request's context.
type markedFilter struct {
	api    string
	filter answerFilter
}

// withAnswerFilter marks r when the answer to it must be filtered for a: restricted tokens of the APIs in
// answerFilters. The upstream is asked for an uncompressed answer so that the filter reads it as it is.
func withAnswerFilter(r *http.Request, a *auth.Access, rt route.Route) *http.Request {
	f, ok := answerFilters[rt.API]
	if !ok || !a.Enforcer.Restricted() {
		return r
	}
	r.Header.Set("Accept-Encoding", "identity")
	return r.WithContext(context.WithValue(r.Context(), answerFilterKey{}, markedFilter{rt.API, f}))
}

// filterAnswer applies the request's answer filter, if it has one, to a successful answer. The answer is read
// whole, at most maxFilteredAnswer bytes decoded; a gzip answer (a proxy between may not honour identity) is
// decoded. An answer the filter cannot handle never reaches the client: the error is a 502 for upstream.fail.
func filterAnswer(resp *http.Response) error {
	if resp.Request == nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	m, ok := resp.Request.Context().Value(answerFilterKey{}).(markedFilter)
	if !ok {
		return nil
	}
	if resp.Request.Method == http.MethodHead {
		// No body to filter, but the length of the unfiltered one would tell how many digits the counts have.
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		return nil
	}
	body, err := readAnswer(resp)
	if err == nil {
		body, err = m.filter(body)
	}
	if err != nil {
		return httperr.New(http.StatusBadGateway, fmt.Sprintf("the upstream's %s answer cannot be filtered for this token, "+
			"so it is withheld: %s", m.api, err))
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.Header.Del("Content-Encoding")
	resp.TransferEncoding = nil
	return nil
}

// readAnswer reads resp's body, decoded, and closes it. Both the bytes on the wire and the decoded bytes are
// bounded by maxFilteredAnswer.
func readAnswer(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	wire := &io.LimitedReader{R: resp.Body, N: maxFilteredAnswer + 1}
	var r io.Reader = wire
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(wire)
		if err != nil {
			return nil, fmt.Errorf("cannot decode its gzip encoding: %w", err)
		}
		r = zr
	default:
		return nil, fmt.Errorf("it is %q-encoded although vmgateway asked for identity; vmgateway decodes gzip only", enc)
	}
	decoded := &io.LimitedReader{R: r, N: maxFilteredAnswer + 1}
	b, err := io.ReadAll(decoded)
	if wire.N <= 0 || decoded.N <= 0 {
		return nil, fmt.Errorf("it is larger than the %d bytes vmgateway reads to filter it; ask for fewer entries (a smaller topN)", maxFilteredAnswer)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read it: %w", err)
	}
	return b, nil
}

// keepSeriesCounts keeps only name and value in every object entry of every array in the answer's data: series
// counts of the token's own selection. Whatever else an entry carries (requestsCount, lastRequestTimestamp, and
// whatever a later version adds) is dropped. Every other field and the order of fields stay as they were; an
// answer without data (an error) passes unchanged.
func keepSeriesCounts(body []byte) ([]byte, error) {
	top, err := objectFields(body)
	if err != nil {
		return nil, fmt.Errorf("it is not the JSON object VictoriaMetrics sends: %w", err)
	}
	for i, f := range top {
		if f.key != "data" || isNull(f.value) {
			continue
		}
		data, err := objectFields(f.value)
		if err != nil {
			return nil, fmt.Errorf("its data is not the JSON object VictoriaMetrics sends: %w", err)
		}
		for j, d := range data {
			if !isArray(d.value) {
				continue
			}
			v, err := keepNameValue(d.value)
			if err != nil {
				return nil, fmt.Errorf("data.%s: %w", d.key, err)
			}
			data[j].value = v
		}
		top[i].value = appendObject(nil, data)
	}
	return appendObject(make([]byte, 0, len(body)), top), nil
}

// entry is what keepNameValue keeps of an object entry.
type entry struct {
	Name  json.RawMessage `json:"name,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

func keepNameValue(array json.RawMessage) (json.RawMessage, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(array, &items); err != nil {
		return nil, err
	}
	for i, it := range items {
		if !isObject(it) {
			continue
		}
		var e entry
		if err := json.Unmarshal(it, &e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		items[i] = b
	}
	return json.Marshal(items)
}

// field is one member of a JSON object, its value as it was written.
type field struct {
	key   string
	value json.RawMessage
}

// objectFields splits a JSON object into its members, in order and duplicates included.
func objectFields(b []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil {
		return nil, err
	} else if t != json.Delim('{') {
		return nil, fmt.Errorf("got %v", t)
	}
	var fs []field
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("got %v for a member name", t)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		fs = append(fs, field{k, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("unexpected data after the object")
	}
	return fs, nil
}

func appendObject(b []byte, fs []field) []byte {
	b = append(b, '{')
	for i, f := range fs {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(f.key)
		b = append(b, k...)
		b = append(b, ':')
		b = append(b, f.value...)
	}
	return append(b, '}')
}

func isNull(v json.RawMessage) bool   { return string(bytes.TrimSpace(v)) == "null" }
func isArray(v json.RawMessage) bool  { return firstByte(v) == '[' }
func isObject(v json.RawMessage) bool { return firstByte(v) == '{' }

func firstByte(v json.RawMessage) byte {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return 0
	}
	return v[0]
}
