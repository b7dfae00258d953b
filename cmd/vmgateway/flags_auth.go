package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/flagutil"
)

var (
	enableAuth             = flag.Bool("enable.auth", false, "Enables auth with JWT tokens: every proxied request must carry a verified token whose vm_access claim grants the tenant, series and mode")
	authHTTPHeader         = flag.String("auth.httpHeader", "Authorization", "HTTP header name to look for JWT authorization token")
	authAllowWithoutPrefix = flag.Bool("auth.httpHeaderAllowWithoutPrefix", false, "Whether to also accept a token without the 'Bearer ' prefix in -auth.httpHeader")
	authPublicKeys         = flagutil.NewArray("auth.publicKeys", "Public keys (PEM) to verify JWT token signatures: RSA of at least 2048 bits, ECDSA P-256/P-384/P-521, Ed25519; certificates are accepted for their key")
	authPublicKeyFiles     = flagutil.NewArray("auth.publicKeyFiles", "Paths to files with public keys (PEM) or certificates to verify JWT token signatures")
	authHMACSecretFiles    = flagutil.NewArray("auth.hmacSecretFiles", "Paths to files with shared secrets for HS256/HS384/HS512 tokens, at least 32 bytes each; a trailing newline is ignored")
	authJWKSEndpoints      = flagutil.NewArray("auth.jwksEndpoints", "JWKS endpoints to fetch keys for JWT tokens signature verification")
	authOIDCDiscovery      = flagutil.NewArray("auth.oidcDiscoveryEndpoints", "OpenID Connect discovery endpoints to fetch keys for JWT tokens signature verification (their jwks_uri)")
	authSkipVerify         = flag.Bool("auth.skipVerify", false, "Accept tokens without verifying their signatures. INSECURE: anyone can forge any access. For testing only; cannot be combined with key flags")
	authIssuer             = flag.String("auth.issuer", "", "If set, a token's iss claim must equal it")
	authAudience           = flag.String("auth.audience", "", "If set, a token's aud claim must contain it")
	authLeeway             = flag.Duration("auth.leeway", 30*time.Second, "Allowed clock skew between the token issuer and the gateway for the exp, nbf and iat checks")
	authKeysRefresh        = flag.Duration("auth.keysRefreshInterval", 5*time.Minute, "How often keys from -auth.jwksEndpoints and -auth.oidcDiscoveryEndpoints are fetched again")
	authKeyFilesCheck      = flag.Duration("auth.keyFilesCheckInterval", 10*time.Second, "How often -auth.publicKeyFiles and -auth.hmacSecretFiles are read again; a changed file replaces its keys (all files must be valid, else the keys in force stay), so keys rotate without a restart. Zero re-reads them only on /-/reload and SIGHUP")
	authKeysRefetchMin     = flag.Duration("auth.keysRefetchMinInterval", 30*time.Second, "Minimum time between key fetches caused by tokens with an unknown kid")
	authKeysTimeout        = flag.Duration("auth.keysTimeout", 10*time.Second, "Timeout for one fetch from a JWKS or OIDC discovery endpoint")
	authKeysTLSCAFile      = flag.String("auth.keysTLSCAFile", "", "Path to CA certificates (PEM) for https JWKS and OIDC discovery endpoints. By default the system roots are used")
	authCacheSize          = flag.Int("auth.cacheSize", 10000, "Number of verified tokens to cache (never past their exp); 0 disables the cache. It also bounds the number of rejected tokens kept by -auth.negativeCacheTTL")
	authNegativeCacheTTL   = flag.Duration("auth.negativeCacheTTL", time.Minute, "How long a rejected token is answered with the same 401 without verifying it again, so that floods of bad tokens cost no signature checks; 0 disables it. "+
		"Rejections that may stop holding are kept for less: a token not valid yet until its nbf/iat, a bad signature only while the key set is unchanged, an unknown kid not at all while JWKS/OIDC keys may be refetched. Every rejection is still counted at vmgateway_auth_rejects_total")
	logInvalidAuthTokens = flag.Bool("logInvalidAuthTokens", false, "Whether to log requests with invalid auth tokens: their decoded header and claims, never the signature. Such requests are always counted at vmgateway_auth_rejects_total")
)

