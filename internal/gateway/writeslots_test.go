package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// bodyUpstream reads each write's body to its end, as VictoriaMetrics before v1.86.0 does holding an insert slot, and
// answers 204; a request with X-Hold waits for release after its body. arrived gets each request's path as it reaches
// it, ended each whose body broke or whose context ended first.
type bodyUpstream struct {
	arrived, ended chan string
	release        chan struct{}
}

func (b *bodyUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	b.arrived <- r.URL.Path
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r.Body)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			b.ended <- "body: " + err.Error()
			return nil, err
		}
	case <-r.Context().Done():
		b.ended <- "context"
		return nil, r.Context().Err()
	}
	if r.Header.Get("X-Hold") != "" {
		select {
		case <-b.release:
		case <-r.Context().Done():
			b.ended <- "context"
			return nil, r.Context().Err()
		}
	}
	return &http.Response{StatusCode: http.StatusNoContent, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
		Header: http.Header{}, Body: http.NoBody}, nil
}

// TestWriteSlots: at write backends that hold a slot for a whole body, one team's writes whose bodies stall hold at
// most its share of the slots, so another team's write goes through at once; the team's writes past its share wait,
// then get 429 naming the write backends; a stalled write whose client goes away (its body broken) frees its slot; a
// write whose whole body was sent keeps its upstream request and its slot when its client goes away, until the backend
// answers (VictoriaMetrics goes on with it in its own slot); and without a limit every write is forwarded at once.
func TestWriteSlots(t *testing.T) {
	for _, slots := range []int{4, 0} {
		t.Run(map[int]string{4: "four slots", 0: "no limit"}[slots], func(t *testing.T) {
			up := &bodyUpstream{arrived: make(chan string, 16), ended: make(chan string, 16), release: make(chan struct{})}
			u, _ := url.Parse("http://upstream")
			tokens := byToken{
				"3": {Tenant: tenant.ID{AccountID: 3}, Mode: auth.ModeFull},
				"4": {Tenant: tenant.ID{AccountID: 4}, Mode: auth.ModeFull},
			}
			const queue = 300 * time.Millisecond
			g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: up, WriteTransport: up, Cluster: true, Auth: tokens,
				AuthHeader: "X-Token", Limits: Limits{WriteQueueDuration: queue}})
			if err != nil {
				t.Fatal(err)
			}
			g.SetWriteSlots(slots)
			write := func(ctx context.Context, tok string, body io.Reader, header ...string) <-chan *httptest.ResponseRecorder {
				answered := make(chan *httptest.ResponseRecorder, 1)
				go func() {
					req := httptest.NewRequest(http.MethodPost, "/insert/"+tok+"/prometheus/api/v1/import/prometheus", body).WithContext(ctx)
					req.Header.Set("X-Token", tok)
					for i := 0; i+1 < len(header); i += 2 {
						req.Header.Set(header[i], header[i+1])
					}
					rec := httptest.NewRecorder()
					g.ServeHTTP(rec, req)
					answered <- rec
				}()
				return answered
			}
			// Team 3's five imports send nothing of their bodies.
			var stalled []*io.PipeWriter
			var answers []<-chan *httptest.ResponseRecorder
			ctx, leave := context.WithCancel(context.Background())
			defer leave()
			for i := range 5 {
				pr, pw := io.Pipe()
				stalled = append(stalled, pw)
				c := context.Background()
				if i == 0 {
					c = ctx
				}
				answers = append(answers, write(c, "3", pr))
				want := 1
				switch {
				case i == 0:
				case slots == 0 || i < 3: // three of four slots are its share
				default:
					want = 0
				}
				for range want {
					select {
					case <-up.arrived:
					case <-time.After(5 * time.Second):
						t.Fatalf("team 3's write %d never reached the upstream", i)
					}
				}
			}
			defer func() {
				for _, pw := range stalled {
					pw.Close()
				}
			}()
			select {
			case p := <-up.arrived:
				t.Fatalf("%s reached the upstream past team 3's share of the write slots", p)
			case <-time.After(50 * time.Millisecond):
			}
			// Team 4's write goes through at once.
			rec := <-write(context.Background(), "4", strings.NewReader("up 1\n"))
			if rec.Code != http.StatusNoContent {
				t.Fatalf("team 4's write while team 3's stall: %d %s; want 204", rec.Code, rec.Body)
			}
			<-up.arrived
			if slots == 0 {
				return
			}
			// Team 3's two writes past its share are refused after the queue duration.
			for _, a := range answers[3:] {
				select {
				case rec := <-a:
					if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "write backends are busy") {
						t.Errorf("a write past team 3's share: %d %s; want 429 for the write backends' slots", rec.Code, rec.Body)
					}
				case <-time.After(5 * queue):
					t.Fatal("a write past team 3's share was neither forwarded nor refused")
				}
			}
			// The first stalled write's client goes away, which breaks its body: its upstream request ends, and its slot
			// is free again.
			stalled[0].CloseWithError(io.ErrUnexpectedEOF)
			leave()
			select {
			case why := <-up.ended:
				t.Logf("the stalled write's upstream request ended: %s", why)
			case <-time.After(5 * time.Second):
				t.Fatal("the client of a stalled write went away, but its upstream request went on")
			}
			<-answers[0]
			pr, pw := io.Pipe()
			stalled = append(stalled, pw)
			answers = append(answers, write(context.Background(), "3", pr))
			select {
			case <-up.arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("the slot of the write whose client went away was not freed")
			}
			// Team 4's write sends its whole body and goes away before the backend answers: the backend goes on with
			// it, and its slot is held until the answer.
			ctx4, leave4 := context.WithCancel(context.Background())
			done4 := write(ctx4, "4", strings.NewReader("up 1\n"), "X-Hold", "1")
			<-up.arrived
			time.Sleep(50 * time.Millisecond) // the body is read
			leave4()
			select {
			case why := <-up.ended:
				t.Fatalf("the upstream request of a write whose whole body was sent ended with its client: %s", why)
			case <-time.After(200 * time.Millisecond):
			}
			if got := writeStats.inFlight.Load(); got != 4 {
				t.Errorf("%d writes in flight to the backend after team 4's client left; want 4 (its slot held)", got)
			}
			close(up.release)
			<-done4
			for deadline := time.Now().Add(5 * time.Second); writeStats.inFlight.Load() != 3; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d writes in flight after the backend answered team 4's; want 3", writeStats.inFlight.Load())
				}
			}
		})
	}
}
