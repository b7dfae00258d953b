package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/proxyclient"
)

// balancer is the RoundTripper of one upstream kind: each attempt goes to a backend the set picks, with that
// backend's scheme, host, path prefix and credentials. A failed attempt is retried on another backend only when
// nothing of the answer reached the client yet (the proxy has not seen a response) and the request can be sent
// again whole: its body is replayable (GetBody: read bodies, parsed before forwarding) or not a byte of it was
// read (a refused connection). A streamed write whose body has started is never retried: the client gets an
// error and resends it, so no write is acknowledged without being stored and no body is buffered.
type balancer struct {
	set        *backendSet
	rt         http.RoundTripper
	retryCodes []int
	retries    *metrics.Counter
	// memWait is how long a read refused for the backends' full query memory waits to be sent again (memwait.go);
	// 0 for writes.
	memWait    time.Duration
	mem        memQueue
	memRetries *metrics.Counter
}

func newBalancer(set *backendSet, rt http.RoundTripper, retryCodes []int) *balancer {
	return &balancer{set: set, rt: rt, retryCodes: retryCodes,
		retries:    metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_upstream_retries_total{upstream=%q}`, set.kind)),
		memRetries: metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_upstream_memory_waits_total{upstream=%q}`, set.kind))}
}

func (p *balancer) retryStatus(code int) bool {
	return slices.Contains(p.retryCodes, code)
}

// triedError is the failure of a request after every backend it could go to failed. Its message names no
// backend: clients learn how many were tried, the log learns which.
type triedError struct {
	err          error
	last         *backend
	tried, total int
	names        []string
	// bodySent: the request was not retried because part of its streamed body had gone to the failed backend.
	bodySent bool
}

func (e *triedError) Error() string { return e.err.Error() }
func (e *triedError) Unwrap() error { return e.err }

// failReason classifies an attempt's error: the reason for metrics, whether the backend is to be marked broken,
// and whether another backend may be tried.
func failReason(ctx context.Context, err error) (reason string, broken, retry bool) {
	var oe *net.OpError
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		// Nobody waits for an answer any more.
		return "client_canceled", false, false
	case errors.As(err, &oe) && oe.Op == "dial":
		// Refused, unroutable, unresolvable or a connect timeout: the backend is not there.
		if oe.Timeout() {
			return "connect_timeout", true, true
		}
		return "dial", true, true
	case errors.As(err, &ne) && ne.Timeout():
		// -read.timeout / -write.timeout passed without response headers: the query is slow, not the backend
		// gone, and trying it elsewhere would double the client's wait for the same timeout.
		return "timeout", false, false
	}
	// A connection that broke (a reset, a backend killed mid-request) or a failed TLS handshake.
	return "connection", false, true
}

