package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Config is what the -auth.* flags give.
type Config struct {
	// HTTPHeader carries the token; empty means "Authorization".
	HTTPHeader string
	// AllowWithoutPrefix accepts a bare token in HTTPHeader besides "Bearer <token>".
	AllowWithoutPrefix bool

	// PublicKeys are PEM texts; PublicKeyFiles are files of PEM text. Each may hold several public keys or
	// certificates (RSA of at least 2048 bits, ECDSA P-256/P-384/P-521, Ed25519).
	PublicKeys     []string
	PublicKeyFiles []string
	// HMACSecretFiles hold shared secrets for HS256/HS384/HS512 (see ReadHMACSecret); at least 32 bytes each.
	HMACSecretFiles []string
	// JWKSEndpoints and OIDCDiscoveryEndpoints are fetched at start and every KeysRefreshInterval.
	JWKSEndpoints          []string
	OIDCDiscoveryEndpoints []string
	// SkipVerify accepts tokens without checking their signatures. Insecure: anyone can forge any access.
	SkipVerify bool

	// Issuer and Audience, when set, must match the token's iss and be one of its aud.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew between the issuer and the gateway in the exp, nbf and iat checks.
	Leeway time.Duration

	// KeysRefreshInterval is how often JWKS and OIDC keys are fetched again; 0 means 5m.
	KeysRefreshInterval time.Duration
	// KeysRefetchMinInterval is the least time between fetches caused by tokens with an unknown kid; 0 means 30s.
	KeysRefetchMinInterval time.Duration
	// KeysTimeout bounds one fetch from a key endpoint; 0 means 10s.
	KeysTimeout time.Duration
	// KeyFilesCheckInterval is how often PublicKeyFiles and HMACSecretFiles are read again, so that a rotated key
	// takes effect without a restart; 0 reads them only on Verifier.ReloadKeyFiles.
	KeyFilesCheckInterval time.Duration
	// KeysTLSCAFile is a PEM file of CA certificates for https key endpoints; empty means the system roots.
	KeysTLSCAFile string

	// CacheSize is the number of verified tokens to remember; 0 disables the cache. It also bounds the number of
	// rejected tokens remembered.
	CacheSize int
	// NegativeCacheTTL is how long a rejected token is answered without verifying it again; 0 disables the negative
	// cache. Rejections that may stop holding sooner are remembered for less (see rememberRejection).
	NegativeCacheTTL time.Duration
	// LogInvalidTokens logs the header and claims of every rejected token (never its signature).
	LogInvalidTokens bool
	// MaxTokenSize is -auth.maxTokenSize: longer tokens are rejected (401) before any work on them; 0 means 16 KiB.
	MaxTokenSize int

	// PolicyFile is -auth.policyFile, a path or an http(s) URL: access policies for tokens without vm_access.
	PolicyFile string
	// PolicyCheckInterval is how often PolicyFile is re-read; zero re-reads it only on ReloadPolicies.
	PolicyCheckInterval time.Duration
	// IgnoreTokenAccess judges every token by the policies, its own vm_access claim ignored.
	IgnoreTokenAccess bool
}

// New loads the keys of cfg, fetches the remote ones once and starts refreshing them in the background.
// A remote source that cannot be fetched at start is logged and retried; its tokens are rejected meanwhile.
func New(cfg Config) (*Verifier, error) {
	return newVerifier(cfg, time.Now)
}

