package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver serves one manifest and one blob, and records what it was asked.
type fakeResolver struct {
	manifest resolver.Manifest
	blob     []byte
	lastReg  atomic.Value
	lookups  atomic.Int64 // Manifest and Blob calls
	// prefetched lists the references Prefetch was called for.
	mu         sync.Mutex
	prefetched []string
}

func (f *fakeResolver) Prefetch(_ context.Context, req resolver.ManifestRequest, m resolver.Manifest) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prefetched = append(f.prefetched, req.Registry+"/"+req.Repo+":"+req.Reference+"="+m.Digest.String())
	return 0
}

// fakeConfig is an image config: content a manifest digest can name, which
// is no manifest.
var fakeConfig = []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)

func (f *fakeResolver) Manifest(_ context.Context, req resolver.ManifestRequest) (resolver.Manifest, error) {
	f.lookups.Add(1)
	f.lastReg.Store(req.Registry)
	if req.Reference == "v1" || req.Reference == f.manifest.Digest.String() {
		return f.manifest, nil
	}
	if req.Reference == "huge" {
		return resolver.Manifest{}, fmt.Errorf("manifest x: %w", resolver.ErrManifestTooLarge)
	}
	// The resolver reads held content asked for as a manifest, and finds
	// its media type as it does here.
	for _, held := range [][]byte{f.blob, fakeConfig} {
		if req.Reference == digest.FromBytes(held).String() {
			_, err := resolver.DetectMediaType(held)
			return resolver.Manifest{}, fmt.Errorf("manifest %s: %w", req.Reference, err)
		}
	}
	return resolver.Manifest{}, fmt.Errorf("manifest %s: %w", req.Reference, errdefs.ErrNotFound)
}

func (f *fakeResolver) Blob(_ context.Context, req resolver.BlobRequest) (*resolver.Blob, error) {
	f.lookups.Add(1)
	f.lastReg.Store(req.Registry)
	if req.Digest != digest.FromBytes(f.blob) {
		return nil, fmt.Errorf("blob %s: %w", req.Digest, errdefs.ErrNotFound)
	}
	b := f.blob
	return resolver.NewBlob(req.Digest, int64(len(b)), resolver.SourceStore, func(_ context.Context, off int64) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b[off:])), nil
	}, nil), nil
}

func newTestServer(t *testing.T) (*httptest.Server, *fakeResolver) {
	t.Helper()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	blob := bytes.Repeat([]byte("0123456789"), 1000)
	f := &fakeResolver{
		manifest: resolver.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Body: body, Source: resolver.SourceUpstream},
		blob:     blob,
	}
	h, err := New(f, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, f
}

type ociErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	srv, f := newTestServer(t)
	blob := digest.FromBytes(f.blob)
	cases := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"upper-case name", "GET", "/v2/Library/alpine/manifests/v1", nil, 400, codeNameInvalid},
		{"empty name", "GET", "/v2//manifests/v1", nil, 400, codeNameInvalid},
		{"name with double slash", "GET", "/v2/a//b/blobs/" + blob.String(), nil, 400, codeNameInvalid},
		{"name too long", "GET", "/v2/" + strings.Repeat("a", 300) + "/manifests/v1", nil, 400, codeNameInvalid},
		{"truncated digest", "GET", "/v2/a/blobs/sha256:abc", nil, 400, codeDigestInvalid},
		{"digest not hex", "GET", "/v2/a/blobs/sha256:" + strings.Repeat("z", 64), nil, 400, codeDigestInvalid},
		{"unknown algorithm", "GET", "/v2/a/blobs/md5:" + strings.Repeat("a", 32), nil, 400, codeDigestInvalid},
		{"sha512 too short", "GET", "/v2/a/blobs/sha512:" + strings.Repeat("a", 64), nil, 400, codeDigestInvalid},
		{"blob by tag", "GET", "/v2/a/blobs/latest", nil, 400, codeDigestInvalid},
		{"empty blob reference", "GET", "/v2/a/blobs/", nil, 400, codeDigestInvalid},
		{"manifest digest truncated", "GET", "/v2/a/manifests/sha256:abc", nil, 400, codeDigestInvalid},
		{"bad ns", "GET", "/v2/a/manifests/v1?ns=not%20a%20host", nil, 400, codeNameInvalid},
		{"ns with path", "GET", "/v2/a/manifests/v1?ns=docker.io/evil", nil, 400, codeNameInvalid},
		{"empty ns", "GET", "/v2/a/manifests/v1?ns=", nil, 400, codeNameInvalid},
		{"upload", "POST", "/v2/a/blobs/uploads/", nil, 405, codeUnsupported},
		{"put manifest", "PUT", "/v2/a/manifests/v1", nil, 405, codeUnsupported},
		{"delete blob", "DELETE", "/v2/a/blobs/" + blob.String(), nil, 405, codeUnsupported},
		{"patch", "PATCH", "/v2/a/blobs/uploads/x", nil, 405, codeUnsupported},
		{"catalog", "GET", "/v2/_catalog", nil, 404, codeUnsupported},
		{"tags list", "GET", "/v2/a/tags/list", nil, 404, codeUnsupported},
		{"not v2", "GET", "/v1/a", nil, 404, codeUnsupported},
		{"unknown manifest", "GET", "/v2/a/manifests/v2", nil, 404, codeManifestUnknown},
		{"oversized manifest", "GET", "/v2/a/manifests/huge", nil, 404, codeSizeInvalid},
		{"unknown blob", "GET", "/v2/a/blobs/" + digest.FromString("x").String(), nil, 404, codeBlobUnknown},
		{"layer as a manifest", "GET", "/v2/a/manifests/" + blob.String(), nil, 404, codeManifestUnknown},
		{"config as a manifest", "GET", "/v2/a/manifests/" + digest.FromBytes(fakeConfig).String(), nil, 404, codeManifestUnknown},
		{"range past end", "GET", "/v2/a/blobs/" + blob.String(), map[string]string{"Range": "bytes=20000-"}, 416, codeRangeInvalid},
		{"range garbage", "GET", "/v2/a/blobs/" + blob.String(), map[string]string{"Range": "bytes=abc"}, 416, codeRangeInvalid},
		{"range wrong unit", "GET", "/v2/a/blobs/" + blob.String(), map[string]string{"Range": "pages=1-2"}, 416, codeRangeInvalid},
		{"range empty suffix", "GET", "/v2/a/blobs/" + blob.String(), map[string]string{"Range": "bytes=-0"}, 416, codeRangeInvalid},
		{"range reversed", "GET", "/v2/a/blobs/" + blob.String(), map[string]string{"Range": "bytes=9-3"}, 416, codeRangeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, body := do(t, tc.method, srv.URL+tc.path, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			var e ociErrors
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
				t.Fatalf("body %q is not one OCI error: %v", body, err)
			}
			if e.Errors[0].Code != tc.code || e.Errors[0].Message == "" {
				t.Fatalf("error %+v, want code %s with a message", e.Errors[0], tc.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	// The server still answers after all of that.
	if resp, _ := do(t, "GET", srv.URL+"/v2/a/manifests/v1", nil); resp.StatusCode != 200 {
		t.Fatalf("after bad input: status %d", resp.StatusCode)
	}
}

// TestMissesStayLocal: a manifest reference that is neither tag nor digest,
// and a well-formed digest of an algorithm shoal does not serve, are misses
// (404, as the registry answers them) that never reach the resolver, so
// never the upstream registry. HEAD gets the status alone.
func TestMissesStayLocal(t *testing.T) {
	t.Parallel()
	f := &fakeResolver{blob: []byte("held")}
	h, err := New(f, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, code string
	}{
		{"invalid tag", "/v2/a/manifests/.INVALID_MANIFEST_NAME", codeManifestUnknown},
		{"tag starting with a dash", "/v2/a/manifests/-bad", codeManifestUnknown},
		{"tag too long", "/v2/a/manifests/" + strings.Repeat("t", 129), codeManifestUnknown},
		{"empty reference", "/v2/a/manifests/", codeManifestUnknown},
		{"sha512 manifest", "/v2/a/manifests/sha512:" + strings.Repeat("a", 128), codeManifestUnknown},
		{"sha512 blob", "/v2/a/blobs/sha512:" + strings.Repeat("a", 128), codeBlobUnknown},
		{"sha384 blob", "/v2/a/blobs/sha384:" + strings.Repeat("a", 96), codeBlobUnknown},
	}
	for _, tc := range cases {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, localRequest(method, "http://shoal.invalid"+tc.path+"?ns=registry.example", nil))
				if w.Code != http.StatusNotFound {
					t.Fatalf("status %d, want 404; body %s", w.Code, w.Body)
				}
				if method == "HEAD" {
					if w.Body.Len() != 0 {
						t.Fatalf("HEAD answered with a body: %s", w.Body)
					}
					return
				}
				var e ociErrors
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code || e.Errors[0].Message == "" {
					t.Fatalf("body %s, want one %s error with a message", w.Body, tc.code)
				}
			})
		}
	}
	if n := f.lookups.Load(); n != 0 {
		t.Fatalf("the resolver was asked %d times", n)
	}
	// A valid tag does go to the resolver: the check above is not vacuous.
	h.ServeHTTP(httptest.NewRecorder(), localRequest("GET", "http://shoal.invalid/v2/a/manifests/v1.0_rc-1", nil))
	if n := f.lookups.Load(); n != 1 {
		t.Fatalf("a valid tag reached the resolver %d times, want 1", n)
	}
}

