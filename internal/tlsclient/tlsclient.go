// Package tlsclient builds the client side of the gateway's connections to an upstream (VictoriaMetrics, the
// datasource, Redis): the -<prefix>.tls* flags, the TLS config they describe, with errors that name those flags,
// the tuned keep-alive transport (the datasource) and the gateway's forwarding client (internal/proxyclient).
package tlsclient

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
)

// Options are the -<prefix>.tlsCAFile, tlsCertFile, tlsKeyFile, tlsServerName and tlsInsecureSkipVerify values.
type Options struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// NewFlags declares the -<prefix>.tls* flags of one upstream; target names it in the help ("-read.url", "the
// rediss:// -ratelimit.redis.url").
func NewFlags(prefix, target string) *Options {
	o := &Options{}
	flag.StringVar(&o.CAFile, prefix+".tlsCAFile", "", "Path to TLS CA file to verify the server certificate when connecting to "+target+". By default, system CA is used")
	flag.StringVar(&o.CertFile, prefix+".tlsCertFile", "", "Path to client-side TLS certificate file to use when connecting to "+target)
	flag.StringVar(&o.KeyFile, prefix+".tlsKeyFile", "", "Path to client-side TLS key file to use when connecting to "+target)
	flag.StringVar(&o.ServerName, prefix+".tlsServerName", "", "TLS server name to use for server certificate verification when connecting to "+target)
	flag.BoolVar(&o.InsecureSkipVerify, prefix+".tlsInsecureSkipVerify", false, "Whether to skip verification of the server certificate when connecting to "+target)
	return o
}

// Config loads the CA and the client certificate; flagPrefix ("read", "datasource") names the flags in errors.
func Config(flagPrefix string, o Options) (*tls.Config, error) {
	tc := &tls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pool, err := LoadCA(flagPrefix+".tlsCAFile", o.CAFile)
		if err != nil {
			return nil, err
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

// LoadCA reads the PEM CA certificates at path, given by the flag named flagName ("auth.keysTLSCAFile").
func LoadCA(flagName, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read -%s: %w", flagName, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-%s=%q holds no PEM certificate", flagName, path)
	}
	return pool, nil
}
