package limitfile

import (
	"context"
	"fmt"

	"github.com/vmgateway/vmgateway/internal/confsource"
)

// ValidateFile reads and checks a limits config, a file path or an http(s) URL, and returns every problem in it,
// each with its line; nil means the config is valid. It backs the flag that validates a config and exits.
func ValidateFile(pathOrURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := ReadConfig(ctx, pathOrURL)
	if err != nil {
		return err
	}
	_, err = Parse(data, confsource.Show(pathOrURL))
	return err
}

// ReadConfig reads the limits config of -ratelimit.config, a file path or an http(s) URL, bounded in size and time.
func ReadConfig(ctx context.Context, pathOrURL string) ([]byte, error) {
	if pathOrURL == "" {
		return nil, fmt.Errorf("no limits config: set -ratelimit.config to a file path or an http(s) URL")
	}
	return confsource.Read(ctx, pathOrURL, "the limits config")
}
