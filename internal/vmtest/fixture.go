package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
)

// Fixture returns the path of a fixture in the module's top-level testdata/, where the fixtures that the tests of
// more than one package use live (a package's own stay in its testdata/). It is found from the working directory,
// which `go test` sets to the package's directory.
func Fixture(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "testdata", name), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the shared fixture testdata/%s: no go.mod above the working directory", name)
		}
		dir = parent
	}
}
