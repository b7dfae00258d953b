// Package server serves the gateway over HTTP(S): listeners, TLS, basic auth, the gateway's own endpoints
// (/health, /metrics, /debug/pprof/) and graceful shutdown.
package server

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmgateway/vmgateway/internal/sockio"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/h1"
	"github.com/vmgateway/vmgateway/internal/httperr"
)

// Config is what the -http*, -tls* and auth-key flags give.
type Config struct {
	ListenAddrs   []string
	TLS           func(i int) bool
	TLSCertFile   func(i int) string
	TLSKeyFile    func(i int) string
	TLSMinVersion uint16

	// PathPrefix is -http.pathPrefix: every path, the gateway's own included, is served below it.
	PathPrefix string

	ShutdownDelay       time.Duration
	MaxGracefulShutdown time.Duration
	IdleConnTimeout     time.Duration
	// ConnTimeout closes a client connection after this age, so load spreads again behind TCP balancers.
	ConnTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	// AnswerIdleTimeout bounds each write of an answer to a client that reads none of it (h1's WriteIdleTimeout).
	AnswerIdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers; beyond it the client gets a JSON 431 (see limits.go).
	MaxHeaderBytes int
	// MaxConnections is -http.maxConnections: the client connections open at once, all listeners together (0: from
	// the open-files limit, negative: no bound). At the bound a new connection takes the place of one waiting for a
	// request (h1.Server.MaxConns).
	MaxConnections int

	BasicAuthUsername string
	BasicAuthPassword string
	MetricsAuthKey    string
	PprofAuthKey      string

	// Handler serves everything that is not the gateway's own endpoint: the proxied VictoriaMetrics APIs.
	Handler http.Handler
	// Extra are more own endpoints below the prefix (e.g. a status page), each protected by its auth key.
	Extra []Endpoint
	// AccessLog gets a line for every request; nil writes none. Every request gets an id either way.
	AccessLog *accesslog.Log
}

// Endpoint is an own endpoint protected by an auth key passed as the authKey query arg.
type Endpoint struct {
	Path    string
	AuthKey string
	// AuthKeyFlag names the flag that sets AuthKey, for the messages that tell a client what to pass.
	AuthKeyFlag string
	Handler     http.Handler
	// Open serves the endpoint without a key or basic auth set, as /metrics is; otherwise it is disabled until one is.
	Open bool
}

// Server is the running HTTP server: the gateway's own HTTP/1.1 server (internal/h1) on each listener.
type Server struct {
	cfg       Config
	servers   []*h1.Server
	tlsCfgs   []*tls.Config
	listeners []net.Listener
	stopping  atomic.Bool
	wg        sync.WaitGroup
	own       *http.ServeMux
	// ownPaths are the own endpoints' patterns, for mayBeOwn; ownAny: one is not a plain path, so every request
	// asks the mux.
	ownPaths []string
	ownAny   bool
}

var (
	healthDown = metrics.NewGauge(`vmgateway_shutting_down`, nil)
	connsTotal = metrics.NewCounter(`vmgateway_http_conns_total`)
)

// Validate checks what the flags say, certificates loaded, without building anything: the app calls it before it
// builds the components that run in the background, so a bad flag stops the start with nothing to undo.
func (cfg Config) Validate() error {
	if err := cfg.checkFlags(); err != nil {
		return err
	}
	_, err := cfg.certLoaders()
	return err
}

// checkFlags is Validate without loading the certificates.
func (cfg Config) checkFlags() error {
	if len(cfg.ListenAddrs) == 0 {
		return errors.New("-httpListenAddr is empty: give at least one address to listen on, e.g. -httpListenAddr=:8431")
	}
	if cfg.PathPrefix != "" && (!strings.HasPrefix(cfg.PathPrefix, "/") || strings.Contains(cfg.PathPrefix, "//")) {
		return fmt.Errorf("-http.pathPrefix=%q must start with a single / (e.g. /gateway)", cfg.PathPrefix)
	}
	if cfg.BasicAuthUsername == "" && cfg.BasicAuthPassword != "" {
		return errors.New("-httpAuth.password is set without -httpAuth.username: set both or neither")
	}
	return nil
}

// certLoaders loads the certificate of each -tls listener; nil for a plain one.
func (cfg Config) certLoaders() ([]*certLoader, error) {
	loaders := make([]*certLoader, len(cfg.ListenAddrs))
	for i, addr := range cfg.ListenAddrs {
		if cfg.TLS == nil || !cfg.TLS(i) {
			continue
		}
		c, err := newCertLoader(cfg.TLSCertFile(i), cfg.TLSKeyFile(i))
		if err != nil {
			return nil, fmt.Errorf("-tls is set for -httpListenAddr=%s: %w", addr, err)
		}
		loaders[i] = c
	}
	return loaders, nil
}

