package gateway

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// A delete resets caches VictoriaMetrics shares between every team and tenant: the rollup result cache, which makes
// every dashboard compute its whole range again (a 2,000-series range query went from 0.11 s to 0.14-0.16 s on v1.151
// after a delete), the tag filters cache, and the MetricName->TSID cache, saved to disk as it is emptied, which sends
// every team's writes through the index until it fills again (recent releases empty it for every delete, whether it
// matched a series or not). A team with a full token that deletes in a loop kept every other team's caches empty. So
// the gateway spaces the deletes of each isolation unit (a tenant, and within it each set of label restrictions) by
// -deleteSeries.minInterval: across the replicas that share a Redis (Spacer), and on each replica alone, which
// decides while Redis does not answer.

var deletesRefused = metrics.NewCounter(`vmgateway_delete_series_refused_total`)

// Spacer spaces events across the gateway replicas that share it (ratelimit.Gate, through Redis): Space admits an
// event named key when none was admitted within interval, and otherwise returns the time left. An error leaves the
// decision to each replica alone.
type Spacer interface {
	Space(ctx context.Context, key string, interval time.Duration) (time.Duration, error)
}

// deleteGate remembers when each unit may delete again.
type deleteGate struct {
	interval time.Duration
	shared   Spacer
	mu       sync.Mutex
	next     map[unit]time.Time
	sweepAt  int
}

func newDeleteGate(interval time.Duration, shared Spacer) *deleteGate {
	return &deleteGate{interval: interval, shared: shared, next: map[unit]time.Time{}, sweepAt: minSweep}
}

// admit lets a delete of unit u go at now, or refuses it with the time left until the unit may delete again. The
// replica's own spacing is asked first, so a loop of deletes costs Redis one call an interval.
func (d *deleteGate) admit(ctx context.Context, u unit, t tenant.ID, e *enforce.Enforcer, now time.Time) error {
	if d.interval <= 0 {
		return nil
	}
	if left := d.claim(u, now); left > 0 {
		return d.refuse(t, e, left)
	}
	if d.shared == nil {
		return nil
	}
	fp := u.restriction
	left, err := d.shared.Space(ctx, "delete|"+t.String()+"|"+hex.EncodeToString(fp[:]), d.interval)
	if err != nil || left <= 0 {
		return nil
	}
	// Another replica deleted for the unit: this one waits as long.
	d.mu.Lock()
	d.next[u] = now.Add(left)
	d.mu.Unlock()
	return d.refuse(t, e, left)
}

// claim takes the unit's turn from now for the interval, or returns the time left of the turn another took.
func (d *deleteGate) claim(u unit, now time.Time) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if next, ok := d.next[u]; ok && now.Before(next) {
		return next.Sub(now)
	}
	if len(d.next) >= d.sweepAt {
		for k, next := range d.next {
			if !now.Before(next) {
				delete(d.next, k)
			}
		}
		d.sweepAt = max(minSweep, 2*len(d.next))
	}
	d.next[u] = now.Add(d.interval)
	return 0
}

func (d *deleteGate) refuse(t tenant.ID, e *enforce.Enforcer, left time.Duration) error {
	deletesRefused.Inc()
	return &deleteSpacedError{tenant: t, restriction: e, interval: d.interval, left: left}
}

// deleteSpacedError refuses a delete that came sooner than -deleteSeries.minInterval after its unit's last one.
type deleteSpacedError struct {
	tenant      tenant.ID
	restriction *enforce.Enforcer
	interval    time.Duration
	left        time.Duration
}

func (e *deleteSpacedError) Error() string {
	who := e.tenant.String()
	if e.restriction.Restricted() {
		who += " (tokens restricted to " + e.restriction.String() + ")"
	}
	return fmt.Sprintf("tenant %s deleted series less than -deleteSeries.minInterval=%s ago: a delete resets caches "+
		"VictoriaMetrics shares with every other team; delete again in %s, and give several match[] args to one delete",
		who, e.interval, e.left.Round(time.Second))
}

// HTTPStatus is 429: the client may delete again after Retry-After.
func (e *deleteSpacedError) HTTPStatus() int { return http.StatusTooManyRequests }

// RetryAfter is when the unit may delete again.
func (e *deleteSpacedError) RetryAfter() time.Duration { return e.left }
