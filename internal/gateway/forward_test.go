package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/proxyclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// The forward step replaced httputil.ReverseProxy (Rewrite: the backend's URL, SetXForwarded, no userinfo).
// These tests send the same raw requests through the gateway and through such a ReverseProxy, each behind a real
// server and with the same upstream client, and want the same bytes at the upstream and at the client.

// proxies starts the gateway and the reference ReverseProxy in front of upstream.
func proxies(t *testing.T, upstream string) (gw, ref string) {
	t.Helper()
	g, u, rt := forwardingGateway(t, upstream)
	gs := httptest.NewServer(g)
	t.Cleanup(gs.Close)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.URL.User = nil
			pr.SetXForwarded()
		},
		Transport: rt,
	}
	rs := httptest.NewServer(rp)
	t.Cleanup(rs.Close)
	return gs.Listener.Addr().String(), rs.Listener.Addr().String()
}

// forwardingGateway is a gateway without auth or limits in front of upstream, with the production upstream client.
func forwardingGateway(t *testing.T, upstream string) (*Gateway, *url.URL, http.RoundTripper) {
	t.Helper()
	u, _ := url.Parse(upstream)
	rt := proxyclient.New(nil, time.Minute, 10*time.Second)
	t.Cleanup(rt.CloseIdleConnections)
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: rt, WriteTransport: rt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, u, rt
}

// exchange sends a raw request on a new connection and returns all the server answered until it closed.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v (got %q)", raw, err, b)
	}
	return unchunked(dateLine.ReplaceAllString(string(b), "Date: -\r\n"))
}

// unchunked decodes a chunked body in an exchange, whose chunk sizes depend on how the upstream's writes met the
// proxy's reads; the trailers after it are kept as sent.
func unchunked(raw string) string {
	var heads strings.Builder
	rest := raw
	for {
		head, body, ok := strings.Cut(rest, "\r\n\r\n")
		if !ok {
			return raw
		}
		heads.WriteString(head + "\r\n\r\n")
		rest = body
		if !strings.HasPrefix(head, "HTTP/1.1 1") {
			if !strings.Contains(head, "\r\nTransfer-Encoding: chunked") {
				return raw
			}
			break
		}
	}
	br := bufio.NewReader(strings.NewReader(rest))
	body, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		return raw
	}
	after, _ := io.ReadAll(br)
	return heads.String() + "[chunked body] " + string(body) + " [after the last chunk] " + string(after)
}

var dateLine = regexp.MustCompile(`Date: [^\r]*\r\n`)

// recorded is a recorded request's head, sorted, for comparison.
func recorded(r vmtest.Recorded) string {
	var b strings.Builder
	_ = r.Header.Write(&b)
	// The gateway sends single-node requests to the path VictoriaMetrics gives them under /prometheus.
	return r.Method + " " + strings.TrimPrefix(r.RawPath, "/prometheus") + "?" + r.RawQuery + "\nHost: " + r.Host + "\n" + b.String() + "\n" + r.Body
}