// New checks the config (see Validate) and loads TLS certificates; Start binds the listeners.
func New(cfg Config) (*Server, error) {
	if err := cfg.checkFlags(); err != nil {
		return nil, err
	}
	// Loaded once here, not also by Validate: the certificates New serves are the ones it checked.
	loaders, err := cfg.certLoaders()
	if err != nil {
		return nil, err
	}
	cfg.PathPrefix = strings.TrimSuffix(cfg.PathPrefix, "/")
	s := &Server{cfg: cfg, own: http.NewServeMux()}
	s.handleOwn("/health", http.HandlerFunc(s.health))
	s.handleOwn("/metrics", s.keyed(cfg.MetricsAuthKey, "-metricsAuthKey", http.HandlerFunc(writeMetrics), true))
	s.handleOwn("/debug/pprof/", s.keyed(cfg.PprofAuthKey, "-pprofAuthKey", http.HandlerFunc(pprofIndex), false))
	for _, e := range cfg.Extra {
		s.handleOwn(e.Path, s.keyed(e.AuthKey, e.AuthKeyFlag, e.Handler, e.Open))
	}
	handler := accesslog.Wrap(s, cfg.AccessLog)
	for i := range cfg.ListenAddrs {
		var tlsCfg *tls.Config
		if c := loaders[i]; c != nil {
			// Only HTTP/1.1 is offered: HTTP/2 clients settle on it in the handshake (docs/security-model.md).
			tlsCfg = &tls.Config{GetCertificate: c.get, MinVersion: max(cfg.TLSMinVersion, tls.VersionTLS12), NextProtos: []string{"http/1.1"}}
		}
		s.tlsCfgs = append(s.tlsCfgs, tlsCfg)
		s.servers = append(s.servers, &h1.Server{
			Handler:           handler,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			IdleTimeout:       cfg.IdleConnTimeout,
			WriteIdleTimeout:  cfg.AnswerIdleTimeout,
			MaxConnAge:        cfg.ConnTimeout,
			MaxHeaderBytes:    goHeaderLimit(cfg.MaxHeaderBytes),
			Rejected:          s.rejected,
			ConnOpened:        connsTotal.Inc,
			MaxConns:          connBound(cfg.MaxConnections, len(cfg.ListenAddrs)),
			ConnEvicted:       connsEvicted.Inc,
			ConnRefused:       connsRefused.Inc,
		})
	}
	return s, nil
}

// Start binds every listener and serves in the background. A busy port is an error here, not later.
func (s *Server) Start() error {
	for i, addr := range s.cfg.ListenAddrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("cannot listen on -httpListenAddr=%s: %w", addr, err)
		}
		ln = sockio.Listener(ln)
		if c := s.tlsCfgs[i]; c != nil {
			ln = tls.NewListener(ln, c)
		}
		s.listeners = append(s.listeners, ln)
	}
	for i, srv := range s.servers {
		scheme := "http"
		if s.tlsCfgs[i] != nil {
			scheme = "https"
		}
		s.wg.Add(1)
		go func(srv *h1.Server, ln net.Listener) {
			defer s.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, h1.ErrServerClosed) {
				slog.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
			}
		}(srv, s.listeners[i])
		slog.Info("listening", "addr", s.listeners[i].Addr().String(), "scheme", scheme, "pathPrefix", s.cfg.PathPrefix)
	}
	return nil
}

// Addrs are the bound addresses (useful when a listen address asked for port 0).
func (s *Server) Addrs() []net.Addr {
	addrs := make([]net.Addr, len(s.listeners))
	for i, ln := range s.listeners {
		addrs[i] = ln.Addr()
	}
	return addrs
}

func (s *Server) closeListeners() {
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.listeners = nil
}

// Shutdown makes /health answer 503 for -http.shutdownDelay so balancers move traffic away, then stops
// accepting and lets in-flight requests finish within -http.maxGracefulShutdownDuration.
func (s *Server) Shutdown() error {
	s.stopping.Store(true)
	healthDown.Set(1)
	if d := s.cfg.ShutdownDelay; d > 0 {
		slog.Info("shutdown delay: /health answers 503 while balancers move traffic away", "delay", d.String())
		time.Sleep(d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.MaxGracefulShutdown)
	defer cancel()
	var errs []error
	for i, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: in-flight requests did not finish within -http.maxGracefulShutdownDuration=%s: %w",
				s.cfg.ListenAddrs[i], s.cfg.MaxGracefulShutdown, err))
			_ = srv.Close()
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// ServeHTTP strips the path prefix, serves the own endpoints, and hands everything else to the gateway.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1) {
		// net/http drops a Content-Length that came with Transfer-Encoding, and a Transfer-Encoding on HTTP/1.0,
		// without saying so; RFC 9112 6.1 and 6.3 require the connection closed after such a request, since a
		// proxy in front may have framed it the other way. The gateway cannot tell them apart, so it closes after
		// every chunked or HTTP/1.0 request: no bytes after one are read as another request.
		w.Header().Set("Connection", "close")
	}
	if !s.checkHeaderSize(w, r) {
		return
	}
	path := r.URL.Path
	if p := s.cfg.PathPrefix; p != "" {
		rest, ok := strings.CutPrefix(path, p)
		if !ok || (rest != "" && rest[0] != '/') {
			httperr.WriteStatus(w, http.StatusNotFound, fmt.Sprintf("path %q is outside -http.pathPrefix=%q", path, p))
			return
		}
		if rest == "" {
			rest = "/"
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		// The raw path keeps escapes the route table must see (%2F); when the prefix itself was escaped it no longer
		// lines up, and the decoded path alone is used.
		r2.URL.RawPath = ""
		if raw, ok := strings.CutPrefix(r.URL.RawPath, p); ok {
			r2.URL.RawPath = raw
		}
		r = r2
		path = rest
	}
	if s.mayBeOwn(r.Method, path) {
		if h, pattern := s.ownHandler(r, path); h != nil {
			accesslog.From(w).SetAPI(pattern)
			h.ServeHTTP(w, r)
			return
		}
	}
	if !s.basicAuthOK(w, r) {
		return
	}
	s.cfg.Handler.ServeHTTP(w, r)
}

