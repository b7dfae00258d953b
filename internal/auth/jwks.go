package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// maxKeysResponse bounds a JWKS or discovery document; real ones are a few KiB.
const maxKeysResponse = 1 << 20

// jwk is one JSON Web Key (RFC 7517) with the members needed for RSA, EC and OKP signature keys.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	Alg    string   `json:"alg"`
	KeyOps []string `json:"key_ops"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// parseJWKS returns the signature keys of a JWKS document. Keys that cannot verify signatures here (encryption keys,
// symmetric keys, unknown types) are skipped and described in skipped; a document without any usable key is an error,
// so a broken provider never empties the key set.
func parseJWKS(body []byte, from string) (keys []*key, skipped []string, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("cannot parse the JWKS document: %w", err)
	}
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("key #%d: %s", i, err))
			continue
		}
		k, err := j.key(from)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key #%d (kid %q): %s", i, j.Kid, err))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		if len(doc.Keys) == 0 {
			return nil, nil, errors.New("the JWKS document has no keys")
		}
		return nil, skipped, fmt.Errorf("the JWKS document has no usable signature key: %s", strings.Join(skipped, "; "))
	}
	return keys, skipped, nil
}

func (j *jwk) key(from string) (*key, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, fmt.Errorf("use %q is not \"sig\"", j.Use)
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return nil, fmt.Errorf("key_ops %q lacks \"verify\"", j.KeyOps)
	}
	if j.Alg != "" && methods[j.Alg] == nil {
		return nil, fmt.Errorf("alg %q is not a supported signature algorithm", j.Alg)
	}
	var pub any
	var err error
	switch j.Kty {
	case "RSA":
		pub, err = j.rsa()
	case "EC":
		pub, err = j.ec()
	case "OKP":
		pub, err = j.okp()
	case "oct":
		return nil, errors.New("symmetric keys are not taken from a JWKS; pass HMAC secrets with -auth.hmacSecretFiles")
	default:
		return nil, fmt.Errorf("kty %q is not supported; want RSA, EC or OKP", j.Kty)
	}
	if err != nil {
		return nil, err
	}
	return newPublicKey(pub, j.Kid, j.Alg, from)
}

func (j *jwk) rsa() (*rsa.PublicKey, error) {
	n, err := b64Param("n", j.N)
	if err != nil {
		return nil, err
	}
	e, err := b64Param("e", j.E)
	if err != nil {
		return nil, err
	}
	if len(e) > 4 {
		return nil, fmt.Errorf("the RSA exponent e has %d bytes; at most 4 are supported", len(e))
	}
	exp := int(new(big.Int).SetBytes(e).Int64())
	if exp < 3 || exp%2 == 0 || exp > 1<<31-1 {
		return nil, fmt.Errorf("the RSA exponent e=%d is invalid", exp)
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}, nil
}

func (j *jwk) ec() (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch j.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("crv %q is not supported for EC keys; want P-256, P-384 or P-521", j.Crv)
	}
	x, err := b64Param("x", j.X)
	if err != nil {
		return nil, err
	}
	y, err := b64Param("y", j.Y)
	if err != nil {
		return nil, err
	}
	size := (curve.Params().BitSize + 7) / 8
	if len(x) != size || len(y) != size {
		return nil, fmt.Errorf("x and y of a %s key must have %d bytes each, got %d and %d", j.Crv, size, len(x), len(y))
	}
	// ParseUncompressedPublicKey checks that the point is on the curve.
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("invalid %s point: %w", j.Crv, err)
	}
	return pub, nil
}

func (j *jwk) okp() (ed25519.PublicKey, error) {
	if j.Crv != "Ed25519" {
		return nil, fmt.Errorf("crv %q is not supported for OKP keys; want Ed25519", j.Crv)
	}
	x, err := b64Param("x", j.X)
	if err != nil {
		return nil, err
	}
	if len(x) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("x of an Ed25519 key must have %d bytes, got %d", ed25519.PublicKeySize, len(x))
	}
	return ed25519.PublicKey(x), nil
}

// b64Param decodes a base64url key parameter. Padding is tolerated: some providers emit it.
func b64Param(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("the parameter %q is missing", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("the parameter %q is not base64url: %w", name, err)
	}
	return b, nil
}

// fetchJWKS downloads the keys of one source: a JWKS URL, or an OIDC discovery URL whose jwks_uri is followed.
func fetchJWKS(ctx context.Context, client *http.Client, src string, oidc bool) ([]*key, []string, error) {
	jwksURL := src
	if oidc {
		body, err := get(ctx, client, src)
		if err != nil {
			return nil, nil, err
		}
		var doc struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			return nil, nil, fmt.Errorf("cannot parse the OpenID discovery document %s: %w", src, err)
		}
		if err := checkURL(doc.JWKSURI); err != nil {
			return nil, nil, fmt.Errorf("the OpenID discovery document %s has no usable jwks_uri: %w", src, err)
		}
		jwksURL = doc.JWKSURI
	}
	body, err := get(ctx, client, jwksURL)
	if err != nil {
		return nil, nil, err
	}
	keys, skipped, err := parseJWKS(body, jwksURL)
	if err != nil {
		return nil, skipped, fmt.Errorf("%s: %w", jwksURL, err)
	}
	return keys, skipped, nil
}

func get(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysResponse+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s; want 200 OK", u, resp.Status)
	}
	if len(body) > maxKeysResponse {
		return nil, fmt.Errorf("%s answered with more than %d bytes", u, maxKeysResponse)
	}
	return body, nil
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("the URL is empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http or https URL", s)
	}
	return nil
}
