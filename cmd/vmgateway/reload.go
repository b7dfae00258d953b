package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
	"github.com/vmgateway/vmgateway/internal/server"
)

var reloadAuthKey = flagutil.NewSecret("reloadAuthKey", "Auth key for /-/reload (POST), which re-reads every file the gateway reads: -ratelimit.config, -querylimits.config, -auth.policyFile, -auth.publicKeyFiles and -auth.hmacSecretFiles. It must be passed via authKey query arg. It overrides -httpAuth.*. Without it (or -httpAuth.*), /-/reload is disabled; SIGHUP reloads the same files")

// reloader re-reads every file of the gateway at once, on /-/reload and SIGHUP. All files are checked first: one
// invalid file changes nothing, and the answer names every problem.
type reloader struct {
	mu    sync.Mutex
	app   *app
	files []*reloadable
}

// reloadable is a YAML file the gateway reads and what checks and applies it.
type reloadable struct {
	flag, path string
	// list is the top-level list the file's entries are in (limits, policies).
	list string
	// what the file holds, for the log: "rate limits", "access policies".
	what  string
	check func() error
	apply func() error
	// inForce is the content the owner applied last, at the start, on a reload or by its own periodic re-read
	// (-*CheckInterval), and its number of entries: what changed is told against it, so a change a poller applied
	// is not told again.
	inForce func() ([]byte, int)
}

func (f *reloadable) String() string { return fmt.Sprintf("-%s=%s", f.flag, confsource.Show(f.path)) }

func newReloader(a *app) *reloader {
	r := &reloader{app: a}
	add := func(flagName, path, list, what string, check, apply func() error, inForce func() ([]byte, int)) {
		r.files = append(r.files, &reloadable{flag: flagName, path: path, list: list, what: what, check: check, apply: apply,
			inForce: inForce})
	}
	if a.gate != nil {
		add("ratelimit.config", *rateLimitConfig, "limits", "rate limits",
			func() error { return limitfile.ValidateFile(*rateLimitConfig) }, a.gate.Reload, a.gate.Config)
	}
	if a.qlimits != nil {
		add("querylimits.config", *queryLimitsConfig, "limits", "query limits",
			func() error { return querylimits.ValidateFile(*queryLimitsConfig) }, a.qlimits.Reload, a.qlimits.Config)
	}
	if a.verifier != nil && *authPolicyFile != "" {
		add("auth.policyFile", *authPolicyFile, "policies", "access policies",
			func() error { return auth.ValidatePolicyFile(*authPolicyFile) }, a.verifier.ReloadPolicies, a.verifier.PolicyConfig)
	}
	return r
}

// reloadAll checks every file, then applies them all; it returns a line per change, or every error with nothing
// changed, and what kept its previous config: "rate limits", "keys".
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
		before, wasEntries := f.inForce()
		if err := f.apply(); err != nil {
			// Changed between the check and now: the owner kept the previous config.
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			kept = append(kept, f.what)
			continue
		}
		if after, entries := f.inForce(); !bytes.Equal(after, before) {
			changes = append(changes, fmt.Sprintf("%s: %d %s (was %d)", f, entries, f.list, wasEntries))
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
		changes, _, err := r.reloadAll()
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
