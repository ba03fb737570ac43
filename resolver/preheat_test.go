package resolver_test

import (
	"encoding/json"
	"errors"
	"runtime"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

// pushImage pushes an image of the given blobs (config first) under
// repo:tag, wrapped in an index with a manifest for this platform and one
// for another, and returns the index's digest, this platform's manifest's
// and the blobs'.
func pushImage(t *testing.T, f *fixture, repo, tag string, blobs ...[]byte) (digest.Digest, digest.Digest, []digest.Digest) {
	t.Helper()
	m, ds := imageManifest(t, f, repo, ocispec.MediaTypeImageManifest, blobs...)
	f.up.pushManifest(t, repo, m.Digest.String(), m.Body, m.MediaType)
	other, _ := imageManifest(t, f, repo, ocispec.MediaTypeImageManifest, randomBytes(t, 1024), randomBytes(t, 64<<10))
	f.up.pushManifest(t, repo, other.Digest.String(), other.Body, other.MediaType)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{
		{MediaType: other.MediaType, Digest: other.Digest, Size: int64(len(other.Body)), Platform: &ocispec.Platform{OS: "plan9", Architecture: "mips"}},
		{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body)), Platform: &ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}},
	}}
	idx.SchemaVersion = 2
	body, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	return f.up.pushManifest(t, repo, tag, body, idx.MediaType), m.Digest, ds
}

func TestPreheatFillsTheNodeWithItsPlatformsImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	blobs := [][]byte{randomBytes(t, 2048), randomBytes(t, 1<<20), randomBytes(t, 3<<20), randomBytes(t, 512<<10)}
	idx, man, ds := pushImage(t, f, "team/app", "v1", blobs...)
	im, err := f.res.ResolveImage(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest != idx {
		t.Fatalf("resolved to %s, want the index %s", im.Digest, idx)
	}
	var mu sync.Mutex
	var last resolver.PreheatProgress
	err = f.res.PreheatFor(t.Context(), im, func(p resolver.PreheatProgress) {
		mu.Lock()
		defer mu.Unlock()
		if p.HeldBytes < last.HeldBytes || p.HeldBlobs < last.HeldBlobs {
			t.Errorf("progress went back from %+v to %+v", last, p)
		}
		last = p
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]digest.Digest{idx, man}, ds...) {
		rd, err := f.store.Open(t.Context(), d)
		if err != nil {
			t.Errorf("blob %s not held after the preheat: %v", d, err)
			continue
		}
		rd.Close()
	}
	if last.Blobs != len(ds)+2 || last.HeldBlobs != last.Blobs || last.HeldBytes != last.Bytes {
		t.Errorf("last progress %+v, want %d blobs all held", last, len(ds)+2)
	}
	gets := f.up.blobGets.Load()
	if gets != int64(len(ds)) {
		t.Errorf("the registry was asked for %d blobs, want %d (this platform's only)", gets, len(ds))
	}
	// A second preheat finds everything held and asks the registry nothing.
	if err := f.res.Preheat(t.Context(), im, nil); err != nil {
		t.Fatal(err)
	}
	if again := f.up.blobGets.Load(); again != gets {
		t.Errorf("a second preheat asked the registry for %d more blobs", again-gets)
	}
}

func TestPreheatForAPeerOnlyFromConfiguredRegistries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	idx, _, _ := pushImage(t, f, "team/app", "v1", randomBytes(t, 1024), randomBytes(t, 4096))
	other := resolver.Image{Registry: "registry.example:5000", Repo: "team/app", Digest: idx}
	// A registry this node's clients named is not enough for a peer.
	if b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: other.Registry, Repo: "x", Digest: idx}); err == nil {
		b.Close()
	}
	err := f.res.PreheatFor(t.Context(), other, nil)
	if !errors.Is(err, resolver.ErrNotMirrored) {
		t.Fatalf("preheat for a peer from an unconfigured registry: %v, want ErrNotMirrored", err)
	}
	if gets := f.up.blobGets.Load(); gets != 0 {
		t.Errorf("the registry was asked for %d blobs", gets)
	}
}
