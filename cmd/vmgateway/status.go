package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/ratelimit"
	"github.com/vmgateway/vmgateway/internal/server"
)

// nearLimit is the share of a limit from which a tenant is listed on /status.
const nearLimit = 0.8

// statusPage is what /status shows.
type statusPage struct {
	Version      string
	Now, Started time.Time
	Uptime       string
	Mode         string
	AuthOn       bool
	Backends     []gateway.BackendStatus
	KeySources   []auth.KeySource
	RateLimit    *rateLimitView
	RateLimitErr string
	Refusals     []gateway.RefusalCount
	NearLimitPct int
	// Private is set when the page needs a key or basic auth. An open page (as /metrics is by default) is read by
	// anyone who reaches the gateway: it shows neither the tenants near a limit, which /ratelimit/status serves
	// only behind a key, nor the refusals' messages, which quote other teams' queries, labels and tenants.
	Private bool
}

// rateLimitView is the part of the rate limiter's status (its JSON status API) that the page shows.
type rateLimitView struct {
	DryRun     bool `json:"dry_run"`
	Datasource struct {
		URL        string  `json:"url"`
		AgeSeconds float64 `json:"age_seconds"`
		Fetched    bool    `json:"fetched"`
		Stale      bool    `json:"stale"`
	} `json:"datasource"`
	Redis *struct {
		URL string `json:"url"`
		Up  bool   `json:"up"`
	} `json:"redis"`
	Usage []struct {
		Tenant   string  `json:"tenant"`
		Key      string  `json:"key"`
		KeyValue *string `json:"key_value"`
		Limits   []struct {
			Type       string  `json:"type"`
			Resolution string  `json:"resolution"`
			Value      float64 `json:"value"`
			Usage      float64 `json:"usage"`
			Source     string  `json:"source"`
		} `json:"limits"`
	} `json:"usage"`
	// Near are the tenants' limits at or past nearLimit, filled from Usage.
	Near []nearRow `json:"-"`
}

type nearRow struct {
	Tenant, Key, Limit, Source string
	Usage, Value               float64
	Pct                        int // of the limit, capped at 100 for the bar
	Over                       bool
}

// rateLimitState reads the rate limiter's state through its JSON status API, the one coupling of the page to it.
func rateLimitState(g *ratelimit.Gate) (*rateLimitView, error) {
	rec := httptest.NewRecorder()
	g.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ratelimit/status", nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("the rate limiter's status answered %d: %s", rec.Code, rec.Body.String())
	}
	v := &rateLimitView{}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		return nil, fmt.Errorf("cannot read the rate limiter's status: %w", err)
	}
	for _, u := range v.Usage {
		key := ""
		if u.Key != "" && u.KeyValue != nil {
			key = u.Key + "=" + *u.KeyValue
		}
		for _, l := range u.Limits {
			if l.Value <= 0 || l.Usage/l.Value < nearLimit {
				continue
			}
			name := l.Type
			if l.Resolution != "" {
				name += " per " + l.Resolution
			}
			v.Near = append(v.Near, nearRow{Tenant: u.Tenant, Key: key, Limit: name, Source: l.Source, Usage: l.Usage, Value: l.Value,
				Pct: int(math.Min(100, math.Round(100*l.Usage/l.Value))), Over: l.Usage >= l.Value})
		}
	}
	return v, nil
}

func (a *app) statusPage(now time.Time, private bool) statusPage {
	p := statusPage{Version: version, Now: now.UTC(), Started: startTime.UTC(), Uptime: now.Sub(startTime).Round(time.Second).String(),
		Mode: "single-node", AuthOn: a.verifier != nil, Backends: a.gw.Backends(), Refusals: a.gw.Refusals(),
		NearLimitPct: int(nearLimit * 100), Private: private}
	if *clusterMode {
		p.Mode = "cluster"
	}
	if a.verifier != nil {
		p.KeySources = a.verifier.KeySources()
	}
	if a.gate != nil {
		rl, err := rateLimitState(a.gate)
		if err != nil {
			p.RateLimitErr = err.Error()
		}
		p.RateLimit = rl
	}
	if !private {
		if p.RateLimit != nil {
			p.RateLimit.Near = nil
		}
		for i := range p.Refusals {
			p.Refusals[i].LastMessage = ""
		}
	}
	return p
}

func (a *app) statusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			httperr.WriteStatus(w, http.StatusMethodNotAllowed, r.Method+" is not supported: use GET")
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		// The page runs no script and loads nothing: a strict policy costs nothing.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		private := metricsAuthKey.Get() != "" || *httpAuthUsername != ""
		if err := statusTemplate.Execute(w, a.statusPage(time.Now(), private)); err != nil {
			slog.Error("cannot render /status", "err", err)
		}
	})
}

func (a *app) statusEndpoint() server.Endpoint {
	return server.Endpoint{Path: "/status", AuthKey: metricsAuthKey.Get(), AuthKeyFlag: "-metricsAuthKey", Handler: a.statusHandler(), Open: true}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": ago,
	"seconds": func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
	},
	"num": func(f float64) string { return fmt.Sprintf("%.0f", f) },
}).Parse(statusHTML))