// ownHandler is the own endpoint for r, whose path below the prefix is path, and its pattern; nil when r is not
// for one (the mux's answers for other paths, its redirects and 404s, are not the gateway's).
func (s *Server) ownHandler(r *http.Request, path string) (http.Handler, string) {
	if h, pattern := s.own.Handler(r); pattern != "" && (pattern == path || strings.HasSuffix(pattern, "/")) {
		return h, pattern
	}
	return nil, ""
}

func (s *Server) handleOwn(pattern string, h http.Handler) {
	s.own.Handle(pattern, h)
	s.ownPaths = append(s.ownPaths, pattern)
	if !strings.HasPrefix(pattern, "/") || strings.ContainsAny(pattern, "{ ") {
		s.ownAny = true
	}
}

// mayBeOwn reports whether the mux could route path (decoded, below the prefix) to an own endpoint. Asking the
// mux about a proxied path costs more than the rest of the routing (it works out redirects and allowed methods,
// allocating), so only the paths that could match ask it: those equal to an own path, or below an own subtree or
// at its root, and every path the mux would clean or match otherwise than as written (a dot segment, a double
// slash, a CONNECT target). The mux matches the escaped path's segments unescaped, which a decoded path splits
// at least as finely, so a literal pattern it matches is one this finds.
func (s *Server) mayBeOwn(method, path string) bool {
	if s.ownAny || method == http.MethodConnect || path == "" || path[0] != '/' ||
		strings.Contains(path, "//") || strings.Contains(path, "/.") {
		return true
	}
	for _, p := range s.ownPaths {
		if sub, ok := strings.CutSuffix(p, "/"); ok && strings.HasPrefix(path, sub) || path == p {
			return true
		}
	}
	return false
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if s.stopping.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	_, _ = w.Write([]byte("OK\n"))
}

// keyed protects an own endpoint: with a key set, the authKey query arg must match; without one, basic auth
// (when configured) applies. Endpoints that are not open by default (pprof) are refused until a key or basic
// auth is set, since profiles reveal memory contents.
func (s *Server) keyed(key, flagName string, h http.Handler, openByDefault bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case key != "":
			got := r.URL.Query().Get("authKey")
			if subtle.ConstantTimeCompare([]byte(got), []byte(key)) != 1 {
				httperr.WriteStatus(w, http.StatusUnauthorized, fmt.Sprintf("%s needs the authKey query arg matching %s", r.URL.Path, flagName))
				return
			}
		case s.cfg.BasicAuthUsername != "":
			if !s.basicAuthOK(w, r) {
				return
			}
		case !openByDefault:
			httperr.WriteStatus(w, http.StatusForbidden, fmt.Sprintf("%s is disabled: set %s (or -httpAuth.username and -httpAuth.password) to enable it", r.URL.Path, flagName))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) basicAuthOK(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.BasicAuthUsername == "" {
		return true
	}
	user, pass, ok := r.BasicAuth()
	if ok && subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.BasicAuthUsername)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.BasicAuthPassword)) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="vmgateway"`)
	httperr.WriteStatus(w, http.StatusUnauthorized, "basic auth is required: pass the -httpAuth.username and -httpAuth.password credentials")
	return false
}

func writeMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	metrics.WritePrometheus(w, true)
	// process_open_fds and process_max_fds, as VictoriaMetrics' own apps export them: every client and upstream
	// connection holds one, so running out is how an overloaded gateway fails.
	metrics.WriteFDMetrics(w)
}

func pprofIndex(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
	case "cmdline":
		// pprof.Cmdline's, with the secrets given inline redacted.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, strings.Join(flagutil.RedactedArgs(flag.CommandLine, os.Args), "\x00"))
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r)
	}
}
