package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/ratelimit"
	"github.com/vmgateway/vmgateway/internal/server"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

var (
	httpListenAddrs = flagutil.NewArrayDefault("httpListenAddr", []string{":8431"}, "TCP addresses to listen for incoming http requests")
	clusterMode     = flag.Bool("clusterMode", false, "Enable this for the cluster version of VictoriaMetrics: reads go to /select/<tenant>/..., writes to /insert/<tenant>/..., with the tenant from the token")
	readTimeout     = flag.Duration("read.timeout", time.Minute, "How long to wait for the read upstream's response headers before answering 504. A response that has started streaming is never cut")
	writeTimeout    = flag.Duration("write.timeout", time.Minute, "How long to wait for the write upstream's response headers before answering 504")

	pathPrefix          = flag.String("http.pathPrefix", "", "An optional prefix to add to all the paths handled by the http server, e.g. /gateway")
	shutdownDelay       = flag.Duration("http.shutdownDelay", 0, "Optional delay before http server shutdown. During this delay, the server returns non-OK responses from /health page, so load balancers can route new requests to other servers")
	maxGracefulShutdown = flag.Duration("http.maxGracefulShutdownDuration", 7*time.Second, "The maximum duration for a graceful shutdown of the HTTP server: in-flight requests get this long to finish")
	idleConnTimeout     = flag.Duration("http.idleConnTimeout", time.Minute, "Timeout for incoming idle http connections")
	connTimeout         = flag.Duration("http.connTimeout", 2*time.Minute, "Incoming connections to -httpListenAddr are closed after the configured timeout. This may help evenly spreading load among a cluster of services behind TCP-level load balancer. Zero value disables closing of incoming connections")
	readHeaderTimeout   = flag.Duration("http.readHeaderTimeout", 10*time.Second, "How long a client may take to send the request headers; slower clients are cut off")
	maxHeaderBytes      = flag.Int("http.maxHeaderBytes", 64*1024, "The maximum size of a request's line and headers (token included); larger requests get 431 with a JSON error. Headers beyond max(2×this, 1MiB) are cut by Go's HTTP server before the gateway sees them; on TLS listeners its 431 is plain text")

	httpAuthUsername = flag.String("httpAuth.username", "", "Username for HTTP server's Basic Auth. The authentication is disabled if empty. See also -httpAuth.password")
	httpAuthPassword = flagutil.NewSecret("httpAuth.password", "Password for HTTP server's Basic Auth. The authentication is disabled if -httpAuth.username is empty")
	metricsAuthKey   = flagutil.NewSecret("metricsAuthKey", "Auth key for /metrics endpoint. It must be passed via authKey query arg. It overrides -httpAuth.*")
	pprofAuthKey     = flagutil.NewSecret("pprofAuthKey", "Auth key for /debug/pprof/* endpoints. It must be passed via authKey query arg. It overrides -httpAuth.*. Without it (or -httpAuth.*), pprof is disabled")

	tlsEnable     = flagutil.NewArrayBool("tls", "Whether to enable TLS for incoming HTTP requests at the given -httpListenAddr (aka https). -tlsCertFile and -tlsKeyFile must be set if -tls is set")
	tlsCertFile   = flagutil.NewArray("tlsCertFile", "Path to file with TLS certificate for the corresponding -httpListenAddr if -tls is set. The file is re-read when it changes")
	tlsKeyFile    = flagutil.NewArray("tlsKeyFile", "Path to file with TLS key for the corresponding -httpListenAddr if -tls is set. The file is re-read when it changes")
	tlsMinVersion = flag.String("tlsMinVersion", "TLS12", "Minimum TLS version for incoming requests if -tls is set. Supported values: TLS12, TLS13")
)

// upstreamTLS declares the -<prefix>.tls* flags of one upstream.
func upstreamTLS(prefix, urlFlag string) *tlsclient.Options {
	tc := &tlsclient.Options{}
	flag.StringVar(&tc.CAFile, prefix+".tlsCAFile", "", "Path to TLS CA file to verify the server certificate when connecting to -"+urlFlag)
	flag.StringVar(&tc.CertFile, prefix+".tlsCertFile", "", "Path to client-side TLS certificate file to use when connecting to -"+urlFlag)
	flag.StringVar(&tc.KeyFile, prefix+".tlsKeyFile", "", "Path to client-side TLS key file to use when connecting to -"+urlFlag)
	flag.StringVar(&tc.ServerName, prefix+".tlsServerName", "", "TLS server name to use for server certificate verification when connecting to -"+urlFlag)
	flag.BoolVar(&tc.InsecureSkipVerify, prefix+".tlsInsecureSkipVerify", false, "Whether to skip verification of the server certificate when connecting to -"+urlFlag)
	return tc
}

var (
	readTLS  = upstreamTLS("read", "read.url")
	writeTLS = upstreamTLS("write", "write.url")
)

// app is the running gateway: its components, started and stopped in order.
type app struct {
	srv      *server.Server
	verifier *auth.Verifier
	gate     *ratelimit.Gate
	gw       *gateway.Gateway
	qlimits  *querylimits.Limiter
}

