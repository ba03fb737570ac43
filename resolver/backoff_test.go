package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
)

func TestBackoffFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		retryAfter time.Duration
		want       time.Duration
	}{
		{"no Retry-After", 0, resolver.DefaultRetryAfter},
		{"a few seconds", 5 * time.Second, 5 * time.Second},
		{"at the cap", resolver.MaxRetryAfter, resolver.MaxRetryAfter},
		{"hours", 6 * time.Hour, resolver.MaxRetryAfter},
		{"negative", -time.Second, resolver.DefaultRetryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := resolver.BackoffFor(tc.retryAfter); got != tc.want {
				t.Fatalf("BackoffFor(%s) = %s, want %s", tc.retryAfter, got, tc.want)
			}
		})
	}
}

// sharingRouter is a fakeRouter that records what it was asked to tell
// the mesh.
type sharingRouter struct {
	*fakeRouter
	mu     sync.Mutex
	shared []string // "registry left"
}

func (s *sharingRouter) ShareBackoff(registry string, left time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shared = append(s.shared, fmt.Sprintf("%s %s", registry, left.Round(time.Second)))
}

func (s *sharingRouter) sharedNow() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.shared)
}

// TestRateLimitedRegistryIsLeftAlone: after a 429, no request of this node
// reaches the registry until its Retry-After passed: each is a miss at
// once, so containerd asks the registry itself; the mesh is told once.
func TestRateLimitedRegistryIsLeftAlone(t *testing.T) {
	t.Parallel()
	router := &sharingRouter{fakeRouter: &fakeRouter{}}
	f := newFixture(t, resolver.Config{MissTimeout: 2 * time.Second}, resolver.Sources{Router: router})
	var ds []digest.Digest
	for range 3 {
		ds = append(ds, f.up.push(t, "a", randomBytes(t, 64<<10)))
	}
	f.up.hook = func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	for i, d := range ds {
		_, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
		if !errdefs.IsNotFound(err) {
			t.Fatalf("blob %d: got %v, want a miss", i, err)
		}
		var rl *resolver.RateLimitedError
		if !errors.As(err, &rl) || rl.Registry != f.up.host {
			t.Fatalf("blob %d: the miss does not say the registry is backed off: %v", i, err)
		}
	}
	if n := f.up.blobGets.Load(); n != 1 {
		t.Fatalf("the registry was asked %d times, want once", n)
	}
	// A manifest of the same registry is not asked either.
	if _, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "a", Reference: "v1"}); err == nil {
		t.Fatal("a manifest of the backed-off registry resolved")
	}
	if want := []string{f.up.host + " 30s"}; !slices.Equal(router.sharedNow(), want) {
		t.Fatalf("told the mesh %v, want %v", router.sharedNow(), want)
	}

}

// TestBackoffHeardFromAMember: a member's word that a registry asked to
// slow down keeps this node from asking it, and only it, and is not told
// back to the mesh (the gossip spreads it).
func TestBackoffHeardFromAMember(t *testing.T) {
	t.Parallel()
	router := &sharingRouter{fakeRouter: &fakeRouter{}}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	d := f.up.push(t, "a", randomBytes(t, 64<<10))

	// Another registry's back-off changes nothing here.
	f.res.NoteBackoff("elsewhere.example", 20*time.Second, "node2")
	if _, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d}); err != nil {
		t.Fatalf("with another registry backed off: %v", err)
	}
	d = f.up.push(t, "a", randomBytes(t, 64<<10))
	before := f.up.blobGets.Load()
	f.res.NoteBackoff(f.up.host, 20*time.Second, "node2")
	_, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want a miss", err)
	}
	if n := f.up.blobGets.Load() - before; n != 0 {
		t.Fatalf("the registry was asked %d times during a back-off heard from a member", n)
	}
	if s := router.sharedNow(); len(s) != 0 {
		t.Fatalf("told the mesh %v of a back-off it heard from the mesh", s)
	}
}

