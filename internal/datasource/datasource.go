// Package datasource is a small client for the Prometheus instant-query API (/api/v1/query) of VictoriaMetrics
// or any Prometheus-compatible datasource, with the auth and TLS options of the enterprise -datasource.* flags.
package datasource

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/redact"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// Config is what the -datasource.* flags set.
type Config struct {
	// URL is the datasource base URL, e.g. http://vmsingle:8428 or http://vmselect:8481/select/0/prometheus;
	// /api/v1/query is appended to its path.
	URL string

	BasicAuthUsername     string
	BasicAuthPassword     string
	BasicAuthUsernameFile string
	BasicAuthPasswordFile string

	BearerToken     string
	BearerTokenFile string

	// Headers are extra request headers in the -datasource.headers format: 'name1:value1^^name2:value2'.
	Headers string

	// TLS is what the -datasource.tls* flags say.
	TLS tlsclient.Options

	// Timeout bounds one query, from dialing to the end of the response body. Zero means 30s.
	Timeout time.Duration
	// QueryStep is sent as the `step` arg of every query when positive: VictoriaMetrics uses it as the lookback
	// window of selectors without one.
	QueryStep time.Duration
}

// Client runs instant queries against one datasource. It is safe for concurrent use.
type Client struct {
	queryURL *url.URL
	// shownURL is queryURL without credentials or query args, for error messages and logs.
	shownURL string
	hc       *http.Client
	auth     *authorizer
	headers  [][2]string
	step     time.Duration
}

// Sample is one element of an instant vector.
type Sample struct {
	Labels    map[string]string
	Value     float64
	Timestamp time.Time
}

// maxErrorBody caps how much of an error response ends up in an error message.
const maxErrorBody = 1024

// New checks cfg and returns a client. Credential files are read here once, so a typo fails at start,
// and again on every query, so rotated secrets are picked up.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("datasource URL is empty: set -datasource.url, e.g. http://victoria-metrics:8428")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cannot parse -datasource.url: %w", redact.URLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("-datasource.url %q: scheme must be http or https, got %q", redact.URL(u), u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("-datasource.url %q has no host", redact.URL(u))
	}
	a, err := newAuthorizer(cfg, u)
	if err != nil {
		return nil, err
	}
	headers, err := parseHeaders(cfg.Headers)
	if err != nil {
		return nil, err
	}
	tr, err := tlsclient.NewTransport("datasource", cfg.TLS, 0, tlsclient.DefaultDialTimeout)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	qu := *u
	qu.User = nil
	qu.Path = strings.TrimSuffix(qu.Path, "/") + "/api/v1/query"
	qu.RawPath = ""
	return &Client{
		queryURL: &qu,
		shownURL: redact.URL(&qu),
		hc:       &http.Client{Transport: tr, Timeout: timeout},
		auth:     a,
		headers:  headers,
		step:     cfg.QueryStep,
	}, nil
}

// URL returns the query URL without credentials or query args, as error messages show it.
func (c *Client) URL() string { return c.shownURL }

// Query runs an instant query evaluated at ts and returns its vector. A result of another type is an error.
func (c *Client) Query(ctx context.Context, query string, ts time.Time) ([]Sample, error) {
	samples, err := c.query(ctx, query, ts)
	if err != nil {
		return nil, fmt.Errorf("query %q to %s: %w", query, c.shownURL, err)
	}
	return samples, nil
}

func (c *Client) query(ctx context.Context, query string, ts time.Time) ([]Sample, error) {
	u := *c.queryURL
	args := u.Query()
	args.Set("query", query)
	args.Set("time", strconv.FormatFloat(float64(ts.UnixMilli())/1e3, 'f', -1, 64))
	if c.step > 0 {
		args.Set("step", strconv.FormatFloat(c.step.Seconds(), 'f', -1, 64))
	}
	u.RawQuery = args.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range c.headers {
		req.Header.Set(h[0], h[1])
	}
	if err := c.auth.set(req); err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, redact.URLError(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cannot read response body: %w", err)
	}
	return parseVector(body)
}

// statusError names the status and what the datasource said about it: the `error` field of a Prometheus API
// error body, or the start of the body as text.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e struct {
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		return fmt.Errorf("unexpected status %s", resp.Status)
	}
	return fmt.Errorf("unexpected status %s: %s", resp.Status, msg)
}

type apiResponse struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string  `json:"metric"`
			Value  [2]json.RawMessage `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func parseVector(body []byte) ([]Sample, error) {
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("cannot parse response as Prometheus API JSON: %w; body starts with %q", err, head(body))
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("response status is %q, not \"success\": %s", r.Status, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("want a result of type vector, got %q", r.Data.ResultType)
	}
	samples := make([]Sample, 0, len(r.Data.Result))
	for i, res := range r.Data.Result {
		var ts float64
		if err := json.Unmarshal(res.Value[0], &ts); err != nil {
			return nil, fmt.Errorf("result[%d]: cannot parse timestamp %s: %w", i, res.Value[0], err)
		}
		var s string
		if err := json.Unmarshal(res.Value[1], &s); err != nil {
			return nil, fmt.Errorf("result[%d]: want the value as a JSON string, got %s", i, res.Value[1])
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("result[%d]: cannot parse value %q: %w", i, s, err)
		}
		sec, frac := math.Modf(ts)
		samples = append(samples, Sample{
			Labels:    res.Metric,
			Value:     v,
			Timestamp: time.Unix(int64(sec), int64(math.Round(frac*1e3))*1e6),
		})
	}
	return samples, nil
}

func head(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// parseHeaders reads 'name1:value1^^name2:value2'.
func parseHeaders(s string) ([][2]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var hs [][2]string
	for _, item := range strings.Split(s, "^^") {
		name, value, ok := strings.Cut(item, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("-datasource.headers: cannot parse %q: want 'name:value', with '^^' between headers", item)
		}
		if !validHeaderName(name) {
			return nil, fmt.Errorf("-datasource.headers: %q is not a valid HTTP header name", name)
		}
		hs = append(hs, [2]string{name, strings.TrimSpace(value)})
	}
	return hs, nil
}

func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
