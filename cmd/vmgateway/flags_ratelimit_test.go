package main

import (
	"net/url"
	"testing"
)

// TestDerivedKeyPrefix: the default Redis key prefix is the same for gateways that name the same backends, in any
// order and with any credentials, and differs for other backends or another -clusterMode.
func TestDerivedKeyPrefix(t *testing.T) {
	urls := func(ss ...string) []*url.URL {
		out := make([]*url.URL, len(ss))
		for i, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = u
		}
		return out
	}
	base := derivedKeyPrefix(true, urls("http://sel1:8481", "http://sel2:8481"), urls("http://ins1:8480"))
	same := []string{
		derivedKeyPrefix(true, urls("http://sel2:8481", "http://sel1:8481"), urls("http://ins1:8480")),
		derivedKeyPrefix(true, urls("http://u:secret@sel1:8481", "http://sel2:8481"), urls("http://ins1:8480")),
	}
	other := []string{
		derivedKeyPrefix(false, urls("http://sel1:8481", "http://sel2:8481"), urls("http://ins1:8480")),
		derivedKeyPrefix(true, urls("http://sel1:8481"), urls("http://ins1:8480")),
		derivedKeyPrefix(true, urls("http://sel1:8481", "http://sel2:8481"), urls("http://ins2:8480")),
		// A read URL moved to the write list is another deployment.
		derivedKeyPrefix(true, urls("http://sel1:8481"), urls("http://sel2:8481", "http://ins1:8480")),
	}
	if len(base) != len("vmgateway:ratelimit:")+16 || base[:len("vmgateway:ratelimit:")] != "vmgateway:ratelimit:" {
		t.Errorf("derived prefix %q", base)
	}
	for i, p := range same {
		if p != base {
			t.Errorf("same backends #%d: %q, want %q", i, p, base)
		}
	}
	for i, p := range other {
		if p == base {
			t.Errorf("other backends #%d share the prefix %q", i, p)
		}
	}
}
