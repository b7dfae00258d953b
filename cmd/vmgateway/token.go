package main

// The token tool is a mode of the vmgateway binary rather than a second command: `explain` must judge a token by
// the very flags and code the gateway runs (authConfig, auth.Verify), and operators get it wherever the gateway is
// installed, in the container image too.

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

const tokenUsage = `Usage:
  vmgateway token mint [flags]                 sign a token with a private key or an HMAC secret; prints it
  vmgateway token explain [gateway flags] TOKEN  decode a token in plain words and, given the gateway's -auth.*
                                               flags, say whether the gateway would accept it and if not, why
Run "vmgateway token mint -help" for the mint flags.
`

// runToken runs the token tool and returns the process exit code.
func runToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	switch args[0] {
	case "mint":
		tok, err := mintToken(args[1:], stderr)
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "vmgateway token mint: %s\n", err)
			return 2
		}
		fmt.Fprintln(stdout, tok)
		return 0
	case "explain":
		return explainToken(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, tokenUsage)
		return 0
	}
	fmt.Fprintf(stderr, "vmgateway token: unknown command %q\n%s", args[0], tokenUsage)
	return 2
}

func mintToken(args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet("vmgateway token mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "Private key file (PEM: RSA, ECDSA or Ed25519; PKCS#1, PKCS#8 or SEC 1) to sign with")
	hmacFile := fs.String("hmacSecretFile", "", "Shared secret file to sign with HS256/HS384/HS512 (read as -auth.hmacSecretFiles reads it)")
	alg := fs.String("alg", "", "Signing algorithm; by default RS256 for RSA, ES256/ES384/ES512 by curve, EdDSA, HS256")
	kid := fs.String("kid", "", "Key id for the token header, as a JWKS lists it")
	tenantID := fs.String("tenant", "", "Tenant as accountID or accountID:projectID; empty means none (tenant 0:0)")
	var labels, filters, extra flagutil.Array
	fs.Var(&labels, "extraLabels", "Extra labels as name=value, enforced on every read and write (repeat or separate by commas)")
	fs.Var(&filters, "extraFilters", "Extra filters: series selectors such as {env=~\"prod|dev\"}; several are OR-ed (repeat or separate by commas)")
	fs.Var(&extra, "claim", "More claims as name=value, e.g. groups=dev or 'groups=[\"dev\",\"ops\"]' for the access policies of -auth.policyFile: "+
		"the value is JSON when it parses as JSON, a string otherwise (quote it to force a string: 'tid=\"15\"') (repeat or separate by commas)")
	mode := fs.String("mode", "full", "Access mode: full (read, write and admin), read, or write")
	lifetime := fs.Duration("lifetime", time.Hour, "How long the token is valid from now; negative gives an expired token")
	issuer := fs.String("issuer", "", "iss claim")
	audience := fs.String("audience", "", "aud claim")
	subject := fs.String("subject", "", "sub claim: who the token is for")
	shape := fs.String("claimShape", "vmgateway", "Shape of the vm_access claim: vmgateway (tenant_id, extra_labels, extra_filters, mode), vmauth (metrics_account_id, metrics_extra_labels, ...), "+
		"or none: no vm_access claim, for a token the access policies of -auth.policyFile judge by its other claims (-claim)")
	asString := fs.Bool("vmAccessAsString", false, "Encode vm_access as a JSON string, as some identity providers can only emit strings")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	now := time.Now()
	claims := jwt.MapClaims{"exp": now.Add(*lifetime).Unix(), "iat": now.Unix()}
	if *lifetime < 0 {
		claims["iat"] = now.Add(*lifetime - time.Minute).Unix()
	}
	for k, v := range map[string]string{"iss": *issuer, "aud": *audience, "sub": *subject} {
		if v != "" {
			claims[k] = v
		}
	}
	if err := addClaims(claims, extra); err != nil {
		return "", err
	}
	switch *shape {
	case "none":
		var given []string
		fs.Visit(func(f *flag.Flag) {
			if vmAccessFlags[f.Name] {
				given = append(given, "-"+f.Name)
			}
		})
		if len(given) > 0 {
			return "", fmt.Errorf("-claimShape=none mints a token without vm_access: %s would not be in it", strings.Join(given, ", "))
		}
	case "vmgateway", "vmauth":
		access, err := vmAccessClaim(*tenantID, *mode, labels, filters, *shape, *asString)
		if err != nil {
			return "", err
		}
		claims["vm_access"] = access
	default:
		return "", fmt.Errorf("-claimShape=%q: want vmgateway, vmauth or none", *shape)
	}

	method, key, err := signingKey(*keyFile, *hmacFile, *alg)
	if err != nil {
		return "", err
	}
	tok := jwt.NewWithClaims(method, claims)
	if *kid != "" {
		tok.Header["kid"] = *kid
	}
	return tok.SignedString(key)
}

// vmAccessFlags are the mint flags that shape vm_access.
var vmAccessFlags = map[string]bool{"tenant": true, "extraLabels": true, "extraFilters": true, "mode": true, "vmAccessAsString": true}

// vmAccessClaim builds the vm_access claim of the mint flags, checked as the gateway checks it and encoded by auth
// in the shape asked for.
func vmAccessClaim(tenantID, mode string, labels, filters []string, shape string, asString bool) (any, error) {
	va := auth.VMAccess{}
	if tenantID != "" {
		t, err := tenant.Parse(tenantID)
		if err != nil {
			return nil, fmt.Errorf("-tenant: %w", err)
		}
		va.Tenant = t
	}
	m, err := parseMode(mode)
	if err != nil {
		return nil, err
	}
	va.Mode = m
	if len(labels) > 0 {
		va.ExtraLabels = map[string]string{}
		for _, l := range labels {
			name, value, ok := strings.Cut(l, "=")
			if !ok || name == "" {
				return nil, fmt.Errorf("-extraLabels=%q: want name=value", l)
			}
			va.ExtraLabels[name] = value
		}
	}
	va.ExtraFilters = filters
	// The gateway would refuse labels or filters it cannot enforce: refuse them here, with the same check.
	if err := va.Validate(); err != nil {
		return nil, err
	}
	var b []byte
	if shape == "vmauth" {
		b, err = va.MarshalVMAuth()
	} else {
		b, err = json.Marshal(va)
	}
	if err != nil {
		return nil, err
	}
	if asString {
		return string(b), nil
	}
	return json.RawMessage(b), nil
}

// ownFlagClaims are the claims other mint flags set.
var ownFlagClaims = map[string]string{
	"exp": "-lifetime", "iat": "-lifetime", "iss": "-issuer", "aud": "-audience", "sub": "-subject",
	"vm_access": "-tenant, -extraLabels, -extraFilters and -mode, or -claimShape=none",
}

// addClaims adds the -claim name=value items to claims.
func addClaims(claims jwt.MapClaims, items []string) error {
	seen := map[string]bool{}
	for _, item := range items {
		name, value, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			return fmt.Errorf("-claim=%q: want name=value", item)
		}
		if use := ownFlagClaims[name]; use != "" {
			return fmt.Errorf("-claim=%q: the %s claim is set by %s", item, name, use)
		}
		if seen[name] {
			return fmt.Errorf("-claim: the claim %q is given twice", name)
		}
		seen[name] = true
		v := claimValue(value)
		if _, ok := v.(json.Number); name == "nbf" && !ok {
			return fmt.Errorf("-claim=%q: nbf is a number of seconds since 1970", item)
		}
		claims[name] = v
	}
	return nil
}

// claimValue is value as JSON when it is one JSON value, numbers kept exact; otherwise the string itself.
func claimValue(value string) any {
	dec := json.NewDecoder(strings.NewReader(value))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return value
	}
	if _, err := dec.Token(); err != io.EOF {
		return value
	}
	return v
}

