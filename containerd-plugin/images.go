package containerdplugin

import (
	"context"
	"fmt"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

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
	return ocispec.Descriptor{
		MediaType:   t.MediaType,
		Digest:      dgst,
		Size:        t.Size,
		Annotations: t.Annotations,
	}, nil
}