func newVerifier(cfg Config, now func() time.Time) (*Verifier, error) {
	if cfg.HTTPHeader == "" {
		cfg.HTTPHeader = "Authorization"
	}
	if !validHeaderName(cfg.HTTPHeader) {
		return nil, fmt.Errorf("-auth.httpHeader=%q is not a valid HTTP header name", cfg.HTTPHeader)
	}
	if cfg.MaxTokenSize < 0 {
		return nil, fmt.Errorf("-auth.maxTokenSize=%d must not be negative", cfg.MaxTokenSize)
	}
	if cfg.MaxTokenSize == 0 {
		cfg.MaxTokenSize = maxTokenLen
	}
	if cfg.NegativeCacheTTL < 0 {
		return nil, fmt.Errorf("-auth.negativeCacheTTL=%s must not be negative", cfg.NegativeCacheTTL)
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("-auth.leeway=%s must not be negative", cfg.Leeway)
	}
	cfg.KeysRefreshInterval = positiveOr(cfg.KeysRefreshInterval, 5*time.Minute)
	cfg.KeysRefetchMinInterval = positiveOr(cfg.KeysRefetchMinInterval, 30*time.Second)
	cfg.KeysTimeout = positiveOr(cfg.KeysTimeout, 10*time.Second)

	sources := len(cfg.PublicKeys) + len(cfg.PublicKeyFiles) + len(cfg.HMACSecretFiles) + len(cfg.JWKSEndpoints) + len(cfg.OIDCDiscoveryEndpoints)
	switch {
	case sources == 0 && !cfg.SkipVerify:
		return nil, errors.New("no key to verify JWT signatures with: pass -auth.publicKeys, -auth.publicKeyFiles, " +
			"-auth.hmacSecretFiles, -auth.jwksEndpoints or -auth.oidcDiscoveryEndpoints; or pass -auth.skipVerify to " +
			"accept tokens without verifying their signatures (insecure: anyone can forge a token granting any tenant and mode)")
	case sources > 0 && cfg.SkipVerify:
		return nil, errors.New("-auth.skipVerify cannot be combined with verification keys: drop -auth.skipVerify " +
			"to verify signatures with the keys given, or drop the key flags")
	}

	policies, err := newPolicyStore(cfg)
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		header:     http.CanonicalHeaderKey(cfg.HTTPHeader),
		allowBare:  cfg.AllowWithoutPrefix,
		skipVerify: cfg.SkipVerify,
		issuer:     cfg.Issuer,
		audience:   cfg.Audience,
		leeway:     cfg.Leeway,
		logInvalid: cfg.LogInvalidTokens,
		maxToken:   cfg.MaxTokenSize,
		cache:      newCache[*Access](cfg.CacheSize),
		policies:   policies,
		now:        now,
	}
	if cfg.NegativeCacheTTL > 0 {
		v.rejected, v.rejectedTTL = newCache[*rejection](cfg.CacheSize), cfg.NegativeCacheTTL
	}
	if v.keys, err = newKeyring(cfg, now, v.cache.clear); err != nil {
		return nil, err
	}
	v.keys.start()
	if policies != nil {
		policies.changed = v.cache.clear
	}
	v.policies.start()

	if cfg.SkipVerify {
		verificationDisabled.Set(1)
		slog.Warn("JWT signature verification is DISABLED by -auth.skipVerify: anyone can forge a token granting any " +
			"tenant and mode; use it for testing only")
	} else {
		verificationDisabled.Set(0)
	}
	return v, nil
}

// loadStaticKeys reads the keys of -auth.publicKeys and of every key file; the files are read again when they change.
func loadStaticKeys(cfg Config, now time.Time) ([]*key, []*keyFile, error) {
	var inline []*key
	for i, text := range cfg.PublicKeys {
		ks, err := parsePEM([]byte(text), fmt.Sprintf("-auth.publicKeys #%d", i+1))
		if err != nil {
			return nil, nil, err
		}
		inline = append(inline, ks...)
	}
	var files []*keyFile
	for _, path := range cfg.PublicKeyFiles {
		files = append(files, &keyFile{path: path})
	}
	for _, path := range cfg.HMACSecretFiles {
		files = append(files, &keyFile{path: path, hmac: true})
	}
	for _, f := range files {
		data, keys, err := f.read()
		if err != nil {
			return nil, nil, err
		}
		f.data, f.keys, f.loadedAt = data, keys, now
	}
	return inline, files, nil
}

func positiveOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}
