package gateway

import (
	"bytes"
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// maxWrappedError bounds how much of a plain-text error answer is read: VictoriaMetrics' messages are a line or
// two (a quoted query at most), and an error page of a proxy in between is not worth more.
const maxWrappedError = 64 << 10

var wrappedErrors = metrics.NewCounter(`vmgateway_upstream_plain_errors_wrapped_total`)

// wrapPlainError turns an error answer that is not JSON into the Prometheus JSON error shape, status and message
// kept: VictoriaMetrics answers some errors in plain text (federate, export and write errors), and a client of the
// gateway gets every error in one shape. JSON answers pass untouched. A body the gateway cannot decode (a
// compression other than gzip) passes as it came.
func wrapPlainError(resp *http.Response) {
	if resp.StatusCode < 400 || resp.Body == nil || resp.Body == http.NoBody || resp.Request == nil || resp.Request.Method == http.MethodHead {
		return
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		return
	}
	ce := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	if ce != "" && ce != "identity" && ce != "gzip" {
		return
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxWrappedError+1))
	_ = resp.Body.Close()
	truncated := len(b) > maxWrappedError
	if ce == "gzip" {
		// VictoriaMetrics gzips its error texts too when the client accepts gzip.
		b, err = gunzipped(b, maxWrappedError+1)
		truncated = truncated || len(b) > maxWrappedError
	}
	if len(b) > maxWrappedError {
		b = b[:maxWrappedError]
	}
	msg := strings.TrimSpace(stripVMPrefix(strings.ToValidUTF8(string(b), "\uFFFD")))
	switch {
	case err != nil && msg == "":
		msg = "the upstream answered " + resp.Status + " with a body that broke off or does not decode"
	case msg == "":
		msg = "the upstream answered " + resp.Status + " without a message"
	case truncated || err != nil:
		msg += " … (cut)"
	}
	body := httperr.JSON(resp.StatusCode, msg, resp.Request.Header.Get("X-Request-Id"))
	wrappedErrors.Inc()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Uncompressed = false
	h := resp.Header
	h.Del("Content-Encoding")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
}

// answerStart reads up to limit bytes of resp's body, decoded (VictoriaMetrics before v1.80 gzips its plain-text
// errors when the client accepts gzip), and leaves resp its whole body. It says false for a body it could not read
// or decode.
func answerStart(resp *http.Response, limit int64) ([]byte, bool) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil, false
	}
	prefix, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	resp.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(prefix), resp.Body), c: resp.Body}
	if err != nil {
		return nil, false
	}
	switch strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))) {
	case "", "identity":
		return prefix, true
	case "gzip", "x-gzip":
		msg, err := gunzipped(prefix, limit)
		return msg, err == nil
	}
	return nil, false
}

// gunzipped decodes the start of a gzipped error answer, b, into at most limit bytes: what it decoded before an
// error, with the error (nothing when b is not gzip at all).
func gunzipped(b []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(zr, limit))
}

// stripVMPrefix removes what VictoriaMetrics before v1.80 puts before its error texts: the gateway's own address and
// the upstream request URI, which is the gateway's internal view of the request, not the client's.
func stripVMPrefix(s string) string {
	rest, ok := strings.CutPrefix(s, "remoteAddr: ")
	if !ok {
		return s
	}
	_, rest, ok = strings.Cut(rest, "; requestURI: ")
	if !ok {
		return s
	}
	// A request URI has no spaces, so the first "; " ends it.
	if _, msg, ok := strings.Cut(rest, "; "); ok {
		return msg
	}
	return s
}