const statusHTML = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vmgateway status</title>
<style>
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;font-size:14px;margin:0;color:#212529;background:#fff}
header{background:#110f0f;color:#fff;padding:10px 20px}header h1{font-size:18px;margin:0;display:inline}header span{margin-left:20px;color:#ccc}
main{padding:10px 20px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
table{border-collapse:collapse;width:100%;margin-bottom:8px}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #dee2e6;vertical-align:top}
th{background:#f8f9fa}.badge{display:inline-block;padding:2px 7px;border-radius:4px;color:#fff;font-size:12px;font-weight:600}
.up{background:#198754}.down{background:#dc3545}.warn{background:#fd7e14}.muted{color:#6c757d}
.alert{padding:10px 14px;border-radius:4px;margin:10px 0}.alert-danger{background:#f8d7da;color:#842029;border:1px solid #f5c2c7}
.bar{width:260px;height:16px;background:#e9ecef;border-radius:3px;overflow:hidden;display:inline-block;vertical-align:middle}
.fill{height:100%;background:#fd7e14}.fill.over{background:#dc3545}code{font-size:13px}.nw{white-space:nowrap}
</style></head><body>
<header><h1>vmgateway</h1><span>version {{.Version}}</span><span>up {{.Uptime}} (since {{.Started.Format "2006-01-02 15:04:05 UTC"}})</span><span>{{.Mode}}</span></header>
<main>
{{if not .AuthOn}}<div class="alert alert-danger" id="auth-off"><b>Auth is off</b> (-enable.auth is not set): the gateway forwards any request from anyone, with access to every tenant.</div>{{end}}
<h2>Upstreams</h2>
<table id="upstreams"><tr><th>Kind</th><th>Backend</th><th>State</th><th>In flight</th></tr>
{{range .Backends}}<tr><td>{{.Kind}}</td><td><code>{{.URL}}</code></td><td>{{if .Broken}}<span class="badge down">broken</span> <span class="muted">retried {{if $.Now.Before .BrokenUntil}}at {{.BrokenUntil.UTC.Format "15:04:05 UTC"}}{{else}}with the next request{{end}}</span>{{else}}<span class="badge up">up</span>{{end}}</td><td>{{.InFlight}}</td></tr>
{{end}}</table>
{{if .AuthOn}}<h2>Key sources</h2>
<table id="keys"><tr><th>Source</th><th>Keys</th><th>Last successful read</th><th>Last error</th></tr>
{{range .KeySources}}<tr><td><code>{{.Source}}</code></td><td>{{len .Keys}}{{range .Keys}}<br><code>{{.}}</code>{{end}}</td><td>{{ago $.Now .LastSuccess}}</td><td>{{if .Error}}<span class="badge down">error</span> {{.Error}}{{else}}<span class="muted">none</span>{{end}}</td></tr>
{{end}}</table>{{end}}
<h2>Rate limits</h2>
{{if .RateLimitErr}}<p class="alert alert-danger">{{.RateLimitErr}}</p>{{end}}
{{with .RateLimit}}<p id="ratelimit">Usage snapshot from <code>{{.Datasource.URL}}</code>: {{if .Datasource.Fetched}}{{seconds .Datasource.AgeSeconds}} old{{else}}not fetched yet{{end}}
{{if .Datasource.Stale}}<span class="badge down">stale</span>{{else}}<span class="badge up">fresh</span>{{end}}
{{with .Redis}} · Redis <code>{{.URL}}</code> {{if .Up}}<span class="badge up">up</span>{{else}}<span class="badge down">down</span>{{end}}{{end}}
{{if .DryRun}} · <span class="badge warn">dry run</span>{{end}}</p>
<table id="near"><tr><th>Tenant</th><th>Key</th><th>Limit</th><th>Usage</th><th></th></tr>
{{range .Near}}<tr class="{{if .Over}}over{{else}}near{{end}}"><td>{{.Tenant}}</td><td>{{.Key}}</td><td>{{.Limit}}</td><td><div class="bar"><div class="fill{{if .Over}} over{{end}}" style="width:{{.Pct}}%"></div></div> {{num .Usage}} / {{num .Value}}</td><td>{{if .Over}}<span class="badge down">over</span>{{else}}<span class="badge warn">near</span>{{end}} <span class="muted">{{.Source}}</span></td></tr>
{{else}}<tr><td colspan="5" class="muted">{{if $.Private}}No tenant is at {{$.NearLimitPct}}% of a limit or more.{{else}}Tenants near a limit are shown when /status is protected: set -metricsAuthKey or -httpAuth.*.{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">Rate limiting is off.</p>{{end}}
<h2>Refusals by reason</h2>
<table id="refusals"><tr><th>Status</th><th>Reason</th><th>Count</th><th>Last</th><th>Last message</th></tr>
{{range .Refusals}}<tr><td>{{.Status}}</td><td class="nw">{{.Reason}}</td><td>{{.Count}}</td><td class="nw">{{ago $.Now .Last}}</td><td>{{if $.Private}}{{.LastMessage}}{{else}}<span class="muted">shown when /status is protected (-metricsAuthKey or -httpAuth.*)</span>{{end}}</td></tr>
{{else}}<tr><td colspan="5" class="muted">No request refused since the start.</td></tr>
{{end}}</table>
<p class="muted">Rendered at {{.Now.Format "2006-01-02 15:04:05 UTC"}}. Details: <code>/metrics</code>{{if .RateLimit}}, <code>/ratelimit/status</code>{{end}}.</p>
</main></body></html>
`
