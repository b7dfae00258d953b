package gateway

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"

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
// asks the upstream for an uncompressed answer; other callers and other APIs keep their Accept-Encoding and cost
// nothing.
func TestCostCounted(t *testing.T) {
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
		{"t3", "/api/v1/labels", "gzip", nil},
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
