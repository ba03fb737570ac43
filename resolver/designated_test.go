package resolver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

// designatingRouter is a fakeRouter that also names designated peers.
type designatingRouter struct {
	*fakeRouter
	designated []string
	through    []string // "peer@offset registry/repo"
	groups     map[digest.Digest][]digest.Digest
}

func (d *designatingRouter) Designated(dgst digest.Digest, group []digest.Digest) ([]string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.groups == nil {
		d.groups = map[digest.Digest][]digest.Digest{}
	}
	d.groups[dgst] = group
	return d.designated, len(d.designated) == 0
}

func (d *designatingRouter) FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	d.mu.Lock()
	d.through = append(d.through, fmt.Sprintf("%s@%d %s/%s", p, off, registry, repo))
	d.mu.Unlock()
	return d.Fetch(ctx, p, dgst, off)
}

func TestDesignatedPeerFetchesForTheCluster(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 1<<20)
	d := digest.FromBytes(body)
	router := &designatingRouter{
		fakeRouter: &fakeRouter{peers: map[string]fakePeer{"designated": {data: body}, "holder": {data: body}}, order: []string{"holder"}},
		designated: []string{"designated"},
	}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})

	// A request from this node's containerd goes to the designated peer
	// first, naming where the blob comes from.
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: "registry.example", Repo: "team/app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if want := []string{"designated@0 registry.example/team/app"}; !slices.Equal(router.through, want) {
		t.Fatalf("fetched through %v, want %v", router.through, want)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("registry asked %d times", n)
	}

	// Asked by a peer to fetch for the cluster, this node never goes back
	// to a designated peer (that could be the asker): holders, then the
	// registry.
	other := randomBytes(t, 1<<20)
	od := digest.FromBytes(other)
	router.peers["holder"] = fakePeer{data: other}
	router.peers["designated"] = fakePeer{data: other}
	blob, err := f.res.PullFor(t.Context(), od, "registry.example", "team/app")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(other))
	if n, err := blob.ReadAt(got, 0); n != len(other) || !bytes.Equal(got, other) {
		t.Fatalf("PullFor read %d bytes: %v", n, err)
	}
	if len(router.through) != 1 {
		t.Fatalf("PullFor fetched through a designated peer: %v", router.through)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	if last := router.fetches[len(router.fetches)-1]; last != "holder@0" {
		t.Fatalf("PullFor fetched %v, want the holder", router.fetches)
	}
}

// TestPrefetchNamesTheImage: the designated fetchers of a prefetched blob
// are chosen knowing the image's other blobs, in the manifest's order, so
// that its layers' first copies go to different nodes.
func TestPrefetchNamesTheImage(t *testing.T) {
	t.Parallel()
	router := &designatingRouter{fakeRouter: &fakeRouter{}}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 100), randomBytes(t, 2000), randomBytes(t, 3000))
	if n := f.res.Prefetch(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}, m); n != 3 {
		t.Fatalf("prefetch started %d downloads, want 3", n)
	}
	waitStored(t, f, ds)
	router.mu.Lock()
	defer router.mu.Unlock()
	for _, d := range ds {
		if !slices.Equal(router.groups[d], ds) {
			t.Fatalf("blob %s designated within %v, want the image's blobs %v", d, router.groups[d], ds)
		}
	}
}

// TestBusyDesignatedPeerIsNotPassedOver: when the first designated peer is
// only out of upload slots, the second is not asked (it would fetch the blob
// from the registry a second time); the peers already receiving it are.
func TestBusyDesignatedPeerIsNotPassedOver(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 1<<20)
	d := digest.FromBytes(body)
	router := &designatingRouter{
		fakeRouter: &fakeRouter{peers: map[string]fakePeer{"first": {data: body, busy: 1}, "second": {data: body}, "receiver": {data: body}}, order: []string{"receiver"}},
		designated: []string{"first", "second"},
	}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: "registry.example", Repo: "team/app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	f.res.Close()
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"first@0 registry.example/team/app"}; !slices.Equal(router.through, want) {
		t.Fatalf("fetched through %v, want only the first designated peer %v", router.through, want)
	}
	if want := []string{"first@0", "receiver@0"}; !slices.Equal(router.fetches, want) {
		t.Fatalf("fetches %v, want %v", router.fetches, want)
	}
}
