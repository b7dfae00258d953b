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

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/gateway"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/ratelimit"
	"github.com/vmgateway/vmgateway/internal/redact"
	"github.com/vmgateway/vmgateway/internal/server"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

var (
	httpListenAddrs = flagutil.NewArrayDefault("httpListenAddr", []string{":8431"}, "TCP addresses to listen for incoming http requests")
	clusterMode     = flag.Bool("clusterMode", false, "Enable this for the cluster version of VictoriaMetrics: reads go to /select/<tenant>/..., writes to /insert/<tenant>/..., with the tenant from the token")
	readTimeout     = flag.Duration("read.timeout", time.Minute, "How long to wait for the read upstream's response headers before answering 504 (a wait may run up to a sixteenth longer: a busy connection's deadline is not moved at every request). A response that has started streaming is never cut. A read that takes a slot at the read backends (see -read.maxConcurrentRequests) keeps it after its 504 until the backend answers, at most ten times this, as VictoriaMetrics computes the query to its end")
	writeTimeout    = flag.Duration("write.timeout", time.Minute, "How long to wait for the write upstream's response headers before answering 504 (a wait may run up to a sixteenth longer, as with -read.timeout)")
	readDialTimeout = flag.Duration("read.dialTimeout", tlsclient.DefaultDialTimeout, "How long to wait for a TCP connection to a read backend. "+
		"A backend that does not accept in time is skipped for -failTimeout and the next one is tried; when none is left the client gets 504. See also -read.timeout")
	writeDialTimeout = flag.Duration("write.dialTimeout", tlsclient.DefaultDialTimeout, "How long to wait for a TCP connection to a write backend. "+
		"A backend that does not accept in time is skipped for -failTimeout and the next one is tried; when none is left the client gets 504. See also -write.timeout")

	pathPrefix          = flag.String("http.pathPrefix", "", "An optional prefix to add to all the paths handled by the http server, e.g. /gateway")
	shutdownDelay       = flag.Duration("http.shutdownDelay", 0, "Optional delay before http server shutdown. During this delay, the server returns non-OK responses from /health page, so load balancers can route new requests to other servers")
	maxGracefulShutdown = flag.Duration("http.maxGracefulShutdownDuration", 7*time.Second, "The maximum duration for a graceful shutdown of the HTTP server: in-flight requests get this long to finish")
	idleConnTimeout     = flag.Duration("http.idleConnTimeout", time.Minute, "Timeout for incoming idle http connections")
	connTimeout         = flag.Duration("http.connTimeout", 2*time.Minute, "Incoming connections to -httpListenAddr are closed after the configured timeout. This may help evenly spreading load among a cluster of services behind TCP-level load balancer. Zero value disables closing of incoming connections")
	readHeaderTimeout   = flag.Duration("http.readHeaderTimeout", 10*time.Second, "How long a client may take to send the request headers; slower clients are cut off")
	answerIdleTimeout   = flag.Duration("http.answerIdleTimeout", time.Minute, "How long one write of an answer may wait for the client to take it (its receive window full, nothing read) before the gateway cuts the connection and frees the request's concurrency slot and upstream request, so a client that stops reading cannot hold them. As nginx's send_timeout, it bounds each write, not the rate: a client that keeps taking a little holds its slot while its answer lasts, within its tenant's concurrency limits. Zero means no limit")
	maxConnections      = flag.Int("http.maxConnections", 0, "The most client connections the gateway holds at once, all -httpListenAddr together. At the bound, a new connection takes the place of the one that has waited longest (at least a second) for a request's head, silent or slow ones before those kept alive after an answer, so that connections which send nothing, or a byte at a time, cannot run the gateway out of file descriptors and keep out clients with requests to send; when none may go, the new one is closed at once. "+
		"0 (the default) sets it to three quarters of the open-files limit (ulimit -n), at most 65536; a negative value sets no bound")
	maxHeaderBytes = flag.Int("http.maxHeaderBytes", 64*1024, "The maximum size of a request's line and headers (token included); larger requests get 431 with a JSON error. Reading a head stops at max(2×this, 1MiB): such a request gets the same JSON 431 from the HTTP server itself")

	httpAuthUsername = flag.String("httpAuth.username", "", "Username for HTTP server's Basic Auth. The authentication is disabled if empty. See also -httpAuth.password")
	httpAuthPassword = flagutil.NewSecret("httpAuth.password", "Password for HTTP server's Basic Auth. The authentication is disabled if -httpAuth.username is empty")
	metricsAuthKey   = flagutil.NewSecret("metricsAuthKey", "Auth key for /metrics endpoint. It must be passed via authKey query arg. It overrides -httpAuth.*")
	pprofAuthKey     = flagutil.NewSecret("pprofAuthKey", "Auth key for /debug/pprof/* endpoints. It must be passed via authKey query arg. It overrides -httpAuth.*. Without it (or -httpAuth.*), pprof is disabled")

	tlsEnable     = flagutil.NewArrayBool("tls", "Whether to enable TLS for incoming HTTP requests at the given -httpListenAddr (aka https). -tlsCertFile and -tlsKeyFile must be set if -tls is set")
	tlsCertFile   = flagutil.NewArray("tlsCertFile", "Path to file with TLS certificate for the corresponding -httpListenAddr if -tls is set. The file is re-read when it changes")
	tlsKeyFile    = flagutil.NewArray("tlsKeyFile", "Path to file with TLS key for the corresponding -httpListenAddr if -tls is set. The file is re-read when it changes")
	tlsMinVersion = flag.String("tlsMinVersion", "TLS12", "Minimum TLS version for incoming requests if -tls is set. Supported values: TLS12, TLS13")
)

