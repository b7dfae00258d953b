package gateway

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// spendLog is a CostCounter that costs the callers of one tenant and records what they spent.
type spendLog struct {
	costedAccount uint32
	mu            sync.Mutex
	spent         [][2]float64
}

func (s *spendLog) Costed(a *auth.Access) bool { return a.Tenant.AccountID == s.costedAccount }

func (s *spendLog) Spend(_ *auth.Access, series int64, ms float64) {
	s.mu.Lock()
	s.spent = append(s.spent, [2]float64{float64(series), ms})
	s.mu.Unlock()
}

// SpendAll is recorded as a spend of -1, -1.
func (s *spendLog) SpendAll(*auth.Access) { s.Spend(nil, -1, -1) }

// Reserve holds nothing.
func (s *spendLog) Reserve(context.Context, *auth.Access, time.Duration) (func(), error) {
	return func() {}, nil
}

func (s *spendLog) take() [][2]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.spent
	s.spent = nil
	return out
}

// byToken is an Authenticator double: the X-Token header names the Access.
type byToken map[string]*auth.Access

func (b byToken) Authenticate(r *http.Request) (*auth.Access, error) {
	if a := b[r.Header.Get("X-Token")]; a != nil {
		return a, nil
	}
	return nil, errors.New("unknown token")
}

// TestCostCounted: the stats at the end of a query answer reach the CostCounter for a costed caller, whose query
// asks the upstream for an uncompressed answer; other callers keep their Accept-Encoding and cost nothing, and a
// listing API keeps it and costs its time.
func TestCostCounted(t *testing.T) {
	useCostTimer(t) // the time of writing the answer, added to the stats, is none
	read, write := vmtest.NewRecorder(t), vmtest.NewRecorder(t)
	read.Respond(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "7","executionTimeMsec":12}}`)
	})
	ru, _ := url.Parse(read.URL)
	wu, _ := url.Parse(write.URL)
	costs := &spendLog{costedAccount: 3}
	tokens := byToken{"t3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}, "t4": {Tenant: tenant.ID{AccountID: 4}, Mode: auth.ModeFull}}
	g, err := New(Config{ReadURL: ru, WriteURL: wu, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Cluster: true, Auth: tokens, Costs: costs, AuthHeader: "X-Token"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token, path, wantEncoding string
		want                      [][2]float64
	}{
		{"t3", "/api/v1/query?query=up", "identity", [][2]float64{{7, 12}}},
		{"t3", "/api/v1/query_range?query=up&start=1&end=2&step=1", "identity", [][2]float64{{7, 12}}},
		// A listing request is charged its time alone (none on the test's clock), asked as the client asked.
		{"t3", "/api/v1/labels", "gzip", [][2]float64{{0, 0}}},
		{"t4", "/api/v1/query?query=up", "gzip", nil},
	} {
		rec := serve(g, http.MethodGet, tc.path, "X-Token", tc.token, "Accept-Encoding", "gzip")
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", tc.token, tc.path, rec.Code, rec.Body.String())
		}
		reqs := read.Requests()
		if len(reqs) != 1 || reqs[0].Header.Get("Accept-Encoding") != tc.wantEncoding {
			t.Errorf("%s %s: forwarded %+v, want Accept-Encoding %q", tc.token, tc.path, reqs, tc.wantEncoding)
		}
		if got := costs.take(); len(got) != len(tc.want) || len(got) == 1 && got[0] != tc.want[0] {
			t.Errorf("%s %s: spent %v, want %v", tc.token, tc.path, got, tc.want)
		}
	}
}

// costGateway is a gateway over read whose tenant 3 has cost limits, served on a real listener.
func costGateway(t *testing.T, read *vmtest.Recorder, readSlots ...int) (string, *spendLog) {
	t.Helper()
	ru, _ := url.Parse(read.URL)
	costs := &spendLog{costedAccount: 3}
	tokens := byToken{"t3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}, "t4": {Tenant: tenant.ID{AccountID: 4}, Mode: auth.ModeFull}}
	g, err := New(Config{ReadURL: ru, WriteURL: ru, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
		Cluster: true, Auth: tokens, Costs: costs, AuthHeader: "X-Token"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range readSlots {
		g.SetReadSlots(n)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL, costs
}

// bigAnswer writes a query answer of n series in chunks, flushed, with its stats at the end. A chunk waits
// for its turn on pace, if set.
func bigAnswer(w http.ResponseWriter, n int, pace <-chan struct{}) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[`)
	for i := 0; i < n; i++ {
		if pace != nil {
			<-pace
		}
		_, _ = fmt.Fprintf(w, `{"metric":{"i":"%d","pad":"%s"},"value":[1,"1"]},`, i, strings.Repeat("x", 1000))
		w.(http.Flusher).Flush()
	}
	_, _ = fmt.Fprintf(w, `{"metric":{}}]},"stats":{"seriesFetched": "%d","executionTimeMsec":9}}`, n)
}

// readSome sends a query through the gateway at base with token, reads the first bytes of the answer and leaves.
func readSome(t *testing.T, base, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/query?query=up", nil)
	req.Header.Set("X-Token", token)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
}

