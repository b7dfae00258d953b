package datasource

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// secret is a credential given inline or as a file. A file is read on every use, so a rotated secret
// takes effect on the next query without a restart.
type secret struct {
	value string
	file  string
	flag  string // the flag that names the file, for error messages
}

func (s secret) isSet() bool { return s.value != "" || s.file != "" }

func (s secret) get() (string, error) {
	if s.file == "" {
		return s.value, nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", s.flag, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %q is empty", s.flag, s.file)
	}
	return v, nil
}

// authorizer sets the Authorization header: basic auth or a bearer token, never both.
type authorizer struct {
	username, password, bearer secret
	basic                      bool
}

func newAuthorizer(cfg Config, u *url.URL) (*authorizer, error) {
	both := func(value, file, name string) error {
		if value != "" && file != "" {
			return fmt.Errorf("-datasource.%s and -datasource.%sFile are both set: use one of them", name, name)
		}
		return nil
	}
	for _, err := range []error{
		both(cfg.BasicAuthUsername, cfg.BasicAuthUsernameFile, "basicAuth.username"),
		both(cfg.BasicAuthPassword, cfg.BasicAuthPasswordFile, "basicAuth.password"),
		both(cfg.BearerToken, cfg.BearerTokenFile, "bearerToken"),
	} {
		if err != nil {
			return nil, err
		}
	}
	a := &authorizer{
		username: secret{cfg.BasicAuthUsername, cfg.BasicAuthUsernameFile, "-datasource.basicAuth.usernameFile"},
		password: secret{cfg.BasicAuthPassword, cfg.BasicAuthPasswordFile, "-datasource.basicAuth.passwordFile"},
		bearer:   secret{cfg.BearerToken, cfg.BearerTokenFile, "-datasource.bearerTokenFile"},
	}
	a.basic = a.username.isSet() || a.password.isSet()
	if u.User != nil {
		if a.basic || a.bearer.isSet() {
			return nil, fmt.Errorf("-datasource.url carries credentials and -datasource.basicAuth.* or -datasource.bearerToken* are set too: use one of them")
		}
		// Credentials in the URL are basic auth; they are moved out of the URL so no message ever shows them.
		p, _ := u.User.Password()
		a.username.value, a.password.value, a.basic = u.User.Username(), p, true
	}
	if a.basic && !a.username.isSet() {
		return nil, fmt.Errorf("-datasource.basicAuth.password is set without -datasource.basicAuth.username")
	}
	if a.basic && a.bearer.isSet() {
		return nil, fmt.Errorf("-datasource.basicAuth.* and -datasource.bearerToken* are both set: the datasource gets one Authorization header, choose one")
	}
	// Read the files once now so that a wrong path fails at start rather than at the first refresh.
	for _, s := range []secret{a.username, a.password, a.bearer} {
		if _, err := s.get(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *authorizer) set(req *http.Request) error {
	switch {
	case a.basic:
		user, err := a.username.get()
		if err != nil {
			return err
		}
		pass, err := a.password.get()
		if err != nil {
			return err
		}
		req.SetBasicAuth(user, pass)
	case a.bearer.isSet():
		tok, err := a.bearer.get()
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}