var (
	readTLS  = tlsclient.NewFlags("read", "-read.url")
	writeTLS = tlsclient.NewFlags("write", "-write.url")
)

// app is the running gateway: its components, started and stopped in order.
type app struct {
	srv      *server.Server
	verifier *auth.Verifier
	gate     *ratelimit.Gate
	gw       *gateway.Gateway
	qlimits  *querylimits.Limiter
	alog     *accesslog.Log
	reloader *reloader
	trunc    *truncationWatch
	reads    *slotsWatch
	writes   *slotsWatch
}

// configs are the components' configs, as the flags give them, checked.
type configs struct {
	gw   gateway.Config // without the verifier, the gate and the query limits, which newApp adds
	rl   ratelimit.Config
	alog accesslog.Config
	srv  server.Config // without the handlers, which newApp adds
}

// checkFlags checks every flag that can be checked before a component is built, and gives the configs they make.
func checkFlags() (c configs, err error) {
	ru, err := backendURLs("read.url", *readURLs)
	if err != nil {
		return c, err
	}
	wu, err := backendURLs("write.url", *writeURLs)
	if err != nil {
		return c, err
	}
	backends, err := backendOptions()
	if err != nil {
		return c, err
	}
	limits, err := gatewayLimits()
	if err != nil {
		return c, err
	}
	minTLS, err := parseTLSVersion(*tlsMinVersion)
	if err != nil {
		return c, err
	}
	if g := *gcMinHeapGrowth; g < 0 || int64(g) > 1<<40 {
		return c, fmt.Errorf("-gc.minHeapGrowth=%d is out of range: give a number of bytes up to 1TiB, or 0 to leave the collector to GOGC alone", g)
	}
	readRT, err := tlsclient.NewUpstream("read", *readTLS, *readTimeout, *readDialTimeout)
	if err != nil {
		return c, err
	}
	writeRT, err := tlsclient.NewUpstream("write", *writeTLS, *writeTimeout, *writeDialTimeout)
	if err != nil {
		return c, err
	}
	c.gw = gateway.Config{
		ReadURLs: ru, WriteURLs: wu, Backends: backends,
		ReadTransport: readRT, WriteTransport: writeRT,
		Cluster:    *clusterMode,
		AuthHeader: *authHTTPHeader,
		Limits:     limits,
	}
	if err := checkAuthFlags(); err != nil {
		return c, err
	}
	if c.rl, err = rateLimitCfg(); err != nil {
		return c, err
	}
	if c.alog, err = accessLogConfig(); err != nil {
		return c, err
	}
	c.srv = serverConfig(minTLS)
	return c, c.srv.Validate()
}

