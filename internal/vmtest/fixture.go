package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
)

// ReadFixture reads a fixture of the module's top-level testdata/, where the fixtures that the tests of more than
// one package use live (a package's own stay in its testdata/), and returns it with its path for messages. The
// directory is found from the working directory, which `go test` sets to the package's directory.
func ReadFixture(name string) (data []byte, path string, err error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, "", fmt.Errorf("cannot find the shared fixture testdata/%s: no go.mod above the working directory", name)
		}
		dir = parent
	}
	path = filepath.Join(dir, "testdata", name)
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("cannot read the shared fixture: %w", err)
	}
	return data, path, nil
}