func parseMode(s string) (auth.Mode, error) {
	switch strings.ToLower(s) {
	case "full", "0":
		return auth.ModeFull, nil
	case "read", "1":
		return auth.ModeRead, nil
	case "write", "2":
		return auth.ModeWrite, nil
	}
	return 0, fmt.Errorf("-mode=%q: want full, read or write", s)
}

func signingKey(keyFile, hmacFile, alg string) (jwt.SigningMethod, any, error) {
	switch {
	case keyFile != "" && hmacFile != "":
		return nil, nil, errors.New("give either -key or -hmacSecretFile, not both")
	case hmacFile != "":
		secret, err := auth.ReadHMACSecret(hmacFile)
		if err != nil {
			return nil, nil, err
		}
		return pickMethod(alg, "HS256"), secret, checkAlg(alg, "HS256", "HS384", "HS512")
	case keyFile == "":
		return nil, nil, errors.New("-key or -hmacSecretFile is required to sign the token")
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, nil, fmt.Errorf("-key=%s holds no PEM block", keyFile)
	}
	var key crypto.Signer
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		var k any
		if k, err = x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			var ok bool
			if key, ok = k.(crypto.Signer); !ok {
				err = fmt.Errorf("unsupported key type %T", k)
			}
		}
	default:
		return nil, nil, fmt.Errorf("-key=%s: a %q PEM block is not a private key", keyFile, block.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("-key=%s: %w", keyFile, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return pickMethod(alg, "RS256"), k, checkAlg(alg, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
	case *ecdsa.PrivateKey:
		want := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[k.Curve]
		return pickMethod(alg, want), k, checkAlg(alg, want)
	case ed25519.PrivateKey:
		return jwt.SigningMethodEdDSA, k, checkAlg(alg, "EdDSA")
	}
	return nil, nil, fmt.Errorf("-key=%s: unsupported key type %T", keyFile, key)
}

func pickMethod(alg, def string) jwt.SigningMethod {
	if alg == "" {
		alg = def
	}
	return jwt.GetSigningMethod(alg)
}

func checkAlg(alg string, allowed ...string) error {
	if alg == "" || slices.Contains(allowed, alg) {
		return nil
	}
	return fmt.Errorf("-alg=%s does not fit the key: use one of %s", alg, strings.Join(allowed, ", "))
}

// explainToken parses the gateway's own flags (so -auth.* mean exactly what they mean to the gateway), then
// describes the token and runs the gateway's verification on it.
func explainToken(args []string, stdout, stderr io.Writer) int {
	flag.CommandLine.Init("vmgateway token explain", flag.ContinueOnError)
	flag.CommandLine.SetOutput(stderr)
	if err := flag.CommandLine.Parse(args); err != nil {
		return 2
	}
	if err := setupToolLogger(); err != nil {
		fmt.Fprintf(stderr, "vmgateway token explain: %s\n", err)
		return 2
	}
	if flag.NArg() != 1 {
		fmt.Fprintf(stderr, "vmgateway token explain: want exactly one token after the flags, got %d arguments\n", flag.NArg())
		return 2
	}
	token := strings.TrimSpace(flag.Arg(0))
	if t, ok := strings.CutPrefix(token, "Bearer "); ok {
		token = t
	}
	describeToken(stdout, token)

	cfg := authConfig()
	if len(cfg.PublicKeys)+len(cfg.PublicKeyFiles)+len(cfg.HMACSecretFiles)+len(cfg.JWKSEndpoints)+len(cfg.OIDCDiscoveryEndpoints) == 0 && !cfg.SkipVerify {
		if err := auth.Inspect(token); err != nil {
			printRefusal(stdout, err, "whatever its keys, ")
			return 1
		}
		fmt.Fprintln(stdout, "\nWould the gateway accept it? Cannot tell: pass the gateway's key flags (-auth.publicKeyFiles, -auth.hmacSecretFiles, -auth.jwksEndpoints, ...) to check the signature.")
		return 3
	}
	cfg.CacheSize = 0
	v, err := auth.New(cfg)
	if err != nil {
		fmt.Fprintf(stdout, "\nWould the gateway accept it? The gateway would not start with these flags: %s\n", err)
		return 3
	}
	defer v.Stop()
	a, err := v.Verify(token)
	if err != nil {
		explainPolicies(stdout, v, token, err)
		printRefusal(stdout, err, "")
		return 1
	}
	if err := gateway.TenantAllowed(*clusterMode, a.Tenant); err != nil {
		fmt.Fprintf(stdout, "\nWould the gateway accept it? The signature and claims verify, but every request gets 403: %s\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nWould the gateway accept it? YES: tenant %s, mode %s", a.Tenant, a.Mode)
	if a.Policy != "" {
		fmt.Fprintf(stdout, " (from the access policy %q)", a.Policy)
	}
	if a.Enforcer.Restricted() {
		if q, err := a.Enforcer.Query(`up`); err == nil {
			fmt.Fprintf(stdout, "; the query `up` becomes `%s`", q)
		}
	} else {
		fmt.Fprint(stdout, "; no label restrictions")
	}
	fmt.Fprintln(stdout)
	explainPolicies(stdout, v, token, nil)
	return 0
}

// printRefusal says why the gateway refuses a token, with the reason it counts the refusal under; the verdict stays
// the last line, for scripts that keep only that.
func printRefusal(w io.Writer, err error, whatever string) {
	fmt.Fprintln(w)
	var e *auth.Error
	if errors.As(err, &e) {
		fmt.Fprintf(w, "The gateway refuses it %swith reason %s, counted at vmgateway_auth_rejects_total{reason=%q}.\n", whatever, e.Reason, e.Reason)
	}
	fmt.Fprintf(w, "Would the gateway accept it? NO: %d, %s\n", httperr.Status(err), err)
}

// describeToken prints what the token says, read by the gateway's own decoder (auth.Decode): nothing here is
// verified.
func describeToken(w io.Writer, token string) {
	tok, err := auth.Decode(token)
	if err != nil {
		fmt.Fprintf(w, "The token cannot be decoded: %s\n", err)
		return
	}
	fmt.Fprintln(w, "Token (decoded, NOT verified):")
	fmt.Fprintf(w, "  signed with:  %s", cmp.Or(tok.Alg, "(no alg)"))
	if tok.Kid != "" {
		fmt.Fprintf(w, ", key id %q", tok.Kid)
	}
	fmt.Fprintln(w)
	for _, c := range []struct{ name, label string }{{"sub", "subject"}, {"iss", "issuer"}, {"aud", "audience"}} {
		if v, ok := tok.Claims[c.name]; ok {
			b, _ := json.Marshal(v) // a decoded JSON value always marshals
			fmt.Fprintf(w, "  %-13s %s\n", c.label+":", b)
		}
	}
	now := time.Now()
	for _, c := range []struct{ name, label string }{{"exp", "expires"}, {"nbf", "not before"}, {"iat", "issued"}} {
		at, err := tok.Time(c.name)
		switch {
		case err != nil:
			fmt.Fprintf(w, "  %-13s %s\n", c.label+":", err)
			continue
		case at.IsZero():
			if c.name == "exp" {
				fmt.Fprintln(w, "  expires:      never — the gateway refuses tokens without exp")
			}
			continue
		}
		rel := "in " + at.Sub(now).Round(time.Second).String()
		if at.Before(now) {
			rel = now.Sub(at).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "  %-13s %s (%s)\n", c.label+":", at.Format(time.RFC3339), rel)
	}
	va, ok, err := tok.VMAccess()
	switch {
	case !ok && *authPolicyFile != "":
		fmt.Fprintln(w, "  vm_access:    missing — the access policies of -auth.policyFile decide")
		return
	case !ok:
		fmt.Fprintln(w, "  vm_access:    missing — the gateway refuses tokens without it")
		return
	case err != nil:
		fmt.Fprintf(w, "  vm_access:    invalid: %s\n", err)
		return
	}
	fmt.Fprintf(w, "  tenant:       %s (accountID %d, projectID %d)\n", va.Tenant, va.Tenant.AccountID, va.Tenant.ProjectID)
	fmt.Fprintf(w, "  mode:         %s — %s\n", va.Mode, map[auth.Mode]string{
		auth.ModeFull: "may read, write and call admin APIs", auth.ModeRead: "may call read APIs only", auth.ModeWrite: "may call write APIs only",
	}[va.Mode])
	if len(va.ExtraLabels) == 0 && len(va.ExtraFilters) == 0 {
		fmt.Fprintln(w, "  series:       all series of the tenant (no extra_labels or extra_filters)")
		return
	}
	for _, name := range slices.Sorted(maps.Keys(va.ExtraLabels)) {
		fmt.Fprintf(w, "  extra label:  %s=%q — every read is limited to it, every write is stored with it\n", name, va.ExtraLabels[name])
	}
	for _, f := range va.ExtraFilters {
		fmt.Fprintf(w, "  extra filter: %s — reads see series matching at least one extra filter\n", f)
	}
}
