package resolver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstreamServer is an in-process registry with hooks on blob GETs.
type upstreamServer struct {
	srv      *httptest.Server
	host     string
	blobGets atomic.Int64
	ranges   sync.Map // Range headers seen, by digest
	// hook may rewrite a blob GET; it returns false to let the registry answer.
	hook  func(w http.ResponseWriter, r *http.Request, body []byte) bool
	blobs map[digest.Digest][]byte

	mu        sync.Mutex
	manifests []string    // "METHOD reference" of each manifest request
	noHead    atomic.Bool // answer manifest HEADs 405, as some registries do
}

// manifestRequests returns the manifest requests the registry got so far.
func (u *upstreamServer) manifestRequests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.manifests...)
}

func newUpstream(t *testing.T) *upstreamServer {
	t.Helper()
	u := &upstreamServer{blobs: map[digest.Digest][]byte{}}
	reg := registry.New(registry.Logger(nilLogger()))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.Index(r.URL.Path, "/manifests/"); i >= 0 && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			u.mu.Lock()
			u.manifests = append(u.manifests, r.Method+" "+r.URL.Path[i+len("/manifests/"):])
			u.mu.Unlock()
			if r.Method == http.MethodHead && u.noHead.Load() {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
		}
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
			u.blobGets.Add(1)
			d := digest.Digest(r.URL.Path[i+len("/blobs/"):])
			if rg := r.Header.Get("Range"); rg != "" {
				u.ranges.LoadOrStore(d, rg) // the first resume is the one tests check
			}
			if u.hook != nil && u.hook(w, r, u.blobs[d]) {
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.host = strings.TrimPrefix(u.srv.URL, "http://")
	return u
}

// push uploads a blob under repo.
func (u *upstreamServer) push(t *testing.T, repo string, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	u.blobs[d] = body
	resp, err := http.Post(u.srv.URL+"/v2/"+repo+"/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push blob: %d", resp.StatusCode)
	}
	return d
}

func (u *upstreamServer) pushManifest(t *testing.T, repo, tag string, body []byte, mediaType string) digest.Digest {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, u.srv.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest: %d", resp.StatusCode)
	}
	return digest.FromBytes(body)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

type fixture struct {
	res   *resolver.Resolver
	store store.Store
	up    *upstreamServer
	// registry is the name blob requests give: the test registry's host,
	// unless a hosts.toml chain leads to it.
	registry string
}

func newFixture(t *testing.T, cfg resolver.Config, src resolver.Sources) *fixture {
	t.Helper()
	return newFixtureIn(t, cfg, src, nil)
}

// newFixtureIn is newFixture with the resolver's metrics in reg.
func newFixtureIn(t *testing.T, cfg resolver.Config, src resolver.Sources, reg prometheus.Registerer) *fixture {
	t.Helper()
	up := newUpstream(t)
	client, err := upstream.New(upstream.Config{Insecure: []string{up.host}})
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory()
	// The fixture's registry is one the node mirrors.
	cfg.Registries = append(cfg.Registries, up.host)
	res, err := resolver.New(st, client, src, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	return &fixture{res: res, store: st, up: up, registry: up.host}
}

func readAll(ctx context.Context, t *testing.T, b *resolver.Blob, off int64) ([]byte, error) {
	t.Helper()
	rd, err := b.Reader(ctx, off)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

func TestPullThroughOnceForConcurrentClients(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	body := randomBytes(t, 3<<20)
	d := f.up.push(t, "team/app", body)
	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d})
			if err != nil {
				errs <- err
				return
			}
			defer b.Close()
			got, err := readAll(t.Context(), t, b, 0)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, body) {
				errs <- errors.New("body differs")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := f.up.blobGets.Load(); n != 1 {
		t.Fatalf("registry served the blob %d times, want 1", n)
	}
	// Later requests come from the store without touching the registry.
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Source != resolver.SourceStore {
		t.Fatalf("source %s, want store", b.Source)
	}
	if got, _ := readAll(t.Context(), t, b, 1<<20); !bytes.Equal(got, body[1<<20:]) {
		t.Fatal("range from store differs")
	}
	if n := f.up.blobGets.Load(); n != 1 {
		t.Fatalf("registry asked %d times", n)
	}
}

