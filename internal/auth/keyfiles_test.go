package auth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestKeyFilesRotate: a rewritten PEM file and HMAC secret take effect on ReloadKeyFiles and, by themselves, at
// the check interval; tokens of the old keys are refused after the change (the cache forgets them); a bad new
// content keeps the keys in force and names the file.
func TestKeyFilesRotate(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	pemPath, secretPath := filepath.Join(dir, "pub.pem"), filepath.Join(dir, "hmac.secret")
	oldRSA, newRSA := mustRSA(2048), mustRSA(2048)
	oldSecret, newSecret := []byte(strings.Repeat("a", 32)), []byte(strings.Repeat("b", 32))
	write := func(p string, b []byte) {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pemPath, []byte(pemOf(t, &oldRSA.PublicKey)))
	write(secretPath, append(oldSecret, '\n'))
	v := newTestVerifier(t, Config{PublicKeyFiles: []string{pemPath}, HMACSecretFiles: []string{secretPath}, CacheSize: 100}, clk)

	oldRS := sign(t, jwt.SigningMethodRS256, oldRSA, "", claimsAt(clk.now()))
	newRS := sign(t, jwt.SigningMethodRS256, newRSA, "", claimsAt(clk.now()))
	oldHS := sign(t, jwt.SigningMethodHS256, oldSecret, "", claimsAt(clk.now()))
	newHS := sign(t, jwt.SigningMethodHS256, newSecret, "", claimsAt(clk.now()))
	accepts := func(tok string) bool { _, err := v.Verify(tok); return err == nil }
	if !accepts(oldRS) || !accepts(oldHS) || accepts(newRS) || accepts(newHS) {
		t.Fatal("before the rotation only the old keys verify")
	}
	before := v.KeySources()
	if len(before) != 2 || len(before[0].Keys) != 1 || !strings.HasPrefix(before[0].Keys[0], "RSA-2048 ") || before[0].LastSuccess.IsZero() {
		t.Fatalf("key sources: %+v", before)
	}

	// Unchanged files: nothing to report.
	if changes, err := v.ReloadKeyFiles(); err != nil || len(changes) != 0 {
		t.Fatalf("reload of unchanged files: %q, %v", changes, err)
	}
	// A broken PEM file: the error names it and every key stays, the good HMAC change included.
	write(pemPath, []byte("not a key"))
	write(secretPath, newSecret)
	if _, err := v.ReloadKeyFiles(); err == nil || !strings.Contains(err.Error(), pemPath) {
		t.Fatalf("reload of a broken PEM file: %v", err)
	}
	if !accepts(oldRS) || !accepts(oldHS) || accepts(newHS) {
		t.Fatal("a failed reload changed the keys")
	}
	if s := v.KeySources(); s[0].Error == "" {
		t.Fatalf("the failed read is not shown: %+v", s[0])
	}
	write(pemPath, []byte(pemOf(t, &newRSA.PublicKey)))
	changes, err := v.ReloadKeyFiles()
	if err != nil || len(changes) != 2 || !strings.Contains(changes[0], pemPath) || !strings.Contains(changes[1], secretPath) {
		t.Fatalf("reload after the rotation: %q, %v", changes, err)
	}
	if accepts(oldRS) || accepts(oldHS) || !accepts(newRS) || !accepts(newHS) {
		t.Fatal("after the reload only the new keys verify")
	}
	if after := v.KeySources(); after[0].Keys[0] == before[0].Keys[0] || after[0].Error != "" {
		t.Fatalf("the key id did not change with the key: %+v → %+v", before[0], after[0])
	}
}