func newApp() (*app, error) {
	ru, err := backendURLs("read.url", *readURLs)
	if err != nil {
		return nil, err
	}
	wu, err := backendURLs("write.url", *writeURLs)
	if err != nil {
		return nil, err
	}
	backends, err := backendOptions()
	if err != nil {
		return nil, err
	}
	readRT, err := gateway.NewTransport("read", *readTLS, *readTimeout)
	if err != nil {
		return nil, err
	}
	writeRT, err := gateway.NewTransport("write", *writeTLS, *writeTimeout)
	if err != nil {
		return nil, err
	}
	limits, err := gatewayLimits()
	if err != nil {
		return nil, err
	}
	a := &app{}
	gcfg := gateway.Config{
		ReadURLs: ru, WriteURLs: wu, Backends: backends,
		ReadTransport: readRT, WriteTransport: writeRT,
		Cluster:    *clusterMode,
		AuthHeader: *authHTTPHeader,
		Limits:     limits,
	}
	// Typed nils must not reach the gateway's interfaces: a nil *Verifier in an Authenticator is not a nil Authenticator.
	if a.verifier, err = newVerifier(); err != nil {
		return nil, err
	}
	if a.verifier != nil {
		gcfg.Auth = a.verifier
	}
	if a.gate, err = newGate(); err != nil {
		a.close()
		return nil, err
	}
	if a.gate != nil {
		gcfg.Limiter = a.gate
	}
	if a.qlimits, err = newQueryLimits(); err != nil {
		a.close()
		return nil, err
	}
	if a.qlimits != nil {
		gcfg.QueryLimits = a.qlimits
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		a.close()
		return nil, err
	}
	a.gw = gw
	minTLS, err := parseTLSVersion(*tlsMinVersion)
	if err != nil {
		return nil, err
	}
	addrs := []string(*httpListenAddrs)
	srv, err := server.New(server.Config{
		ListenAddrs:         addrs,
		TLS:                 tlsEnable.Get,
		TLSCertFile:         tlsCertFile.Get,
		TLSKeyFile:          tlsKeyFile.Get,
		TLSMinVersion:       minTLS,
		PathPrefix:          *pathPrefix,
		ShutdownDelay:       *shutdownDelay,
		MaxGracefulShutdown: *maxGracefulShutdown,
		IdleConnTimeout:     *idleConnTimeout,
		ConnTimeout:         *connTimeout,
		ReadHeaderTimeout:   *readHeaderTimeout,
		MaxHeaderBytes:      *maxHeaderBytes,
		BasicAuthUsername:   *httpAuthUsername,
		BasicAuthPassword:   httpAuthPassword.Get(),
		MetricsAuthKey:      metricsAuthKey.Get(),
		PprofAuthKey:        pprofAuthKey.Get(),
		Handler:             gw,
		Extra:               rateLimitStatus(a.gate),
	})
	if err != nil {
		a.close()
		return nil, err
	}
	a.srv = srv
	return a, nil
}

func (a *app) start() error {
	if err := a.srv.Start(); err != nil {
		a.close()
		return err
	}
	if a.gate != nil {
		a.gate.Start()
	}
	if a.qlimits != nil {
		a.qlimits.Start()
	}
	return nil
}

// reload re-reads what can change without a restart (SIGHUP): the access policies, the query limits and the
// rate limits.
func (a *app) reload() {
	policies := a.verifier != nil && *authPolicyFile != ""
	if !policies && a.gate == nil && a.qlimits == nil {
		slog.Info("SIGHUP: nothing to reload (no -auth.policyFile, no -querylimits.config, and -enable.rateLimit is off)")
		return
	}
	if policies {
		if err := a.verifier.ReloadPolicies(); err != nil {
			slog.Error("SIGHUP: keeping the previous access policies", "err", err)
		} else {
			slog.Info("SIGHUP: access policies reloaded")
		}
	}
	if a.qlimits != nil {
		if err := a.qlimits.Reload(); err != nil {
			slog.Error("SIGHUP: keeping the previous query limits", "err", err)
		} else {
			slog.Info("SIGHUP: query limits reloaded")
		}
	}
	if a.gate == nil {
		return
	}
	if err := a.gate.Reload(); err != nil {
		slog.Error("SIGHUP: keeping the previous rate limits", "err", err)
		return
	}
	slog.Info("SIGHUP: rate limits reloaded")
}

func (a *app) stop() error {
	err := a.srv.Shutdown()
	a.close()
	return err
}

// close stops the background work: key refreshes and the rate-limit poller.
func (a *app) close() {
	if a.gw != nil {
		a.gw.Close()
	}
	if a.gate != nil {
		a.gate.Stop()
	}
	if a.qlimits != nil {
		a.qlimits.Stop()
	}
	if a.verifier != nil {
		a.verifier.Stop()
	}
}

func parseUpstreamURL(name, s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("-%s is required: the VictoriaMetrics URL to forward to, e.g. -%s=http://localhost:8428 for single-node", name, name)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid -%s: %w", name, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid -%s=%q: want an http:// or https:// URL with a host, e.g. http://localhost:8428", name, gateway.Redact(u))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid -%s=%q: a query string or fragment would be sent with every request; remove it", name, gateway.Redact(u))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func parseTLSVersion(s string) (uint16, error) {
	switch strings.ToUpper(s) {
	case "TLS12", "":
		return tls.VersionTLS12, nil
	case "TLS13":
		return tls.VersionTLS13, nil
	case "TLS10", "TLS11":
		return 0, fmt.Errorf("-tlsMinVersion=%s is insecure and not supported: use TLS12 or TLS13", s)
	}
	return 0, errors.New("invalid -tlsMinVersion=" + s + ": supported values are TLS12, TLS13")
}
