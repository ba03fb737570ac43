package resolver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

// imageManifest pushes blobs and a manifest naming them, and returns the
// manifest as the resolver would answer it.
func imageManifest(t *testing.T, f *fixture, repo string, mediaType string, blobs ...[]byte) (resolver.Manifest, []digest.Digest) {
	t.Helper()
	var descs []ocispec.Descriptor
	var ds []digest.Digest
	for _, b := range blobs {
		d := f.up.push(t, repo, b)
		ds = append(ds, d)
		descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(b))})
	}
	m := ocispec.Manifest{MediaType: mediaType, Config: descs[0], Layers: descs[1:]}
	m.SchemaVersion = 2
	m.Config.MediaType = ocispec.MediaTypeImageConfig
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return resolver.Manifest{MediaType: mediaType, Digest: digest.FromBytes(body), Body: body}, ds
}

func waitStored(t *testing.T, f *fixture, ds []digest.Digest) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, d := range ds {
		for {
			rd, err := f.store.Open(t.Context(), d)
			if err == nil {
				rd.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("blob %s not stored after prefetch: %v", d, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestPrefetchStartsEveryLayerOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	var blobs [][]byte
	for range 6 {
		blobs = append(blobs, randomBytes(t, 256<<10))
	}
	// Every blob GET is held until all six are asked for: the test fails
	// (times out) if the resolver fetched them in batches.
	asked := make(chan struct{}, 16)
	release := make(chan struct{})
	f.up.hook = func(_ http.ResponseWriter, r *http.Request, _ []byte) bool {
		asked <- struct{}{}
		<-release
		return false
	}
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, blobs...)
	req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: m.Digest.String()}
	if n := f.res.Prefetch(t.Context(), req, m); n != len(blobs) {
		t.Fatalf("prefetch started %d downloads, want %d", n, len(blobs))
	}
	// A second manifest fetch while they run starts nothing more.
	if n := f.res.Prefetch(t.Context(), req, m); n != 0 {
		t.Fatalf("second prefetch started %d downloads, want 0", n)
	}
	for i := range blobs {
		select {
		case <-asked:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d blobs asked of the registry at once", i, len(blobs))
		}
	}
	close(release)
	waitStored(t, f, ds)
	if n := f.up.blobGets.Load(); n != int64(len(blobs)) {
		t.Fatalf("registry served %d blob GETs, want %d", n, len(blobs))
	}
	// Held now: nothing to prefetch, and a read comes from the store.
	if n := f.res.Prefetch(t.Context(), req, m); n != 0 {
		t.Fatalf("prefetch of held blobs started %d downloads", n)
	}
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: ds[3]})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Source != resolver.SourceStore {
		t.Fatalf("prefetched blob served from %s, want store", b.Source)
	}
}

func TestPrefetchLeavesIndexesAndRespectsLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		cfg       resolver.Config
		mediaType string
		want      int
	}{
		{"docker schema 2", resolver.Config{}, "application/vnd.docker.distribution.manifest.v2+json", 3},
		{"index", resolver.Config{}, ocispec.MediaTypeImageIndex, 0},
		{"off", resolver.Config{PrefetchBlobs: -1}, ocispec.MediaTypeImageManifest, 0},
		{"capped", resolver.Config{PrefetchBlobs: 2}, ocispec.MediaTypeImageManifest, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.cfg, resolver.Sources{})
			m, ds := imageManifest(t, f, "team/app", tc.mediaType, randomBytes(t, 1000), randomBytes(t, 2000), randomBytes(t, 3000))
			req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: m.Digest.String()}
			if n := f.res.Prefetch(t.Context(), req, m); n != tc.want {
				t.Fatalf("prefetch started %d downloads, want %d", n, tc.want)
			}
			waitStored(t, f, ds[:tc.want])
		})
	}
	t.Run("garbage body", func(t *testing.T) {
		f := newFixture(t, resolver.Config{}, resolver.Sources{})
		m := resolver.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("x"), Body: []byte("{not json")}
		if n := f.res.Prefetch(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "a", Reference: "latest"}, m); n != 0 {
			t.Fatalf("prefetch of an unreadable manifest started %d downloads", n)
		}
	})
}

func TestNegativePrefetchIsRejected(t *testing.T) {
	_, err := resolver.New(store.NewMemory(), nil, resolver.Sources{}, resolver.Config{PrefetchBlobs: -2}, nil)
	if err == nil || !strings.Contains(err.Error(), "PrefetchBlobs") {
		t.Fatalf("PrefetchBlobs -2: got %v, want an error naming it", err)
	}
}

