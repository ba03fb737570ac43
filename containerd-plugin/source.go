package containerdplugin

import (
	"context"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/store"
)

// Source is the method set shoal reads containerd through. Client and
// containerd-plugin/fake.Store both implement it, and sourcetest checks that
// they behave alike; consumers declare the subset they need.
type Source interface {
	Open(ctx context.Context, dgst digest.Digest) (store.Blob, error)
	Stat(ctx context.Context, dgst digest.Digest) (int64, error)
	Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error
	ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error)
	Ping(ctx context.Context) error
	Subscribe(ctx context.Context, ready func(), fn func(Event)) error
}

var (
	_ Source      = (*Client)(nil)
	_ EventSource = (*Client)(nil)
)