func (p *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	bs, ok := req.Context().Value(changesDataKey{}).([]*backend)
	if !ok {
		bs = p.set.backends()
	}
	replayable := req.GetBody != nil || req.Body == nil || req.Body == http.NoBody
	var (
		tried   uint64
		guard   *unreadBody
		lastErr error
		names   []string
		n       int
		// The waits for the backends' query memory, and the memory handed to this read by a wake: its send goes to
		// off.b, other reads held back meanwhile.
		tr      memTry
		off     *handOff
		sentAt  time.Time
		unaimed url.URL
	)
	// A read's memory, if it took any, is free again once its answer begins: only queries take it.
	evaluates := p.memWait > 0 && (strings.HasSuffix(req.URL.Path, "/api/v1/query") || strings.HasSuffix(req.URL.Path, "/api/v1/query_range"))
	// A read woken and then not sent (its body could not be had again) leaves the memory handed to it to the next.
	defer func() {
		if off != nil {
			p.mem.passOn(off)
		}
	}()
	i := p.set.pick(bs, 0)
	for {
		b := bs[i]
		if i < maxTried {
			tried |= 1 << uint(i)
		}
		// With one backend the forward step's request (its URL a copy) is aimed in place; a memory wait sends it
		// again, from its URL as it was before the first aim (a second aim joined the backend's path prefix and args
		// twice: an attacker's review).
		out := req
		switch {
		case len(bs) > 1:
			out = copyRequest(req)
		case n == 0:
			unaimed = *req.URL
		default:
			*req.URL = unaimed
		}
		b.aim(out)
		if len(bs) > 1 {
			accesslog.FromContext(req.Context()).AddUpstream(b.name)
		}
		switch {
		case n > 0 && req.GetBody != nil:
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out.Body = body
		case !replayable && len(bs) > 1:
			guard = &unreadBody{rc: req.Body}
			out.Body = guard
		}
		// A read that holds a slot may be kept past its timeout (hold.Keep), in flight at this backend until it answers.
		k, _ := proxyclient.KeeperFrom(out.Context())
		held, _ := k.(*hold)
		// A read with a slot is sent under the slot's context, which its client's going does not end; its waits for the
		// memory end with the client, since nothing of it runs at the backends meanwhile.
		client := req.Context()
		if held != nil && held.detached.parent != nil {
			client = held.detached.parent
		}
		if off == nil && p.mem.handing.Load() != 0 {
			if u, ok := memUnitOf(req.Context(), held); ok {
				p.mem.holdBack(client, b, u, p.memWait)
			}
		}
		n++
		b.start()
		if held != nil {
			held.at = b
		}
		if p.memWait > 0 {
			sentAt = time.Now()
		}
		resp, err := p.rt.RoundTrip(out)
		// The status first: the rest is looked at only for a 422, off the path of every other answer.
		refused := false
		if err == nil && resp.StatusCode == http.StatusUnprocessableEntity && p.memWait > 0 && replayable && !changesData(req) {
			refused = memPoolRefusal(resp)
		}
		woken := off != nil
		if freed := evaluates && err == nil && !refused; freed || woken {
			// A woken read whose send failed took none of the memory handed to it: the next waiter gets it. One refused
			// again found the memory taken (by a read the hand-off did not hold): waking the next for it would only
			// have each waiter refused in turn, and spend their sends in a second.
			if off != nil || p.mem.waiting.Load() != 0 {
				u, known := memUnitOf(req.Context(), held)
				p.mem.answeredBy(off, b, freed || err != nil, u, known, p.memWait)
			}
			off = nil
		}
		if refused {
			now := time.Now()
			p.mem.lastRefused.Store(now.UnixNano())
			if u, ok := memUnitOf(req.Context(), held); ok {
				p.mem.refusedBy(u, now, p.memWait)
			}
			if tr.since.IsZero() {
				tr.since, tr.end, tr.order, tr.poll = now, now.Add(p.memWait), now, 100*time.Millisecond
			}
			if woken {
				tr.order = now // behind those waiting: the memory went on to them
			}
			if now.Before(tr.end) && tr.sends < maxMemWaits {
				tr.sends++
				tr.took = now.Sub(sentAt)
				discardAttempt(resp, b)
				p.memRetries.Inc()
				h, ok := p.mem.wait(client, &tr)
				if !ok {
					return nil, client.Err()
				}
				i = p.set.pick(bs, 0)
				if h != nil {
					// The memory freed is at h.b: the read goes there, unless discovery took h.b away.
					if j := slices.Index(bs, h.b); j >= 0 {
						i, off = j, h
					} else {
						p.mem.passOn(h)
					}
				}
				continue
			}
		}
		if err == nil && (!p.retryStatus(resp.StatusCode) || queryTimedOut(resp)) {
			p.set.markOK(b)
			resp.Body = &doneBody{ReadCloser: resp.Body, b: b}
			return resp, nil
		}
		resendable := replayable || (guard != nil && guard.retire())
		retry := resendable
		if err != nil {
			if held == nil || !held.kept.Load() {
				b.done()
			}
			reason, broken, r := failReason(req.Context(), err)
			if reason == "connection" && replayable && changesData(req) {
				// Sent whole, perhaps acted on (a snapshot, a deletion): not sent again, here or on the same backend
				// (the upstream client's rule). A streamed body never read can still go elsewhere.
				r = false
			}
			b.errors(reason).Inc()
			if broken {
				p.set.markBroken(b, reason)
			}
			retry = retry && r
			lastErr = err
		} else {
			b.errors(fmt.Sprintf("status_%d", resp.StatusCode)).Inc()
			p.set.markBroken(b, fmt.Sprintf("answered %d", resp.StatusCode))
		}
		if len(bs) > 1 {
			names = append(names, b.name)
		}
		next := -1
		if retry && n < maxTried {
			next = p.set.pick(bs, tried)
		}
		if next < 0 {
			if err == nil {
				// The last backend's own answer is the best the client can get.
				resp.Body = &doneBody{ReadCloser: resp.Body, b: b}
				return resp, nil
			}
			if len(bs) == 1 {
				return nil, lastErr
			}
			return nil, &triedError{err: lastErr, last: b, tried: n, total: len(bs), names: names, bodySent: !resendable}
		}
		if resp != nil {
			discardAttempt(resp, b)
		}
		p.retries.Inc()
		i = next
	}
}

