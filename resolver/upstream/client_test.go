package upstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tokenRegistry wraps an in-memory registry in the bearer-token flow real
// registries use: /v2/ challenges, /token trades basic credentials for a
// token, and every other request needs the token.
func tokenRegistry(t *testing.T, user, pass string) (*httptest.Server, string) {
	t.Helper()
	reg := registry.New()
	const token = "secret-token"
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"token": token})
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, srv.URL))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	// Seed a blob, with the token.
	body := []byte("private layer bytes")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/team/private/blobs/uploads/?digest="+digest.FromBytes(body).String(), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("seed: %d", resp.StatusCode)
	}
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

func writeAuthFile(t *testing.T, host, user, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuth(t *testing.T) {
	t.Parallel()
	_, host := tokenRegistry(t, "alice", "s3cret")
	d := digest.FromBytes([]byte("private layer bytes"))
	cases := []struct {
		name     string
		authFile func(t *testing.T) string
		ok       bool
	}{
		{"credentials from config.json", func(t *testing.T) string { return writeAuthFile(t, host, "alice", "s3cret") }, true},
		{"wrong credentials", func(t *testing.T) string { return writeAuthFile(t, host, "alice", "guess") }, false},
		{"anonymous", func(*testing.T) string { return "" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(Config{Insecure: []string{host}, AuthFile: tc.authFile(t)})
			if err != nil {
				t.Fatal(err)
			}
			body, size, err := c.Blob(t.Context(), resolver.BlobRequest{Registry: host, Repo: "team/private", Digest: d}, 0)
			if !tc.ok {
				// Refused credentials are a miss: containerd then pulls with its own.
				if !errdefs.IsNotFound(err) {
					t.Fatalf("got %v, want NotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			b, _ := io.ReadAll(body)
			if size != int64(len(b)) || digest.FromBytes(b) != d {
				t.Fatalf("got %d bytes (size %d)", len(b), size)
			}
		})
	}
}

func TestPlainHTTPOnlyForInsecureRegistries(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(registry.New())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Blob(t.Context(), resolver.BlobRequest{Registry: host, Repo: "a", Digest: digest.FromString("x")}, 0)
	if err == nil || !strings.Contains(err.Error(), "not an --insecure-registry") {
		t.Fatalf("plain HTTP to %s without --insecure-registry: %v", host, err)
	}
}

func TestHost(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"docker.io":       "registry-1.docker.io",
		"index.docker.io": "registry-1.docker.io",
		"ghcr.io":         "ghcr.io",
		"10.0.0.5:5000":   "10.0.0.5:5000",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDockerHubCredentialKey(t *testing.T) {
	t.Parallel()
	p := writeAuthFile(t, dockerHubKey, "bob", "pw")
	kc, err := loadKeychain(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range []string{"registry-1.docker.io", "index.docker.io"} {
		auth, err := kc.Resolve(fakeResource(reg))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := auth.Authorization()
		if err != nil || (cfg.Username != "bob" && cfg.Auth == "") {
			t.Fatalf("%s: credentials %+v, %v", reg, cfg, err)
		}
	}
}

type fakeResource string

func (f fakeResource) String() string      { return string(f) }
func (f fakeResource) RegistryStr() string { return string(f) }

// TestRateLimitAnswers: which registry answers ask shoal to slow down, and
// for how long, as the client reports them to the resolver.
func TestRateLimitAnswers(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		status      int
		retryAfter  string
		wantLimited bool
		wantWait    time.Duration
	}{
		{"429 without Retry-After", 429, "", true, 0},
		{"429 in seconds", 429, "120", true, 2 * time.Minute},
		{"429 as a date", 429, now.Add(90 * time.Second).Format(http.TimeFormat), true, 90 * time.Second},
		{"429 with a date past", 429, now.Add(-time.Hour).Format(http.TimeFormat), true, time.Second},
		{"429 with nonsense", 429, "soon", true, 0},
		{"503 in seconds", 503, "7", true, 7 * time.Second},
		{"503 without Retry-After is an outage", 503, "", false, 0},
		{"503 with nonsense is an outage", 503, "-3", false, 0},
		{"500 with Retry-After", 500, "5", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hdr := http.Header{}
			if tc.retryAfter != "" {
				hdr.Set("Retry-After", tc.retryAfter)
			}
			wait, limited := rateLimit(tc.status, hdr, now)
			if limited != tc.wantLimited || wait != tc.wantWait {
				t.Fatalf("rateLimit(%d, %q) = %s, %v; want %s, %v", tc.status, tc.retryAfter, wait, limited, tc.wantWait, tc.wantLimited)
			}
		})
	}
}

// TestRateLimitedBlob: a 429 reaches the resolver as a RateLimitedError
// with the registry's Retry-After, which also counts as resource
// exhaustion.
func TestRateLimitedBlob(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Retry-After", "42")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	c, err := New(Config{Insecure: []string{host}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Blob(t.Context(), resolver.BlobRequest{Registry: host, Repo: "a/b", Digest: digest.FromString("x")}, 0)
	var rl *resolver.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 42*time.Second {
		t.Fatalf("got %v, want a rate limit of 42s", err)
	}
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("%v does not count as resource exhaustion", err)
	}
}
