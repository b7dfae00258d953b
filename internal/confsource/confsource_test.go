package confsource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("a: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := Read(context.Background(), path, "the test config"); err != nil || string(data) != "a: 1\n" {
		t.Errorf("file: %q %v", data, err)
	}
	if _, err := Read(context.Background(), path+".missing", "the test config"); err == nil || !strings.HasPrefix(err.Error(), "cannot read the test config: ") {
		t.Errorf("missing file: %v", err)
	}
	big := strings.Repeat("x", maxSize+1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = w.Write([]byte("b: 2\n"))
		case "/big":
			_, _ = w.Write([]byte(big))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	withCreds := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1)
	if data, err := Read(context.Background(), withCreds+"/ok?token=s3cret", "the test config"); err != nil || string(data) != "b: 2\n" {
		t.Errorf("URL: %q %v", data, err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/nope?token=s3cret", "unexpected status 404"},
		{"/big", "is larger than"},
	} {
		_, err := Read(context.Background(), withCreds+tc.path, "the test config")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
	if _, err := Read(context.Background(), "http://127.0.0.1:1/c?token=s3cret", "the test config"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("unreachable URL: %v", err)
	}
	if got := Show("https://u:p@host/x.yaml?k=v#f"); got != "https://host/x.yaml" {
		t.Errorf("Show: %s", got)
	}
}