// queryTimedOut says whether resp is VictoriaMetrics' 503 for a query that ran out of its time: the backend is
// sound, and another would run the query as long again. The client sets that time (the timeout arg): a team that sent
// timeout=1ms had every vmselect marked broken for every team, and each of its queries run on all of them, under
// -retryStatusCodes=503 (an attacker's review). resp keeps its whole body.
func queryTimedOut(resp *http.Response) bool {
	if resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	// The deadline's message ends the answer, after the query it echoes (up to -search.maxQueryLen, 16 KiB): only
	// there, since a selector that holds the words would make an outage's 503 look like a timeout (a review).
	msg, ok := answerStart(resp, maxWrappedError)
	return ok && timeoutTail.Match(msg)
}

// timeoutTail is the end of VictoriaMetrics' message for a query out of its time: "request timeout reached: 0.001
// seconds (elapsed 0.987 seconds)" (vmselect) or "timeout exceeded during query execution: ..." and the like, with
// the hint some releases add, in plain text or ending a JSON error.
var timeoutTail = regexp.MustCompile(`(?:request timeout reached|timeout exceeded [a-z #0-9]{1,60}): [0-9.]{1,20} seconds ` +
	`\(elapsed [0-9.]{1,20} seconds\)(?:; the timeout can be adjusted with ` + "`-search.maxQueryDuration`" + ` command-line flag)?` +
	`(?:"\})?\s*$`)

// changesDataKey marks a request of an API that changes data (admin and write APIs) for the balancer, with the
// backend list it was judged on (forward).
type changesDataKey struct{}

func changesData(req *http.Request) bool { return req.Context().Value(changesDataKey{}) != nil }

// copyRequest copies what an attempt changes: the proxy's request is shared by the attempts.
func copyRequest(req *http.Request) *http.Request {
	out := new(http.Request)
	*out = *req
	u := new(url.URL)
	*u = *req.URL
	out.URL = u
	return out
}

// aim points out at b: its scheme, host, path prefix and credentials, as httputil's SetURL would.
func (b *backend) aim(out *http.Request) {
	t, u := b.target, out.URL
	u.Path, u.RawPath = joinURLPath(t, u)
	u.Scheme, u.Host, u.User = t.Scheme, t.Host, nil
	if t.RawQuery != "" {
		if u.RawQuery == "" {
			u.RawQuery = t.RawQuery
		} else {
			u.RawQuery = t.RawQuery + "&" + u.RawQuery
		}
	}
	out.Host = b.host
	// The header map is the gateway's (the server hands each request over) and attempts run one after another, so it
	// is set in place.
	if t.User != nil {
		if out.Header == nil {
			out.Header = http.Header{}
		}
		pw, _ := t.User.Password()
		out.SetBasicAuth(t.User.Username(), pw)
	} else {
		out.Header.Del("Authorization")
	}
}

// joinURLPath is httputil's join of a target's path prefix and a request path, escaped forms included.
func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	apath, bpath := a.EscapedPath(), b.EscapedPath()
	aslash, bslash := strings.HasSuffix(apath, "/"), strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

func singleJoiningSlash(a, b string) string {
	aslash, bslash := strings.HasSuffix(a, "/"), strings.HasPrefix(b, "/")
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}

// discardAttempt ends an attempt whose answer is not the client's: drained a little so the connection can be
// reused (a large error page is not worth reading), closed, and out of the backend's in-flight count.
func discardAttempt(resp *http.Response, b *backend) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	b.done()
}

// doneBody ends a backend's in-flight count when the proxy is done with the answer, so least_loaded sees long
// exports as the load they are.
type doneBody struct {
	io.ReadCloser
	b    *backend
	once atomic.Bool
}

func (d *doneBody) Close() error {
	err := d.ReadCloser.Close()
	if d.once.CompareAndSwap(false, true) {
		d.b.done()
	}
	return err
}

// unreadBody lends a client's streamed body to one attempt and tells afterwards whether any of it was taken. A
// body nobody started to read can go to the next backend; once retired, the attempt cannot read it any more,
// even from a transport goroutine that outlives its RoundTrip.
type unreadBody struct {
	rc    io.ReadCloser
	state atomic.Int32 // 0 untouched, 1 reading started, 2 retired untouched
}

var errBodyRetired = errors.New("the request body went to another backend")

func (u *unreadBody) Read(p []byte) (int, error) {
	if u.state.Load() != 1 && !u.state.CompareAndSwap(0, 1) {
		return 0, errBodyRetired
	}
	return u.rc.Read(p)
}

// Close closes the client's body only once reading has started: an untouched body may still go elsewhere, and the
// server closes it at the end of the request anyway. A started one is closed, which unblocks a transport stuck
// reading a stalled client.
func (u *unreadBody) Close() error {
	if u.state.Load() == 1 {
		return u.rc.Close()
	}
	return nil
}

// retire ends the attempt's use of the body; true when it never read a byte, so the body may be sent again.
func (u *unreadBody) retire() bool {
	return u.state.CompareAndSwap(0, 2) || u.state.Load() == 2
}