// TestBackoffEnds: once the Retry-After passed, the registry is asked
// again.
func TestBackoffEnds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	body := randomBytes(t, 64<<10)
	d := f.up.push(t, "a", body)
	f.res.NoteBackoff(f.up.host, time.Second, "node2")
	req := resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d}
	if _, err := f.res.Blob(t.Context(), req); !errdefs.IsNotFound(err) {
		t.Fatalf("during the back-off: got %v, want a miss", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := f.res.Blob(t.Context(), req)
		if err == nil {
			got, rerr := readAll(t.Context(), t, b, 0)
			if rerr != nil || len(got) != len(body) {
				t.Fatalf("read %d bytes: %v", len(got), rerr)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a 1 s back-off still held after 10 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rateLimitingRouter is a designatingRouter whose designated peers answer
// that the registry asked them to slow down, as p2p does for a pull-for.
type rateLimitingRouter struct {
	*designatingRouter
	registry string
}

func (r *rateLimitingRouter) FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	r.mu.Lock()
	r.through = append(r.through, fmt.Sprintf("%s@%d %s/%s", p, off, registry, repo))
	r.mu.Unlock()
	return nil, 0, fmt.Errorf("fetch %s from %s: %w", dgst, p, &resolver.RateLimitedError{Registry: registry, RetryAfter: 40 * time.Second, Via: p})
}

// TestDesignatedPeerSaysRateLimited: a designated peer that was told 429
// by the registry says so; this node then asks neither the next designated
// peer nor the registry (either would be one more request against the
// limit), answers a miss, and is backed off itself.
func TestDesignatedPeerSaysRateLimited(t *testing.T) {
	t.Parallel()
	router := &rateLimitingRouter{designatingRouter: &designatingRouter{
		fakeRouter: &fakeRouter{peers: map[string]fakePeer{}},
		designated: []string{"first", "second"},
	}}
	f := newFixture(t, resolver.Config{MissTimeout: 2 * time.Second}, resolver.Sources{Router: router})
	router.registry = f.up.host
	d := f.up.push(t, "a", randomBytes(t, 64<<10))
	d2 := f.up.push(t, "a", randomBytes(t, 64<<10))
	_, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want a miss", err)
	}
	router.mu.Lock()
	through := slices.Clone(router.through)
	router.mu.Unlock()
	if want := []string{"first@0 " + f.up.host + "/a"}; !slices.Equal(through, want) {
		t.Fatalf("asked to fetch through %v, want %v only", through, want)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("the registry was asked %d times after a designated peer said it rate limits", n)
	}
	// The next blob of that registry asks no one who would ask it.
	if _, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d2}); !errdefs.IsNotFound(err) {
		t.Fatalf("second blob: got %v, want a miss", err)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	if len(router.through) != 1 || f.up.blobGets.Load() != 0 {
		t.Fatalf("during the back-off: fetched through %v, registry asked %d times", router.through, f.up.blobGets.Load())
	}
}

// TestPullForDuringBackoff: a peer asking this node to fetch for the
// cluster from a backed-off registry gets the back-off, with the time left,
// and the registry is not asked.
func TestPullForDuringBackoff(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	d := f.up.push(t, "a", randomBytes(t, 64<<10))
	f.res.NoteBackoff(f.up.host, 30*time.Second, "node3")
	_, err := f.res.PullFor(t.Context(), d, f.up.host, "a", swarm.Asker{}, nil)
	var rl *resolver.RateLimitedError
	if !errors.As(err, &rl) {
		t.Fatalf("got %v, want the back-off", err)
	}
	if rl.RetryAfter <= 25*time.Second || rl.RetryAfter > 30*time.Second {
		t.Fatalf("back-off left %s, want just under 30s", rl.RetryAfter)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("the registry was asked %d times", n)
	}
}

// TestPullForOnlyFromMirroredRegistries: a peer may have this node fetch
// from the registries it is configured with and those its own containerd
// pulled from through it; any other host is refused without a request.
func TestPullForOnlyFromMirroredRegistries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{Registries: []string{"configured.example"}}, resolver.Sources{})
	d := f.up.push(t, "a", randomBytes(t, 1000))
	for _, reg := range []string{"elsewhere.example", "attacker.example:443", "127.0.0.1:1"} {
		if _, err := f.res.PullFor(t.Context(), d, reg, "a", swarm.Asker{}, nil); !errors.Is(err, resolver.ErrNotMirrored) || !errdefs.IsPermissionDenied(err) {
			t.Fatalf("pull for %s: %v, want ErrNotMirrored", reg, err)
		}
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("the registry was asked %d times", n)
	}
	// Once this node's containerd asked for content of a registry through
	// it, the node mirrors that registry for its peers too. Another blob:
	// its download from that registry fails, and a pull of d joining it
	// would fail with it.
	other := "127.0.0.2:1" // loopback: nothing listens there
	elsewhere := digest.FromBytes(randomBytes(t, 1000))
	if _, err := f.res.PullFor(t.Context(), elsewhere, other, "a", swarm.Asker{}, nil); !errors.Is(err, resolver.ErrNotMirrored) {
		t.Fatalf("before containerd used it: %v", err)
	}
	_, _ = f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: other, Repo: "a", Reference: "v1"})
	if _, err := f.res.PullFor(t.Context(), elsewhere, other, "a", swarm.Asker{}, nil); errors.Is(err, resolver.ErrNotMirrored) {
		t.Fatalf("after containerd used it: %v", err)
	}
	// The fixture's own registry is configured: the blob comes.
	b, err := f.res.PullFor(t.Context(), d, f.up.host, "a", swarm.Asker{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
}

// TestFailedBlobIsAMissForAWhile: once the registry failed every attempt
// at a blob (5xx), the next request for it, from containerd or a prefetch,
// is a miss at once rather than FetchAttempts more requests to a registry
// containerd is already fetching the blob from itself.
func TestFailedBlobIsAMissForAWhile(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{MissTimeout: 2 * time.Second, StallTimeout: time.Second, FetchAttempts: 3}, resolver.Sources{})
	d := f.up.push(t, "a", randomBytes(t, 64<<10))
	f.up.hook = func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	}
	req := resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d}
	for i := range 3 {
		if _, err := f.res.Blob(t.Context(), req); !errdefs.IsNotFound(err) {
			t.Fatalf("request %d: %v, want a miss", i, err)
		}
	}
	if n := f.up.blobGets.Load(); n != 3 {
		t.Fatalf("the registry was asked %d times for three requests, want 3 (one download's attempts)", n)
	}
}
