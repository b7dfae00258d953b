package vmtest

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// JSONLines reads a file of one JSON object a line (an access log) and keys the objects by their string field
// key (request_id). A line that is not such an object fails the test.
func JSONLines(t testing.TB, path, key string) map[string]map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("cannot read %s: %s", path, err)
	}
	out := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a line of %s is not a JSON object: %s\n%s", path, err, line)
		}
		k, ok := m[key].(string)
		if !ok {
			t.Fatalf("a line of %s has no string %q:\n%s", path, key, line)
		}
		out[k] = m
	}
	return out
}
