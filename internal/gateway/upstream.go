package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/httperr"
)

// upstream is one kind of VictoriaMetrics endpoint (-read.url or -write.url), its backends and the balancer that
// sends each request to one of them (the forward step, forward.go, streams the answer back).
type upstream struct {
	kind string
	set  *backendSet
	// name is the backends without credentials, safe for logs.
	name string
	rt   http.RoundTripper
	// backendArgs is the most query args a backend URL adds to every request's (see cleanQuery).
	backendArgs int
	// refused counts the requests the upstream failed for the status page; nil counts nothing.
	refused *refusals
}

func newUpstream(kind string, set *backendSet, rt http.RoundTripper, retryCodes []int) *upstream {
	bs := set.backends()
	names := make([]string, len(bs))
	backendArgs := 0
	for i, b := range bs {
		names[i] = b.name
		// Discovered backends keep the query of the URL they came from, one of these.
		if q := b.target.RawQuery; q != "" {
			backendArgs = max(backendArgs, strings.Count(q, "&")+1)
		}
	}
	return &upstream{kind: kind, set: set, name: strings.Join(names, ","), rt: newBalancer(set, rt, retryCodes), backendArgs: backendArgs}
}

// modifyResponse wraps plain-text errors in JSON (upstreamerr.go), reads the stats at the end of query answers (stats.go), and keeps redirects (vmui's /vmui →
// /vmui/) inside the client's view: a same-host Location is made relative to the request's directory, so it
// resolves against the client's path, prefix and tenant shape included.
// st is where the forward step keeps the reader of a query answer's stats.
func (u *upstream) modifyResponse(resp *http.Response, st *statsTail) error {
	wrapPlainError(resp)
	// Answers that tell restricted tokens more than their series are filtered first (tsdbstatus.go).
	if err := filterAnswer(resp); err != nil {
		return err
	}
	if u.kind == "read" {
		if err := bufferSmallAnswer(resp); err != nil {
			return err
		}
		watchStats(resp, st)
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

// fail answers a request the upstream did not answer. The client learns which kind of upstream failed and how,
// and the request id under which the gateway's log names the backend and its error; never the backend's address.
func (u *upstream) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := accesslog.From(w)
	id := e.RequestID()
	if stalled := stalledBody(r); stalled != nil {
		// Not the upstream's fault: the client stopped sending; it is still there to read the answer.
		httperr.Write(w, stalled)
		return
	}
	if he := (*httperr.Error)(nil); errors.As(err, &he) {
		// An answer the gateway had to filter and could not (filterAnswer): none of it reaches the client.
		slog.Warn("upstream answer withheld", "upstream", u.name, "request_id", id, "err", err)
		u.failWith(w, "unfilterable_answer", err)
		return
	}
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; nobody reads an answer. The cancellation already reached the upstream.
		countUnanswered(r, false)
		upstreamErrors(u.kind, "client_canceled").Inc()
		e.SetReason("the client went away before the upstream answered", "")
		w.WriteHeader(499)
		return
	}
	if ac := (*answerCut)(nil); errors.As(err, &ac) {
		// The upstream answered, then broke off before the end: the client gets no part of it.
		countUnanswered(r, true)
		slog.Warn("the upstream broke off an answer", "upstream", u.failed(err), "request_id", id, "err", err)
		u.failWith(w, "aborted_response", httperr.New(http.StatusBadGateway, logRef(fmt.Sprintf("the %s upstream broke off its answer before the end", u.kind), id)))
		return
	}
	countUnanswered(r, false)
	who, detail := u.describe(err)
	if who != "" {
		who = " " + who
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		slog.Warn("upstream timeout", "upstream", u.failed(err), "request_id", id, "err", err)
		u.failWith(w, "timeout", httperr.New(http.StatusGatewayTimeout, logRef(fmt.Sprintf("the %s upstream%s did not answer in time: %s", u.kind, who, detail), id)))
		return
	}
	if hint := u.tlsHint(err); hint != "" {
		slog.Warn("upstream TLS handshake failed", "upstream", u.failed(err), "request_id", id, "err", err)
		u.failWith(w, "tls", httperr.New(http.StatusBadGateway, logRef(fmt.Sprintf("TLS handshake with the %s upstream%s failed; %s", u.kind, who, hint), id)))
		return
	}
	slog.Warn("upstream error", "upstream", u.failed(err), "request_id", id, "err", err)
	u.failWith(w, "unreachable", httperr.New(http.StatusBadGateway, logRef(fmt.Sprintf("cannot reach the %s upstream%s: %s", u.kind, who, detail), id)))
}

// failWith answers err for a failure of the upstream, counted in vmgateway_upstream_errors_total and on the status
// page under the same failure kind.
func (u *upstream) failWith(w http.ResponseWriter, failure string, err error) {
	upstreamErrors(u.kind, failure).Inc()
	if u.refused != nil {
		u.refused.addUpstream(httperr.Status(err), u.kind, failure, err.Error(), time.Now())
	}
	httperr.Write(w, err)
}

// logRef points the client at the gateway's log, where the failed backend and its error are.
func logRef(msg, id string) string {
	if id == "" {
		return msg + "; the gateway's log has the details"
	}
	return msg + "; the gateway's log has the details under request id " + id
}

// describe says how the upstream failed, for the client: how many backends were tried when there are several, and
// the kind of failure, never an address or the error itself (it names hosts; the log has it).
func (u *upstream) describe(err error) (who, detail string) {
	var te *triedError
	if !errors.As(err, &te) {
		reason, _, _ := failReason(context.Background(), err)
		return "", "it " + reasonText[reason]
	}
	reason, _, _ := failReason(context.Background(), te.err)
	who = fmt.Sprintf("(%d of %d %s backends tried", te.tried, te.total, u.kind)
	if te.bodySent {
		who += "; part of the body had been sent, so it went to no other: resend it"
	}
	return who + ")", "the last one " + reasonText[reason]
}

// reasonText says what failReason's reasons mean, for clients.
var reasonText = map[string]string{
	"dial":            "refused the connection or could not be reached",
	"connect_timeout": "did not accept the connection in time",
	"timeout":         "did not answer in time",
	"connection":      "broke the connection",
	"client_canceled": "was left: the client went away",
}

// failed is what the log says failed: the backends tried.
func (u *upstream) failed(err error) string {
	var te *triedError
	if errors.As(err, &te) {
		return strings.Join(te.names, ",")
	}
	return u.name
}

// bufPool recycles the 32 KiB copy buffers of answers: without it every forwarded answer allocates one, and the
// garbage collector becomes the gateway's largest cost under load.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
