package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// aborted counts a response the proxy broke off after its headers were sent (it panics with http.ErrAbortHandler,
// the only thing it can do then) and returns the status the request is observed with: an upstream that broke the
// response (reset, crash) is a 502, a client that went away a 499. The panic itself goes on in ServeHTTP, so the
// server drops the connection and the client sees the response is incomplete.
func (u *upstream) aborted(r *http.Request) int {
	if r.Context().Err() != nil {
		upstreamErrors(u.kind, "client_canceled").Inc()
		return 499
	}
	upstreamErrors(u.kind, "aborted_response").Inc()
	slog.Warn("the upstream broke off a response; the client gets an incomplete response", "upstream", u.name, "path", r.URL.Path)
	return http.StatusBadGateway
}

// tlsHint says what to check when err is a failed TLS handshake with the upstream, "" for other errors.
func (u *upstream) tlsHint(err error) string {
	var (
		rhe tls.RecordHeaderError
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		he  x509.HostnameError
		cie x509.CertificateInvalidError
		ae  tls.AlertError
	)
	switch {
	case errors.As(err, &rhe):
		return fmt.Sprintf("the upstream does not speak TLS; if it serves plain HTTP, use an http:// URL in -%s.url", u.kind)
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &he), errors.As(err, &cie):
		return fmt.Sprintf("the upstream's certificate is not trusted for this host; check -%s.tlsCAFile and -%s.tlsServerName", u.kind, u.kind)
	case errors.As(err, &ae), strings.Contains(err.Error(), "tls: "):
		return fmt.Sprintf("the upstream refused the handshake; check -%s.tlsCertFile / -%s.tlsKeyFile if it wants a client certificate, and the TLS versions both sides allow", u.kind, u.kind)
	}
	return ""
}
