package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tlsclient"
)

// flappingBackend is a real HTTP backend on a fixed loopback port that can go down (listener and connections
// closed, so clients see refused connections and resets) and come back on the same port.
type flappingBackend struct {
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func newFlappingBackend(t *testing.T) *flappingBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &flappingBackend{addr: ln.Addr().String()}
	b.serve(ln)
	t.Cleanup(b.down)
	return b
}

func (b *flappingBackend) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if strings.Contains(r.URL.Path, "/insert/") {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	})}
	b.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

func (b *flappingBackend) down() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		_ = b.srv.Close()
		b.srv = nil
	}
}

func (b *flappingBackend) up() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return
	}
	if ln, err := net.Listen("tcp", b.addr); err == nil {
		b.serve(ln)
	}
}

// countingLimiter admits everything and counts the requests it saw.
type countingLimiter struct{ n atomic.Int64 }

func (l *countingLimiter) Admit(*auth.Access, route.Route, http.Header) error {
	l.n.Add(1)
	return nil
}

// TestGatewayUnderFlappingBackends: concurrent reads and writes through the whole pipeline over real connections
// while two of three backends go down and up. The third stays up, so every read is answered 200; a write gets 204,
// or 502 telling the client to resend it when a backend closed its connection mid-body, nothing else (go test -race).
func TestGatewayUnderFlappingBackends(t *testing.T) {
	logCapture(t)
	bs := []*flappingBackend{newFlappingBackend(t), newFlappingBackend(t), newFlappingBackend(t)}
	admits := &countingLimiter{}
	var urls []*url.URL
	for _, b := range bs {
		urls = append(urls, &url.URL{Scheme: "http", Host: b.addr})
	}
	gw := serveGateway(t, "http://"+bs[0].addr, tlsclient.Options{}, func(c *Config) {
		c.Cluster = true
		c.ReadURLs, c.WriteURLs = urls, urls
		c.Backends = BackendOptions{FailTimeout: 5 * time.Millisecond}
		c.Limiter = admits
	})
	retriesBefore := counter(`vmgateway_upstream_retries_total{upstream="read"}`)
	stop := make(chan struct{})
	var flaps sync.WaitGroup
	flaps.Add(1)
	go func() {
		defer flaps.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			b := bs[i%2]
			if i%4 < 2 {
				b.down()
			} else {
				b.up()
			}
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	var reads, writes, resend atomic.Int64
	var bad atomic.Value
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				var resp *http.Response
				var err error
				write := (w+i)%2 == 0
				if write {
					resp, err = client.Post(gw.URL+"/insert/0/prometheus/api/v1/import/prometheus", "text/plain", strings.NewReader("flap 1\n"))
				} else {
					resp, err = client.Get(gw.URL + "/select/0/prometheus/api/v1/query?query=up")
				}
				if err != nil {
					bad.CompareAndSwap(nil, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case !write && resp.StatusCode == http.StatusOK:
					reads.Add(1)
				case write && resp.StatusCode == http.StatusNoContent:
					writes.Add(1)
				case write && resp.StatusCode == http.StatusBadGateway && strings.Contains(string(body), "resend it"):
					resend.Add(1)
				default:
					bad.CompareAndSwap(nil, errors.New(resp.Status+" "+string(body)))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	flaps.Wait()
	if err := bad.Load(); err != nil {
		t.Fatalf("a request got an answer it must not: %v (reads answered %d, writes %d, writes to resend %d)", err, reads.Load(), writes.Load(), resend.Load())
	}
	if reads.Load() != 600 || writes.Load()+resend.Load() != 600 {
		t.Fatalf("reads answered %d of 600, writes acknowledged %d + to resend %d of 600", reads.Load(), writes.Load(), resend.Load())
	}
	retries := counter(`vmgateway_upstream_retries_total{upstream="read"}`) - retriesBefore
	// Limits (and everything else before forwarding) see a client request once, however many attempts it took.
	if n := admits.n.Load(); n != 1200 {
		t.Fatalf("the limiter admitted %d requests for 1200 client requests", n)
	}
	if retries == 0 {
		t.Fatal("no read was retried: the backends did not flap under the requests")
	}
	t.Logf("1200 requests while backends flapped: %d writes acknowledged, %d to resend; %d read retries", writes.Load(), resend.Load(), retries)
}
