package redact

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://idp.example.com/keys", "https://idp.example.com/keys"},
		{"https://user:s3cret@idp.example.com/keys?token=x#f", "https://idp.example.com/keys"},
		{"http://user@vm:8428/select/0/prometheus", "http://vm:8428/select/0/prometheus"},
		{"http://vm:8428/api/v1/query?authKey=s3cret&step=1m", "http://vm:8428/api/v1/query"},
		{"http://vm:8428/x?", "http://vm:8428/x"},
		{"redis://:s3cret@x:6379/a/b", "redis://x:6379/a/b"},
		{"rediss://default:s3cret@redis:6380/2?skip_verify=true", "rediss://redis:6380/2"},
		{"https://u:p@host/x.yaml?k=v#f", "https://host/x.yaml"},
		{"://bad", "(invalid URL)"},
		{"http://u:s3cret@[::1", "(invalid URL)"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestURLLeavesItsArgumentAlone(t *testing.T) {
	u, err := url.Parse("http://u:p@host/x?a=b#c")
	if err != nil {
		t.Fatal(err)
	}
	if got := URL(u); got != "http://host/x" {
		t.Fatalf("URL = %q", got)
	}
	if u.String() != "http://u:p@host/x?a=b#c" {
		t.Fatalf("URL changed its argument to %s", u)
	}
}

func TestURLError(t *testing.T) {
	_, err := url.Parse("http://u:s3cret@vm:8428/%zz")
	if err == nil {
		t.Fatal("want a parse error")
	}
	if got := URLError(err); strings.Contains(got.Error(), "s3cret") || !strings.Contains(got.Error(), "invalid URL escape") {
		t.Fatalf("URLError = %q", got)
	}
	plain := errors.New("x")
	if URLError(plain) != plain {
		t.Fatal("URLError changed an error that is not a *url.Error")
	}
}