func TestManifestHeaders(t *testing.T) {
	t.Parallel()
	srv, f := newTestServer(t)
	for _, ref := range []string{"v1", f.manifest.Digest.String()} {
		for _, method := range []string{"HEAD", "GET"} {
			resp, body := do(t, method, srv.URL+"/v2/library/alpine/manifests/"+ref+"?ns=registry.example:5000", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d", method, ref, resp.StatusCode)
			}
			want := map[string]string{
				"Content-Type":          f.manifest.MediaType,
				"Docker-Content-Digest": f.manifest.Digest.String(),
				"Content-Length":        fmt.Sprint(len(f.manifest.Body)),
			}
			for k, v := range want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s %s: %s = %q, want %q", method, ref, k, got, v)
				}
			}
			if method == "GET" && !bytes.Equal(body, f.manifest.Body) {
				t.Errorf("GET %s: body differs", ref)
			}
			if method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD %s: body of %d bytes", ref, len(body))
			}
			if got := f.lastReg.Load(); got != "registry.example:5000" {
				t.Errorf("upstream %v, want the ns value", got)
			}
		}
	}
	do(t, "GET", srv.URL+"/v2/library/alpine/manifests/v1", nil)
	if got := f.lastReg.Load(); got != "docker.io" {
		t.Errorf("without ns: upstream %v, want docker.io", got)
	}
	// Only GETs start prefetching: a HEAD resolves a tag, which a pull of
	// an image the node holds also does.
	d := f.manifest.Digest.String()
	want := []string{
		"registry.example:5000/library/alpine:v1=" + d,
		"registry.example:5000/library/alpine:" + d + "=" + d,
		"docker.io/library/alpine:v1=" + d,
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(f.prefetched, want) {
		t.Errorf("prefetched %q, want %q", f.prefetched, want)
	}
}