// TestKeyFilesWatched: with a check interval, a rewritten file takes effect without any call.
func TestKeyFilesWatched(t *testing.T) {
	secretPath := writeFile(t, "hmac.secret", []byte(strings.Repeat("a", 32)))
	v, err := newVerifier(Config{HMACSecretFiles: []string{secretPath}, KeyFilesCheckInterval: 20 * time.Millisecond}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	newSecret := []byte(strings.Repeat("c", 48))
	tok := sign(t, jwt.SigningMethodHS384, newSecret, "", claimsAt(time.Now()))
	if _, err := v.Verify(tok); err == nil {
		t.Fatal("a token of a secret not yet in the file verified")
	}
	if err := os.WriteFile(secretPath, newSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := v.Verify(tok); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the rewritten secret file was not picked up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyFileRotationRacesVerification: a token whose verification with a key was under way when a rotation
// removed the key must not be cached after the cache was cleared, or it would stay valid until its exp. A holder
// of a leaked key floods freshly signed tokens while the operator rotates it away; after the rotation none of them
// may verify.
func TestKeyFileRotationRacesVerification(t *testing.T) {
	clk := newClock()
	secretPath := writeFile(t, "hmac.secret", []byte(strings.Repeat("k", 32)))
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{secretPath}, CacheSize: 1 << 16}, clk)
	for round := 0; round < 50; round++ {
		secret := []byte(fmt.Sprintf("%032d", round))
		if err := os.WriteFile(secretPath, secret, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := v.ReloadKeyFiles(); err != nil {
			t.Fatal(err)
		}
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			minted  []string
			stop    atomic.Bool
			started sync.WaitGroup
		)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					c := claimsAt(clk.now())
					c["jti"] = fmt.Sprintf("%d-%d-%d", round, g, i)
					tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
					if err != nil {
						panic(err)
					}
					mu.Lock()
					minted = append(minted, tok)
					mu.Unlock()
					_, _ = v.Verify(tok)
					if i == 0 {
						started.Done()
					}
				}
			}()
		}
		started.Wait()
		if err := os.WriteFile(secretPath, []byte(strings.Repeat("z", 32)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := v.ReloadKeyFiles(); err != nil {
			t.Fatal(err)
		}
		stop.Store(true)
		wg.Wait()
		bad := 0
		for _, tok := range minted {
			if _, err := v.Verify(tok); err == nil {
				bad++
			}
		}
		if bad > 0 {
			t.Fatalf("round %d: %d of %d tokens of the rotated-away secret still verify (cached while the rotation ran)", round, bad, len(minted))
		}
	}
}

// TestHMACSecretFileHoldingAPublicKey: a public key given (or rotated in) as an HMAC secret would let anyone who
// has the public key, which is public, sign HS256 tokens with it: algorithm confusion by configuration. Such a
// secret is refused at the start and on reload, and the keys in force stay.
func TestHMACSecretFileHoldingAPublicKey(t *testing.T) {
	pub := []byte(pemOf(t, &mustRSA(2048).PublicKey))
	path := writeFile(t, "hmac.secret", pub)
	if _, err := newVerifier(Config{HMACSecretFiles: []string{path}}, time.Now); err == nil || !strings.Contains(err.Error(), "-auth.publicKeyFiles") {
		t.Fatalf("a public key as the HMAC secret at the start: %v; want an error pointing to -auth.publicKeyFiles", err)
	}

	clk := newClock()
	good := []byte(strings.Repeat("s", 32))
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, Config{HMACSecretFiles: []string{path}, CacheSize: 100}, clk)
	if err := os.WriteFile(path, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReloadKeyFiles(); err == nil || !strings.Contains(err.Error(), "-auth.publicKeyFiles") {
		t.Fatalf("a public key rotated in as the HMAC secret: %v; want an error pointing to -auth.publicKeyFiles", err)
	}
	forged := sign(t, jwt.SigningMethodHS256, pub, "", claimsAt(clk.now()))
	if _, err := v.Verify(forged); err == nil {
		t.Fatal("a token signed with the public key's text verifies")
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, good, "", claimsAt(clk.now()))); err != nil {
		t.Fatalf("the secret in force no longer verifies: %v", err)
	}
}
