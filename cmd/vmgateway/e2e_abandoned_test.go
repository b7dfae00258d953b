package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// abandonExport opens an export of every series through g with token (none: ""), reads its head and goes away.
func abandonExport(t *testing.T, g *gw, token string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	fmt.Fprintf(c, "GET /api/v1/export?match[]=many HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n%s\r\n", auth)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("an export: %v %q", err, line)
	}
}

// TestAbandonedExportsKeepTheirSlots: VictoriaMetrics before v1.110.0 goes on with an export after its connection
// is closed, to the end, in its query slot. The gateway freed its own slot when the export's client went away, and
// forwarded other teams' reads to a backend whose slots were all taken: they queued there, first come first served,
// and got its 503 after -search.maxQueueDuration. The gateway now reads such an answer to its end, slot held, and
// team ops' query waits for its turn at the gateway instead.
func TestAbandonedExportsKeepTheirSlots(t *testing.T) {
	vm := vmtest.Start(t, "-search.maxConcurrentRequests=2", "-search.maxQueueDuration=300ms")
	importSeries(t, vm, "many", 10000, 1000)
	g, dev, qa, ops := readTeams(t, vm, 2, "30s")
	drained := metricValue(t, g, "vmgateway_read_backend_drained_total")
	start := time.Now()
	abandonExport(t, g, dev)
	abandonExport(t, g, qa)
	q := g.URL + "/api/v1/query?query=" + url.QueryEscape("count(many)")
	code, _, body := do(t, "GET", q, nil, "Authorization", "Bearer "+ops)
	t.Logf("ops' query after two abandoned exports: %d after %s", code, time.Since(start))
	if code != http.StatusOK {
		t.Fatalf("ops' query: %d (%s); want 200 once an abandoned export is done", code, body)
	}
	if n := metricValue(t, g, "vmgateway_read_backend_drained_total") - drained; n != 2 {
		t.Errorf("vmgateway_read_backend_drained_total grew by %v; want the 2 abandoned exports", n)
	}
}

// TestNewerBackendsStopAbandonedExports: v1.151 stops an export whose connection is closed, so the gateway closes
// it and frees the slot at once: nothing is read to its end.
func TestNewerBackendsStopAbandonedExports(t *testing.T) {
	vm := vmtest.StartCurrent(t, "-search.maxConcurrentRequests=2")
	importSeries(t, vm, "many", 10000, 1000)
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-read.maxConcurrentRequests=0")
	waitMetric(t, g, "vmgateway_read_backend_slots", "the backend's 2 query slots, learned", is(2))
	// How long v1.151 takes to export it all, read whole straight from it.
	start := time.Now()
	resp, err := freshClient.Get(vm.URL + "/api/v1/export?match[]=many")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the export straight from v1.151: %d, %v", resp.StatusCode, err)
	}
	whole := time.Since(start)
	start = time.Now()
	abandonExport(t, g, "")
	waitMetric(t, g, "vmgateway_read_backend_requests", "the abandoned export's slot freed", is(0))
	vmtest.Eventually(t, func() (bool, string) {
		n, err := readMetric(vm.URL+"/metrics", "vm_concurrent_select_current")
		return err == nil && n == 0, fmt.Sprintf("v1.151 runs %v queries (%v); want the abandoned export stopped", n, err)
	})
	t.Logf("v1.151 exports it all in %s, and stopped the abandoned export after %s", whole, time.Since(start))
	if took := time.Since(start); took > whole/2 {
		t.Errorf("v1.151 ran the abandoned export for %s, and takes %s for all of it; want it stopped at once", took, whole)
	}
	if n := metricValue(t, g, "vmgateway_read_backend_drained_total"); n != 0 {
		t.Errorf("vmgateway_read_backend_drained_total is %v in front of v1.151; want 0", n)
	}
}
