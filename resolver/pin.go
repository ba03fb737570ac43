package resolver

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImageBlobs lists every blob of im for this node's platform, as a
// preheat fetches them: the index, the platform's manifest, the config and
// the layers. The manifests come from the node, the registry, or, by
// digest, from peers.
func (r *Resolver) ImageBlobs(ctx context.Context, im Image) ([]ocispec.Descriptor, error) {
	if err := validDigest(im.Digest); err != nil {
		return nil, err
	}
	return r.imageBlobs(ctx, ManifestRequest{Registry: im.Registry, Repo: im.Repo, Reference: im.Digest.String()})
}

// PinnableRegistry is the rule for the registries a pinned image may make
// this node fetch from: those its own configuration mirrors, as for a
// preheat a member asks for.
func (r *Resolver) PinnableRegistry(registry string) bool { return r.configuredMirror(registry) }

// Hold fetches one blob of im until the node holds it whole, the way a
// pull of it would come (peers first; its designated fetcher, and the
// registry last). It refuses a registry PinnableRegistry refuses.
func (r *Resolver) Hold(ctx context.Context, im Image, blob ocispec.Descriptor) error {
	if !r.configuredMirror(im.Registry) {
		return fmt.Errorf("hold %s/%s: %w", im.Registry, im.Repo, ErrNotMirrored)
	}
	if r.has(ctx, blob.Digest) {
		return nil
	}
	return r.fill(ctx, BlobRequest{Registry: im.Registry, Repo: im.Repo, Digest: blob.Digest, Size: blob.Size}, newTally(nil, nil))
}

// Holds says whether the node holds dgst whole, in containerd's content
// store or its own.
func (r *Resolver) Holds(ctx context.Context, blob ocispec.Descriptor) bool {
	return r.has(ctx, blob.Digest)
}
