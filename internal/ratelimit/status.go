package ratelimit

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"time"

	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
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
	// Lifted are the defaults a tenant is spared (value: unlimited), which its usage entries then lack.
	Lifted []statusLift  `json:"lifted_defaults"`
	Usage  []statusEntry `json:"usage"`
}

type statusLift struct {
	Tenant     string `json:"tenant"`
	Type       string `json:"type"`
	Resolution string `json:"resolution,omitempty"`
	Key        string `json:"key,omitempty"`
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
	URL       string `json:"url"`
	KeyPrefix string `json:"keyPrefix"`
	Up        bool   `json:"up"`
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
	// Held is, for a cost limit, what the caller's queries in flight on this gateway are expected to cost: a query
	// goes only while Usage and Held leave room.
	Held *float64 `json:"held,omitempty"`
}

type statusFigure struct {
	Value      float64 `json:"value"`
	AgeSeconds float64 `json:"age_seconds"`
	// Stale marks a shared count too old to describe the present; it does not count towards Usage.
	Stale bool `json:"stale,omitempty"`
}

func spec(l limitfile.Limit) statusLimitSpec {
	return statusLimitSpec{Type: l.Type.String(), Resolution: l.Resolution.String(), Value: l.Value, Key: l.Key.String()}
}

func (g *Gate) status(now time.Time, only *tenant.ID) statusPage {
	s := g.snap.Load()
	dsAge := roundSeconds(now.Sub(s.fetchedAt))
	p := statusPage{
		Time:   now.UTC(),
		DryRun: g.dryRun,
		Datasource: statusDatasource{URL: g.ds.URL(), LastRefresh: s.fetchedAt.UTC(), Fetched: s.fetched, Stale: s.stale,
			AgeSeconds: dsAge},
		Defaults: []statusLimitSpec{},
		Lifted:   []statusLift{},
		Usage:    []statusEntry{},
	}
	if g.tally.store != nil {
		r := g.tally.store.status()
		p.Redis = &r
	}
	for _, l := range s.limits.Defaults() {
		p.Defaults = append(p.Defaults, spec(l))
	}
	for _, l := range s.limits.Lifts() {
		if only == nil || *only == l.Tenant {
			p.Lifted = append(p.Lifted, statusLift{Tenant: l.Tenant.String(), Type: l.Type.String(), Resolution: l.Resolution.String(), Key: l.Key.String()})
		}
	}
	for _, r := range g.report(s, now, only) {
		e := statusEntry{id: r.id, Tenant: r.id.tenant.String(), Limits: []statusLimit{}}
		if r.id.key != 0 {
			e.Key = r.id.key.Key().String()
			v := r.id.value
			e.KeyValue = &v
		}
		for _, u := range r.limits {
			e.Limits = append(e.Limits, statusLimitOf(u, dsAge, now))
		}
		p.Usage = append(p.Usage, e)
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

func statusLimitOf(u limitUsage, dsAge float64, now time.Time) statusLimit {
	sl := statusLimit{statusLimitSpec: spec(u.limit), Scope: scope(u.limit)}
	if u.datasource != nil {
		sl.Datasource = &statusFigure{Value: *u.datasource, AgeSeconds: dsAge}
	}
	if u.limit.Type.Cost() {
		held := float64(u.held)
		sl.Held = &held
	}
	if u.counted {
		sl.Local = &statusFigure{Value: float64(u.local)}
		// While Redis is down the shared counts decide nothing: they are not shown.
		if u.shared.ok {
			sl.Shared = &statusFigure{Value: float64(u.shared.n), AgeSeconds: roundSeconds(now.Sub(u.shared.at)), Stale: !u.shared.fresh(now)}
		}
	}
	sl.settle()
	return sl
}

func scope(l limitfile.Limit) string {
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
