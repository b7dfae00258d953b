package datasource

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tlsclient"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

func TestQueryRealVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	now := time.Now().Truncate(time.Second)
	ms := now.Add(-30 * time.Second).UnixMilli()
	lines := fmt.Sprintf(`{"metric":{"__name__":"ds_test","accountID":"1","projectID":"0"},"values":[5],"timestamps":[%d]}
{"metric":{"__name__":"ds_test","accountID":"2","projectID":"7"},"values":[1.5],"timestamps":[%d]}
`, ms, ms)
	resp, err := http.Post(vm.URL+"/api/v1/import", "application/json", strings.NewReader(lines))
	if err != nil {
		t.Fatalf("import: %s", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("import: status %d", resp.StatusCode)
	}
	vm.Flush(t)

	c, err := New(Config{URL: vm.URL, QueryStep: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var got []Sample
	vmtest.Eventually(t, func() (bool, string) {
		got, err = c.Query(context.Background(), `sum(ds_test) by (accountID, projectID)`, now)
		return err == nil && len(got) == 2, fmt.Sprintf("got %v, err %v", got, err)
	})
	sort.Slice(got, func(i, j int) bool { return got[i].Labels["accountID"] < got[j].Labels["accountID"] })
	want := []struct {
		acc, proj string
		v         float64
	}{{"1", "0", 5}, {"2", "7", 1.5}}
	for i, w := range want {
		s := got[i]
		if s.Labels["accountID"] != w.acc || s.Labels["projectID"] != w.proj || s.Value != w.v || len(s.Labels) != 2 {
			t.Errorf("sample %d: got %v = %v, want accountID=%s projectID=%s = %v", i, s.Labels, s.Value, w.acc, w.proj, w.v)
		}
		if !s.Timestamp.Equal(now) {
			t.Errorf("sample %d: timestamp %s, want the query time %s", i, s.Timestamp, now)
		}
	}

	// VictoriaMetrics' own error text reaches the caller, with the status and the URL.
	_, err = c.Query(context.Background(), `sum(ds_test`, now)
	wantErr(t, err, "422", "/api/v1/query", `sum(ds_test`, "argList")

	// An empty vector is not an error.
	got, err = c.Query(context.Background(), `ds_test_missing`, now)
	if err != nil || len(got) != 0 {
		t.Fatalf("missing series: got %v, %v; want an empty vector", got, err)
	}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

const okVector = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"accountID":"3","projectID":"0"},"value":[1700000000.5,"42"]}]}}`

// recorder is an httptest server that records the last request and answers with a fixed status and body.
type recorder struct {
	*httptest.Server
	mu     sync.Mutex
	last   *http.Request
	status int
	body   string
}

func newRecorder(t *testing.T, tls bool, status int, body string) *recorder {
	rec := &recorder{status: status, body: body}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.last = r.Clone(context.Background())
		rec.mu.Unlock()
		w.WriteHeader(rec.status)
		_, _ = w.Write([]byte(rec.body))
	})
	rec.Server = httptest.NewUnstartedServer(h)
	// Failed handshakes are what the TLS tests are about; keep them out of the test output.
	rec.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		rec.StartTLS()
	} else {
		rec.Start()
	}
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) request() *http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.last
}

func TestQueryArgsAndResult(t *testing.T) {
	rec := newRecorder(t, false, 200, okVector)
	c, err := New(Config{URL: rec.URL + "/select/0/prometheus/?extra_label=env%3Dprod", QueryStep: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Query(context.Background(), `up{a="b"}`, time.UnixMilli(1700000000123))
	if err != nil {
		t.Fatal(err)
	}
	r := rec.request()
	if r.URL.Path != "/select/0/prometheus/api/v1/query" {
		t.Errorf("path %q, want /select/0/prometheus/api/v1/query", r.URL.Path)
	}
	q := r.URL.Query()
	for k, v := range map[string]string{"query": `up{a="b"}`, "time": "1700000000.123", "step": "90", "extra_label": "env=prod"} {
		if q.Get(k) != v {
			t.Errorf("arg %s = %q, want %q", k, q.Get(k), v)
		}
	}
	if len(got) != 1 || got[0].Value != 42 || got[0].Labels["accountID"] != "3" || got[0].Timestamp.UnixMilli() != 1700000000500 {
		t.Errorf("got %+v", got)
	}

	// Without QueryStep no step arg is sent.
	c, _ = New(Config{URL: rec.URL})
	if _, err := c.Query(context.Background(), "x", time.Now()); err != nil {
		t.Fatal(err)
	}
	if rec.request().URL.Query().Has("step") {
		t.Errorf("step sent although QueryStep is 0")
	}
}

func TestQueryErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   []string
	}{
		{"vm error body", 422, `{"status":"error","errorType":"422","error":"cannot parse query: bad"}`,
			[]string{"unexpected status 422 Unprocessable Entity: cannot parse query: bad"}},
		{"text body", 503, "service unavailable: storage is down\n", []string{"unexpected status 503", "storage is down"}},
		{"empty body", 500, "", []string{"unexpected status 500 Internal Server Error"}},
		{"long body is cut", 500, strings.Repeat("x", 5000), []string{"unexpected status 500"}},
		{"bad json", 200, `<html>oops</html>`, []string{"cannot parse response as Prometheus API JSON", "<html>oops"}},
		{"status error", 200, `{"status":"error","error":"too slow"}`, []string{`response status is "error"`, "too slow"}},
		{"matrix", 200, `{"status":"success","data":{"resultType":"matrix","result":[]}}`, []string{`got "matrix"`}},
		{"bad value", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}`,
			[]string{`result[0]: cannot parse value "abc"`}},
		{"value not a string", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}`,
			[]string{`result[0]: want the value as a JSON string, got 2`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(t, false, tc.status, tc.body)
			u := strings.Replace(rec.URL, "http://", "http://alice:s3cret@", 1) + "/?authKey=k3y"
			c, err := New(Config{URL: u})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Query(context.Background(), "up", time.Now())
			wantErr(t, err, append(tc.want, `query "up" to `+rec.URL+"/api/v1/query:")...)
			for _, secret := range []string{"s3cret", "alice", "k3y"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows the credential %q", err, secret)
				}
			}
			if len(err.Error()) > 1500 {
				t.Errorf("error is %d bytes long; the body must be cut", len(err.Error()))
			}
		})
	}
}

func TestQueryConnectionErrors(t *testing.T) {
	addr := vmtest.FreePort(t)
	c, err := New(Config{URL: "http://u:pw@" + addr})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Query(context.Background(), "up", time.Now())
	wantErr(t, err, "http://"+addr+"/api/v1/query", "connection refused")
	if strings.Contains(err.Error(), "pw") {
		t.Errorf("error %q shows the password", err)
	}

	// A datasource that does not answer in time.
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	defer srv.Close()
	defer close(block)
	c, _ = New(Config{URL: srv.URL, Timeout: 50 * time.Millisecond})
	_, err = c.Query(context.Background(), "up", time.Now())
	wantErr(t, err, srv.URL, "Client.Timeout exceeded")
}

func TestAuth(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	userFile := file("user", "bob\n")
	passFile := file("pass", "pw1\n")
	tokenFile := file("token", "tok1\n")
	rec := newRecorder(t, false, 200, okVector)
	basic := func(u, p string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, p)
		return r.Header.Get("Authorization")
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"none", Config{}, ""},
		{"basic inline", Config{BasicAuthUsername: "alice", BasicAuthPassword: "pw"}, basic("alice", "pw")},
		{"basic username only", Config{BasicAuthUsername: "alice"}, basic("alice", "")},
		{"basic files", Config{BasicAuthUsernameFile: userFile, BasicAuthPasswordFile: passFile}, basic("bob", "pw1")},
		{"bearer inline", Config{BearerToken: "abc"}, "Bearer abc"},
		{"bearer file", Config{BearerTokenFile: tokenFile}, "Bearer tok1"},
		{"url credentials", Config{URL: strings.Replace(rec.URL, "http://", "http://carol:pw%40x@", 1)}, basic("carol", "pw@x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.URL == "" {
				tc.cfg.URL = rec.URL
			}
			tc.cfg.Headers = "X-Scope: team-a ^^ X-Other:v:with:colons"
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Query(context.Background(), "up", time.Now()); err != nil {
				t.Fatal(err)
			}
			h := rec.request().Header
			if got := h.Get("Authorization"); got != tc.want {
				t.Errorf("Authorization %q, want %q", got, tc.want)
			}
			if h.Get("X-Scope") != "team-a" || h.Get("X-Other") != "v:with:colons" {
				t.Errorf("extra headers: X-Scope=%q X-Other=%q", h.Get("X-Scope"), h.Get("X-Other"))
			}
		})
	}

	// Rotated files take effect on the next query.
	c, err := New(Config{URL: rec.URL, BearerTokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	file("token", "tok2")
	if _, err := c.Query(context.Background(), "up", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := rec.request().Header.Get("Authorization"); got != "Bearer tok2" {
		t.Errorf("after rotation: Authorization %q, want Bearer tok2", got)
	}
	c, err = New(Config{URL: rec.URL, BasicAuthUsername: "bob", BasicAuthPasswordFile: passFile})
	if err != nil {
		t.Fatal(err)
	}
	file("pass", "pw2")
	if _, err := c.Query(context.Background(), "up", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := rec.request().Header.Get("Authorization"); got != basic("bob", "pw2") {
		t.Errorf("after rotation: Authorization %q, want basic bob:pw2", got)
	}
	// A file that vanishes later fails the query, naming the flag.
	if err := os.Remove(passFile); err != nil {
		t.Fatal(err)
	}
	_, err = c.Query(context.Background(), "up", time.Now())
	wantErr(t, err, "cannot read -datasource.basicAuth.passwordFile", "pass")
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	notPEM := filepath.Join(dir, "not.pem")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	missing := filepath.Join(dir, "missing")
	u := "http://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{}, "datasource URL is empty"},
		{"bad scheme", Config{URL: "ftp://x"}, `scheme must be http or https, got "ftp"`},
		{"no host", Config{URL: "http:///path"}, "has no host"},
		{"unparsable", Config{URL: "http://a b:pw@x/%zz"}, "cannot parse -datasource.url"},
		{"username twice", Config{URL: u, BasicAuthUsername: "a", BasicAuthUsernameFile: "f"}, "-datasource.basicAuth.username and -datasource.basicAuth.usernameFile are both set"},
		{"password twice", Config{URL: u, BasicAuthPassword: "a", BasicAuthPasswordFile: "f"}, "-datasource.basicAuth.password and -datasource.basicAuth.passwordFile are both set"},
		{"token twice", Config{URL: u, BearerToken: "a", BearerTokenFile: "f"}, "-datasource.bearerToken and -datasource.bearerTokenFile are both set"},
		{"password without username", Config{URL: u, BasicAuthPassword: "a"}, "without -datasource.basicAuth.username"},
		{"basic and bearer", Config{URL: u, BasicAuthUsername: "a", BearerToken: "t"}, "choose one"},
		{"url credentials and flags", Config{URL: "http://a:b@x", BearerToken: "t"}, "-datasource.url carries credentials"},
		{"missing token file", Config{URL: u, BearerTokenFile: missing}, "cannot read -datasource.bearerTokenFile"},
		{"empty token file", Config{URL: u, BearerTokenFile: empty}, "is empty"},
		{"missing password file", Config{URL: u, BasicAuthUsername: "a", BasicAuthPasswordFile: missing}, "cannot read -datasource.basicAuth.passwordFile"},
		{"header without colon", Config{URL: u, Headers: "a:b^^c"}, `cannot parse "c": want 'name:value'`},
		{"header bad name", Config{URL: u, Headers: "a b:c"}, `"a b" is not a valid HTTP header name`},
		{"missing CA", Config{URL: u, TLS: tlsclient.Options{CAFile: missing}}, "cannot read -datasource.tlsCAFile"},
		{"CA not PEM", Config{URL: u, TLS: tlsclient.Options{CAFile: notPEM}}, "holds no PEM certificate"},
		{"cert without key", Config{URL: u, TLS: tlsclient.Options{CertFile: notPEM}}, "must be set together"},
		{"bad cert", Config{URL: u, TLS: tlsclient.Options{CertFile: notPEM, KeyFile: notPEM}}, "cannot load the client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			wantErr(t, err, tc.want)
			if strings.Contains(tc.cfg.URL, "pw") && strings.Contains(err.Error(), "pw") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
