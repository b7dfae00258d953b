// Package confsource reads a config that the operator gives as a file path or an http(s) URL: the rate limits
// (-ratelimit.config) and the access policies (-auth.policyFile) are reloaded the same way.
package confsource

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/redact"
)

const (
	// FetchTimeout bounds one read of a config given as a URL.
	FetchTimeout = 10 * time.Second
	// maxSize keeps a wrong URL (a big page, an endless stream) from filling memory.
	maxSize = 16 << 20
)

var client = &http.Client{Timeout: FetchTimeout}

// IsURL reports whether s names a config by http(s) URL rather than by file path.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// Show names a config in messages and logs: a URL without credentials, query args or fragment.
func Show(s string) string {
	if !IsURL(s) {
		return s
	}
	return redact.String(s)
}

// Read returns the content of the config at pathOrURL; what names it in errors ("the limits config").
func Read(ctx context.Context, pathOrURL, what string) ([]byte, error) {
	if !IsURL(pathOrURL) {
		data, err := os.ReadFile(pathOrURL)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", what, err)
		}
		return data, nil
	}
	shown := Show(pathOrURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pathOrURL, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch %s from %s: bad URL", what, shown)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch %s from %s: %w", what, shown, redact.URLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot fetch %s from %s: unexpected status %s", what, shown, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot fetch %s from %s: %w", what, shown, err)
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("%s at %s is larger than %d bytes", what, shown, maxSize)
	}
	return data, nil
}
