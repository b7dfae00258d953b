package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// methods are the signing algorithms a token may name. "none" is absent on purpose.
var methods = map[string]jwt.SigningMethod{
	"RS256": jwt.SigningMethodRS256, "RS384": jwt.SigningMethodRS384, "RS512": jwt.SigningMethodRS512,
	"PS256": jwt.SigningMethodPS256, "PS384": jwt.SigningMethodPS384, "PS512": jwt.SigningMethodPS512,
	"ES256": jwt.SigningMethodES256, "ES384": jwt.SigningMethodES384, "ES512": jwt.SigningMethodES512,
	"EdDSA": jwt.SigningMethodEdDSA,
	"HS256": jwt.SigningMethodHS256, "HS384": jwt.SigningMethodHS384, "HS512": jwt.SigningMethodHS512,
}

var rsaAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// minRSABits refuses keys that are too weak to trust (RFC 7518 section 3.3 asks for 2048 bits).
const minRSABits = 2048

// minHMACSecret is the shortest HMAC secret accepted: RFC 7518 section 3.2 wants at least the hash size.
const minHMACSecret = 32

// key is one verification key with the algorithms it may verify. The algorithm is checked against this list before
// the key is used, so an HS256 token never meets an RSA key's bytes and an RS256 token never meets an EC key.
type key struct {
	kid  string   // empty for PEM keys and HMAC secrets: they are tried for any kid
	algs []string // the algorithms this key may verify
	pub  any      // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey, or []byte for an HMAC secret
	kind string   // "RSA-2048", "EC P-256", "Ed25519", "32-byte HMAC secret" for messages
	from string   // where the key came from, for messages
	fp   string   // fingerprint: kid, algorithms and key material; tells whether a key set lost a key
}

func (k *key) allows(alg string) bool { return slices.Contains(k.algs, alg) }

// newPublicKey wraps a parsed public key; algs narrows the algorithms (a JWK's "alg"), nil means all that fit.
func newPublicKey(pub any, kid, alg, from string) (*key, error) {
	var algs []string
	var kind string
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("the RSA key has %d bits; at least %d are required", p.N.BitLen(), minRSABits)
		}
		algs, kind = rsaAlgs, fmt.Sprintf("RSA-%d", p.N.BitLen())
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			algs = []string{"ES256"}
		case elliptic.P384():
			algs = []string{"ES384"}
		case elliptic.P521():
			algs = []string{"ES512"}
		default:
			return nil, fmt.Errorf("the EC key's curve %s is not supported; use P-256, P-384 or P-521", p.Curve.Params().Name)
		}
		kind = "EC " + p.Curve.Params().Name
	case ed25519.PublicKey:
		algs, kind = []string{"EdDSA"}, "Ed25519"
	default:
		return nil, fmt.Errorf("keys of type %T are not supported; use RSA, ECDSA (P-256, P-384, P-521) or Ed25519", pub)
	}
	if alg != "" {
		if !slices.Contains(algs, alg) {
			return nil, fmt.Errorf("alg %q does not fit the %s key; it fits %s", alg, kind, strings.Join(algs, ", "))
		}
		algs = []string{alg}
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("cannot marshal the %s key: %w", kind, err)
	}
	return &key{kid: kid, algs: algs, pub: pub, kind: kind, from: from, fp: fingerprint(kid, algs, der)}, nil
}

func newHMACKey(secret []byte, from string) (*key, error) {
	if len(secret) < minHMACSecret {
		return nil, fmt.Errorf("the HMAC secret has %d bytes; at least %d random bytes are required", len(secret), minHMACSecret)
	}
	if bytes.Contains(secret, []byte("-----BEGIN ")) {
		// A public key is public: as an HMAC secret, anyone could sign HS256 tokens with its text (algorithm
		// confusion by configuration, e.g. a rotation that wrote the new public key to the wrong path).
		return nil, fmt.Errorf("the HMAC secret holds a PEM block; a public key belongs in -auth.publicKeyFiles, and an HMAC secret must be random bytes known only to the issuer and the gateway")
	}
	algs := []string{"HS256"}
	if len(secret) >= 48 {
		algs = append(algs, "HS384")
	}
	if len(secret) >= 64 {
		algs = append(algs, "HS512")
	}
	return &key{algs: algs, pub: secret, kind: fmt.Sprintf("%d-byte HMAC secret", len(secret)), from: from, fp: fingerprint("", algs, secret)}, nil
}

