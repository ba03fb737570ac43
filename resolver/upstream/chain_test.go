package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// staticHosts serves fixed chains.
type staticHosts struct {
	mu     sync.Mutex
	chains map[string]Chain
	err    error
}

func (s *staticHosts) Chain(registry string) (Chain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chains[registry], s.err
}

func (s *staticHosts) set(registry string, ch Chain) {
	s.mu.Lock()
	s.chains[registry] = ch
	s.mu.Unlock()
}

// blobServer is an HTTPS registry holding one blob, counting the
// requests it answers; clientCA, when set, requires client certificates
// it signed.
func blobServer(t *testing.T, body []byte, clientCA *x509.CertPool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	// Seeded straight through the handler: no TLS, no client certificate.
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v2/team/app/blobs/uploads/?digest="+digest.FromBytes(body).String(), strings.NewReader(string(body))))
	if rec.Code != http.StatusCreated {
		t.Fatalf("seed: %d", rec.Code)
	}
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		reg.ServeHTTP(w, r)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if clientCA != nil {
		srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCA}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	n.Store(0)
	return srv, &n
}

// clientCertificate makes a client certificate and a pool holding the
// only certificate that vouches for it: itself.
func clientCertificate(t *testing.T) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func serverTLS(srv *httptest.Server) *tls.Config {
	p := x509.NewCertPool()
	p.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: p}
}

