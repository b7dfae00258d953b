// Package redact shows URLs in errors, logs and metric labels without their secrets. The URLs come from flags and
// configs, which often carry a password in the userinfo or an authKey in the query; /metrics and logs are readable
// by more people than the flags are. One rule everywhere: credentials, query and fragment are never shown.
package redact

import (
	"errors"
	"net/url"
)

// URL returns u without userinfo, query and fragment.
func URL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	return c.String()
}

// String is URL for an unparsed URL; one that does not parse is shown as "(invalid URL)", since the parser's
// error would repeat it.
func String(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return URL(u)
}

// URLError drops the *url.Error wrapping of net/url's and net/http's errors, which repeats the URL with its
// credentials and query; the caller names the URL, redacted.
func URLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
