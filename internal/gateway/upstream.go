package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// upstream is one kind of VictoriaMetrics endpoint (-read.url or -write.url), its backends and the proxy that
// streams to them.
type upstream struct {
	kind string
	set  *backendSet
	// name is the backends without credentials, safe for logs.
	name  string
	proxy *httputil.ReverseProxy
}

func newUpstream(kind string, set *backendSet, rt http.RoundTripper, retryCodes []int) *upstream {
	bs := set.backends()
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.name
	}
	u := &upstream{kind: kind, set: set, name: strings.Join(names, ",")}
	u.proxy = &httputil.ReverseProxy{
		Rewrite:   u.rewrite,
		Transport: newBalancer(set, rt, retryCodes),
		// Streamed answers (exports, federate: no Content-Length) are flushed chunk by chunk by ReverseProxy itself;
		// fixed-length ones go out through the server's buffer, without a timer per response.
		FlushInterval:  0,
		BufferPool:     proxyBuffers{},
		ErrorHandler:   u.fail,
		ModifyResponse: u.modifyResponse,
		ErrorLog:       slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
	return u
}

// rewrite leaves the target to the balancer, which picks it per attempt.
func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.User = nil
	// X-Forwarded-For is built from the connection's address; whatever the client claimed is dropped by Rewrite.
	pr.SetXForwarded()
}

// modifyResponse reads the stats at the end of query answers (stats.go), and keeps redirects (vmui's /vmui →
// /vmui/) inside the client's view: a same-host Location is made relative to the request's directory, so it
// resolves against the client's path, prefix and tenant shape included.
func (u *upstream) modifyResponse(resp *http.Response) error {
	// Answers that tell restricted tokens more than their series are filtered first (tsdbstatus.go).
	if err := filterAnswer(resp); err != nil {
		return err
	}
	if u.kind == "read" {
		if err := bufferSmallAnswer(resp); err != nil {
			return err
		}
		watchStats(resp)
	}
	loc := resp.Header.Get("Location")
	if loc == "" || resp.Request == nil {
		return nil
	}
	lu, err := url.Parse(loc)
	if err != nil {
		resp.Header.Del("Location")
		return nil
	}
	if lu.Host != "" && lu.Host != resp.Request.URL.Host {
		return nil
	}
	if !strings.HasPrefix(lu.Path, "/") {
		return nil
	}
	reqDir := path.Dir(resp.Request.URL.Path)
	if !strings.HasSuffix(reqDir, "/") {
		reqDir += "/"
	}
	rel, ok := strings.CutPrefix(lu.Path, reqDir)
	if !ok {
		return nil
	}
	if rel == "" {
		rel = "./"
	}
	out := &url.URL{Path: rel, RawQuery: lu.RawQuery, Fragment: lu.Fragment}
	// A first segment with a colon (vmui never has one, tenants do) would read as a URL scheme.
	s := out.String()
	if i := strings.IndexAny(s, ":/"); i >= 0 && s[i] == ':' {
		s = "./" + s
	}
	resp.Header.Set("Location", s)
	return nil
}

func (u *upstream) fail(w http.ResponseWriter, r *http.Request, err error) {
	if stalled := stalledBody(r); stalled != nil {
		// Not the upstream's fault: the client stopped sending; it is still there to read the answer.
		httperr.Write(w, stalled)
		return
	}
	if he := (*httperr.Error)(nil); errors.As(err, &he) {
		// An answer the gateway had to filter and could not (filterAnswer): none of it reaches the client.
		upstreamErrors(u.kind, "unfilterable_answer").Inc()
		slog.Warn("upstream answer withheld", "upstream", u.name, "err", err)
		httperr.Write(w, err)
		return
	}
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; nobody reads an answer. The cancellation already reached the upstream.
		upstreamErrors(u.kind, "client_canceled").Inc()
		w.WriteHeader(499)
		return
	}
	who, detail := u.describe(err)
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		upstreamErrors(u.kind, "timeout").Inc()
		slog.Warn("upstream timeout", "upstream", u.failed(err), "err", err)
		httperr.Write(w, httperr.New(http.StatusGatewayTimeout, fmt.Sprintf("the %s upstream %s did not answer in time: %s", u.kind, who, detail)))
		return
	}
	if tlsErr := u.tlsFailure(err, who, detail); tlsErr != nil {
		upstreamErrors(u.kind, "tls").Inc()
		slog.Warn("upstream TLS handshake failed", "upstream", u.failed(err), "err", err)
		httperr.Write(w, tlsErr)
		return
	}
	upstreamErrors(u.kind, "unreachable").Inc()
	slog.Warn("upstream error", "upstream", u.failed(err), "err", err)
	httperr.Write(w, httperr.New(http.StatusBadGateway, fmt.Sprintf("cannot reach the %s upstream %s: %s", u.kind, who, detail)))
}

// describe names the failed upstream and its error for the client. One backend is named as it always was; of
// several, the client learns how many were tried and why the last failed, not their addresses (the log has them).
func (u *upstream) describe(err error) (who, detail string) {
	var te *triedError
	if errors.As(err, &te) {
		reason, _, _ := failReason(context.Background(), te.err)
		if te.bodySent {
			return fmt.Sprintf("(%d of %d %s backends tried; part of the body had been sent, so it went to no other: resend it)", te.tried, te.total, u.kind),
				reasonText[reason]
		}
		return fmt.Sprintf("(%d of %d %s backends tried; the gateway's log names them)", te.tried, te.total, u.kind),
			reasonText[reason]
	}
	b := u.set.backends()[0]
	return b.name, redactErr(err, b.target)
}

// reasonText says what failReason's reasons mean, for clients, who do not get the error itself (it names hosts).
var reasonText = map[string]string{
	"dial":            "the last one refused the connection or could not be reached",
	"connect_timeout": "the last one did not accept the connection in time",
	"timeout":         "the last one did not answer in time",
	"connection":      "the connection to the last one broke",
	"client_canceled": "the client went away",
}

// failed is what the log says failed: the backends tried.
func (u *upstream) failed(err error) string {
	var te *triedError
	if errors.As(err, &te) {
		return strings.Join(te.names, ",")
	}
	return u.name
}

// Redact returns u without its password, for errors and logs.
func Redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}

func redactErr(err error, target *url.URL) string {
	s := err.Error()
	if target.User != nil {
		if pw, ok := target.User.Password(); ok && pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
		}
	}
	return s
}

// proxyBuffers recycles the 32 KiB copy buffers: without it every proxied response allocates one, and the garbage
// collector becomes the gateway's largest cost under load.
type proxyBuffers struct{}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (proxyBuffers) Get() []byte  { return *bufPool.Get().(*[]byte) }
func (proxyBuffers) Put(b []byte) { bufPool.Put(&b) }
