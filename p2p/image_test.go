package p2p_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

type images map[string]ocispec.Descriptor

func (im images) ResolveImage(_ context.Context, name string) (ocispec.Descriptor, error) {
	if d, ok := im[name]; ok {
		return d, nil
	}
	return ocispec.Descriptor{}, errdefs.ErrNotFound
}

func TestResolveImageTakesNewest(t *testing.T) {
	t.Parallel()
	const name = "registry.example/app:v1"
	older := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("old"), Size: 100,
		Annotations: map[string]string{p2p.UpdatedAnnotation: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)}}
	newer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("new"), Size: 200,
		Annotations: map[string]string{p2p.UpdatedAnnotation: time.Now().UTC().Format(time.RFC3339Nano)}}
	byNode := []p2p.ImageSource{nil, images{name: older}, images{name: newer}, images{}}
	c := p2ptest.Start(t, len(byNode), p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		cfg.Images = byNode[i]
	}})
	c.WaitMembers(t, len(byNode), 30*time.Second)
	var got ocispec.Descriptor
	p2ptest.Eventually(t, 30*time.Second, func() error {
		var err error
		got, err = c.Nodes[0].ResolveImage(t.Context(), name)
		if err == nil && got.Digest != newer.Digest {
			err = fmt.Errorf("got %s, want the newer %s", got.Digest, newer.Digest)
		}
		return err
	})
	if got.Size != newer.Size || got.MediaType != newer.MediaType {
		t.Fatalf("got %+v, want %+v", got, newer)
	}
	if _, err := c.Nodes[0].ResolveImage(t.Context(), "registry.example/absent:v1"); !errdefs.IsNotFound(err) {
		t.Fatalf("absent image: %v, want NotFound", err)
	}
	if _, err := c.Nodes[0].ResolveImage(t.Context(), ""); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("empty name: %v, want InvalidArgument", err)
	}
}
