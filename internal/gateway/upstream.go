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

// upstream is one VictoriaMetrics endpoint (-read.url or -write.url) and the proxy that streams to it.
type upstream struct {
	kind   string
	target *url.URL
	// name is the target without credentials, safe for errors, logs and metrics.
	name  string
	proxy *httputil.ReverseProxy
}

func newUpstream(kind string, target *url.URL, rt http.RoundTripper) *upstream {
	u := &upstream{kind: kind, target: target, name: Redact(target)}
	u.proxy = &httputil.ReverseProxy{
		Rewrite:   u.rewrite,
		Transport: rt,
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

func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(u.target)
	pr.Out.URL.User = nil
	if u.target.User != nil {
		pw, _ := u.target.User.Password()
		pr.Out.SetBasicAuth(u.target.User.Username(), pw)
	}
	// X-Forwarded-For is built from the connection's address; whatever the client claimed is dropped by Rewrite.
	pr.SetXForwarded()
}

// modifyResponse reads the stats at the end of query answers (stats.go), and keeps redirects (vmui's /vmui →
// /vmui/) inside the client's view: a same-host Location is made relative to the request's directory, so it
// resolves against the client's path, prefix and tenant shape included.
func (u *upstream) modifyResponse(resp *http.Response) error {
	if u.kind == "read" {
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
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; nobody reads an answer. The cancellation already reached the upstream.
		upstreamErrors(u.kind, "client_canceled").Inc()
		w.WriteHeader(499)
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		upstreamErrors(u.kind, "timeout").Inc()
		slog.Warn("upstream timeout", "upstream", u.name, "err", err)
		httperr.Write(w, httperr.New(http.StatusGatewayTimeout, fmt.Sprintf("the %s upstream %s did not answer in time: %s", u.kind, u.name, redactErr(err, u.target))))
		return
	}
	if tlsErr := u.tlsFailure(err); tlsErr != nil {
		upstreamErrors(u.kind, "tls").Inc()
		slog.Warn("upstream TLS handshake failed", "upstream", u.name, "err", err)
		httperr.Write(w, tlsErr)
		return
	}
	upstreamErrors(u.kind, "unreachable").Inc()
	slog.Warn("upstream error", "upstream", u.name, "err", err)
	httperr.Write(w, httperr.New(http.StatusBadGateway, fmt.Sprintf("cannot reach the %s upstream %s: %s", u.kind, u.name, redactErr(err, u.target))))
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