func TestForwardAsReverseProxy(t *testing.T) {
	up := vmtest.NewRecorder(t)
	up.Respond(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		if r.URL.Query().Get("hop") != "" {
			h.Set("Connection", "X-Resp-Hop")
			h.Set("X-Resp-Hop", "1")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Proxy-Authenticate", "Basic")
			h.Set("Proxy-Connection", "keep-alive")
			h.Set("Upgrade", "foo")
			h.Set("X-Kept", "yes")
		}
		if r.URL.Query().Get("hints") != "" {
			h.Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
		}
		if r.URL.Query().Get("trailer") != "" {
			h.Set("Trailer", "X-Trail")
			_, _ = io.WriteString(w, `{"status":"success"}`)
			h.Set("X-Trail", "done")
			return
		}
		if r.URL.Query().Get("stream") != "" {
			// No length: streamed and flushed.
			_, _ = io.WriteString(w, "a 1\n")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "b 2\n")
			return
		}
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})
	gw, ref := proxies(t, up.URL)
	const get = "GET /api/v1/labels?match[]=up"
	for _, tc := range []struct{ name, req string }{
		{"hop-by-hop request headers", get + " HTTP/1.1\r\nHost: gw.example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n" +
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTe: deflate, trailers\r\n" +
			"Trailer: X-T\r\nUpgrade: h2c\r\nUser-Agent: Grafana/11\r\nX-Kept: yes\r\nConnection: close\r\n\r\n"},
		{"te without trailers", get + " HTTP/1.1\r\nHost: gw.example\r\nTe: deflate\r\nConnection: close\r\n\r\n"},
		{"client's forwarding headers", get + " HTTP/1.1\r\nHost: gw.example:8427\r\nX-Forwarded-For: 6.6.6.6\r\n" +
			"X-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n"},
		{"no user agent", get + " HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n"},
		{"empty user agent", get + " HTTP/1.1\r\nHost: gw.example\r\nUser-Agent:\r\nConnection: close\r\n\r\n"},
		{"upgrade asked", get + " HTTP/1.1\r\nHost: gw.example\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n"},
		{"invalid upgrade", get + " HTTP/1.1\r\nHost: gw.example\r\nConnection: Upgrade, close\r\nUpgrade: web\x7fsocket\r\n\r\n"},
		{"hop-by-hop answer headers", get + "&hop=1 HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n"},
		{"early hints", get + "&hints=1 HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n"},
		{"trailer", get + "&trailer=1 HTTP/1.1\r\nHost: gw.example\r\nTe: trailers\r\nConnection: close\r\n\r\n"},
		{"stream", "GET /api/v1/export?match[]=up&stream=1 HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n"},
		// A write: a read's args must parse (VictoriaMetrics parses its selectors, which the gateway checks).
		{"unparsable query parameters", "POST /api/v1/import?a=1;b=2&c=%zz&d=%41 HTTP/1.1\r\nHost: gw.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nup 1\n"},
		{"http/1.0", get + " HTTP/1.0\r\nHost: gw.example\r\n\r\n"},
		{"head", "HEAD /api/v1/labels HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n"},
		{"post form", "POST /api/v1/labels HTTP/1.1\r\nHost: gw.example\r\nContent-Type: application/x-www-form-urlencoded\r\n" +
			"Content-Length: 12\r\nConnection: close\r\n\r\nmatch[]=up&x"},
		{"chunked import", "POST /api/v1/import HTTP/1.1\r\nHost: gw.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
			"5\r\nup 1\n\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := exchange(t, ref, tc.req)
			wantUp := up.Requests()
			got := exchange(t, gw, tc.req)
			gotUp := up.Requests()
			if got != want {
				t.Errorf("the client got\n%q\nfrom the gateway; ReverseProxy gave\n%q", got, want)
			}
			if len(gotUp) != len(wantUp) {
				t.Fatalf("%d requests reached the upstream from the gateway, %d from ReverseProxy", len(gotUp), len(wantUp))
			}
			for i := range gotUp {
				if g, w := recorded(gotUp[i]), recorded(wantUp[i]); g != w {
					t.Errorf("the upstream got\n%s\nfrom the gateway; from ReverseProxy\n%s", g, w)
				}
			}
		})
	}
}

// An answer without a length is flushed as it comes: its headers before the upstream sends a byte of the body,
// then each part.
func TestForwardStreamsAnswers(t *testing.T) {
	up := vmtest.NewRecorder(t)
	sent := make(chan struct{})
	proceed, quit := make(chan struct{}), make(chan struct{})
	up.Respond(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(sent)
		for _, part := range []string{"part 1\n", "part 2\n"} {
			select {
			case <-proceed:
			case <-quit:
				return
			}
			_, _ = io.WriteString(w, part)
			w.(http.Flusher).Flush()
		}
	})
	gw, _ := proxies(t, up.URL)
	// Run first among the cleanups: a failed test must not leave the servers waiting on this handler.
	t.Cleanup(func() { close(quit) })
	// The headers must come while the upstream still holds back the body: a gateway waiting for it times out.
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + gw + "/api/v1/export?match[]=up")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream did not answer")
	}
	br := bufio.NewReader(resp.Body)
	for _, want := range []string{"part 1\n", "part 2\n"} {
		select {
		case proceed <- struct{}{}:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream did not get to send its next part")
		}
		line, err := br.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("read %q, %v; want %q", line, err, want)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the parts: %q, %v", rest, err)
	}
}

