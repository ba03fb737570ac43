package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// Docker's manifest list, the index of schema 2.
const mediaTypeDockerIndex = "application/vnd.docker.distribution.manifest.list.v2+json"

// PreheatBlobs is how many blobs of one image a preheat fetches at once.
// Every node of a preheat starts on that many blobs together, so each
// blob's designated fetcher asks the registry for it while the others
// wait on the fetchers rather than on the registry.
const PreheatBlobs = 8

// MaxPreheatBlobs bounds the blobs of one image a preheat fetches: a
// manifest naming more is refused, whoever asked.
const MaxPreheatBlobs = 1024

// Image is a reference resolved once: the registry and repository it
// comes from and the digest of its manifest or index.
type Image struct {
	Registry string
	Repo     string
	Digest   digest.Digest
}

// PreheatProgress is how far a preheat of one image on this node is: the
// blobs it found (manifests, config and layers) with their bytes, and how
// many of them, and of their bytes, the node holds.
type PreheatProgress struct {
	Blobs     int
	HeldBlobs int
	Bytes     int64
	HeldBytes int64
}

// ResolveImage resolves a tag (or checks a digest) of req once, from the
// registry as containerd's own pull would, and keeps the manifest so that
// the peers a preheat asks find it in the mesh.
func (r *Resolver) ResolveImage(ctx context.Context, req ManifestRequest) (Image, error) {
	m, err := r.Manifest(ctx, req)
	if err != nil {
		return Image{}, err
	}
	return Image{Registry: req.Registry, Repo: req.Repo, Digest: m.Digest}, nil
}

// PreheatFor fills this node with im at a peer's request: only from a
// registry this node's own configuration mirrors (Config.Registries and
// Config.Mirrors; not the registries its clients happened to name), so a
// member cannot make the node fetch from a host of its choosing. Any other
// is refused with an error wrapping ErrNotMirrored before any fetch.
func (r *Resolver) PreheatFor(ctx context.Context, im Image, progress func(PreheatProgress)) error {
	if !r.configuredMirror(im.Registry) {
		return fmt.Errorf("preheat %s/%s: %w", im.Registry, im.Repo, ErrNotMirrored)
	}
	return r.Preheat(ctx, im, progress)
}

// configuredMirror is the rule for the registries a peer may have this
// node preheat from: those its operator configured.
func (r *Resolver) configuredMirror(registry string) bool {
	return slices.Contains(r.cfg.Registries, registry) || (r.cfg.Mirrors != nil && r.cfg.Mirrors(registry))
}

