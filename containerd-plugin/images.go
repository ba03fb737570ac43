package containerdplugin

import (
	"context"
	"fmt"
	"maps"
	"time"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/store"
)

// UpdatedAnnotation is the annotation ResolveImage adds to the descriptor it
// returns: when containerd last updated the image record (RFC 3339), so a
// caller choosing among several nodes' answers can take the newest.
const UpdatedAnnotation = "io.shoal.image.updated"

// ResolveImage returns the target descriptor (a manifest or an index) of the
// image record named name, a full reference as containerd stores it, like
// "docker.io/library/nginx:latest" or "127.0.0.1:5000/test/img:v1".
// An absent image gives an error wrapping errdefs.ErrNotFound.
func (c *Client) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if name == "" {
		return ocispec.Descriptor{}, fmt.Errorf("image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	resp, err := imagesapi.NewImagesClient(c.conn).Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return ocispec.Descriptor{}, c.rpcErr(err, fmt.Sprintf("image %q", name))
	}
	t := resp.Image.GetTarget()
	if t == nil {
		return ocispec.Descriptor{}, fmt.Errorf("image %q has no target: %w", name, errdefs.ErrNotFound)
	}
	dgst, err := digest.Parse(t.Digest)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("image %q: target digest %q: %w", name, t.Digest, errdefs.ErrDataLoss)
	}
	ann := make(map[string]string, len(t.Annotations)+1)
	maps.Copy(ann, t.Annotations)
	if u := resp.Image.GetUpdatedAt(); u != nil {
		ann[UpdatedAnnotation] = u.AsTime().UTC().Format(time.RFC3339Nano)
	}
	return ocispec.Descriptor{
		MediaType:   t.MediaType,
		Digest:      dgst,
		Size:        t.Size,
		Annotations: ann,
	}, nil
}

// imageContent is what ImageBlobs reads: an image record and its blobs.
type imageContent interface {
	ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error)
	Open(ctx context.Context, dgst digest.Digest) (store.Blob, error)
	Stat(ctx context.Context, dgst digest.Digest) (int64, error)
}

// ImageBlobs returns the blobs of the image record named name that src
// holds: its target, and from there every index, manifest, config and
// layer it refers to, each once, parents before children. A child src
// does not hold (another platform's manifest, a layer containerd never
// fetched or already collected) is left out with what it refers to.
// An absent image gives an error wrapping errdefs.ErrNotFound.
func ImageBlobs(ctx context.Context, src imageContent, name string) ([]digest.Digest, error) {
	target, err := src.ResolveImage(ctx, name)
	if err != nil {
		return nil, err
	}
	seen := map[digest.Digest]bool{}
	var held []digest.Digest
	walk := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if seen[desc.Digest] {
			return nil, images.ErrSkipDesc
		}
		seen[desc.Digest] = true
		if _, err := src.Stat(ctx, desc.Digest); err != nil {
			if errdefs.IsNotFound(err) {
				return nil, images.ErrSkipDesc
			}
			return nil, err
		}
		held = append(held, desc.Digest)
		children, err := images.Children(ctx, provider{src}, desc)
		if errdefs.IsNotFound(err) {
			return nil, images.ErrSkipDesc // collected since Stat
		}
		return children, err
	})
	if err := images.Walk(ctx, walk, target); err != nil {
		return held, fmt.Errorf("image %q: %w", name, err)
	}
	return held, nil
}

// provider lets containerd's image code read blobs through shoal's Open.
type provider struct{ src imageContent }

func (p provider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return p.src.Open(ctx, desc.Digest)
}
