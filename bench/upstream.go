//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// upstream stands in for VictoriaMetrics and answers as fast as it can, so the figures show the proxies' cost:
// a fixed query_range matrix for reads, 204 for writes (their bodies read and discarded; a remote-write batch
// gets 204 only when all its bytes arrived with Content-Encoding: snappy, 400 otherwise), an empty vector for the
// gateway's vm_tenant_* rate-limit queries. It remembers the last query string of each kind for the sanity checks.
type upstream struct {
	addr      string
	srv       *http.Server
	lastRead  atomic.Pointer[string]
	lastWrite atomic.Pointer[string]
	// lastRemoteWrite is the last remote write's query string: the sanity checks look for the extra_label there.
	lastRemoteWrite atomic.Pointer[string]
	// written counts write-body bytes, so the streaming check knows the whole body arrived.
	written atomic.Int64
}

// matrixJSON is a typical Grafana panel answer: two series of 60 points.
var matrixJSON = func() []byte {
	var b strings.Builder
	b.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
	for s := 0; s < 2; s++ {
		if s > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metric":{"handler":"/api/v1/query_range","team":"dev","le":"%d"},"values":[`, s)
		for i := 0; i < 60; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `[%d,"0.%03d"]`, 1700000000+15*i, (i*37+s*11)%1000)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}}`)
	return []byte(b.String())
}()

var (
	vectorJSON      = []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[1700000000,"1"]}]}}`)
	emptyVectorJSON = []byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`)
)

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: ln.Addr().String()}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/health":
		// What the bench asks every target before it measures it; the pass-through proxies ask the upstream.
		_, _ = io.WriteString(w, "OK")
	case strings.HasSuffix(r.URL.Path, "/api/v1/query_range"):
		q := r.URL.RawQuery
		u.lastRead.Store(&q)
		reply(w, matrixJSON)
	case strings.HasSuffix(r.URL.Path, "/api/v1/query"):
		if strings.Contains(r.FormValue("query"), "vm_tenant_") {
			reply(w, emptyVectorJSON)
			return
		}
		reply(w, vectorJSON)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/api/v1/write"):
		q := r.URL.RawQuery
		u.lastRemoteWrite.Store(&q)
		n, err := io.Copy(io.Discard, r.Body)
		u.written.Add(n)
		if enc := r.Header.Get("Content-Encoding"); err != nil || n != int64(len(remoteWriteBody)) || enc != "snappy" {
			// A non-2xx answer counts as an error in the load generator's figures.
			http.Error(w, fmt.Sprintf("remote write: got %d body bytes (read error: %v) with Content-Encoding %q; want the whole %d-byte batch, snappy",
				n, err, enc, len(remoteWriteBody)), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost:
		q := r.URL.RawQuery
		u.lastWrite.Store(&q)
		n, _ := io.Copy(io.Discard, r.Body)
		u.written.Add(n)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func reply(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	_, _ = w.Write(body)
}

func (u *upstream) last(p *atomic.Pointer[string]) string {
	if s := p.Swap(nil); s != nil {
		return *s
	}
	return ""
}
