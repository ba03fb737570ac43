package main

import (
	"context"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/store"
)

// localContent is what this node offers its peers: containerd's content
// first, then shoal's own store.
type localContent struct {
	ctrd interface {
		Open(ctx context.Context, dgst digest.Digest) (store.Blob, error)
		Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error
	}
	st store.Store
	// inflight finds a download running on this node; nil until wired.
	inflight func(digest.Digest) (store.Blob, bool)
}

var _ p2p.Content = (*localContent)(nil)

func (c *localContent) Open(ctx context.Context, dgst digest.Digest) (store.Blob, error) {
	if c.ctrd != nil {
		b, err := c.ctrd.Open(ctx, dgst)
		if err == nil || (!errdefs.IsNotFound(err) && !errdefs.IsUnavailable(err)) {
			return b, err
		}
	}
	b, err := c.st.Open(ctx, dgst)
	if errdefs.IsNotFound(err) && c.inflight != nil {
		if b, ok := c.inflight(dgst); ok {
			return b, nil
		}
	}
	return b, err
}

func (c *localContent) Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error {
	if c.ctrd != nil {
		// containerd down is no reason to stop advertising the store.
		if err := c.ctrd.Walk(ctx, fn); err != nil && !errdefs.IsUnavailable(err) {
			return err
		}
	}
	return c.st.Walk(ctx, func(i store.Info) error { return fn(i.Digest, i.Size) })
}