// An upstream that accepts a protocol upgrade is refused: the client gets a 502 and no tunnel past the gateway's
// checks, and the upstream's connection is closed.
func TestForwardRefusesUpgrade(t *testing.T) {
	up := vmtest.NewRecorder(t)
	closed := make(chan error, 1)
	up.Respond(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			closed <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\n\r\n")
		_ = brw.Flush()
		_, err = brw.ReadByte()
		closed <- err
	})
	gw, _ := proxies(t, up.URL)
	got := exchange(t, gw, "GET /api/v1/labels HTTP/1.1\r\nHost: gw.example\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 502 ") || !strings.Contains(got, `"status":"error"`) {
		t.Fatalf("the client got %q; want a 502 JSON error", got)
	}
	if err := <-closed; err != io.EOF {
		t.Fatalf("the upstream's upgraded connection ended with %v; want it closed by the gateway (EOF)", err)
	}
	for _, r := range up.Requests() {
		if r.Header.Get("Connection") != "Upgrade" || r.Header.Get("Upgrade") != "h2c" {
			t.Fatalf("the upstream got %v; want the upgrade asked, as ReverseProxy passed it", r.Header)
		}
	}
}

// TestForwardDropsRequestTrailers: the fields after a chunked body were never checked like the head, so none of
// them, declared or not, reaches the upstream.
func TestForwardDropsRequestTrailers(t *testing.T) {
	got := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r.Trailer
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(up.Close)
	gw, _ := proxies(t, up.URL)
	answer := exchange(t, gw, "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"+
		"Trailer: X-Foo\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Foo: 1\r\nAccountID: 7\r\nAuthorization: Bearer forged\r\n\r\n")
	if !strings.HasPrefix(answer, "HTTP/1.1 204") {
		t.Fatalf("answer: %.300q", answer)
	}
	select {
	case tr := <-got:
		if len(tr) != 0 {
			t.Fatalf("trailers reached the upstream: %v", tr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream got no request")
	}
}

// TestForward1xxKeepsOwnHeaders: an informational answer goes out with its own headers only, without the upstream's
// hop-by-hop headers and host as for a final answer, and the headers the gateway set for the final answer (rate
// limits, request id) stay for it.
func TestForward1xxKeepsOwnHeaders(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The upstream's own headers go with neither answer: its connection's and its host's.
		w.Header().Set("X-Server-Hostname", "vmselect-7f9c")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, `{"status":"success"}`)
	}))
	t.Cleanup(up.Close)
	g, _, _ := forwardingGateway(t, up.URL)
	gs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Own", "kept")
		g.ServeHTTP(w, r)
	}))
	t.Cleanup(gs.Close)
	answer := exchange(t, gs.Listener.Addr().String(), "GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	hints, final, ok := strings.Cut(answer, "\r\n\r\n")
	if !ok || !strings.HasPrefix(hints, "HTTP/1.1 103") || !strings.Contains(hints, "Link:") || strings.Contains(hints, "X-Own") {
		t.Fatalf("the 103: %.400q", answer)
	}
	if !strings.HasPrefix(final, "HTTP/1.1 200") || !strings.Contains(final, "X-Own: kept") || strings.Contains(final, "Link:") {
		t.Fatalf("the final answer: %.400q", final)
	}
	for _, h := range []string{"X-Server-Hostname", "X-Hop"} {
		if strings.Contains(answer, h) {
			t.Errorf("the upstream's %s reached the client: %.600q", h, answer)
		}
	}
}

// TestForwardKeepsEndToEndHeaders: a client's Connection header removes the hop-by-hop headers it names, but not
// the ones the gateway read to check the request: without its Content-Type the upstream would not read the form
// the gateway rewrote.
func TestForwardKeepsEndToEndHeaders(t *testing.T) {
	up := vmtest.NewRecorder(t)
	gw, _ := proxies(t, up.URL)
	answer := exchange(t, gw, "POST /api/v1/labels HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"+
		"Content-Length: 7\r\nX-Hop: 1\r\nConnection: Content-Type, Content-Length, X-Hop, close\r\n\r\nmatch=m")
	if !strings.HasPrefix(answer, "HTTP/1.1 200") {
		t.Fatalf("answer: %.300q", answer)
	}
	got := up.Requests()
	if len(got) != 1 {
		t.Fatalf("%d requests forwarded", len(got))
	}
	h := got[0].Header
	if h.Get("Content-Type") != "application/x-www-form-urlencoded" || h.Get("Content-Length") != "7" || h.Get("X-Hop") != "" || got[0].Body != "match=m" {
		t.Fatalf("the upstream got %v with body %q", h, got[0].Body)
	}
}
