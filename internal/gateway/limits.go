package gateway

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// Limits bound what one client may ask of the gateway. Zero means no limit. Write bodies are never limited:
// they stream through to the upstream.
type Limits struct {
	// MaxConcurrentRequests is -maxConcurrentRequests: requests in flight at once, all tenants together.
	MaxConcurrentRequests int
	// MaxConcurrentPerTenantRequests is -maxConcurrentPerTenantRequests: requests in flight at once per tenant.
	MaxConcurrentPerTenantRequests int
	// MaxQueueDuration is -maxQueueDuration: how long a request waits for a free slot before 429.
	MaxQueueDuration time.Duration
	// MaxQueryLen is -search.maxQueryLen: the longest query / match[] arg, in the URL or a form body (400).
	MaxQueryLen int
	// MaxReadBodySize is -maxReadBodySize: the largest body of a read or admin request (413). The enforcer reads
	// form bodies up to enforce.MaxFormBodySize, which the same flag sets.
	MaxReadBodySize int64
}

// selectorArgs are the args whose length -search.maxQueryLen bounds, as VictoriaMetrics bounds `query`.
var selectorArgs = []string{"query", "match[]", "match"}

// limitRequest checks a read or admin request against -search.maxQueryLen and -maxReadBodySize before anything
// parses or forwards it. A body is read here (at most -maxReadBodySize) and put back for the next steps when its
// length is unknown, so a body too large is refused before a byte of it is forwarded, or when it is a form longer
// than the query limit, to find its args. Short bodies of known length pass untouched.
func (g *Gateway) limitRequest(r *http.Request, rt route.Route) error {
	if rt.Kind == route.Write {
		return nil
	}
	maxBody := g.limits.MaxReadBodySize
	if maxBody > 0 && r.ContentLength > maxBody {
		return bodyTooLarge(r.ContentLength, maxBody)
	}
	maxQuery := g.limits.MaxQueryLen
	selectors := maxQuery > 0 && (rt.Args == route.QueryArg || rt.Args == route.MatchArgs)
	if selectors && len(r.URL.RawQuery) > maxQuery {
		// Percent-decoding only shortens: a raw query within the limit holds no arg beyond it.
		q, _ := url.ParseQuery(r.URL.RawQuery)
		if err := checkQueryLen(q, "URL", maxQuery); err != nil {
			return err
		}
	}
	if !hasBody(r) {
		return nil
	}
	form := selectors && isPlainForm(r)
	if r.ContentLength >= 0 && !(form && r.ContentLength > int64(maxQuery)) {
		return nil
	}
	b, err := readBody(r.Body, maxBody)
	if err != nil {
		return err
	}
	putBody(r, b)
	if form && len(b) > maxQuery {
		vs, _ := url.ParseQuery(string(b))
		return checkQueryLen(vs, "request body", maxQuery)
	}
	return nil
}

func checkQueryLen(vs url.Values, where string, limit int) error {
	for _, k := range selectorArgs {
		for _, v := range vs[k] {
			if len(v) > limit {
				return httperr.New(http.StatusBadRequest, fmt.Sprintf("the %s arg in the %s is %d bytes long; at most %d are accepted "+
					"(-search.maxQueryLen): shorten the query, e.g. with a recording rule", k, where, len(v), limit))
			}
		}
	}
	return nil
}

func bodyTooLarge(n, limit int64) error {
	size := "more than " + strconv.FormatInt(limit, 10)
	if n > 0 {
		size = strconv.FormatInt(n, 10)
	}
	return httperr.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is %s bytes; read requests may carry "+
		"at most %d (-maxReadBodySize): send fewer or shorter args", size, limit))
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// isPlainForm reports whether the body is an uncompressed form, the only read body whose args the gateway reads.
func isPlainForm(r *http.Request) bool {
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return false
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/x-www-form-urlencoded"
}

func readBody(body io.Reader, limit int64) ([]byte, error) {
	if limit > 0 {
		body = io.LimitReader(body, limit+1)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, httperr.New(http.StatusBadRequest, "cannot read the request body: "+err.Error())
	}
	if limit > 0 && int64(len(b)) > limit {
		return nil, bodyTooLarge(-1, limit)
	}
	return b, nil
}

// putBody replaces a body that was read with the same bytes, now of known length.
func putBody(r *http.Request, b []byte) {
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.TransferEncoding = nil
	if r.Header.Get("Content-Length") != "" {
		r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	}
	if len(b) == 0 {
		r.Body = http.NoBody
	}
}
