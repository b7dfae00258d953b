package deploy

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestDockerBuild checks what can be checked without a Docker engine: the Dockerfile builds with the Go release
// go.mod names and stamps the VERSION build arg as main.version (what -version and vmgateway_build_info show),
// `make docker` passes the version, and .dockerignore keeps keys and the git history out of the build context.
func TestDockerBuild(t *testing.T) {
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readFile(t, "../go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	df := readFile(t, "../Dockerfile")
	from := regexp.MustCompile(`(?m)^FROM golang:(\S+) AS build$`).FindStringSubmatch(df)
	if from == nil || from[1] != goVersion[1] {
		t.Errorf("the Dockerfile builds with golang:%v, go.mod wants go %s", from, goVersion[1])
	}
	if !strings.Contains(df, "-X main.version=${VERSION}") {
		t.Error("the Dockerfile does not stamp ${VERSION} into main.version")
	}

	makeBin := vmtest.Require(t, "make")
	out, err := exec.Command(makeBin, "-s", "-n", "-C", "..", "docker", "VERSION=v9.9.9-test").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "docker build --build-arg VERSION=v9.9.9-test -t vmgateway/vmgateway:v9.9.9-test") {
		t.Errorf("make -n docker VERSION=v9.9.9-test: %v\n%s", err, out)
	}

	ignored := map[string]bool{}
	for _, l := range strings.Split(readFile(t, "../.dockerignore"), "\n") {
		ignored[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{".git", "*.pem", "bin"} {
		if !ignored[want] {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for _, needed := range []string{"cmd", "internal", "go.mod", "go.sum"} {
		if ignored[needed] {
			t.Errorf(".dockerignore excludes %s, which the build needs", needed)
		}
	}
}
