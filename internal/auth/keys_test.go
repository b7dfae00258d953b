package auth

import (
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func TestParsePEM(t *testing.T) {
	rsaPKCS1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)}))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1, 0)} // long expired: certificates are only key containers
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, p384Key().Public(), p384Key())
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}))
	p224 := mustEC(elliptic.P224())

	for _, tc := range []struct {
		name, text string
		kinds      string
		err        string
	}{
		{"PKIX RSA", pemOf(t, &rsaKey().PublicKey), "RSA-2048", ""},
		{"PKCS#1 RSA", rsaPKCS1, "RSA-2048", ""},
		{"certificate", cert, "EC P-384", ""},
		{"several blocks with text around", "comment\n" + pemOf(t, &p256Key().PublicKey) + "\n" + pemOf(t, edKey().Public()) + "\n\n", "EC P-256,Ed25519", ""},
		{"empty", "", "", "no PEM block found"},
		{"P-224", pemOf(t, &p224.PublicKey), "", "PEM block #1 (PUBLIC KEY): the EC key's curve P-224 is not supported"},
		{"second block bad", pemOf(t, &p256Key().PublicKey) + "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "", "PEM block #2 (PUBLIC KEY)"},
		{"unknown block", "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", "", "unsupported PEM block type"},
		{"EC private key", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "", "this is a private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parsePEM([]byte(tc.text), "test")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, k := range keys {
				kinds = append(kinds, k.kind)
				if k.kid != "" {
					t.Fatalf("PEM key with kid %q", k.kid)
				}
			}
			if got := strings.Join(kinds, ","); got != tc.kinds {
				t.Fatalf("kinds = %s, want %s", got, tc.kinds)
			}
		})
	}
}

func TestHMACKey(t *testing.T) {
	for _, tc := range []struct {
		size int
		algs string
	}{
		{31, ""}, {32, "HS256"}, {47, "HS256"}, {48, "HS256,HS384"}, {64, "HS256,HS384,HS512"}, {100, "HS256,HS384,HS512"},
	} {
		k, err := newHMACKey(make([]byte, tc.size), "test")
		if tc.algs == "" {
			if err == nil {
				t.Fatalf("%d-byte secret accepted", tc.size)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(k.algs, ","); got != tc.algs {
			t.Fatalf("%d-byte secret: algs %s, want %s", tc.size, got, tc.algs)
		}
	}
}

func TestReadHMACSecret(t *testing.T) {
	secret := " 0123456789abcdef0123456789abcdef "
	for _, suffix := range []string{"", "\n", "\r\n", "\n\n"} {
		got, err := ReadHMACSecret(writeFile(t, "s", []byte(secret+suffix)))
		if err != nil || string(got) != secret {
			t.Fatalf("secret%q: got %q, %v; want %q (only trailing newlines trimmed)", suffix, got, err, secret)
		}
	}
}

func TestCandidates(t *testing.T) {
	mk := func(kid string, pub any) *key {
		k, err := newPublicKey(pub, kid, "", "test")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	hmacKey, _ := newHMACKey(hmacSecret(), "test")
	ks := newKeySet([]*key{
		mk("", &rsaKey().PublicKey), mk("r2", &rsaKey2().PublicKey), mk("e1", &p256Key().PublicKey),
		mk("e1", &p384Key().PublicKey), hmacKey,
	})
	for _, tc := range []struct {
		alg, kid string
		want     string // kinds of the candidates
		known    bool
	}{
		{"RS256", "", "RSA-2048,RSA-2048", false},
		{"RS256", "r2", "RSA-2048,RSA-2048", true}, // the PEM key without kid and r2
		{"RS256", "e1", "RSA-2048", true},          // e1 names EC keys: only the PEM key without kid fits
		{"ES256", "e1", "EC P-256", true},
		{"ES384", "e1", "EC P-384", true},
		{"ES512", "e1", "", true},
		{"ES256", "zz", "", false},
		{"HS256", "r2", "64-byte HMAC secret", true},
		{"EdDSA", "", "", false},
	} {
		fit, known := ks.candidates(tc.alg, tc.kid)
		var kinds []string
		for _, k := range fit {
			kinds = append(kinds, k.kind)
		}
		if got := strings.Join(kinds, ","); got != tc.want || known != tc.known {
			t.Fatalf("candidates(%s, %q) = %s, %v; want %s, %v", tc.alg, tc.kid, got, known, tc.want, tc.known)
		}
	}
	if got := ks.describe(); got != "2 RSA-2048, 1 EC P-256, 1 EC P-384, 1 64-byte HMAC secret" {
		t.Fatalf("describe = %s", got)
	}
}

func TestKeyMetricsRedactURL(t *testing.T) {
	// The label is the URL without credentials, query or fragment (internal/redact owns the rule).
	in := "https://user:s3cret@idp.example.com/keys?token=x#f"
	want := metrics.GetOrCreateCounter(`vmgateway_auth_key_fetches_total{url="https://idp.example.com/keys"}`)
	if got := keyFetches(in); got != want {
		t.Errorf("keyFetches(%q) is not the counter labelled with the redacted URL", in)
	}
}
