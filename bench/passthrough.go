//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// The proxies that only pass requests through (haproxy, nginx, a bare httputil.ReverseProxy) show what forwarding
// alone costs on this machine: the floor under the gateway's figures, with no auth, no rewrite and no limits.

var (
	withHAProxy      = flag.Bool("haproxy", true, "Also measure haproxy passing requests through (the Debian package, installed with apt-get when missing)")
	withNginx        = flag.Bool("nginx", true, "Also measure nginx passing requests through, one worker (the Debian package, installed with apt-get when missing)")
	withReverseProxy = flag.Bool("reverseProxy", true, "Also measure a bare httputil.ReverseProxy (tuned transport, pooled buffers) passing requests through, in a process of its own")
	withGoRelay      = flag.Bool("goRelay", true, "Also measure a Go byte relay as \"gorelay\": no HTTP, an upstream connection per client connection and a goroutine per direction, in a process of its own; "+
		"what Go's goroutine-per-connection network model costs with nothing to parse, the floor under a Go proxy")
	vmauthJWT     = flag.Bool("vmauth.jwt", true, "Configure vmauth as a JWT user whose url_prefix takes extra_label from the token (vmauth v1.137+); false: a bearer_token user with a fixed extra_label (older vmauth)")
	vmauthVersion = flag.String("vmauth.version", "v1.151.0", "The vmauth version `go install` builds into the -vmauth.bin directory when -vmauth.bin is missing")

	// The bench re-runs itself as the bare ReverseProxy, so that its CPU is a process's of its own.
	reverseProxyListen   = flag.String("reverseProxy.listen", "", "Internal: serve as the bare ReverseProxy on this address")
	reverseProxyUpstream = flag.String("reverseProxy.upstream", "", "Internal: the bare ReverseProxy's upstream address")
	goRelayListen        = flag.String("goRelay.listen", "", "Internal: serve as the Go byte relay on this address")
	goRelayUpstream      = flag.String("goRelay.upstream", "", "Internal: the Go byte relay's upstream address")
)

// ensureVMAuth builds vmauth into bin's directory when bin is missing (the module proxy must serve it).
func ensureVMAuth(bin string) error {
	if _, err := os.Stat(bin); err == nil {
		return nil
	}
	if filepath.Base(bin) != "vmauth" {
		return fmt.Errorf("-vmauth.bin=%s is missing, and go install can build only a binary named vmauth", bin)
	}
	fmt.Printf("%s is missing: building vmauth %s with go install\n", bin, *vmauthVersion)
	cmd := exec.Command("go", "install", "github.com/VictoriaMetrics/VictoriaMetrics/app/vmauth@"+*vmauthVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot build vmauth %s into %s: %w; pass -vmauth.bin of an existing one, or -vmauth.bin= to skip vmauth", *vmauthVersion, filepath.Dir(bin), err)
	}
	return nil
}

// ensurePackage installs a Debian package whose binary is missing.
func ensurePackage(bin, pkg string) error {
	if _, err := exec.LookPath(bin); err == nil {
		return nil
	}
	fmt.Printf("%s is missing: apt-get install -y %s\n", bin, pkg)
	cmd := exec.Command("apt-get", "install", "-y", pkg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot install %s (apt-get install -y %s): %w; or pass -%s=false", bin, pkg, err, pkg)
	}
	return nil
}

func startHAProxy(ctx context.Context, name, dir, upstreamAddr string) (*process, error) {
	if err := ensurePackage("haproxy", "haproxy"); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// Defaults otherwise: one process, a thread per core, keep-alive on both sides.
	cfg := fmt.Sprintf(`global
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench
  bind %s
  default_backend upstream
backend upstream
  http-reuse always
  server up %s
`, addr, upstreamAddr)
	path := filepath.Join(dir, name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	bin, _ := exec.LookPath("haproxy")
	return startProcess(ctx, name, bin, addr, "-db", "-f", path)
}

func startNginx(ctx context.Context, name, dir, upstreamAddr string) (*process, error) {
	if err := ensurePackage("nginx", "nginx"); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(dir, name)
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return nil, err
	}
	// One process doing the work (no master), so that its CPU is the one measured; bodies stream both ways.
	cfg := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  keepalive_requests 1000000;
  upstream up {
    server %[2]s;
    keepalive 128;
  }
  server {
    listen %[3]s;
    client_max_body_size 0;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
    }
  }
}
`, prefix, upstreamAddr, addr)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	bin, _ := exec.LookPath("nginx")
	return startProcess(ctx, name, bin, addr, "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", path)
}

func startReverseProxy(ctx context.Context, upstreamAddr string) (*process, error) {
	return startSelf(ctx, "reverseproxy", "reverseProxy", upstreamAddr)
}

// startSelf runs this binary again as the proxy its flags prefix.listen and prefix.upstream select, so that its CPU
// is a process's of its own.
func startSelf(ctx context.Context, name, prefix, upstreamAddr string) (*process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return startProcess(ctx, name, self, addr, "-"+prefix+".listen="+addr, "-"+prefix+".upstream="+upstreamAddr)
}

func startGoRelay(ctx context.Context, upstreamAddr string) (*process, error) {
	return startSelf(ctx, "gorelay", "goRelay", upstreamAddr)
}

// serveGoRelay copies bytes between each client connection and an upstream connection of its own, a goroutine per
// direction, with read(2) and write(2) as any Go proxy does them: the plain copies hide ReadFrom and WriteTo, which
// would splice. It parses nothing, so what it costs is the network model's alone: the kernel's part and the
// runtime's parking and waking of goroutines on the poller.
func serveGoRelay(listen, upstreamAddr string) error {
	if upstreamAddr == "" {
		return errors.New("-goRelay.upstream is empty")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relay(c, upstreamAddr)
	}
}

func relay(c net.Conn, upstreamAddr string) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", upstreamAddr, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		_, _ = io.CopyBuffer(plainWriter{u}, plainReader{c}, make([]byte, 32<<10))
		_ = u.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.CopyBuffer(plainWriter{c}, plainReader{u}, make([]byte, 32<<10))
}

type plainReader struct{ io.Reader }

type plainWriter struct{ io.Writer }

// serveReverseProxy is the bare ReverseProxy: what net/http on both sides costs with nothing else to do.
func serveReverseProxy(listen, upstreamAddr string) error {
	if upstreamAddr == "" {
		return errors.New("-reverseProxy.upstream is empty")
	}
	target := &url.URL{Scheme: "http", Host: upstreamAddr}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1000,
		MaxIdleConnsPerHost: 1000,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  tr,
		BufferPool: &pooledBuffers{},
		ErrorLog:   log.New(os.Stderr, "", 0),
	}
	srv := &http.Server{Addr: listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

type pooledBuffers struct{ p sync.Pool }

func (b *pooledBuffers) Get() []byte {
	if v := b.p.Get(); v != nil {
		return *v.(*[]byte)
	}
	return make([]byte, 32<<10)
}

func (b *pooledBuffers) Put(buf []byte) { b.p.Put(&buf) }
