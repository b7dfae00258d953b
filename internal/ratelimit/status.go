package ratelimit

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// StatusHandler serves the limits in force and every tenant's and key's usage against them as JSON: each figure
// with its source (datasource, local: this gateway's count, shared: the count in Redis) and its age. It shows
// every tenant's usage: serve it behind an auth key. ?tenant=a:p shows one tenant.
func (g *Gate) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			httperr.WriteStatus(w, http.StatusMethodNotAllowed, r.Method+" is not supported: use GET")
			return
		}
		var only *tenant.ID
		if s := r.URL.Query().Get("tenant"); s != "" {
			id, err := tenant.Parse(s)
			if err != nil {
				httperr.WriteStatus(w, http.StatusBadRequest, "tenant query arg: "+err.Error())
				return
			}
			only = &id
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.status(g.now(), only))
	})
}

type statusPage struct {
	Time       time.Time         `json:"time"`
	DryRun     bool              `json:"dry_run"`
	Datasource statusDatasource  `json:"datasource"`
	Redis      *statusRedis      `json:"redis,omitempty"`
	Defaults   []statusLimitSpec `json:"default_limits"`
	Usage      []statusEntry     `json:"usage"`
}

type statusDatasource struct {
	URL string `json:"url"`
	// LastRefresh is when the usage in force was measured; before the first success, when the gateway started.
	LastRefresh time.Time `json:"last_refresh"`
	AgeSeconds  float64   `json:"age_seconds"`
	Fetched     bool      `json:"fetched"`
	Stale       bool      `json:"stale"`
}

type statusRedis struct {
	URL string `json:"url"`
	Up  bool   `json:"up"`
}

type statusLimitSpec struct {
	Type       string `json:"type"`
	Resolution string `json:"resolution,omitempty"`
	Value      uint64 `json:"value"`
	Key        string `json:"key,omitempty"`
}

// statusEntry is one tenant, or one value of a key within a tenant, with its limits.
type statusEntry struct {
	id       seriesKey
	Tenant   string        `json:"tenant"`
	Key      string        `json:"key,omitempty"`
	KeyValue *string       `json:"key_value,omitempty"`
	Limits   []statusLimit `json:"limits"`
}

type statusLimit struct {
	statusLimitSpec
	// Scope says whose limit applies: the tenant's own or the default.
	Scope string `json:"scope"`
	// Usage is the largest figure, the one enforced, and Source where it came from.
	Usage      float64       `json:"usage"`
	Remaining  float64       `json:"remaining"`
	Source     string        `json:"source"`
	Datasource *statusFigure `json:"datasource,omitempty"`
	Local      *statusFigure `json:"local,omitempty"`
	Shared     *statusFigure `json:"shared,omitempty"`
}

type statusFigure struct {
	Value      float64 `json:"value"`
	AgeSeconds float64 `json:"age_seconds"`
	// Stale marks a shared count too old to describe the present; it does not count towards Usage.
	Stale bool `json:"stale,omitempty"`
}

func spec(l Limit) statusLimitSpec {
	return statusLimitSpec{Type: l.Type.String(), Resolution: l.Resolution.String(), Value: l.Value, Key: l.Key.String()}
}

