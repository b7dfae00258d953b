package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/confsource"
)

// policyStore holds the policies in force and reloads them: every checkInterval and on ReloadPolicies (SIGHUP).
// An invalid new file is logged with every problem and its line, counted, and the previous policies stay.
type policyStore struct {
	path, source      string
	ignoreTokenAccess bool
	checkInterval     time.Duration

	cur atomic.Pointer[policySet]
	// reloadMu serialises reloads; lastConfig is the content last tried, so an unchanged file is not re-parsed
	// and a broken one is reported once rather than at every check.
	reloadMu   sync.Mutex
	lastConfig []byte
	// inForce is the content of the policies in force, whichever reload applied it.
	inForce []byte

	// changed runs after a reload published new policies: it empties the verified-token cache, refusals
	// included, so that no verdict of the old policies outlives them.
	changed func()

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type policyMetrics struct {
	reloadsOK, reloadsErr                *metrics.Counter
	lastReloadOK, lastReloadOKTime, size *metrics.Gauge
}

// policyMetricsOf creates the reload metrics with the first policy store: a gateway without a policy file does not
// export a "last reload failed" it never attempted.
var policyMetricsOf = sync.OnceValue(func() *policyMetrics {
	return &policyMetrics{
		reloadsOK:        metrics.GetOrCreateCounter(`vmgateway_auth_policy_config_reloads_total{status="success"}`),
		reloadsErr:       metrics.GetOrCreateCounter(`vmgateway_auth_policy_config_reloads_total{status="error"}`),
		lastReloadOK:     metrics.GetOrCreateGauge(`vmgateway_auth_policy_config_last_reload_successful`, nil),
		lastReloadOKTime: metrics.GetOrCreateGauge(`vmgateway_auth_policy_config_last_reload_success_timestamp_seconds`, nil),
		size:             metrics.GetOrCreateGauge(`vmgateway_auth_policies`, nil),
	}
})

// newPolicyStore loads cfg.PolicyFile; nil without one.
func newPolicyStore(cfg Config) (*policyStore, error) {
	if cfg.PolicyFile == "" {
		if cfg.IgnoreTokenAccess {
			return nil, errors.New("-auth.policy.ignoreTokenAccess needs -auth.policyFile: without policies every token would be refused")
		}
		return nil, nil
	}
	if cfg.PolicyCheckInterval < 0 {
		return nil, fmt.Errorf("-auth.policyCheckInterval=%s is negative", cfg.PolicyCheckInterval)
	}
	data, set, err := loadPolicies(cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	s := &policyStore{
		path:              cfg.PolicyFile,
		source:            confsource.Show(cfg.PolicyFile),
		ignoreTokenAccess: cfg.IgnoreTokenAccess,
		checkInterval:     cfg.PolicyCheckInterval,
		lastConfig:        data,
		inForce:           data,
	}
	s.publish(set)
	slog.Info("loaded the access policies", "policyFile", s.source, "policies", len(set.policies))
	return s, nil
}

func loadPolicies(pathOrURL string) ([]byte, *policySet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := confsource.Read(ctx, pathOrURL, "the policy file")
	if err != nil {
		return nil, nil, err
	}
	set, err := parsePolicies(data, confsource.Show(pathOrURL))
	return data, set, err
}

// ValidatePolicyFile reads and checks a policy file, a path or an http(s) URL, and returns every problem in it,
// each with its line; nil means it is valid. It backs -auth.validatePolicyFile.
func ValidatePolicyFile(pathOrURL string) error {
	if pathOrURL == "" {
		return errors.New("no policy file: set -auth.policyFile to a file path or an http(s) URL")
	}
	_, _, err := loadPolicies(pathOrURL)
	return err
}

func (s *policyStore) publish(set *policySet) {
	s.cur.Store(set)
	m := policyMetricsOf()
	m.size.Set(float64(len(set.policies)))
	m.reloadsOK.Inc()
	m.lastReloadOK.Set(1)
	m.lastReloadOKTime.Set(float64(time.Now().Unix()))
}

func (s *policyStore) start() {
	if s == nil || s.checkInterval <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.checkInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = s.reload(false)
			}
		}
	}()
}