func endpointOf(srv *httptest.Server, tc *tls.Config) Endpoint {
	return Endpoint{Scheme: "https", Host: strings.TrimPrefix(srv.URL, "https://"), Path: "/v2", Pull: true, Resolve: true, TLS: tc}
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func readBlob(t *testing.T, c *Client, registry string, d digest.Digest) ([]byte, error) {
	t.Helper()
	body, _, err := c.Blob(t.Context(), resolver.BlobRequest{Registry: registry, Repo: "team/app", Digest: d}, 0)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(body)
}

// TestChainFallsThrough: a dead host, a host whose certificate nobody
// vouched for, and a host without the blob are each passed over for the
// next; the host that has it, trusted through its own CA, serves it.
func TestChainFallsThrough(t *testing.T) {
	t.Parallel()
	blob := []byte("layer behind a private CA")
	d := digest.FromBytes(blob)
	good, goodN := blobServer(t, blob, nil)
	empty, emptyN := blobServer(t, []byte("other"), nil)
	hosts := &staticHosts{chains: map[string]Chain{"corp.example": {Gen: 1, Endpoints: []Endpoint{
		{Scheme: "https", Host: deadAddr(t), Path: "/v2", Pull: true, Resolve: true},
		endpointOf(good, nil), // the system roots do not know it
		endpointOf(empty, serverTLS(empty)),
		endpointOf(good, serverTLS(good)),
	}}}}
	c, err := New(Config{Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(t, c, "corp.example", d)
	if err != nil || string(got) != string(blob) {
		t.Fatalf("blob: %q, %v", got, err)
	}
	if emptyN.Load() == 0 || goodN.Load() == 0 {
		t.Fatalf("requests: host without the blob %d, host with it %d", emptyN.Load(), goodN.Load())
	}
	st := c.Status(nil)
	if len(st) != 1 || len(st[0].Hosts) != 4 {
		t.Fatalf("status %+v", st)
	}
	for i, h := range st[0].Hosts {
		if (i < 3) != (h.LastError != "") {
			t.Errorf("host %d %s: last error %q", i, h.URL, h.LastError)
		}
	}
	if st[0].Hosts[0].DownUntil.IsZero() || !st[0].Hosts[2].DownUntil.IsZero() {
		t.Errorf("the dead host is not set aside, or the host that answered 404 is: %+v", st[0].Hosts)
	}
	if st[0].Hosts[3].TLS != "hosts.toml CA" || st[0].Hosts[0].TLS != "system roots" {
		t.Errorf("TLS summaries %q, %q", st[0].Hosts[3].TLS, st[0].Hosts[0].TLS)
	}
}

// TestChainSecureByDefault: a private CA's host is trusted only with its
// CA; a host that wants a client certificate is reached only with one.
func TestChainSecureByDefault(t *testing.T) {
	t.Parallel()
	blob := []byte("needs a client certificate")
	d := digest.FromBytes(blob)
	pool, clientCert := clientCertificate(t)
	srv, _ := blobServer(t, blob, pool)
	withCert := serverTLS(srv)
	withCert.Certificates = []tls.Certificate{clientCert}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		ok   bool
	}{
		{"system roots", nil, false},
		{"its CA, no client certificate", serverTLS(srv), false},
		{"its CA and a client certificate", withCert, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(Config{Hosts: &staticHosts{chains: map[string]Chain{"corp.example": {Endpoints: []Endpoint{endpointOf(srv, tc.tls)}}}}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := readBlob(t, c, "corp.example", d)
			if tc.ok != (err == nil) || (tc.ok && string(got) != string(blob)) {
				t.Fatalf("got %q, %v; want ok=%v", got, err, tc.ok)
			}
			if !tc.ok && !errdefs.IsUnavailable(err) {
				t.Fatalf("%v is not Unavailable", err)
			}
		})
	}
}

// TestChainCapabilities: tags are resolved only by hosts that may
// resolve, blobs fetched only from hosts that may pull.
func TestChainCapabilities(t *testing.T) {
	t.Parallel()
	blob := []byte("x")
	srv, n := blobServer(t, blob, nil)
	ep := endpointOf(srv, serverTLS(srv))
	ep.Pull = false
	c, err := New(Config{Hosts: &staticHosts{chains: map[string]Chain{"corp.example": {Endpoints: []Endpoint{ep}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readBlob(t, c, "corp.example", digest.FromBytes(blob)); !errdefs.IsNotFound(err) {
		t.Fatalf("blob from a resolve-only host: %v, want NotFound", err)
	}
	if n.Load() != 0 {
		t.Fatalf("the resolve-only host was asked for a blob %d times", n.Load())
	}
}

// TestChainCredentialsPerHost: a mirror gets the credentials filed under
// its own name, not the registry's.
func TestChainCredentialsPerHost(t *testing.T) {
	t.Parallel()
	_, mirror := tokenRegistry(t, "alice", "s3cret")
	d := digest.FromBytes([]byte("private layer bytes"))
	hosts := &staticHosts{chains: map[string]Chain{"docker.io": {Endpoints: []Endpoint{
		{Scheme: "http", Host: mirror, Path: "/v2", Pull: true, Resolve: true},
	}}}}
	c, err := New(Config{Hosts: hosts, AuthFile: writeAuthFile(t, mirror, "alice", "s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := c.Blob(t.Context(), resolver.BlobRequest{Registry: "docker.io", Repo: "team/private", Digest: d}, 0)
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
}

// TestChainReread: a new generation of a registry's chain replaces its
// hosts; an error reading it is a miss, so containerd pulls alone.
func TestChainReread(t *testing.T) {
	t.Parallel()
	blob := []byte("moved")
	d := digest.FromBytes(blob)
	srv, _ := blobServer(t, blob, nil)
	hosts := &staticHosts{chains: map[string]Chain{"corp.example": {Gen: 1, Endpoints: []Endpoint{endpointOf(srv, nil)}}}}
	c, err := New(Config{Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readBlob(t, c, "corp.example", d); err == nil {
		t.Fatal("fetched without the CA")
	}
	hosts.set("corp.example", Chain{Gen: 2, Endpoints: []Endpoint{endpointOf(srv, serverTLS(srv))}})
	if _, err := readBlob(t, c, "corp.example", d); err != nil {
		t.Fatalf("after the CA was added: %v", err)
	}
	hosts.mu.Lock()
	hosts.err = fmt.Errorf("unable to read CA cert %q", "/etc/containerd/certs.d/corp.example/ca.pem")
	hosts.chains["corp.example"] = Chain{Gen: 3}
	hosts.mu.Unlock()
	if _, err := readBlob(t, c, "corp.example", d); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "ca.pem") {
		t.Fatalf("with an unreadable CA: %v, want NotFound naming it", err)
	}
}

func TestChainError(t *testing.T) {
	t.Parallel()
	dial := fmt.Errorf("registry m: %w: %w", &net.OpError{Op: "dial", Err: errors.New("refused")}, errdefs.ErrUnavailable)
	notFound := fmt.Errorf("registry m: %w", errdefs.ErrNotFound)
	unavailable := fmt.Errorf("registry m: status 500: %w", errdefs.ErrUnavailable)
	for _, tc := range []struct {
		name string
		errs []error
		want error
	}{
		{"the last answer stands", []error{dial, notFound}, notFound},
		{"an answer outranks a later host out of reach", []error{notFound, dial}, notFound},
		{"a server error is an answer", []error{unavailable, dial}, unavailable},
		{"all out of reach", []error{dial, dial}, dial},
	} {
		if got := chainError(tc.errs); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestScopeRepo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ root, repo, want string }{
		{"/v2", "library/alpine", "library/alpine"},
		{"/proxy/v2", "library/alpine", "library/alpine"},
		{"/v2/dockerhub-proxy", "library/alpine", "dockerhub-proxy/library/alpine"},
		{"/v2/", "a", "a"},
	} {
		if got := scopeRepo(tc.root, tc.repo); got != tc.want {
			t.Errorf("scopeRepo(%q, %q) = %q, want %q", tc.root, tc.repo, got, tc.want)
		}
	}
}

// TestChainOrder: hosts out of reach go last until hostDownFor passes.
func TestChainOrder(t *testing.T) {
	t.Parallel()
	now := time.Now()
	a, b, c := &endpoint{Endpoint: Endpoint{Host: "a"}}, &endpoint{Endpoint: Endpoint{Host: "b"}}, &endpoint{Endpoint: Endpoint{Host: "c"}}
	a.note(&net.OpError{Op: "dial", Err: errors.New("refused")}, now)
	b.note(errdefs.ErrNotFound, now)
	names := func(eps []*endpoint) string {
		var s []string
		for _, e := range eps {
			s = append(s, e.Host)
		}
		return strings.Join(s, ",")
	}
	if got := names(order([]*endpoint{a, b, c}, now.Add(time.Second))); got != "b,c,a" {
		t.Errorf("order just after a failed to connect: %s", got)
	}
	if got := names(order([]*endpoint{a, b, c}, now.Add(hostDownFor+time.Second))); got != "a,b,c" {
		t.Errorf("order after hostDownFor: %s", got)
	}
}

// TestChainOverridePath: a host with its own API root is asked under it,
// also when nothing answers at its /v2/.
func TestChainOverridePath(t *testing.T) {
	t.Parallel()
	blob := []byte("under a custom root")
	srv, n := blobServer(t, blob, nil)
	// A front that serves the registry's API only under /artifactory/api/docker/local.
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/artifactory/api/docker/local/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		resp, err := srv.Client().Get(srv.URL + "/v2/" + rest)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(front.Close)
	ep := endpointOf(front, serverTLS(front))
	ep.Path = "/artifactory/api/docker/local"
	c, err := New(Config{Hosts: &staticHosts{chains: map[string]Chain{"corp.example": {Endpoints: []Endpoint{ep}}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(t, c, "corp.example", digest.FromBytes(blob))
	if err != nil || string(got) != string(blob) || n.Load() == 0 {
		t.Fatalf("blob %q, %v (%d requests behind the front)", got, err, n.Load())
	}
}

// tlsSniffer is a connection that notes whether its first bytes written
// were a TLS handshake record.
type tlsSniffer struct {
	net.Conn
	once sync.Once
	tls  *atomic.Int64
}

func (s *tlsSniffer) Write(b []byte) (int, error) {
	s.once.Do(func() {
		if len(b) > 0 && b[0] == 0x16 {
			s.tls.Add(1)
		}
	})
	return s.Conn.Write(b)
}

// TestChainPlainHostIsNotAskedOverHTTPS: a host the hosts.toml names
// http:// is asked over plain HTTP alone, as containerd asks it. An
// HTTPS attempt first would cost a host that cannot be reached a second
// connection timeout before the next host is tried.
func TestChainPlainHostIsNotAskedOverHTTPS(t *testing.T) {
	t.Parallel()
	blob := []byte("layer on a plain HTTP mirror")
	d := digest.FromBytes(blob)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+"/v2/team/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", strings.NewReader(string(blob)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var handshakes, conns atomic.Int64
	var dialer net.Dialer
	c, err := New(Config{
		Hosts: &staticHosts{chains: map[string]Chain{"corp.example": {Endpoints: []Endpoint{{Scheme: "http", Host: host, Path: "/v2", Pull: true, Resolve: true}}}}},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conns.Add(1)
			return &tlsSniffer{Conn: conn, tls: &handshakes}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(t, c, "corp.example", d)
	if err != nil || string(got) != string(blob) {
		t.Fatalf("blob: %q, %v", got, err)
	}
	if conns.Load() == 0 || handshakes.Load() != 0 {
		t.Fatalf("%d of %d connections to the http:// host began a TLS handshake", handshakes.Load(), conns.Load())
	}
}

// TestFailoverTime: each pull host before a registry's last may take
// its connection budget to fail.
func TestFailoverTime(t *testing.T) {
	t.Parallel()
	host := func(name string, pull bool) Endpoint {
		return Endpoint{Scheme: "https", Host: name, Path: "/v2", Pull: pull, Resolve: true}
	}
	for _, tc := range []struct {
		name  string
		hosts []Endpoint
		dial  time.Duration
		want  time.Duration
	}{
		{"registry alone", []Endpoint{host("registry.example", true)}, 0, 0},
		{"mirror, registry", []Endpoint{host("mirror", true), host("registry.example", true)}, 0, chainDialBudget},
		{"two mirrors, registry", []Endpoint{host("m1", true), host("m2", true), host("registry.example", true)}, 0, 2 * chainDialBudget},
		{"a resolve-only host is not asked for blobs", []Endpoint{host("m1", false), host("m2", true), host("registry.example", true)}, 0, chainDialBudget},
		{"dial timeout below the budget", []Endpoint{host("m1", true), host("registry.example", true)}, time.Second, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{DialTimeout: tc.dial, Hosts: &staticHosts{chains: map[string]Chain{"corp.example": {Endpoints: tc.hosts}}}})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.FailoverTime("corp.example"); got != tc.want {
				t.Fatalf("FailoverTime = %v, want %v", got, tc.want)
			}
		})
	}
}
