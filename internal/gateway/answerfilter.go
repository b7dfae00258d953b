package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Some answers tell more than the token may know: other teams' activity (status_tsdb), other tenants' IDs
// (admin_tenants), other tenants' query counts (status_active_queries). The gateway filters them before the client
// sees a byte of them; each filter is in the file of its API.

// maxFilteredAnswer bounds the answer a filter reads, decoded. status/tsdb answers are a few KiB at the default
// topN=10 and some hundreds of KiB at topN=1000; a larger one is refused (502) rather than passed on unfiltered.
const maxFilteredAnswer = 8 << 20

// answerFilter rewrites a whole answer body, or says why it cannot.
type answerFilter func(body []byte) ([]byte, error)

type answerFilterKey struct{}

// markedFilter is what withAnswerFilter leaves in a request's context.
type markedFilter struct {
	api    string
	filter answerFilter
}

// withAnswerFilter marks r when the answer to it must be filtered for a, whose tenant is t: status_tsdb for
// restricted tokens, admin_tenants and status_active_queries for every token (authOn: a is a token's, not the open
// gateway's). The upstream is asked for an uncompressed answer so that the filter reads it as it is.
func withAnswerFilter(r *http.Request, a *auth.Access, rt route.Route, t tenant.ID, authOn bool) *http.Request {
	var f answerFilter
	switch {
	case rt.API == "status_tsdb" && a.Enforcer.Restricted():
		f = keepSeriesCounts
	case rt.API == "admin_tenants" && authOn:
		f = keepTenant(t)
	case rt.API == "status_active_queries" && authOn:
		f = dropQueryIDs
	default:
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

// rewriteData validates the answer body, an object, and returns it with the value of its data member (if it has one)
// replaced by what f appends to out in its place; everything else stays byte for byte. The answer is validated
// first, then rewritten in one pass over it.
func rewriteData(body []byte, f func(out, data []byte) ([]byte, error)) ([]byte, error) {
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
		out = append(out, body[last:at]...)
		last = at + len(value)
		out, err = f(out, value)
	})
	if err != nil {
		return nil, err
	}
	return append(out, body[last:]...), nil
}

// The scanners below walk JSON that json.Valid has accepted; they never fail on it.

// eachMember calls f with the key (quotes included), the value and the value's offset of each member of the
// object that starts at b[i].
func eachMember(b []byte, i int, f func(key, value []byte, at int)) {
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		ke := skipValue(b, i)
		vs := skipSpace(b, skipSpace(b, ke)+1)
		ve := skipValue(b, vs)
		f(b[i:ke], b[vs:ve], vs)
		if i = skipSpace(b, ve); b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
}

// eachElement calls f with each element of the array b and its offset.
func eachElement(b []byte, f func(elem []byte, at int)) {
	i := skipSpace(b, 1)
	for b[i] != ']' {
		e := skipValue(b, i)
		f(b[i:e], i)
		if i = skipSpace(b, e); b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
}

// skipValue returns the offset just after the value that starts at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) && !isDelimiter(b[i]) {
		i++
	}
	return i
}

// skipString returns the offset just after the string whose opening quote is at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func isDelimiter(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// keyIs reports whether the JSON string key (quotes included) is name, escapes decoded as clients decode them.
func keyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1:len(key)-1]) == name
	}
	var s string
	return json.Unmarshal(key, &s) == nil && s == name
}
