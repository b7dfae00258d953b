package ratelimit

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmgateway/vmgateway/internal/datasource"
	"github.com/vmgateway/vmgateway/internal/route"
)

// burst sends n checks of tenant 0:0's reads at the given concurrency and returns how many passed.
func burst(g *Gate, n, concurrency int) int {
	var passed atomic.Int64
	var wg sync.WaitGroup
	next := make(chan struct{})
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if g.check(access(tid(0, 0)), rt(route.Read)) == nil {
					passed.Add(1)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return int(passed.Load())
}

// TestBurstIsCutAtTheLimit is the regression test for the datasource's lag: the datasource has seen nothing yet,
// so before local accounting all 500 checks of a burst passed a limit of 50 queries per minute.
func TestBurstIsCutAtTheLimit(t *testing.T) {
	f := &fakeDatasource{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	g := newTestGate(t, "limits:\n  - {type: queries, value: 50}\n", Config{Datasource: datasource.Config{URL: srv.URL}})
	if err := g.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := burst(g, 500, 16); got != 50 {
		t.Fatalf("%d of 500 checks passed a limit of 50 queries per minute, want exactly 50", got)
	}
}