// authConfig is the auth.Config the flags describe; `vmgateway token explain` uses it too, so it judges a token
// exactly as the gateway would.
func authConfig() auth.Config {
	return auth.Config{
		HTTPHeader:             *authHTTPHeader,
		AllowWithoutPrefix:     *authAllowWithoutPrefix,
		PublicKeys:             *authPublicKeys,
		PublicKeyFiles:         *authPublicKeyFiles,
		HMACSecretFiles:        *authHMACSecretFiles,
		JWKSEndpoints:          *authJWKSEndpoints,
		OIDCDiscoveryEndpoints: *authOIDCDiscovery,
		SkipVerify:             *authSkipVerify,
		Issuer:                 *authIssuer,
		Audience:               *authAudience,
		Leeway:                 *authLeeway,
		KeysRefreshInterval:    *authKeysRefresh,
		KeysRefetchMinInterval: *authKeysRefetchMin,
		KeyFilesCheckInterval:  *authKeyFilesCheck,
		KeysTimeout:            *authKeysTimeout,
		KeysTLSCAFile:          *authKeysTLSCAFile,
		CacheSize:              *authCacheSize,
		NegativeCacheTTL:       *authNegativeCacheTTL,
		LogInvalidTokens:       *logInvalidAuthTokens,
		MaxTokenSize:           *authMaxTokenSize,
		PolicyFile:             *authPolicyFile,
		PolicyCheckInterval:    *authPolicyCheckInterval,
		IgnoreTokenAccess:      *authPolicyIgnoreTokenAccess,
	}
}

// checkAuthFlags refuses -auth.* flags that contradict the others; auth.New checks each flag's own value.
func checkAuthFlags() error {
	if !*enableAuth {
		if *authPolicyFile != "" {
			return errors.New("-auth.policyFile needs -enable.auth: without it no token is checked and the policies would protect nothing")
		}
		return nil
	}
	if *httpAuthUsername != "" && http.CanonicalHeaderKey(*authHTTPHeader) == "Authorization" {
		return errors.New("-httpAuth.username and -enable.auth both use the Authorization header: set -auth.httpHeader to another header (e.g. X-Auth-Token) for the tokens")
	}
	return nil
}

// newVerifier builds the verifier when -enable.auth is set; nil when it is not.
func newVerifier() (*auth.Verifier, error) {
	if !*enableAuth {
		return nil, nil
	}
	return auth.New(authConfig())
}

var (
	authPolicyFile = flag.String("auth.policyFile", "", "Path or http(s) URL of the access policies (YAML with a policies: list): a token without a vm_access claim "+
		"gets the vm_access of the first policy whose match holds for its claims; no match means 403. See docs/access-control.md")
	authPolicyCheckInterval = flag.Duration("auth.policyCheckInterval", 0, "How often to re-read -auth.policyFile. Zero re-reads it only on SIGHUP. "+
		"An invalid file is logged with every error and its line, counted, and the previous policies stay in force")
	authValidatePolicyFile      = flag.Bool("auth.validatePolicyFile", false, "Check -auth.policyFile, print every error with its line and exit: 0 when valid, 1 otherwise")
	authPolicyIgnoreTokenAccess = flag.Bool("auth.policy.ignoreTokenAccess", false, "Judge every token by -auth.policyFile, ignoring its own vm_access claim: "+
		"for identity providers that let users edit claims of their own tokens")
)

// validatePolicyFile backs -auth.validatePolicyFile: it returns the process exit code.
func validatePolicyFile(stdout, stderr io.Writer) int {
	if err := auth.ValidatePolicyFile(*authPolicyFile); err != nil {
		fmt.Fprintf(stderr, "vmgateway: -auth.policyFile is invalid:\n%s\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "-auth.policyFile=%s is valid\n", confsource.Show(*authPolicyFile))
	return 0
}
