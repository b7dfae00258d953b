package auth

import (
	"strings"
	"testing"
)

func TestWWWAuthenticate(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{newError(reasonMissingToken, "missing Authorization header"), `Bearer`},
		{newError(reasonExpired, "the token expired at 2026-03-01T12:00:00Z"),
			`Bearer error="invalid_token", error_description="the token expired at 2026-03-01T12:00:00Z"`},
		{newError(reasonUnknownKid, "unknown key id %s", quote(`a"b\c`)),
			`Bearer error="invalid_token", error_description="unknown key id 'a/'b//c'"`},
		{newError(reasonMalformed, "bad\r\nHeader: x ключ"),
			`Bearer error="invalid_token", error_description="bad??Header: x ????"`},
		{newError(reasonMalformed, "%s", long),
			`Bearer error="invalid_token", error_description="` + long[:253] + `..."`},
	} {
		if got := tc.err.WWWAuthenticate(); got != tc.want {
			t.Fatalf("WWWAuthenticate(%q) =\n%s\nwant\n%s", tc.err.msg, got, tc.want)
		}
		if tc.err.HTTPStatus() != 401 {
			t.Fatalf("HTTPStatus = %d", tc.err.HTTPStatus())
		}
	}
}

func TestQuoteTruncates(t *testing.T) {
	if got := quote(strings.Repeat("k", 100)); got != `"`+strings.Repeat("k", 64)+`"...` {
		t.Fatalf("quote = %s", got)
	}
}
