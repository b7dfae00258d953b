package auth

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestMaxTokenSize: -auth.maxTokenSize bounds the token in both directions: a valid token padded past the limit
// is rejected as malformed (401) before verification, and a limit raised above the default lets a large valid
// token through.
func TestMaxTokenSize(t *testing.T) {
	clk := newClock()
	claims := claimsAt(clk.now())
	claims["pad"] = strings.Repeat("x", 20<<10) // a big, valid token: some identity providers stuff groups in
	big := sign(t, jwt.SigningMethodRS256, rsaKey(), "", claims)
	small := sign(t, jwt.SigningMethodRS256, rsaKey(), "", claimsAt(clk.now()))
	rsaPEM := pemOf(t, &rsaKey().PublicKey)

	for _, tc := range []struct {
		name   string
		limit  int
		token  string
		reason string
	}{
		{"default limit, small token", 0, small, ""},
		{"default limit, 20 KiB token", 0, big, reasonMalformed},
		{"raised limit, 20 KiB token", 64 << 10, big, ""},
		{"lowered limit, small token", 100, small, reasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, Config{PublicKeys: []string{rsaPEM}, MaxTokenSize: tc.limit}, clk)
			r := httptest.NewRequest("GET", "/api/v1/query", nil)
			r.Header.Set("Authorization", "Bearer "+tc.token)
			_, err := v.Authenticate(r)
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.reason, err)
			}
			if tc.reason != "" && !strings.Contains(err.Error(), "-auth.maxTokenSize") {
				t.Fatalf("message %q should name -auth.maxTokenSize", err)
			}
		})
	}
	if _, err := newVerifier(Config{PublicKeys: []string{rsaPEM}, MaxTokenSize: -1}, clk.now); err == nil {
		t.Fatal("a negative -auth.maxTokenSize was accepted")
	}
}