func TestMissIsFast(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(*fixture) resolver.BlobRequest
	}{
		{"unknown blob", func(f *fixture) resolver.BlobRequest {
			return resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromString("nope")}
		}},
		{"registry down", func(f *fixture) resolver.BlobRequest {
			f.up.srv.Close()
			return resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromString("nope")}
		}},
		{"registry hangs", func(f *fixture) resolver.BlobRequest {
			block := make(chan struct{})
			f.up.hook = func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
				select {
				case <-block:
				case <-r.Context().Done():
				}
				return true
			}
			f.up.srv.Config.RegisterOnShutdown(func() { close(block) })
			return resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromString("nope")}
		}},
		{"registry refuses", func(f *fixture) resolver.BlobRequest {
			f.up.hook = func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
				w.WriteHeader(http.StatusForbidden)
				return true
			}
			return resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromString("nope")}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, resolver.Config{MissTimeout: 300 * time.Millisecond, StallTimeout: 200 * time.Millisecond, FetchAttempts: 1}, resolver.Sources{})
			req := tc.setup(f)
			_, err := f.res.Blob(t.Context(), req)
			if !errdefs.IsNotFound(err) {
				t.Fatalf("got %v, want a NotFound miss", err)
			}
		})
	}
}

func TestCorruptUpstreamNeverCompletes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	body := randomBytes(t, 1<<20)
	d := f.up.push(t, "a", body)
	f.up.hook = func(w http.ResponseWriter, _ *http.Request, b []byte) bool {
		bad := bytes.Clone(b)
		bad[len(bad)/2] ^= 0xff
		w.Header().Set("Content-Length", "1048576")
		_, _ = w.Write(bad)
		return true
	}
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t.Context(), t, b, 0)
	if !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("reader error %v, want digest mismatch", err)
	}
	if len(got) >= len(body) {
		t.Fatalf("reader received %d bytes of a corrupt %d-byte blob", len(got), len(body))
	}
	if _, err := f.store.Stat(t.Context(), d); !errdefs.IsNotFound(err) {
		t.Fatalf("corrupt blob in store: %v", err)
	}
}

func TestStalledUpstreamResumesAtOffset(t *testing.T) {
	t.Parallel()
	// The resumed request's answer gets the same time as the stall: 1 s
	// was too short for it on a loaded host under -race.
	f := newFixture(t, resolver.Config{StallTimeout: 3 * time.Second}, resolver.Sources{})
	body := randomBytes(t, 2<<20)
	d := f.up.push(t, "a", body)
	var first atomic.Bool
	f.up.hook = func(w http.ResponseWriter, r *http.Request, b []byte) bool {
		if first.Swap(true) {
			return false // the resumed request is served normally
		}
		w.Header().Set("Content-Length", "2097152")
		_, _ = w.Write(b[:1<<20])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then stall
		return true
	}
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	// This reader waits on bytes that have not arrived while the source stalls.
	got, err := readAll(t.Context(), t, b, 0)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes, err %v", len(got), err)
	}
	rg, ok := f.up.ranges.Load(d)
	if !ok || rg.(string) != "bytes=1048576-2097151" {
		t.Fatalf("resumed with Range %v, want bytes=1048576-2097151", rg)
	}
}