// newApp checks every flag before it builds any component, so that a bad flag stops the start with nothing to
// undo; then it builds the components, those that run in the background (key refreshes, backend discovery, the
// access log's flusher) last, and stops what it built when a later step fails.
func newApp() (_ *app, err error) {
	c, err := checkFlags()
	if err != nil {
		return nil, err
	}
	a := &app{}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	// The gate and the query limits read their files here but start nothing before start().
	// Typed nils must not reach the gateway's interfaces: a nil *Gate in a Limiter is not a nil Limiter.
	if a.gate, err = newGate(c.rl); err != nil {
		return nil, err
	}
	if a.gate != nil {
		c.gw.Limiter, c.gw.Costs, c.gw.Spacing = a.gate, a.gate, a.gate
	}
	if a.qlimits, err = newQueryLimits(); err != nil {
		return nil, err
	}
	if a.qlimits != nil {
		c.gw.QueryLimits = a.qlimits
	}
	if a.verifier, err = newVerifier(); err != nil {
		return nil, err
	}
	if a.verifier != nil {
		c.gw.Auth = a.verifier
	}
	a.trunc = newTruncationWatch(c.gw.WriteURLs, c.gw.WriteTransport)
	c.gw.LabelLimit = labelLimitOf(a.trunc)
	a.writes = newSlotsWatch(writeSlots, c.gw.WriteTransport)
	switch {
	case a.trunc != nil && a.writes != nil:
		c.gw.WriteAddrs = func(addrs []gateway.BackendAddr) {
			a.trunc.setAddrs(addrs)
			a.writes.setAddrs(addrs)
		}
	case a.trunc != nil:
		c.gw.WriteAddrs = a.trunc.setAddrs
	case a.writes != nil:
		c.gw.WriteAddrs = a.writes.setAddrs
	}
	if a.reads = newSlotsWatch(readSlots, c.gw.ReadTransport); a.reads != nil {
		c.gw.ReadAddrs = a.reads.setAddrs
	}
	if a.gw, err = gateway.New(c.gw); err != nil {
		return nil, err
	}
	if a.alog, err = accesslog.Open(c.alog); err != nil {
		return nil, err
	}
	a.reloader = newReloader(a)
	c.srv.Handler = a.gw
	c.srv.Extra = append(rateLimitStatus(a.gate), a.reloader.endpoint(), a.statusEndpoint())
	c.srv.AccessLog = a.alog
	if a.srv, err = server.New(c.srv); err != nil {
		return nil, err
	}
	return a, nil
}

// serverConfig is the server.Config of the -http*, -tls* and auth-key flags, without the handlers.
func serverConfig(minTLS uint16) server.Config {
	return server.Config{
		ListenAddrs:         []string(*httpListenAddrs),
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
		AnswerIdleTimeout:   *answerIdleTimeout,
		MaxHeaderBytes:      *maxHeaderBytes,
		MaxConnections:      *maxConnections,
		BasicAuthUsername:   *httpAuthUsername,
		BasicAuthPassword:   httpAuthPassword.Get(),
		MetricsAuthKey:      metricsAuthKey.Get(),
		PprofAuthKey:        pprofAuthKey.Get(),
	}
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
	a.trunc.start()
	startSlots(readSlots, a.reads, a.gw)
	startSlots(writeSlots, a.writes, a.gw)
	return nil
}

// reopenAccessLog reopens the access log file on SIGHUP, for log rotation.
func (a *app) reopenAccessLog() {
	if p := *accessLogPath; a.alog != nil && p != "stdout" && p != "stderr" {
		if err := a.alog.Reopen(); err != nil {
			slog.Error("SIGHUP: cannot reopen the access log; writing on to the old file", "err", err)
		} else {
			slog.Info("SIGHUP: access log reopened", "path", p)
		}
	}
}

func (a *app) stop() error {
	err := a.srv.Shutdown()
	a.close()
	return err
}

// close stops the background work: key refreshes and the rate-limit poller.
func (a *app) close() {
	a.trunc.close()
	a.reads.close()
	a.writes.close()
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
	if err := a.alog.Close(); err != nil {
		slog.Error("cannot close the access log", "err", err)
	}
	a.alog = nil
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
		return nil, fmt.Errorf("invalid -%s=%q: want an http:// or https:// URL with a host, e.g. http://localhost:8428", name, redact.URL(u))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid -%s=%q: a query string or fragment would be sent with every request; remove it", name, redact.URL(u))
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