// TestCostAbandoned: a costed client that leaves after the first bytes of an answer is still charged what the
// answer's stats say: the gateway reads the rest itself. Another caller's abandoned answer ends with it.
func TestCostAbandoned(t *testing.T) {
	useCostTimer(t) // the time of writing the answer, added to the stats, is none
	read := vmtest.NewRecorder(t)
	pace := make(chan struct{})
	upstreamDone := make(chan error, 1)
	upstreamCtx := make(chan context.Context, 1)
	read.Respond(func(w http.ResponseWriter, r *http.Request) {
		upstreamCtx <- r.Context()
		bigAnswer(w, 2000, pace)
		upstreamDone <- r.Context().Err()
	})
	base, costs := costGateway(t, read)
	// The upstream sends its first series, the client reads them and leaves; only then does the rest come, so
	// the client cannot have had the stats. The first series are more than the gateway reads ahead of a query
	// answer without a length (maxBufferedAnswer), so they reach the client before the rest exists.
	first := maxBufferedAnswer/1000 + 2
	go func() {
		for i := 0; i < first; i++ {
			pace <- struct{}{}
		}
	}()
	readSome(t, base, "t3")
	go func() {
		for i := first; i < 2000; i++ {
			pace <- struct{}{}
		}
	}()
	if err := <-upstreamDone; err != nil {
		t.Fatalf("the upstream request ended with the client: %v", err)
	}
	vmtest.Eventually(t, func() (bool, string) {
		got := costs.take()
		return len(got) == 1 && got[0] == [2]float64{2000, 9}, fmt.Sprintf("spent %v", got)
	})

	// Tenant 4 has no cost limits: its upstream request ends with the client, and nothing is charged. The gateway
	// learns that the client left at its next writes to it, so the rest is sent a series at a time, each given time
	// to reach the gateway: sent at once, it all fits in the sockets' buffers (the kernel grows them to megabytes)
	// before a gateway slowed by other tests writes again.
	<-upstreamCtx
	go func() {
		for i := 0; i < first; i++ {
			pace <- struct{}{}
		}
	}()
	readSome(t, base, "t4")
	ctx := <-upstreamCtx
	sent := first
	for ; sent < 2000 && ctx.Err() == nil; sent++ {
		pace <- struct{}{}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if ctx.Err() == nil {
		t.Error("an uncosted caller's abandoned answer was read to its end")
	}
	for ; sent < 2000; sent++ {
		pace <- struct{}{}
	}
	if err := <-upstreamDone; err == nil {
		t.Error("an uncosted caller's abandoned answer was read to its end")
	}
	if got := costs.take(); len(got) != 0 {
		t.Errorf("uncosted caller charged %v", got)
	}
}

// TestCostAbandonedTimeout: an answer the client left that does not end within drainTimeout is charged the
// whole budget, and its upstream request is ended; also for a read that holds a read slot, whose request is not
// cancelled with its client's (an attacker's review: a 25 s stall was waited out).
func TestCostAbandonedTimeout(t *testing.T) {
	old := drainTimeout
	drainTimeout = 300 * time.Millisecond
	t.Cleanup(func() { drainTimeout = old })
	for _, slots := range [][]int{nil, {4}} {
		read := vmtest.NewRecorder(t)
		ended := make(chan struct{})
		read.Respond(func(w http.ResponseWriter, r *http.Request) {
			// More than the gateway reads ahead of an answer without a length, so the client has its first bytes.
			_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[`+strings.Repeat(" ", maxBufferedAnswer+200))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // an answer that never ends
			close(ended)
		})
		base, costs := costGateway(t, read, slots...)
		readSome(t, base, "t3")
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("read slots %v: the upstream request outlived drainTimeout", slots)
		}
		vmtest.Eventually(t, func() (bool, string) {
			got := costs.take()
			return len(got) == 1 && got[0] == [2]float64{-1, -1}, fmt.Sprintf("read slots %v: spent %v, want the whole budget", slots, got)
		})
	}
}

// TestCostCompressed: an upstream that gzips the answer of a costed caller although asked for identity is
// decoded: the client gets the answer uncompressed, and its stats are charged. An encoding the gateway cannot
// read is charged the whole budget; an uncosted caller's gzip answer passes as it came.
func TestCostCompressed(t *testing.T) {
	useCostTimer(t) // the time of writing the answer, added to the stats, is none
	body := `{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "7","executionTimeMsec":12}}`
	read := vmtest.NewRecorder(t)
	encoding := "gzip"
	read.Respond(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", encoding)
		if encoding != "gzip" {
			_, _ = io.WriteString(w, "\x00\x01opaque")
			return
		}
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, body)
		_ = zw.Close()
	})
	base, costs := costGateway(t, read)
	get := func(token string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/query?query=up", nil)
		req.Header.Set("X-Token", token)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := get("t3")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" || string(b) != body {
		t.Errorf("costed caller's gzip answer: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	if reqs := read.Requests(); reqs[len(reqs)-1].Header.Get("Accept-Encoding") != "identity" {
		t.Errorf("asked for %q", reqs[len(reqs)-1].Header.Get("Accept-Encoding"))
	}
	if got := costs.take(); len(got) != 1 || got[0] != [2]float64{7, 12} {
		t.Errorf("spent %v, want the gzip answer's stats", got)
	}
	resp, b = get("t4")
	if resp.Header.Get("Content-Encoding") != "gzip" || len(b) == 0 || b[0] != 0x1f {
		t.Errorf("uncosted caller's gzip answer changed: %v %q", resp.Header, b)
	}
	encoding = "br"
	if resp, b = get("t3"); resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "br" || string(b) != "\x00\x01opaque" {
		t.Errorf("br answer: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	if got := costs.take(); len(got) != 1 || got[0] != [2]float64{-1, -1} {
		t.Errorf("spent %v on an answer of unknown encoding, want the whole budget", got)
	}
}

// TestCostWritingTime: a costed query is charged the time its answer took to write on top of executionTimeMsec, which
// leaves it out (a 694 MB answer took v1.151 7.6 s of CPU where its stats said 2.2 s, an attacker's review); the time
// before the answer began, which the stats cover, is not added.
func TestCostWritingTime(t *testing.T) {
	clock := useCostTimer(t)
	read := vmtest.NewRecorder(t)
	rest := make(chan struct{})
	read.Respond(func(w http.ResponseWriter, _ *http.Request) {
		clock.advance(5 * time.Second) // computing: the stats' 12 ms, and a wait in the backend's queue
		w.Header().Set("Content-Type", "application/json")
		// More than the gateway reads ahead of an answer without a length, so that it reaches the client now.
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pad":"`+
			strings.Repeat("x", maxBufferedAnswer)+`"},"value":[1,"1"]},`)
		w.(http.Flusher).Flush()
		<-rest
		_, _ = io.WriteString(w, `{"metric":{},"value":[1,"1"]}]},"stats":{"seriesFetched": "7","executionTimeMsec":12}}`)
	})
	base, costs := costGateway(t, read)
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/query?query=up", nil)
	req.Header.Set("X-Token", "t3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The answer has begun at the client, so at the gateway: writing the rest takes 2.5 s.
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	clock.advance(2500 * time.Millisecond)
	close(rest)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	vmtest.Eventually(t, func() (bool, string) {
		got := costs.take()
		return len(got) == 1 && got[0] == [2]float64{7, 2512}, fmt.Sprintf("spent %v, want [[7 2512]]", got)
	})
}

// TestCostChargedBeforeTheAnswerEnds: a query is charged before the last byte of its answer goes to the client, so a
// client that sends its next queries once it has an answer finds that answer counted. Before, a small answer
// (buffered whole) reached its client before its stats were read: a burst sent right after a first answer went as
// if that answer had cost nothing yet, and one query more than the budget allowed went in a full test run
// (TestRateLimitCostInFlight).
func TestCostChargedBeforeTheAnswerEnds(t *testing.T) {
	useCostTimer(t)
	const answer = `{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "7","executionTimeMsec":12}}`
	for _, length := range []bool{false, true} {
		read := vmtest.NewRecorder(t)
		read.Respond(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if length {
				w.Header().Set("Content-Length", fmt.Sprint(len(answer)))
			} else {
				w.(http.Flusher).Flush() // no length: VictoriaMetrics' own answers
			}
			_, _ = io.WriteString(w, answer)
		})
		ru, _ := url.Parse(read.URL)
		costs := &spendLog{costedAccount: 3}
		g, err := New(Config{ReadURL: ru, WriteURL: ru, ReadTransport: http.DefaultTransport, WriteTransport: http.DefaultTransport,
			Cluster: true, Auth: byToken{"t3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull}}, Costs: costs, AuthHeader: "X-Token"})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=up", nil)
		req.Header.Set("X-Token", "t3")
		w := &spendsAtWrite{ResponseRecorder: httptest.NewRecorder(), costs: costs}
		g.ServeHTTP(w, req)
		if w.Code != http.StatusOK || w.Body.String() != answer {
			t.Fatalf("with a length %v: %d %q", length, w.Code, w.Body.String())
		}
		if len(w.spends) == 0 || w.spends[len(w.spends)-1] != 1 {
			t.Errorf("with a length %v: queries charged at each write of the answer %v; want the one query charged by the last", length, w.spends)
		}
		if got := costs.take(); len(got) != 1 || got[0] != [2]float64{7, 12} {
			t.Errorf("with a length %v: spent %v, want 7 series and 12 ms once", length, got)
		}
	}
}

// spendsAtWrite records how many queries costs had charged at each write of an answer's body.
type spendsAtWrite struct {
	*httptest.ResponseRecorder
	costs  *spendLog
	spends []int
}

func (w *spendsAtWrite) Write(p []byte) (int, error) {
	w.costs.mu.Lock()
	w.spends = append(w.spends, len(w.costs.spent))
	w.costs.mu.Unlock()
	return w.ResponseRecorder.Write(p)
}
