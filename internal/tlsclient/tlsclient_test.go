package tlsclient

import (
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

func TestNewFlags(t *testing.T) {
	o := NewFlags("test.upstream", "-test.upstream.url")
	if err := flag.CommandLine.Parse([]string{"-test.upstream.tlsCAFile=/ca", "-test.upstream.tlsCertFile=/c", "-test.upstream.tlsKeyFile=/k",
		"-test.upstream.tlsServerName=vm", "-test.upstream.tlsInsecureSkipVerify"}); err != nil {
		t.Fatal(err)
	}
	if *o != (Options{CAFile: "/ca", CertFile: "/c", KeyFile: "/k", ServerName: "vm", InsecureSkipVerify: true}) {
		t.Fatalf("parsed %+v", *o)
	}
	if f := flag.Lookup("test.upstream.tlsCAFile"); f == nil || !strings.Contains(f.Usage, "-test.upstream.url") {
		t.Fatalf("the help does not name the upstream: %+v", f)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{CAFile: filepath.Join(dir, "missing.pem")}, "cannot read -read.tlsCAFile: "},
		{Options{CAFile: notPEM}, `-read.tlsCAFile="` + notPEM + `" holds no PEM certificate`},
		{Options{CertFile: notPEM}, "-read.tlsCertFile and -read.tlsKeyFile must be set together"},
		{Options{CertFile: notPEM, KeyFile: notPEM}, "cannot load the client certificate from -read.tlsCertFile="},
	} {
		if _, err := Config("read", tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.o, err, tc.want)
		}
		if _, err := NewTransport("read", tc.o, time.Second, DefaultDialTimeout); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewTransport %+v: got %v, want %q", tc.o, err, tc.want)
		}
	}
	if _, err := LoadCA("auth.keysTLSCAFile", notPEM); err == nil || !strings.HasPrefix(err.Error(), "-auth.keysTLSCAFile=") {
		t.Errorf("LoadCA names its flag: %v", err)
	}
}

func TestConfig(t *testing.T) {
	tc, err := Config("read", Options{ServerName: "vm", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if tc.ServerName != "vm" || !tc.InsecureSkipVerify || tc.RootCAs != nil || tc.MinVersion == 0 {
		t.Fatalf("config %+v", tc)
	}
	tr, err := NewTransport("read", Options{}, 7*time.Second, DefaultDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if tr.ResponseHeaderTimeout != 7*time.Second || !tr.DisableCompression || tr.TLSClientConfig == nil {
		t.Fatalf("transport %+v", tr)
	}
}

// TestDialTimeout: the transport gives up on a backend that does not accept connections after its dial timeout,
// with a timeout error (which the balancer counts as connect_timeout and skips the backend for); a dial timeout
// that is not positive is refused naming its flag.
func TestDialTimeout(t *testing.T) {
	addr := vmtest.Unaccepting(t)
	tr, err := NewTransport("read", Options{}, time.Minute, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tr.DialContext(ctx, "tcp", addr)
	var oe *net.OpError
	if err == nil {
		c.Close()
		t.Fatal("connected to a listener that accepts nothing")
	}
	if !errors.As(err, &oe) || oe.Op != "dial" || !oe.Timeout() || ctx.Err() != nil {
		t.Fatalf("want a dial timeout of the transport's own, got %v (context: %v)", err, ctx.Err())
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := NewTransport("write", Options{}, time.Minute, d); err == nil || !strings.Contains(err.Error(), "-write.dialTimeout="+d.String()+": want a positive duration") {
			t.Errorf("dial timeout %s: %v", d, err)
		}
	}
}