func (g *Gate) status(now time.Time, only *tenant.ID) statusPage {
	s := g.snap.Load()
	p := statusPage{
		Time:   now.UTC(),
		DryRun: g.dryRun,
		Datasource: statusDatasource{URL: g.ds.URL(), LastRefresh: s.fetchedAt.UTC(), Fetched: s.fetched, Stale: s.stale,
			AgeSeconds: roundSeconds(now.Sub(s.fetchedAt))},
		Defaults: []statusLimitSpec{},
		Usage:    []statusEntry{},
	}
	if g.shared != nil {
		p.Redis = &statusRedis{URL: g.shared.shown, Up: g.shared.up.Load()}
	}
	for _, l := range s.limits.defaults {
		p.Defaults = append(p.Defaults, spec(l))
	}
	dsAge := &statusFigure{AgeSeconds: roundSeconds(now.Sub(s.fetchedAt))}
	if s.stale && !g.failClosed {
		dsAge = nil // fail open: the datasource's figures do not count
	}
	entries := map[seriesKey]*statusEntry{}
	entry := func(k seriesKey) *statusEntry {
		if e := entries[k]; e != nil {
			return e
		}
		e := &statusEntry{id: k, Tenant: k.tenant.String(), Limits: []statusLimit{}}
		if k.key != 0 {
			e.Key = k.key.Key().String()
			v := k.value
			e.KeyValue = &v
		}
		entries[k] = e
		return e
	}
	sec := now.Unix()
	// The limits each series counts against, with its figures.
	addCounted := func(k seriesKey, st *tenantState, ser *series) {
		for j := range st.counted {
			cs := &st.counted[j]
			if cs.keyID != k.key {
				continue
			}
			for w := range cs.limits {
				a := cs.limits[w]
				if a.limit.Type == 0 {
					continue
				}
				sl := statusLimit{statusLimitSpec: spec(a.limit), Scope: scope(a.limit)}
				if k.key == 0 && dsAge != nil {
					sl.Datasource = &statusFigure{Value: a.usage, AgeSeconds: dsAge.AgeSeconds}
				}
				if ser != nil {
					sl.Local = &statusFigure{Value: float64(ser.counts.count(w, sec))}
					// While Redis is down the shared counts decide nothing: they are not shown.
					if g.shared != nil && g.shared.up.Load() {
						if n, at, ok := ser.lease.usage(w, sec); ok {
							sl.Shared = &statusFigure{Value: float64(n), AgeSeconds: roundSeconds(now.Sub(at)), Stale: now.Sub(at) > sharedFresh}
						}
					}
				}
				sl.settle()
				e := entry(k)
				e.Limits = append(e.Limits, sl)
			}
		}
	}
	// Tenants the snapshot knows: every limit, counted or not.
	for id, st := range s.tenants {
		if only != nil && id != *only {
			continue
		}
		k := seriesKey{tenant: id}
		addCounted(k, st, g.counters.lookup(k))
		for i := range st.applied {
			for _, a := range st.applied[i] {
				if a.limit.counted() {
					continue
				}
				sl := statusLimit{statusLimitSpec: spec(a.limit), Scope: scope(a.limit)}
				if dsAge != nil {
					sl.Datasource = &statusFigure{Value: a.usage, AgeSeconds: dsAge.AgeSeconds}
				}
				sl.settle()
				e := entry(k)
				e.Limits = append(e.Limits, sl)
			}
		}
	}
	// Series the gate counts for keys, and for tenants the snapshot does not know.
	g.counters.each(func(k seriesKey, ser *series) {
		if only != nil && k.tenant != *only {
			return
		}
		if _, known := s.tenants[k.tenant]; known && k.key == 0 {
			return
		}
		addCounted(k, s.state(k.tenant), ser)
	})
	for _, e := range entries {
		if len(e.Limits) > 0 {
			p.Usage = append(p.Usage, *e)
		}
	}
	sort.Slice(p.Usage, func(i, j int) bool {
		a, b := p.Usage[i].id, p.Usage[j].id
		if a.tenant != b.tenant {
			return a.tenant.AccountID < b.tenant.AccountID || a.tenant.AccountID == b.tenant.AccountID && a.tenant.ProjectID < b.tenant.ProjectID
		}
		if a.key != b.key {
			return p.Usage[i].Key < p.Usage[j].Key
		}
		return a.value < b.value
	})
	return p
}

func scope(l Limit) string {
	if l.HasTenant {
		return "tenant"
	}
	return "default"
}

// settle picks the largest figure, the one the gate enforces.
func (sl *statusLimit) settle() {
	for _, c := range []struct {
		f      *statusFigure
		source string
	}{{sl.Datasource, fromDatasource}, {sl.Local, fromLocal}, {sl.Shared, fromShared}} {
		if c.f != nil && !c.f.Stale && (sl.Source == "" || c.f.Value > sl.Usage) {
			sl.Usage, sl.Source = c.f.Value, c.source
		}
	}
	sl.Remaining = math.Max(float64(sl.Value)-sl.Usage, 0)
}

func roundSeconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }
