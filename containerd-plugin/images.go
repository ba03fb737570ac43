package containerdplugin

import (
	"context"
	"fmt"
	"maps"
	"time"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