func TestBlobRanges(t *testing.T) {
	t.Parallel()
	srv, f := newTestServer(t)
	url := srv.URL + "/v2/a/b/blobs/" + digest.FromBytes(f.blob).String() + "?ns=docker.io"
	n := len(f.blob)
	cases := []struct {
		name       string
		rng        string
		status     int
		want       []byte
		contentRng string
	}{
		{"whole", "", 200, f.blob, ""},
		{"resume", "bytes=4000-", 206, f.blob[4000:], fmt.Sprintf("bytes 4000-%d/%d", n-1, n)},
		{"middle", "bytes=10-19", 206, f.blob[10:20], fmt.Sprintf("bytes 10-19/%d", n)},
		{"suffix", "bytes=-5", 206, f.blob[n-5:], fmt.Sprintf("bytes %d-%d/%d", n-5, n-1, n)},
		{"end clamped", "bytes=9990-20000", 206, f.blob[9990:], fmt.Sprintf("bytes 9990-%d/%d", n-1, n)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hdr := map[string]string{}
			if tc.rng != "" {
				hdr["Range"] = tc.rng
			}
			resp, body := do(t, "GET", url, hdr)
			if resp.StatusCode != tc.status || !bytes.Equal(body, tc.want) {
				t.Fatalf("status %d with %d bytes, want %d with %d", resp.StatusCode, len(body), tc.status, len(tc.want))
			}
			if got := resp.Header.Get("Content-Range"); got != tc.contentRng {
				t.Fatalf("Content-Range %q, want %q", got, tc.contentRng)
			}
			if resp.Header.Get("Docker-Content-Digest") != digest.FromBytes(f.blob).String() || resp.Header.Get("Accept-Ranges") != "bytes" {
				t.Fatalf("headers %v", resp.Header)
			}
		})
	}
	resp, body := do(t, "HEAD", url, nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(n) || len(body) != 0 {
		t.Fatalf("HEAD: %d, length %d, body %d", resp.StatusCode, resp.ContentLength, len(body))
	}
}

func TestBaseEndpoint(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t)
	resp, body := do(t, "GET", srv.URL+"/v2/", nil)
	if resp.StatusCode != 200 || string(body) != "{}" || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := New(nil, Config{}); err == nil {
		t.Fatal("nil resolver accepted")
	}
	if _, err := New(&fakeResolver{}, Config{DefaultRegistry: "bad host"}); err == nil {
		t.Fatal("bad default registry accepted")
	}
	var e *pathError
	if _, err := parsePath("/v2/a/blobs/x/y"); !errors.As(err, &e) {
		t.Fatalf("nested ref: %v", err)
	}
}

// localRequest is a request from the node's own containerd, over loopback.
func localRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.RemoteAddr = "127.0.0.1:40000"
	return r
}

// TestMirrorAnswersAllowedClientsOnly: by default only the node itself may
// use the mirror; a client from elsewhere gets 403 DENIED with an OCI body
// and the resolver is never asked. --mirror-allow widens it.
func TestMirrorAnswersAllowedClientsOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		allow  []netip.Prefix
		remote string
		want   int
	}{
		{"loopback v4", nil, "127.0.0.1:5000", http.StatusOK},
		{"loopback elsewhere in 127/8", nil, "127.3.2.1:5000", http.StatusOK},
		{"loopback v6", nil, "[::1]:5000", http.StatusOK},
		{"v4-mapped loopback", nil, "[::ffff:127.0.0.1]:5000", http.StatusOK},
		{"a pod on the network", nil, "10.1.2.3:5000", http.StatusForbidden},
		{"a v6 neighbour", nil, "[fe80::1]:5000", http.StatusForbidden},
		{"garbage address", nil, "not-an-address", http.StatusForbidden},
		{"allowed network", []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, "10.1.2.3:5000", http.StatusOK},
		{"outside the allowed network", []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, "10.2.0.1:5000", http.StatusForbidden},
		{"loopback when others are allowed", []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, "127.0.0.1:5000", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeResolver{}
			h, err := New(f, Config{Allow: tc.allow})
			if err != nil {
				t.Fatal(err)
			}
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "http://shoal.invalid/v2/", nil)
			r.RemoteAddr = tc.remote
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
			if tc.want == http.StatusForbidden && !strings.Contains(w.Body.String(), `"code":"DENIED"`) {
				t.Fatalf("403 without an OCI DENIED body: %s", w.Body)
			}
		})
	}
}
