package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// stallingBody gives n bytes of a form, then blocks until released.
type stallingBody struct {
	left    int
	release chan struct{}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		<-b.release
		return 0, io.EOF
	}
	n := min(len(p), b.left)
	for i := range p[:n] {
		p[i] = 'a'
	}
	b.left -= n
	return n, nil
}

// TestReadBodiesBounded: the bodies of read and admin requests, read whole before the request takes a slot, are held
// within -maxReadBodyMemory, a quarter of it for one team: one team's many bodies sent in part and stalled are
// refused (503) past its quarter, while another team's body still goes through; all is given back at their end.
func TestReadBodiesBounded(t *testing.T) {
	const maxBody = 64 << 10
	u, _ := url.Parse("http://upstream")
	dev, err := enforce.New([]enforce.Label{{Name: "team", Value: "dev"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := enforce.New([]enforce.Label{{Name: "team", Value: "ops"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ReadURL: u, WriteURL: u, ReadTransport: vectorUpstream{}, WriteTransport: vectorUpstream{}, AuthHeader: "X-Token",
		Auth:   byToken{"dev": {Tenant: tenant.ID{}, Mode: auth.ModeFull, Enforcer: dev}, "ops": {Tenant: tenant.ID{}, Mode: auth.ModeFull, Enforcer: ops}},
		Limits: Limits{MaxReadBodySize: maxBody, ReadBodyMemory: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	post := func(token string, body io.Reader, length int64) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/query", body)
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Token", token)
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		return rec
	}
	// dev's quarter is 256 KiB: bodies of 60 KiB sent whole but one byte, and stalled there, hold about twice that
	// each; those past the quarter are refused at once.
	release := make(chan struct{})
	done := make(chan *httptest.ResponseRecorder, 16)
	for range 16 {
		go func() { done <- post("dev", &stallingBody{left: maxBody - 4<<10, release: release}, maxBody-4<<10+1) }()
	}
	refused := 0
	for wait := time.After(time.Second); refused < 16; refused++ {
		var rec *httptest.ResponseRecorder
		select {
		case rec = <-done:
		case <-wait:
		}
		if rec == nil {
			break
		}
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "-maxReadBodyMemory") {
			t.Fatalf("one of dev's stalled bodies: %d %s; want 503 past its quarter", rec.Code, rec.Body)
		}
	}
	if refused < 8 || refused == 16 {
		t.Errorf("%d of dev's 16 stalled bodies refused; want those past its quarter of %d bytes, and only those", refused, g.bodyBudget.UnitMost())
	}
	if held := 1<<20 - g.bodyBudget.Free(); held > g.bodyBudget.UnitMost() {
		t.Errorf("dev holds %d bytes, more than its quarter %d", held, g.bodyBudget.UnitMost())
	}
	// Another team's body goes through meanwhile.
	if rec := post("ops", strings.NewReader("query=up"), -1); rec.Code != http.StatusOK {
		t.Errorf("ops' query while dev's bodies stall: %d %s", rec.Code, rec.Body)
	}
	close(release)
	for range 16 - refused {
		if rec := <-done; rec.Code != http.StatusOK {
			t.Errorf("one of dev's bodies held within its quarter: %d %s", rec.Code, rec.Body)
		}
	}
	if free := g.bodyBudget.Free(); free != 1<<20 {
		t.Errorf("%d of %d bytes free after every request ended", free, 1<<20)
	}
}