// Preheat fills this node with the whole image im for its own platform:
// the index, the platform's manifest, the config and every layer, each
// blob the way a pull of it would come (the node's copy, a download in
// flight, peers, or its designated fetcher from the registry). It returns
// once the node holds every blob, or with the first failure. progress, if
// set, hears of every change, from one goroutine at a time.
func (r *Resolver) Preheat(ctx context.Context, im Image, progress func(PreheatProgress)) error {
	if err := validDigest(im.Digest); err != nil {
		return err
	}
	// The node wants the image as its clients' pull of it would, so that
	// it fetches for the cluster the blobs it is designated for rather
	// than leave them to the first asker (see swarm.Coordinate).
	r.noteWanted(im.Registry, im.Repo)
	req := ManifestRequest{Registry: im.Registry, Repo: im.Repo, Reference: im.Digest.String()}
	blobs, err := r.imageBlobs(ctx, req)
	if err != nil {
		return err
	}
	t := newTally(blobs, progress)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(PreheatBlobs)
	for _, d := range blobs {
		if r.has(gctx, d.Digest) {
			t.held(d.Size)
			continue
		}
		g.Go(func() error {
			return r.fillAgain(gctx, BlobRequest{Registry: im.Registry, Repo: im.Repo, Digest: d.Digest, Size: d.Size}, t)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, d := range blobs {
		if !r.has(ctx, d.Digest) {
			return fmt.Errorf("blob %s: not held after its download: %w", d.Digest, errdefs.ErrNotFound)
		}
	}
	return nil
}

// imageBlobs reads the manifests of req (an index, then the manifest of
// this node's platform) and lists every blob of the image: the manifests
// themselves, the config and the layers. It notes the image's blobs as a
// group, as Prefetch does, so that their first copies go to different
// designated fetchers.
func (r *Resolver) imageBlobs(ctx context.Context, req ManifestRequest) ([]ocispec.Descriptor, error) {
	m, err := r.manifest(ctx, req)
	if err != nil {
		return nil, err
	}
	blobs := []ocispec.Descriptor{{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}}
	if m.MediaType == ocispec.MediaTypeImageIndex || m.MediaType == mediaTypeDockerIndex {
		d, err := platformManifest(m)
		if err != nil {
			return nil, err
		}
		req.Reference = d.Digest.String()
		if m, err = r.manifest(ctx, req); err != nil {
			return nil, err
		}
		blobs = append(blobs, ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))})
	}
	if m.MediaType != ocispec.MediaTypeImageManifest && m.MediaType != mediaTypeDockerManifest {
		return nil, fmt.Errorf("manifest %s: media type %s is no image manifest: %w", m.Digest, m.MediaType, errdefs.ErrNotImplemented)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(m.Body, &man); err != nil {
		return nil, fmt.Errorf("manifest %s: %w: %w", m.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(man.Layers)+1 > MaxPreheatBlobs {
		return nil, fmt.Errorf("manifest %s: %d layers, at most %d are preheated: %w", m.Digest, len(man.Layers), MaxPreheatBlobs-1, errdefs.ErrInvalidArgument)
	}
	first := len(blobs)
	for _, d := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if len(d.URLs) > 0 {
			continue // foreign layers live elsewhere
		}
		if err := validDigest(d.Digest); err != nil {
			return nil, err
		}
		if d.Size <= 0 {
			return nil, fmt.Errorf("blob %s: size %d: %w", d.Digest, d.Size, errdefs.ErrInvalidArgument)
		}
		blobs = append(blobs, d)
	}
	r.noteGroup(blobs[first:])
	return blobs, nil
}

// platformManifest picks, from an index, the manifest for this node's
// platform, as containerd's pull would.
func platformManifest(m Manifest) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(m.Body, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index %s: %w: %w", m.Digest, err, errdefs.ErrInvalidArgument)
	}
	match := platforms.Default()
	var best *ocispec.Descriptor
	for i, d := range idx.Manifests {
		if d.Platform == nil || !match.Match(*d.Platform) {
			continue
		}
		if best == nil || match.Less(*d.Platform, *best.Platform) {
			best = &idx.Manifests[i]
		}
	}
	if best == nil {
		return ocispec.Descriptor{}, fmt.Errorf("index %s: no manifest for %s: %w", m.Digest, platforms.DefaultString(), errdefs.ErrNotFound)
	}
	if err := validDigest(best.Digest); err != nil {
		return ocispec.Descriptor{}, err
	}
	return *best, nil
}

// PreheatAttempts is how many times a preheat fetches a blob whose
// download failed (its sources stalled or failed every attempt) before it
// gives up on the image. It waits out the miss a failed registry leaves
// (10 s) between attempts: a preheat has no containerd to fall back to
// the registry for it.
const PreheatAttempts = 3

// fillAgain is fill, tried PreheatAttempts times.
func (r *Resolver) fillAgain(ctx context.Context, req BlobRequest, t *tally) error {
	for attempt := 1; ; attempt++ {
		err := r.fill(ctx, req, t)
		if err == nil || ctx.Err() != nil || attempt == PreheatAttempts {
			return err
		}
		r.cfg.Logger.Info("preheat: blob not fetched, trying again", "digest", req.Digest, "registry", req.Registry, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(registryFailedFor + time.Second):
		}
	}
}

// fill fetches one blob until the node holds it whole: it reads the blob
// to its end, which a download releases only once it verified and
// committed it.
func (r *Resolver) fill(ctx context.Context, req BlobRequest, t *tally) error {
	b, err := r.blob(ctx, req)
	if err != nil {
		return err
	}
	defer b.Close()
	if b.Size != req.Size {
		return fmt.Errorf("blob %s: %d bytes, the manifest says %d: %w", req.Digest, b.Size, req.Size, ErrDigestMismatch)
	}
	if err := b.Ready(ctx); err != nil {
		return err
	}
	rd, err := b.Reader(ctx, 0)
	if err != nil {
		return err
	}
	defer rd.Close()
	n, err := io.Copy(io.Discard, rd)
	if err != nil {
		return fmt.Errorf("blob %s: after %d bytes: %w", req.Digest, n, err)
	}
	if n != req.Size {
		return fmt.Errorf("blob %s: %d bytes of %d: %w", req.Digest, n, req.Size, errors.Join(io.ErrUnexpectedEOF, errdefs.ErrUnavailable))
	}
	t.held(req.Size)
	return nil
}

// tally counts a preheat's progress for its progress function.
type tally struct {
	mu sync.Mutex
	p  PreheatProgress
	fn func(PreheatProgress)
}

func newTally(blobs []ocispec.Descriptor, fn func(PreheatProgress)) *tally {
	t := &tally{fn: fn, p: PreheatProgress{Blobs: len(blobs)}}
	for _, d := range blobs {
		t.p.Bytes += d.Size
	}
	t.report()
	return t
}

func (t *tally) held(size int64) {
	t.mu.Lock()
	t.p.HeldBlobs++
	t.p.HeldBytes += size
	t.mu.Unlock()
	t.report()
}

func (t *tally) report() {
	if t.fn == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fn(t.p)
}
