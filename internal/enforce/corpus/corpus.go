// Package corpus is the adversarial read corpus shared by the enforcer's tests and the gateway's end-to-end
// tests: three teams' data, the strings only other teams' series carry, and requests a hostile dev client sends.
package corpus

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// Teams are the teams whose data TeamData writes; the requests are sent for a team="dev" token.
var Teams = []string{"dev", "ops", "sec"}

// TeamData is the three teams' data in Prometheus text format with timestamps. Every team has a metric, a label
// name and values that only it uses, so a leak of any of them shows in a response. orphan_metric has no team
// label at all: no restricted token may see it. It makes SeriesCount series.
func TeamData(now time.Time) string {
	var sb strings.Builder
	for _, t := range Teams {
		for _, ago := range []time.Duration{10 * time.Minute, 5 * time.Minute, time.Minute} {
			ms := now.Add(-ago).UnixMilli()
			fmt.Fprintf(&sb, "shared_requests_total{team=%q,job=\"api\",instance=\"%s-host\"} %d %d\n", t, t, 100-ago/time.Minute, ms)
			fmt.Fprintf(&sb, "%s_only_metric_total{team=%q,instance=\"%s-host\",%s_secret_label=\"%s-s3cr3t\"} 7 %d\n", t, t, t, t, t, ms)
			fmt.Fprintf(&sb, "metric.with.dots{team=%q,instance=\"%s-host\"} 3 %d\n", t, t, ms)
			fmt.Fprintf(&sb, "node:cpu:rate5m{team=%q,instance=\"%s-host\"} 0.5 %d\n", t, t, ms)
		}
	}
	fmt.Fprintf(&sb, "orphan_metric{instance=\"none-host\"} 1 %d\n", now.Add(-time.Minute).UnixMilli())
	return sb.String()
}

// SeriesCount is the number of series TeamData writes.
const SeriesCount = 13

// Forbidden are strings that only the other teams' (and the team-less) series carry.
var Forbidden = []string{
	"ops_only_metric", "sec_only_metric", "ops_secret_label", "sec_secret_label", "ops-s3cr3t", "sec-s3cr3t",
	"ops-host", "sec-host", `"ops"`, `"sec"`, `team="ops"`, `team="sec"`, ",ops,", ",sec,", "orphan_metric", "none-host",
}

// Entry is one request of testdata/adversarial.json, as a client sends it to the gateway.
type Entry struct {
	Name   string `json:"name"`
	Method string `json:"method"`
	Path   string `json:"path"` // as sent, still escaped
	// URL args in order (repeats kept), or RawQuery verbatim.
	URL      [][2]string `json:"url"`
	RawQuery *string     `json:"rawQuery"`
	// Form args sent as an application/x-www-form-urlencoded body; Body with ContentType otherwise.
	Form        [][2]string `json:"form"`
	Body        *string     `json:"body"`
	ContentType string      `json:"contentType"`
	// Want: "ok" (forwarded, VictoriaMetrics answers 2xx), "refused" (the gateway answers 4xx), "any".
	Want string `json:"want"`
	// DevMarker must be in a 2xx answer: proof that the request returned the team's own data.
	DevMarker string `json:"devMarker"`
	// Allow lists forbidden strings this request may see because it puts them there itself (absent() echoes).
	Allow []string `json:"allow"`
}

// Load returns the corpus, testdata/adversarial.json at the module's top level: the enforcer's tests and the
// gateway's end-to-end tests send the same requests.
func Load() ([]Entry, error) {
	data, path, err := vmtest.ReadFixture("adversarial.json")
	if err != nil {
		return nil, err
	}
	var c []Entry
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Queries returns the hostile queries of testdata/queries.txt: the seeds of every fuzzer that takes a MetricsQL
// query, since what broke one parser or rewriter is what the next one should see first.
func Queries() ([]string, error) {
	data, path, err := vmtest.ReadFixture("queries.txt")
	if err != nil {
		return nil, err
	}
	var qs []string
	for i, l := range strings.Split(string(data), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		q, err := strconv.Unquote(l)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: want a Go-quoted string: %w", path, i+1, err)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

// Request builds the entry's request against base (e.g. http://127.0.0.1:8431).
func (c Entry) Request(base string) (*http.Request, error) {
	raw := encodeArgs(c.URL)
	if c.RawQuery != nil {
		raw = *c.RawQuery
	}
	var body io.Reader
	ctype := c.ContentType
	switch {
	case c.Body != nil:
		body = strings.NewReader(*c.Body)
	case c.Form != nil:
		body = strings.NewReader(encodeArgs(c.Form))
		ctype = "application/x-www-form-urlencoded"
	}
	target := base + c.Path
	if raw != "" {
		target += "?" + raw
	}
	r, err := http.NewRequest(c.Method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Name, err)
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	return r, nil
}

// Leaks returns the forbidden strings a 2xx answer to the entry carries.
func (c Entry) Leaks(body string) []string {
	var leaks []string
	for _, f := range Forbidden {
		if strings.Contains(body, f) && !slices.Contains(c.Allow, f) {
			leaks = append(leaks, f)
		}
	}
	return leaks
}

func encodeArgs(kv [][2]string) string {
	parts := make([]string, 0, len(kv))
	for _, p := range kv {
		parts = append(parts, url.QueryEscape(p[0])+"="+url.QueryEscape(p[1]))
	}
	return strings.Join(parts, "&")
}
