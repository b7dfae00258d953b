package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/h1"
	"github.com/vmgateway/vmgateway/internal/sockio"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestDeclaredReadBodyLengthAllocatesNothing: a read body's declared length reserves no memory before its bytes
// come. Connections that each declare a 4 MiB body, send one byte of it and stall (they hold no concurrency slot
// while the body is awaited) make the gateway allocate a small part of what they declared, not the declared
// size each for -http.readBodyTimeout; each then gets 408 and nothing is forwarded.
func TestDeclaredReadBodyLengthAllocatesNothing(t *testing.T) {
	token, verifier := benchVerifier(t)
	rec := vmtest.NewRecorder(t)
	u, err := url.Parse(rec.URL)
	if err != nil {
		t.Fatal(err)
	}
	const conns, declared = 128, 4 << 20
	g, err := gateway.New(gateway.Config{ReadURL: u, WriteURL: u, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Auth: verifier, Limits: gateway.Limits{MaxReadBodySize: declared, ReadBodyTimeout: time.Second, MaxConcurrentRequests: 4}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h1.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(sockio.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs[i] = c
		if _, err := fmt.Fprintf(c, "POST /api/v1/query HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\nq", token, declared); err != nil {
			t.Fatal(err)
		}
	}
	// Every answer comes after its body was awaited in readBody: all the buffers were allocated by then.
	for i, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: no answer: %s", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "(1 bytes came)") {
			t.Fatalf("connection %d: %d %s; want 408 after one byte of the body", i, resp.StatusCode, b)
		}
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	// A buffer sized by the declared length is 4 MiB a connection (512 MiB in all); what a connection costs
	// otherwise (its server buffers, the token's check, the answer) is tens of KiB.
	if bound := uint64(conns * 256 << 10); allocated > bound {
		t.Errorf("%d connections declaring %d MiB bodies and sending one byte: %d MiB allocated, want at most %d MiB",
			conns, declared>>20, allocated>>20, bound>>20)
	}
	t.Logf("%d connections: %d MiB allocated", conns, allocated>>20)
	if got := rec.Requests(); len(got) != 0 {
		t.Errorf("forwarded %d requests, want none", len(got))
	}
}
