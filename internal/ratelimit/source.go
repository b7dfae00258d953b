package ratelimit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const (
	// fetchTimeout bounds one download of a limits config given as a URL.
	fetchTimeout = 10 * time.Second
	// maxConfigSize keeps a wrong URL (a big page, an endless stream) from filling memory.
	maxConfigSize = 16 << 20
)

var fetchClient = &http.Client{Timeout: fetchTimeout}

// ValidateFile reads and checks a limits config, a file path or an http(s) URL, and returns every problem in it,
// each with its line; nil means the config is valid. It backs the flag that validates a config and exits.
func ValidateFile(pathOrURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	data, err := ReadConfig(ctx, pathOrURL)
	if err != nil {
		return err
	}
	_, err = parseLimits(data, ShowSource(pathOrURL))
	return err
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// ShowSource names a config in messages: a URL without credentials or query args.
func ShowSource(s string) string {
	if !isURL(s) {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// ReadConfig reads a config given as a file path or an http(s) URL, bounded in size and time (the limits configs
// of -ratelimit.config and -querylimits.config).
func ReadConfig(ctx context.Context, pathOrURL string) ([]byte, error) {
	if pathOrURL == "" {
		return nil, fmt.Errorf("no limits config: set -ratelimit.config to a file path or an http(s) URL")
	}
	if !isURL(pathOrURL) {
		data, err := os.ReadFile(pathOrURL)
		if err != nil {
			return nil, fmt.Errorf("cannot read the limits config: %w", err)
		}
		return data, nil
	}
	shown := ShowSource(pathOrURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pathOrURL, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch the limits config from %s: bad URL", shown)
	}
	resp, err := fetchClient.Do(req)
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err // the url.Error would repeat the URL with its credentials
		}
		return nil, fmt.Errorf("cannot fetch the limits config from %s: %w", shown, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot fetch the limits config from %s: unexpected status %s", shown, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot fetch the limits config from %s: %w", shown, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("the limits config at %s is larger than %d bytes", shown, maxConfigSize)
	}
	return data, nil
}
