package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/vmgateway/vmgateway/internal/redact"
)

// keyFile is one -auth.publicKeyFiles or -auth.hmacSecretFiles file and the keys of its last good read. A file
// that changes is read again (checkKeyFiles), so keys rotate without a restart; a bad new content keeps the keys.
type keyFile struct {
	path string
	hmac bool

	// Guarded by keyring.mu.
	data     []byte // the content the keys came from
	keys     []*key
	loadedAt time.Time
	// err is why the last read failed, so that a bad file is reported once, not at every check.
	err string
}

func (f *keyFile) source() string {
	if f.hmac {
		return "-auth.hmacSecretFiles " + f.path
	}
	return "-auth.publicKeyFiles " + f.path
}

// read reads and parses the file: its content and keys, or an error naming the file.
func (f *keyFile) read() ([]byte, []*key, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		if f.hmac {
			return nil, nil, fmt.Errorf("-auth.hmacSecretFiles: cannot read the HMAC secret: %w", err)
		}
		return nil, nil, fmt.Errorf("-auth.publicKeyFiles: %w", err)
	}
	if !f.hmac {
		keys, err := parsePEM(data, f.source())
		return data, keys, err
	}
	k, err := newHMACKey(bytes.TrimRight(data, "\r\n"), f.source())
	if err != nil {
		return nil, nil, fmt.Errorf("-auth.hmacSecretFiles %s: %w", f.path, err)
	}
	return data, []*key{k}, nil
}

var (
	keyFileReloadsOK  = metrics.NewCounter(`vmgateway_auth_key_file_reloads_total{status="success"}`)
	keyFileReloadsErr = metrics.NewCounter(`vmgateway_auth_key_file_reloads_total{status="error"}`)
)

// reloadFiles reads every key file again and, when all of them are good, publishes the keys of those that
// changed; with one bad file nothing changes and the error names every bad one. Without force, a file whose
// content failed before is not reported again. It returns a line per changed file.
func (kr *keyring) reloadFiles(force bool) ([]string, error) {
	if len(kr.files) == 0 {
		return nil, nil
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	type read struct {
		data []byte
		keys []*key
	}
	reads := make([]read, len(kr.files))
	var errs []error
	reported := true // every error is one logged before: the watcher stays quiet
	for i, f := range kr.files {
		data, keys, err := f.read()
		if err != nil {
			reported = reported && err.Error() == f.err
			f.err = err.Error()
			errs = append(errs, err)
			continue
		}
		f.err = ""
		reads[i] = read{data, keys}
	}
	if len(errs) > 0 && !force && reported {
		return nil, nil
	}
	if len(errs) > 0 {
		keyFileReloadsErr.Inc()
		kr.describe()
		err := errors.Join(errs...)
		slog.Error("cannot reload the key files; the keys in force stay", "err", err)
		return nil, err
	}
	var changes []string
	now := kr.now()
	for i, f := range kr.files {
		if bytes.Equal(reads[i].data, f.data) {
			continue
		}
		changes = append(changes, fmt.Sprintf("%s: keys %s → %s", f.source(), showKeyIDs(f.keys), showKeyIDs(reads[i].keys)))
		f.data, f.keys, f.loadedAt = reads[i].data, reads[i].keys, now
	}
	if len(changes) == 0 {
		kr.describe()
		return nil, nil
	}
	keyFileReloadsOK.Inc()
	kr.publish()
	for _, c := range changes {
		slog.Info("reloaded a key file", "change", c)
	}
	return changes, nil
}

// watchFiles checks the key files every interval until the keyring stops.
func (kr *keyring) watchFiles(interval time.Duration) {
	defer close(kr.filesDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-kr.ctx.Done():
			return
		case <-t.C:
			_, _ = kr.reloadFiles(false)
		}
	}
}

// keyID names a key for operators: its kid, or for a key without one its kind and a short hash, which tells
// keys apart without revealing an HMAC secret.
func keyID(k *key) string {
	if k.kid != "" {
		return k.kid
	}
	h := sha256.Sum256([]byte(k.fp))
	return k.kind + " " + hex.EncodeToString(h[:4])
}

func keyIDs(keys []*key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = keyID(k)
	}
	return ids
}

// showKeyIDs is keyIDs for a log line.
func showKeyIDs(keys []*key) string {
	if len(keys) == 0 {
		return "none"
	}
	return "[" + strings.Join(keyIDs(keys), ", ") + "]"
}

// KeySource is one source of verification keys as the start log and the status page show it.
type KeySource struct {
	// Source is the flag and the file or URL (without credentials), e.g. "-auth.publicKeyFiles /etc/pub.pem".
	Source string
	// Keys are the ids of the keys in force from it: the kid, else the kind and a short hash.
	Keys []string
	// LastSuccess is the last good read or fetch; zero when there was none.
	LastSuccess time.Time
	// Error is why the last read or fetch failed; empty when it succeeded.
	Error string
}

// describe rebuilds the key sources for KeySources; called with kr.mu held or before the keyring runs.
func (kr *keyring) describe() {
	var out []KeySource
	for _, k := range kr.inline {
		out = append(out, KeySource{Source: k.from, Keys: []string{keyID(k)}, LastSuccess: kr.started})
	}
	for _, f := range kr.files {
		out = append(out, KeySource{Source: f.source(), Keys: keyIDs(f.keys), LastSuccess: f.loadedAt, Error: f.err})
	}
	for _, r := range kr.remotes {
		flagName := "-auth.jwksEndpoints "
		if r.oidc {
			flagName = "-auth.oidcDiscoveryEndpoints "
		}
		out = append(out, KeySource{Source: flagName + redact.String(r.url), Keys: keyIDs(r.keys), LastSuccess: r.fetchedAt, Error: r.err})
	}
	kr.sources.Store(&out)
}

// KeySources lists every key source with its keys and its last good read or fetch.
func (v *Verifier) KeySources() []KeySource {
	if p := v.keys.sources.Load(); p != nil {
		return append([]KeySource(nil), *p...)
	}
	return nil
}

// ReloadKeyFiles reads -auth.publicKeyFiles and -auth.hmacSecretFiles again now. When every file is good, the
// keys of the changed ones replace theirs and each change comes back as a line; otherwise nothing changes and the
// error names every bad file.
func (v *Verifier) ReloadKeyFiles() ([]string, error) { return v.keys.reloadFiles(true) }

// CheckKeyFiles reads and parses the key files without applying them: nil when a reload would succeed.
func (v *Verifier) CheckKeyFiles() error {
	var errs []error
	for _, f := range v.keys.files {
		if _, _, err := f.read(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HasKeyFiles reports whether any key comes from a file that a reload reads again.
func (v *Verifier) HasKeyFiles() bool { return len(v.keys.files) > 0 }
