package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certLoader re-reads the certificate at most once a second when its files change, so certificates renewed on
// disk are picked up without a restart (as VictoriaMetrics does).
type certLoader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	modTime   time.Time
	checkedAt time.Time
}

func newCertLoader(certFile, keyFile string) (*certLoader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("-tlsCertFile and -tlsKeyFile must both be set")
	}
	c := &certLoader{certFile: certFile, keyFile: keyFile}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certLoader) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("cannot load TLS certificate from -tlsCertFile=%q and -tlsKeyFile=%q: %w", c.certFile, c.keyFile, err)
	}
	c.cert = &cert
	c.modTime = modTime(c.certFile, c.keyFile)
	return nil
}

func (c *certLoader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checkedAt) > time.Second {
		c.checkedAt = time.Now()
		// Any change, not only a newer time: files copied with their times kept (cp -p, rsync -a, tar) are older
		// than the ones they replace (a review).
		if mt := modTime(c.certFile, c.keyFile); !mt.Equal(c.modTime) {
			if err := c.load(); err != nil {
				slog.Error("keeping the previous TLS certificate", "err", err)
			}
		}
	}
	return c.cert, nil
}

func modTime(files ...string) time.Time {
	var latest time.Time
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(latest) {
			latest = st.ModTime()
		}
	}
	return latest
}
