package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/server"
)

var reloadAuthKey = flagutil.NewSecret("reloadAuthKey", "Auth key for /-/reload (POST), which re-reads every file the gateway reads: -ratelimit.config, -querylimits.config, -auth.policyFile, -auth.publicKeyFiles and -auth.hmacSecretFiles. It must be passed via authKey query arg. It overrides -httpAuth.*. Without it (or -httpAuth.*), /-/reload is disabled; SIGHUP reloads the same files")

// configFile is a YAML file the gateway reads, with the digest of the content in force since the start or the
// last reload, so that a reload tells what changed.
type configFile struct {
	flag, path string
	// list is the top-level list the file's entries are in (limits, policies).
	list   string
	digest [32]byte
	// entries is the length of that list in the content in force.
	entries int
}

func (f *configFile) String() string { return fmt.Sprintf("-%s=%s", f.flag, confsource.Show(f.path)) }

// read returns the file's content digest and its number of entries.
func (f *configFile) read() ([32]byte, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := confsource.Read(ctx, f.path, "-"+f.flag)
	if err != nil {
		return [32]byte{}, 0, err
	}
	var doc map[string]any
	_ = yaml.Unmarshal(data, &doc) // the owner parses it for real; an invalid file is its error
	n := 0
	if l, ok := doc[f.list].([]any); ok {
		n = len(l)
	}
	return sha256.Sum256(data), n, nil
}

// reloader re-reads every file of the gateway at once, on /-/reload and SIGHUP. All files are checked first: one
// invalid file changes nothing, and the answer names every problem.
type reloader struct {
	mu    sync.Mutex
	app   *app
	files []*reloadable
}

// reloadable is a file and what checks and applies it.
type reloadable struct {
	configFile
	// what the file holds, for the log: "rate limits", "access policies".
	what  string
	check func() error
	apply func() error
}

func newReloader(a *app) *reloader {
	r := &reloader{app: a}
	add := func(flagName, path, list, what string, check, apply func() error) {
		f := &reloadable{configFile: configFile{flag: flagName, path: path, list: list}, what: what, check: check, apply: apply}
		f.digest, f.entries, _ = f.read()
		r.files = append(r.files, f)
	}
	if a.gate != nil {
		add("ratelimit.config", *rateLimitConfig, "limits", "rate limits",
			func() error { return limitfile.ValidateFile(*rateLimitConfig) }, a.gate.Reload)
	}
	if a.qlimits != nil {
		add("querylimits.config", *queryLimitsConfig, "limits", "query limits",
			func() error { return querylimits.ValidateFile(*queryLimitsConfig) }, a.qlimits.Reload)
	}
	if a.verifier != nil && *authPolicyFile != "" {
		add("auth.policyFile", *authPolicyFile, "policies", "access policies",
			func() error { return auth.ValidatePolicyFile(*authPolicyFile) }, a.verifier.ReloadPolicies)
	}
	return r
}

// reload checks every file, then applies them all; it returns a line per change, or every error with nothing
// changed.
func (r *reloader) reload() ([]string, error) {
	changes, _, err := r.reloadAll()
	return changes, err
}

// reloadAll is reload that also says what kept its previous config: "rate limits", "keys".
func (r *reloader) reloadAll() (changes, kept []string, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	var failed []*reloadable
	for _, f := range r.files {
		if err := f.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			failed = append(failed, f)
		}
	}
	keysBad := false
	if r.app.verifier != nil {
		if err := r.app.verifier.CheckKeyFiles(); err != nil {
			errs = append(errs, err)
			keysBad = true
		}
	}
	if len(errs) > 0 {
		// The owners of the bad files try them too: they keep their config, and log and count the failure in
		// their own metrics (*_last_reload_successful), which the alerts watch.
		for _, f := range failed {
			_ = f.apply()
			kept = append(kept, f.what)
		}
		if keysBad {
			_, _ = r.app.verifier.ReloadKeyFiles()
			kept = append(kept, "keys")
		}
		return nil, kept, errors.Join(errs...)
	}
	for _, f := range r.files {
		digest, n, err := f.read()
		if err == nil {
			err = f.apply()
		}
		if err != nil {
			// Changed between the check and now: the owner kept the previous config.
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			kept = append(kept, f.what)
			continue
		}
		if digest != f.digest {
			changes = append(changes, fmt.Sprintf("%s: %d %s (was %d)", f, n, f.list, f.entries))
			f.digest, f.entries = digest, n
		}
	}
	if r.app.verifier != nil {
		c, err := r.app.verifier.ReloadKeyFiles()
		changes = append(changes, c...)
		if err != nil {
			errs = append(errs, err)
			kept = append(kept, "keys")
		}
	}
	return changes, kept, errors.Join(errs...)
}

// sighup reloads every file and logs the outcome.
func (r *reloader) sighup() {
	if len(r.files) == 0 && (r.app.verifier == nil || !r.app.verifier.HasKeyFiles()) {
		slog.Info("SIGHUP: nothing to reload (no -ratelimit.config, -querylimits.config, -auth.policyFile or key files)")
		return
	}
	changes, kept, err := r.reloadAll()
	if err != nil {
		for _, what := range kept {
			slog.Error("SIGHUP: keeping the previous " + what)
		}
		slog.Error("SIGHUP: reload failed; the previous config stays in force", "err", err)
		return
	}
	logChanges("SIGHUP", changes)
}

func logChanges(by string, changes []string) {
	if len(changes) == 0 {
		slog.Info(by + ": reloaded every file; nothing changed")
		return
	}
	for _, c := range changes {
		slog.Info(by+": reloaded", "change", c)
	}
}

// handler serves POST /-/reload: 200 with what changed, or 400 with every error (the previous config stays).
func (r *reloader) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			httperr.WriteStatus(w, http.StatusMethodNotAllowed, req.Method+" is not supported: reload with POST")
			return
		}
		changes, err := r.reload()
		if err != nil {
			slog.Error("/-/reload failed; the previous config stays in force", "err", err)
			msgs := strings.Split(err.Error(), "\n")
			httperr.WriteList(w, http.StatusBadRequest, "reload failed; the previous config stays in force: "+strings.Join(msgs, "; "), msgs)
			return
		}
		logChanges("/-/reload", changes)
		if changes == nil {
			changes = []string{}
		}
		writeJSON(w, http.StatusOK, struct {
			Status  string   `json:"status"`
			Changes []string `json:"changes"`
		}{"success", changes})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func (r *reloader) endpoint() server.Endpoint {
	return server.Endpoint{Path: "/-/reload", AuthKey: reloadAuthKey.Get(), AuthKeyFlag: "-reloadAuthKey", Handler: r.handler()}
}