func (s *policyStore) stop() {
	if s == nil || s.cancel == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
}

// reload re-reads the policy file; without force, content equal to the last one tried is not parsed again.
func (s *policyStore) reload(force bool) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), confsource.FetchTimeout)
	defer cancel()
	data, err := confsource.Read(ctx, s.path, "the policy file")
	if err != nil {
		// Read again next time, even if the content then equals the last one tried.
		s.lastConfig = nil
		return s.reloadFailed(err)
	}
	if !force && bytes.Equal(data, s.lastConfig) {
		return nil
	}
	s.lastConfig = data
	set, err := parsePolicies(data, s.source)
	if err != nil {
		return s.reloadFailed(err)
	}
	s.publish(set)
	s.inForce = data
	if s.changed != nil {
		s.changed()
	}
	slog.Info("loaded the access policies", "policyFile", s.source, "policies", len(set.policies))
	return nil
}

func (s *policyStore) reloadFailed(err error) error {
	m := policyMetricsOf()
	m.reloadsErr.Inc()
	m.lastReloadOK.Set(0)
	slog.Error("cannot reload the policy file; the previous policies stay in force", "policyFile", s.source, "err", err)
	return fmt.Errorf("cannot reload the policy file; the previous policies stay in force: %w", err)
}

// ReloadPolicies re-reads -auth.policyFile now (on SIGHUP). An invalid file is logged and counted and the
// policies in force stay; the error says why. Without a policy file there is nothing to reload.
func (v *Verifier) ReloadPolicies() error {
	if v.policies == nil {
		return nil
	}
	return v.policies.reload(true)
}

// PolicyConfig is the content of the policy file in force, applied at the start or by the last successful reload,
// periodic or not, and its number of policies: what /-/reload compares to tell what changed. Nil without a policy
// file.
func (v *Verifier) PolicyConfig() (data []byte, policies int) {
	if v.policies == nil {
		return nil, 0
	}
	v.policies.reloadMu.Lock()
	defer v.policies.reloadMu.Unlock()
	return v.policies.inForce, len(v.policies.cur.Load().policies)
}

// access is a verified token's Access: from its own vm_access claim, or from the first policy that matches it when
// it has none (or always, with -auth.policy.ignoreTokenAccess).
func (v *Verifier) access(c *claims) (*Access, *Error) {
	s := v.policies
	if s == nil || (c.all["vm_access"] != nil && !s.ignoreTokenAccess) {
		return accessOf(c)
	}
	set := s.cur.Load()
	for _, p := range set.policies {
		if p.failed(c.all) != nil {
			continue
		}
		enf, err := p.enforcer(c.all)
		if err != nil {
			return nil, newForbidden(reasonPolicyClaim, "the access policy %q matches the token but cannot apply to it: %s", p.name, err)
		}
		p.matches.Inc()
		return &Access{Tenant: p.va.Tenant, Mode: p.va.Mode, Enforcer: enf, Subject: c.sub, ExpiresAt: c.exp,
			Claims: c.all, Policy: p.name, policy: p, policies: set}, nil
	}
	if c.all["vm_access"] != nil {
		return nil, newForbidden(reasonNoPolicyMatch, "no access policy matches the token (its own vm_access is ignored: -auth.policy.ignoreTokenAccess); `vmgateway token explain` shows why each policy does not")
	}
	return nil, newForbidden(reasonNoPolicyMatch, "the token has no vm_access claim and no access policy matches it; `vmgateway token explain` shows why each policy does not")
}

// reuse reports whether a cached Access still stands: one a policy gave stands only while the policies it was
// judged by are in force, so that a reload takes effect for tokens already seen. A reused policy access is counted
// as a match of its policy.
func (v *Verifier) reuse(a *Access) bool {
	if a.policies == nil {
		return true
	}
	if a.policies != v.policies.cur.Load() {
		return false
	}
	a.policy.matches.Inc()
	return true
}
