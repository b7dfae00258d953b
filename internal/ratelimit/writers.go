package ratelimit

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
)

// The usage the gateway reads are series in the datasource's store, and a token whose writes land in that store
// (single-node behind the gateway and the datasource one VictoriaMetrics, as in the getting-started setup; a cluster
// whose own metrics are kept in a tenant that tokens write to) could write vm_tenant_* series itself: a sample of a
// billion rows set every team's usage of the hour (an attacker's review: every other team's writes got 429 for the
// hour), and a negative active_timeseries gauge cancelled its own. Every series such a token writes carries its
// extra labels, which VictoriaMetrics' own per-tenant series never do: the usage queries leave out the series that
// carry a label name any write token was seen with. A name is added when the first write of a token with it is
// admitted, before the write is forwarded, and with Redis the replicas share the names at every refresh: a replica
// that takes no writes (or has just started) leaves out what the others have seen (an attacker's review poisoned the
// usage through one replica and was refused through another).

// maxWriterLabels bounds the names left out; a token issuer uses a handful (team, env, ...).
const maxWriterLabels = 64

// writerLabels is the set of label names write tokens set, read by every usage query.
type writerLabels struct {
	names atomic.Pointer[[]string] // sorted; never written once stored
	mu    sync.Mutex
	// skip are the names never left out: the tenant and scrape labels every usage series has, and those the
	// operator's -ratelimit.extraLabels selects on (leaving them out would leave no usage at all).
	skip map[string]bool
	full bool // maxWriterLabels reached, said once
}

func newWriterLabels(extraFilters string) *writerLabels {
	// job and instance are on every scraped series, VictoriaMetrics' own usage too: left out, they would leave none.
	w := &writerLabels{skip: map[string]bool{"accountID": true, "projectID": true, "__name__": true, "job": true, "instance": true}}
	if extraFilters != "" {
		// parseExtraLabels has checked them.
		if me, err := metricsql.Parse("{" + extraFilters + "}"); err == nil {
			metricsql.VisitAll(me, func(x metricsql.Expr) {
				if m, ok := x.(*metricsql.MetricExpr); ok {
					for _, lfs := range m.LabelFilterss {
						for _, lf := range lfs {
							w.skip[lf.Label] = true
						}
					}
				}
			})
		}
	}
	w.names.Store(&[]string{})
	return w
}

// seen adds the label names of a write token's restriction: a lookup per name, and the lock only for a new one.
func (w *writerLabels) seen(a *auth.Access) {
	if a.Enforcer.NumLabels() == 0 {
		return
	}
	known := *w.names.Load()
	for _, l := range a.Enforcer.Labels() {
		if _, ok := slices.BinarySearch(known, l.Name); ok || w.skip[l.Name] {
			continue
		}
		w.add(l.Name)
	}
}

func (w *writerLabels) add(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := *w.names.Load()
	i, ok := slices.BinarySearch(cur, name)
	if ok {
		return
	}
	if len(cur) >= maxWriterLabels {
		if !w.full {
			w.full = true
			slog.Warn("rate limits: write tokens set more label names than the usage queries leave out; series written through "+
				"tokens with the others could count as usage; give them with -ratelimit.extraLabels (name=\"\")",
				"limit", maxWriterLabels, "name", name)
		}
		return
	}
	next := slices.Insert(slices.Clone(cur), i, name)
	w.names.Store(&next)
}

// filters renders the names as label filters for usageQuery: name="" selects the series without the label.
func (w *writerLabels) filters() string {
	names := *w.names.Load()
	var sb strings.Builder
	for i, n := range names {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(n + `=""`)
	}
	return sb.String()
}

// share exchanges the names with the other replicas through the store, if any; a name from there is added like a
// name seen, if it could be an extra label's. Without the store, or while it fails, each replica has what it saw.
func (w *writerLabels) share(ctx context.Context, store counterStore) {
	if store == nil {
		return
	}
	names, err := store.shareNames(ctx, "writer_labels", *w.names.Load())
	if err != nil {
		return // the store counts and logs its own failures
	}
	known := *w.names.Load()
	for _, n := range names {
		if _, ok := slices.BinarySearch(known, n); ok || w.skip[n] || enforce.CheckLabelName(n) != nil {
			continue
		}
		w.add(n)
	}
}