func TestManifestByTagThenDigest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{RegistryOnlyTags: true, TagTTL: -1}, resolver.Sources{})
	cfg := f.up.push(t, "a", []byte("{}"))
	body := []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","config":{"mediaType":"` + ocispec.MediaTypeImageConfig + `","digest":"` + cfg.String() + `","size":2},"layers":[]}`)
	d := f.up.pushManifest(t, "a", "v1", body, ocispec.MediaTypeImageManifest)
	m, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "a", Reference: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != d || m.MediaType != ocispec.MediaTypeImageManifest || !bytes.Equal(m.Body, body) {
		t.Fatalf("got %s %s", m.Digest, m.MediaType)
	}
	f.up.srv.Close() // the registry is gone: the digest must come from the store
	m2, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "a", Reference: d.String()})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Source != resolver.SourceStore || m2.MediaType != m.MediaType || !bytes.Equal(m2.Body, body) {
		t.Fatalf("by digest: source %s type %s", m2.Source, m2.MediaType)
	}
	if _, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "a", Reference: "v1"}); err == nil {
		t.Fatal("tag resolved with the registry down and RegistryOnlyTags")
	}
}

type fakeImages map[string]ocispec.Descriptor

func (f fakeImages) ResolveImage(_ context.Context, name string) (ocispec.Descriptor, error) {
	if d, ok := f[name]; ok {
		return d, nil
	}
	return ocispec.Descriptor{}, errdefs.ErrNotFound
}

// TestTagsResolveLocallyWhenRegistryDown: by default a tag the node's
// containerd holds answers while the registry is down; RegistryOnlyTags
// turns that off.
func TestTagsResolveLocallyWhenRegistryDown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  resolver.Config
		ok   bool
	}{
		{"default", resolver.Config{}, true},
		{"registry only", resolver.Config{RegistryOnlyTags: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			images := fakeImages{}
			f := newFixture(t, tc.cfg, resolver.Sources{Images: images})
			body := []byte(`{"schemaVersion":2,"manifests":[]}`)
			d := digest.FromBytes(body)
			ing, err := f.store.Begin(t.Context(), d, int64(len(body)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ing.WriteAt(body, 0); err != nil {
				t.Fatal(err)
			}
			if err := ing.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			images[f.up.host+"/a:v1"] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(body))}
			f.up.srv.Close()
			m, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "a", Reference: "v1"})
			if !tc.ok {
				if err == nil {
					t.Fatalf("resolved to %s with the registry down and RegistryOnlyTags", m.Digest)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Digest != d || m.MediaType != ocispec.MediaTypeImageIndex {
				t.Fatalf("got %s %s", m.Digest, m.MediaType)
			}
		})
	}
}