func fingerprint(kid string, algs []string, material []byte) string {
	h := sha256.Sum256(material)
	return kid + "|" + strings.Join(algs, ",") + "|" + string(h[:])
}

// parsePEM reads every PEM block of text: public keys (PKIX or PKCS#1) and certificates, whose public key is used
// as is (their validity period and chain are not checked: a certificate is only a container for the key).
func parsePEM(text []byte, from string) ([]*key, error) {
	var keys []*key
	rest := text
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		pub, err := pemPublicKey(block)
		if err == nil {
			var k *key
			if k, err = newPublicKey(pub, "", "", from); err == nil {
				keys = append(keys, k)
				continue
			}
		}
		return nil, fmt.Errorf("%s: PEM block #%d (%s): %w", from, n, block.Type, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM block found; want a public key between -----BEGIN PUBLIC KEY----- and -----END PUBLIC KEY-----", from)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%s: unexpected text after the last PEM block", from)
	}
	return keys, nil
}

func pemPublicKey(block *pem.Block) (any, error) {
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	if strings.Contains(block.Type, "PRIVATE KEY") {
		return nil, fmt.Errorf("this is a private key; give the gateway the public key only, e.g. the output of `openssl pkey -in key.pem -pubout`")
	}
	return nil, fmt.Errorf("unsupported PEM block type; want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE")
}

// ReadHMACSecret reads an HMAC secret file as -auth.hmacSecretFiles does: the file's bytes without trailing
// newlines. A tool that signs tokens for the gateway must read the secret the same way.
func ReadHMACSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the HMAC secret: %w", err)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// keySet is an immutable set of keys, replaced whole when a key source changes.
type keySet struct {
	keys  []*key
	byKid map[string][]*key
}

func newKeySet(keys []*key) *keySet {
	ks := &keySet{keys: keys, byKid: make(map[string][]*key)}
	for _, k := range keys {
		if k.kid != "" {
			ks.byKid[k.kid] = append(ks.byKid[k.kid], k)
		}
	}
	return ks
}

// candidates returns the keys that may verify a token with alg and kid, and whether kid names a known key.
// A token with a kid meets the keys with that kid plus the keys that have none (PEM keys, HMAC secrets); a token
// without a kid meets every key. Either way only keys that allow alg are returned.
func (ks *keySet) candidates(alg, kid string) (fit []*key, kidKnown bool) {
	for _, k := range ks.keys {
		if k.kid != "" && kid != "" && k.kid != kid {
			continue
		}
		if k.kid != "" && k.kid == kid {
			kidKnown = true
		}
		if k.allows(alg) {
			fit = append(fit, k)
		}
	}
	return fit, kidKnown
}

// lost reports whether ks has a key that next lacks.
func (ks *keySet) lost(next *keySet) bool {
	have := make(map[string]bool, len(next.keys))
	for _, k := range next.keys {
		have[k.fp] = true
	}
	for _, k := range ks.keys {
		if !have[k.fp] {
			return true
		}
	}
	return false
}

// describe summarises the set for messages, e.g. "2 RSA-2048, 1 EC P-256".
func (ks *keySet) describe() string {
	if len(ks.keys) == 0 {
		return "none"
	}
	counts := make(map[string]int)
	var kinds []string
	for _, k := range ks.keys {
		if counts[k.kind] == 0 {
			kinds = append(kinds, k.kind)
		}
		counts[k.kind]++
	}
	parts := make([]string, len(kinds))
	for i, kind := range kinds {
		parts[i] = fmt.Sprintf("%d %s", counts[kind], kind)
	}
	return strings.Join(parts, ", ")
}
