package gateway

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

// TestRefusals: refusals are counted by status and reason, concurrently, with the last message of each; the
// latest reason comes first.
func TestRefusals(t *testing.T) {
	g := &Gateway{}
	t0 := time.Unix(1000, 0)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 100; j++ {
				g.refused.add(httperr.New(http.StatusTooManyRequests, "limited"), t0)
			}
		})
	}
	wg.Wait()
	g.refused.add(httperr.New(http.StatusForbidden, "not yours"), t0.Add(time.Second))
	g.refused.add(errors.New("plain"), t0.Add(2*time.Second))
	got := g.Refusals()
	if len(got) != 3 {
		t.Fatalf("want 3 reasons, got %+v", got)
	}
	if got[0].Status != 500 || got[0].Reason != "internal server error" || got[0].LastMessage != "plain" {
		t.Errorf("latest first: %+v", got[0])
	}
	if got[1].Status != 403 || got[1].Reason != "forbidden" || got[1].Count != 1 {
		t.Errorf("403: %+v", got[1])
	}
	if got[2].Status != 429 || got[2].Reason != "too many requests" || got[2].Count != 800 || got[2].LastMessage != "limited" || !got[2].Last.Equal(t0) {
		t.Errorf("429: %+v", got[2])
	}
}

// BenchmarkRefusalsAdd is the cost the status page's refusal table adds to each refused request, from many
// goroutines at once as a flood of bad tokens would bring.
func BenchmarkRefusalsAdd(b *testing.B) {
	g := &Gateway{}
	err := httperr.New(http.StatusUnauthorized, "missing Authorization header with a Bearer token")
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.refused.add(err, now)
		}
	})
}