func TestDetectMediaType(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body, want string
		ok               bool
	}{
		{"explicit", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}`, "application/vnd.docker.distribution.manifest.v2+json", true},
		{"oci index", `{"schemaVersion":2,"manifests":[]}`, ocispec.MediaTypeImageIndex, true},
		{"oci manifest", `{"schemaVersion":2,"config":{},"layers":[]}`, ocispec.MediaTypeImageManifest, true},
		{"schema 1", `{"schemaVersion":1}`, "", false},
		{"not json", `garbage`, "", false},
		{"empty object", `{"schemaVersion":2}`, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolver.DetectMediaType([]byte(tc.body))
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// TestUpstreamErrorRetries: a registry answering 5xx is asked again, up to
// FetchAttempts times; one answering 429 is rate limiting shoal, and asking
// again at once only spends more of the limit: it is asked once, and the
// request is a miss so containerd goes to the registry with its own quota.
func TestUpstreamErrorRetries(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		status   int
		wantGets int64
		wantMiss bool
	}{
		{"500 every time", http.StatusInternalServerError, 3, true},
		{"429", http.StatusTooManyRequests, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, resolver.Config{MissTimeout: 2 * time.Second, StallTimeout: time.Second, FetchAttempts: 3}, resolver.Sources{})
			body := randomBytes(t, 64<<10)
			d := f.up.push(t, "a", body)
			f.up.hook = func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
				w.Header().Set("Retry-After", "30")
				w.WriteHeader(tc.status)
				return true
			}
			before := f.up.blobGets.Load()
			_, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
			if errdefs.IsNotFound(err) != tc.wantMiss {
				t.Fatalf("got %v, want a miss: %v", err, tc.wantMiss)
			}
			if got := f.up.blobGets.Load() - before; got != tc.wantGets {
				t.Errorf("the registry was asked %d times, want %d", got, tc.wantGets)
			}
		})
	}
}

// fullStore is a store on a disk that fills up: every ingest fails once it
// holds limit bytes, as a write does with ENOSPC.
type fullStore struct {
	store.Store
	limit int64
}

func (s fullStore) Begin(ctx context.Context, dgst digest.Digest, size int64) (store.Ingest, error) {
	in, err := s.Store.Begin(ctx, dgst, size)
	if err != nil {
		return nil, err
	}
	return &fullIngest{Ingest: in, limit: s.limit}, nil
}

type fullIngest struct {
	store.Ingest
	limit int64
}

func (in *fullIngest) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > in.limit {
		err := fmt.Errorf("write spool: %w", syscall.ENOSPC)
		in.Abort(err)
		return 0, err
	}
	return in.Ingest.WriteAt(p, off)
}

// TestFullStoreIsAMiss: when shoal's store cannot hold a blob (a full
// disk), the download stops at once instead of asking every other source
// to fail the same way, and the requests that follow, containerd's resume
// of the body cut short among them, are misses: containerd fetches the blob
// from the registry instead of resuming into the same failure.
func TestFullStoreIsAMiss(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	client, err := upstream.New(upstream.Config{Insecure: []string{up.host}})
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	res, err := resolver.New(fullStore{Store: store.NewMemory(), limit: size / 4}, client, resolver.Sources{},
		resolver.Config{MissTimeout: 2 * time.Second, StallTimeout: time.Second, FetchAttempts: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	d := up.push(t, "a", randomBytes(t, size))
	req := resolver.BlobRequest{Registry: up.host, Repo: "a", Digest: d}
	if b, err := res.Blob(t.Context(), req); err == nil {
		got, err := readAll(t.Context(), t, b, 0)
		b.Close()
		if err == nil || len(got) >= size {
			t.Fatalf("read %d bytes of a blob the store cannot hold, error %v", len(got), err)
		}
	}
	// The resume, and any request after it, is a miss, or (joining the
	// failed download before it ends) never ready: either way the mirror
	// answers 404 and containerd goes to the registry.
	for i := range 2 {
		b, err := res.Blob(t.Context(), req)
		if err == nil {
			err = b.Ready(t.Context())
			b.Close()
			if err == nil {
				t.Fatalf("request %d after the store failed is ready: the mirror would answer 200 and cut the body", i)
			}
			continue
		}
		if !errdefs.IsNotFound(err) {
			t.Fatalf("request %d after the store failed: %v, want a miss", i, err)
		}
	}
	if got := up.blobGets.Load(); got != 1 {
		t.Errorf("the registry was asked %d times: sources were tried after the store failed", got)
	}
}

// A request that reaches a resolver while it shuts down (containerd asking
// as the daemon stops) is a miss, and shutting down never races with it.
func TestRequestsDuringCloseAreMisses(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	var digests []digest.Digest
	for range 16 {
		digests = append(digests, f.up.push(t, "team/app", randomBytes(t, 64<<10)))
	}
	var wg sync.WaitGroup
	for _, d := range digests {
		wg.Go(func() {
			b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d})
			if err == nil {
				b.Close()
			} else if !errdefs.IsNotFound(err) {
				t.Errorf("blob %s during shutdown: %v, want a miss", d, err)
			}
		})
	}
	f.res.Close()
	wg.Wait()
	d := f.up.push(t, "team/app", randomBytes(t, 64<<10))
	_, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("blob after Close: %v, want a miss", err)
	}
}
