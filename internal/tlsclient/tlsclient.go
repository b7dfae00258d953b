// Package tlsclient builds the client-side TLS config of one upstream from its -<prefix>.tls* flags, with errors
// that name those flags.
package tlsclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Options are the -<prefix>.tlsCAFile, tlsCertFile, tlsKeyFile, tlsServerName and tlsInsecureSkipVerify values.
type Options struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// Config loads the CA and the client certificate; flagPrefix ("read", "datasource") names the flags in errors.
func Config(flagPrefix string, o Options) (*tls.Config, error) {
	tc := &tls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read -%s.tlsCAFile: %w", flagPrefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-%s.tlsCAFile=%q holds no PEM certificate", flagPrefix, o.CAFile)
		}
		tc.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, fmt.Errorf("-%s.tlsCertFile and -%s.tlsKeyFile must be set together", flagPrefix, flagPrefix)
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load the client certificate from -%s.tlsCertFile=%q and -%s.tlsKeyFile=%q: %w",
				flagPrefix, o.CertFile, flagPrefix, o.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