// TestEarlyIngestNotServedToPeersBeforeASourceAnswers: a prefetched blob's
// ingest is published at once (its size is in the manifest), but peers get
// it only once a source feeds it; a peer that read an unfed ingest could be
// the source this node ends up waiting for.
func TestEarlyIngestNotServedToPeersBeforeASourceAnswers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	release := make(chan struct{})
	f.up.hook = func(_ http.ResponseWriter, r *http.Request, _ []byte) bool {
		<-release
		return false
	}
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 1000), randomBytes(t, 4<<20))
	req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: m.Digest.String()}
	if n := f.res.Prefetch(t.Context(), req, m); n != 2 {
		t.Fatalf("prefetch started %d downloads, want 2", n)
	}
	// containerd's request finds the download at once, with its size.
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: ds[1]})
	if err != nil {
		t.Fatalf("blob of a prefetch waiting on its source: %v", err)
	}
	defer b.Close()
	if b.Size != 4<<20 {
		t.Fatalf("size %d, want %d", b.Size, 4<<20)
	}
	if _, ok := f.res.InFlight(ds[1]); ok {
		t.Fatal("an ingest no source feeds yet is offered to peers")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := f.res.PullFor(ctx, ds[1], f.up.host, "team/app", swarm.Asker{}, nil); err == nil {
		t.Fatal("PullFor answered with an ingest no source feeds")
	}
	if b.Source != resolver.SourceInFlight {
		t.Fatalf("source %s before any source answered, want %s", b.Source, resolver.SourceInFlight)
	}
	close(release)
	waitStored(t, f, ds)
	// Once bytes can flow, the blob names where they came from (metrics
	// count containerd's bytes by source).
	if err := b.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b.Source != resolver.SourceUpstream {
		t.Fatalf("source %s once ready, want %s", b.Source, resolver.SourceUpstream)
	}
	got, err := readAll(t.Context(), t, b, 0)
	if err != nil || digest.FromBytes(got) != ds[1] {
		t.Fatalf("read %d bytes (%v), want the blob", len(got), err)
	}
}

// TestRequestKnowsTheSizeFromTheManifest: containerd asks for a layer that
// prefetching did not start (PrefetchBlobs 1), the registry is down and
// the one peer holding the layer answers busy for longer than MissTimeout.
// The manifest gave the layer's size, so the download publishes at once
// and the request waits for the peer's bytes instead of missing.
func TestRequestKnowsTheSizeFromTheManifest(t *testing.T) {
	t.Parallel()
	layer := randomBytes(t, 1<<20)
	// Busy for 4.5 s of back-off, past a MissTimeout that leaves a
	// loaded run under -race time to start the download and publish it.
	router := &fakeRouter{peers: map[string]fakePeer{"holder": {data: layer, busy: 8}}, order: []string{"holder"}}
	f := newFixture(t, resolver.Config{MissTimeout: time.Second, PrefetchBlobs: 1}, resolver.Sources{Router: router})
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 100), layer)
	f.up.srv.Close()
	if n := f.res.Prefetch(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}, m); n != 1 {
		t.Fatalf("prefetch started %d downloads, want 1", n)
	}
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: ds[1]})
	if err != nil {
		t.Fatalf("a layer the manifest named, held by a busy peer: %v", err)
	}
	if b.Size != int64(len(layer)) {
		t.Errorf("size %d, want %d", b.Size, len(layer))
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("read %d bytes of %d: %v", len(got), len(layer), err)
	}
}

// TestDownloadLearnsItsSizeFromALaterManifest: a download starts without
// the blob's size (as a peer's pull-for starts one), its one holder answers
// busy for longer than MissTimeout, and the registry is down. The manifest
// naming the blob comes next: the download publishes with its size, and
// the requests wait for the holder's bytes instead of missing.
func TestDownloadLearnsItsSizeFromALaterManifest(t *testing.T) {
	t.Parallel()
	layer := randomBytes(t, 1<<20)
	router := &fakeRouter{peers: map[string]fakePeer{"holder": {data: layer, busy: 6}}, order: []string{"holder"}}
	f := newFixture(t, resolver.Config{MissTimeout: time.Second}, resolver.Sources{Router: router})
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 100), layer)
	f.up.srv.Close()
	req := resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: ds[1]}
	first := make(chan error, 1)
	go func() {
		b, err := f.res.Blob(t.Context(), req)
		if err == nil {
			b.Close()
		}
		first <- err
	}()
	time.Sleep(100 * time.Millisecond)
	f.res.Prefetch(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}, m)
	b, err := f.res.Blob(t.Context(), req)
	if err != nil {
		t.Fatalf("the layer's request after its manifest: %v", err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("read %d bytes of %d: %v", len(got), len(layer), err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the request made before the manifest: %v", err)
	}
}
